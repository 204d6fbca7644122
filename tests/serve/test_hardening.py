"""What an attack on the service found, each as a regression test through the app ``zsgen serve`` builds: item ids
that two spellings could reach or that shadow a title, lone surrogates, the playground's API parsing before the
token, DNS rebinding against a token-less service, and the token variable's and listening address's rules."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from starlette.testclient import TestClient

from zsgen.errors import ConfigError
from zsgen.loaders import demo_catalog_path
from zsgen.serve.app import create_app
from zsgen.serve.auth import Token
from zsgen.serve.config import ServeConfig, config_from_dict
from zsgen.serve.schemas import RecommendRequest
from zsgen.serve.service import ServiceState, build_state
from zsgen.types import Item

LOCAL = "http://127.0.0.1:8080"


def serve_config(tmp: Path, **extra: Any) -> ServeConfig:
    data = {"dataset": {"path": str(demo_catalog_path())}, "embedding_cache": str(tmp / "emb.sqlite"), **extra}
    return config_from_dict(data)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServeConfig, ServiceState]:
    tmp = tmp_path_factory.mktemp("harden")
    (tmp / "prompts").mkdir()
    config = serve_config(tmp, store=str(tmp / "items.jsonl"), playground={"template_dir": str(tmp / "prompts")})
    return config, build_state(config)


@pytest.fixture
def client(service: tuple[ServeConfig, ServiceState]) -> Iterator[TestClient]:
    config, state = service
    with TestClient(create_app(config, state=state), base_url=LOCAL, raise_server_exceptions=False) as c:
        yield c


def error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["type"]


@pytest.mark.parametrize(
    "path", ["/v1/items/%2050", "/v1/items/50%0A", "/v1/items/5%0A0", "/v1/items/%FF%FE", "/v1/items/a%E2%80%8Bb"]
)
def test_ids_two_spellings_could_reach_are_refused_for_put_and_delete(client: TestClient, path: str) -> None:
    before = len(client.app.state.zsgen.catalog)  # type: ignore[attr-defined]
    assert error(client.put(path, json={"title": "Impostor"})) == (422, "invalid_item_id")
    assert error(client.delete(path)) == (422, "invalid_item_id")
    assert len(client.app.state.zsgen.catalog) == before  # type: ignore[attr-defined]


def test_a_new_id_may_not_shadow_another_items_title(client: TestClient) -> None:
    catalog = client.app.state.zsgen.catalog  # type: ignore[attr-defined]
    victim = catalog[0]
    refused = client.put(f"/v1/items/{victim.title}", json={"title": "Impostor"})
    assert error(refused) == (409, "item_id_conflict") and victim.id in refused.json()["error"]["message"]
    # ... so a history naming that title still reaches the item it named
    answer = client.post("/v1/recommendations", json={"history": [victim.title], "k": 3, "use_llm": False})
    assert answer.status_code == 200


def test_ids_with_a_slash_can_be_put_and_retired(client: TestClient) -> None:
    assert client.put("/v1/items/shelf/a-1", json={"title": "Slashed"}).status_code == 201
    assert client.delete("/v1/items/shelf%2Fa-1").json()["retired"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"title": "Odd", "genres": ["Drama", "\ud800"]},
        {"title": "Odd", "attributes": {"mood": "\udfff"}},
        {"title": "Odd", "description": "\ud83d alone"},
    ],
)
def test_lone_surrogates_anywhere_in_an_item_are_a_422(client: TestClient, body: dict[str, Any]) -> None:
    # json.dumps escapes the surrogate as \\udXXX: valid JSON that decodes to a lone surrogate
    response = client.put("/v1/items/odd-1", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "valid" in response.json()["error"]["message"]
    assert "odd-1" not in client.app.state.zsgen.catalog  # type: ignore[attr-defined]


def test_the_playground_api_refuses_a_stranger_before_parsing(service: tuple[ServeConfig, ServiceState]) -> None:
    config, loaded = service
    state = ServiceState(**{**loaded.__dict__, "token": Token("s3cret-token")})
    with TestClient(create_app(config, state=state), base_url=LOCAL, raise_server_exceptions=False) as c:
        malformed = c.post("/playground/api/run", content=b"{not json", headers={"Content-Type": "application/json"})
        huge = c.post("/playground/api/run", content=b"x" * 3_000_000, headers={"Content-Type": "application/json"})
        assert error(malformed) == (401, "unauthorized") and error(huge) == (401, "unauthorized")
        assert c.get("/playground").status_code == 200  # the page itself holds no data and stays public


@pytest.mark.parametrize(
    "headers",
    [{"Host": "attacker.example"}, {"Host": "attacker.example:8080", "Origin": "http://attacker.example:8080"}],
)
def test_a_foreign_host_is_refused_before_anything_runs(client: TestClient, headers: dict[str, str]) -> None:
    refused = client.put("/v1/items/rebound", json={"title": "Rebound"}, headers=headers)
    assert error(refused) == (400, "invalid_host")
    assert "rebound" not in client.app.state.zsgen.catalog  # type: ignore[attr-defined]


def test_a_foreign_origin_is_refused_and_the_services_own_is_not(client: TestClient) -> None:
    put = {"json": {"title": "From a page"}}
    refused = client.put("/v1/items/page-1", headers={"Origin": "http://attacker.example"}, **put)
    assert error(refused) == (403, "forbidden_origin")
    assert client.put("/v1/items/page-1", headers={"Origin": "http://localhost:8080"}, **put).status_code == 201


def test_allowed_hosts_names_more(tmp_path: Path, service: tuple[ServeConfig, ServiceState]) -> None:
    config = service[0].model_copy(update={"allowed_hosts": ["recs.internal"]})
    with TestClient(create_app(config, state=service[1]), base_url="http://recs.internal") as c:
        assert c.post("/v1/recommendations", json={"history": ["m098"], "k": 2, "use_llm": False}).status_code == 200


def test_an_empty_token_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSGEN_TEST_TOKEN", "  ")
    with pytest.raises(ConfigError, match=r"\$ZSGEN_TEST_TOKEN is set but empty"):
        Token.from_env("ZSGEN_TEST_TOKEN")
    monkeypatch.delenv("ZSGEN_TEST_TOKEN")
    assert not Token.from_env("ZSGEN_TEST_TOKEN").required


def test_serve_refuses_a_public_address_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zsgen.cli import main

    monkeypatch.delenv("ZSGEN_SERVE_TOKEN", raising=False)
    config = tmp_path / "serve.toml"
    config.write_text(f'[dataset]\npath = "{demo_catalog_path()}"\n', encoding="utf-8")
    assert main(["serve", "--config", str(config), "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "without a bearer token" in err and "allow_public_without_token" in err and "Traceback" not in err


def test_a_body_that_is_not_json_is_refused_naming_the_content_type(client: TestClient) -> None:
    body = json.dumps({"history": ["m098"], "k": 2})
    refused = client.post("/v1/recommendations", content=body, headers={"Content-Type": "text/plain"})
    assert error(refused) == (415, "unsupported_media_type") and "text/plain" in refused.json()["error"]["message"]
    plain = client.post(
        "/v1/recommendations", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert plain.status_code == 200


def test_queued_item_edits_do_not_starve_requests(service: tuple[ServeConfig, ServiceState]) -> None:
    """40 PUTs queue behind one whose refit is held; a recommendation must still be answered meanwhile (before the
    fix, the queued edits held every thread of the loop's default executor, which retrieval needs)."""
    state = service[1]
    entered, release = threading.Event(), threading.Event()
    build = state.live._build_stage

    def held_build(catalog: Any) -> Any:
        entered.set()
        release.wait(300)
        return build(catalog)

    async def scenario() -> list[str]:
        edits = [asyncio.create_task(state.put_item(Item(id=f"queued-{n}", title=f"Queued {n}"))) for n in range(40)]
        with ThreadPoolExecutor(max_workers=1) as waiter:
            assert await asyncio.get_running_loop().run_in_executor(waiter, entered.wait, 120)
        prepared = state.prepare(RecommendRequest(history=["m098"], k=3, use_llm=False))
        deadline = asyncio.get_running_loop().time() + 60
        try:
            ranking = await asyncio.wait_for(state.recommend(prepared, deadline), timeout=120)
        finally:
            release.set()
        await asyncio.gather(*edits)
        return [item.id for item in ranking.items]

    state.live._build_stage = held_build
    try:
        answered = asyncio.run(scenario())
    finally:
        state.live._build_stage = build
        release.set()
    assert len(answered) == 3
    assert all(f"queued-{n}" in state.catalog for n in range(40))
