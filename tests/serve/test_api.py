"""The HTTP service's API on the demo catalog (real MiniLM encoder): the JSON equals ``zsgen recommend --json``,
caller mistakes are one-line 4xx errors, the bearer token, and items added and retired at runtime, across a restart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi import APIRouter, Depends, Request
from starlette.testclient import TestClient

from zsgen.cli import main
from zsgen.loaders import demo_catalog_path
from zsgen.serve.app import create_app
from zsgen.serve.auth import require_token
from zsgen.serve.config import ServeConfig, config_from_dict
from zsgen.serve.service import ServiceState, build_state

SPACE_FAN = ["m098", "m002"]  # generation starship, astronomer: science fiction


def serve_config(tmp: Path, **extra: Any) -> ServeConfig:
    data = {"dataset": {"path": str(demo_catalog_path())}, "embedding_cache": str(tmp / "emb.sqlite"), **extra}
    return config_from_dict(data)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServeConfig, ServiceState]:
    """One loaded service for the tests that do not edit the catalog (models load once)."""
    config = serve_config(tmp_path_factory.mktemp("serve"), k_max=50, max_body_bytes=4096, max_history=5)
    return config, build_state(config)


@pytest.fixture
def client(shared: tuple[ServeConfig, ServiceState]) -> Iterator[TestClient]:
    config, state = shared
    with TestClient(create_app(config, state=state), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def without_request_ids(body: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in body.items() if key not in ("request_id", "timings")}
    return out


def test_a_recommendation_is_the_json_of_zsgen_recommend(
    client: TestClient, shared: tuple[ServeConfig, ServiceState], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = shared
    response = client.post("/v1/recommendations", json={"history": ["Halcyon Drift", "m002"], "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert set(body["timings"]) == {"retrieve_s"}
    argv = ["recommend", "--catalog", config.dataset.path, "--history", "Halcyon Drift", "m002", "-k", "5"]
    assert main([*argv, "--json", "--embedding-cache", str(config.embedding_cache)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert without_request_ids(body) == without_request_ids(cli)
    assert len(body["items"]) == 5 and not set(body["items"][0]) - {"id", "title", "score", "source"}


def test_a_batch_answers_each_user_as_a_single_call_would(client: TestClient) -> None:
    users = [
        {"history": SPACE_FAN, "k": 4},
        {"profile": "Westerns about homesteaders and long winters.", "k": 3},
        {"history": ["m003"], "profile": "prairies", "k": 2},
    ]
    batch = client.post("/v1/recommendations:batch", json={"users": users})
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert len(results) == 3
    for user, result in zip(users, results, strict=True):
        single = client.post("/v1/recommendations", json=user).json()
        assert [i["id"] for i in result["items"]] == [i["id"] for i in single["items"]]
        assert [i["score"] for i in result["items"]] == pytest.approx([i["score"] for i in single["items"]], abs=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "kind", "fragment"),
    [
        ({"history": ["Halcyon Drfit"]}, 422, "unknown_item", "did you mean 'Halcyon Drift'"),
        ({}, 422, "empty_user", "give a history"),
        ({"profile": "   "}, 422, "empty_user", "blank"),
        ({"history": SPACE_FAN, "k": 0}, 422, "invalid_k", "between 1 and 50"),
        ({"history": SPACE_FAN, "k": 51}, 422, "invalid_k", "between 1 and 50"),
        ({"history": SPACE_FAN, "k": "ten"}, 422, "invalid_request", "k: "),
        ({"history": SPACE_FAN, "rerank": {"bootstrap": 2}}, 422, "rerank_option_not_allowed", "no reranker"),
        ({"history": SPACE_FAN, "rerank": {"temperature": 2}}, 422, "invalid_request", "rerank.temperature: unknown"),
        ({"histroy": SPACE_FAN}, 422, "invalid_request", "histroy: unknown key"),
        ({"history": "m098"}, 422, "invalid_request", "history: "),
        ({"history": SPACE_FAN * 3}, 422, "history_too_long", "at most 5"),
    ],
)
def test_a_caller_mistake_is_a_4xx_with_one_line(
    client: TestClient, body: dict[str, Any], status: int, kind: str, fragment: str
) -> None:
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == kind
    assert fragment in error["message"]
    assert "\n" not in error["message"] and "Traceback" not in response.text
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_integer_ids_are_ids(tmp_path: Path) -> None:
    catalog = tmp_path / "numbered.jsonl"
    rows = [{"id": n, "title": title} for n, title in enumerate(["Rain", "Storm", "Drizzle", "Sunshine"], start=1)]
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = config_from_dict({"dataset": {"path": str(catalog)}, "embedding_cache": str(tmp_path / "emb.sqlite")})
    with TestClient(create_app(config), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        as_int = c.post("/v1/recommendations", json={"history": [1, "2"], "k": 2}).json()
        as_str = c.post("/v1/recommendations", json={"history": ["1", "2"], "k": 2}).json()
    assert [i["id"] for i in as_int["items"]] == [i["id"] for i in as_str["items"]]
    assert len(as_int["items"]) == 2


def test_unknown_items_come_with_suggestions(client: TestClient) -> None:
    error = client.post("/v1/recommendations", json={"history": ["Halcyon Drfit"]}).json()["error"]
    assert error["suggestions"] == ["Halcyon Drift"]


def test_a_body_too_large_and_broken_json_are_refused(client: TestClient) -> None:
    big = client.post("/v1/recommendations", json={"history": SPACE_FAN, "profile": "x" * 5000})
    assert big.status_code == 413
    assert big.json()["error"]["type"] == "body_too_large"
    broken = client.post("/v1/recommendations", content=b'{"history": [', headers={"content-type": "application/json"})
    assert broken.status_code == 422
    assert broken.json()["error"]["message"] == "body is not valid JSON (at character 13)"


def test_a_batch_names_the_user_it_refuses(client: TestClient) -> None:
    response = client.post("/v1/recommendations:batch", json={"users": [{"history": SPACE_FAN}, {"history": ["nope"]}]})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("users[1]: unknown item 'nope'")


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["catalog_size"] == 300 and ready["first_stage"] == "cosine"
    assert client.get("/nowhere").json()["error"]["type"] == "not_found"


def test_the_bearer_token_guards_everything_but_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, shared: tuple[ServeConfig, Any]
) -> None:
    secret = "s3cret-token-value"
    monkeypatch.setenv("MY_TOKEN", secret)
    config = serve_config(tmp_path, token_env="MY_TOKEN")
    _, loaded = shared
    state = ServiceState(
        config=config,
        live=loaded.live,
        rerankers=None,
        batcher=loaded.batcher,
        token=type(loaded.token).from_env("MY_TOKEN"),
    )
    caplog.set_level(logging.DEBUG)
    app = create_app(config, state=state)
    # How another router (the prompt playground) mounts on the service: same state, same token.
    extra = APIRouter()

    @extra.post("/playground/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"items": len(request.app.state.zsgen.catalog)}

    app.include_router(extra, dependencies=[Depends(require_token)])
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        user = {"history": SPACE_FAN, "k": 2}
        assert c.get("/healthz").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {secret}"}):
            refused = c.post("/v1/recommendations", json=user, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"]["type"] == "unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer"
        assert c.get("/readyz").status_code == 401
        assert c.put("/v1/items/x1", json={"title": "t"}).status_code == 401
        ok = c.post("/v1/recommendations", json=user, headers={"Authorization": f"Bearer {secret}"})
        assert ok.status_code == 200
        assert c.post("/playground/echo").status_code == 401
        mounted = c.post("/playground/echo", headers={"Authorization": f"Bearer {secret}"})
        assert mounted.json() == {"items": 300}
    assert secret not in caplog.text
    assert secret not in repr(state)


@pytest.mark.slow
def test_items_added_and_retired_at_runtime_survive_a_restart(tmp_path: Path) -> None:
    config = serve_config(tmp_path, store=str(tmp_path / "items.jsonl"), k_max=400)
    twin = {
        "title": "Halcyon Drift Again",
        "year": 1984,
        "genres": ["Science Fiction"],
        "description": "Three centuries into their voyage, the crew of a generation starship begin to doubt the "
        "destination their ancestors chose.",
    }
    user = {"history": ["m098"], "k": 10}
    with TestClient(create_app(config), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        before = [i["id"] for i in c.post("/v1/recommendations", json=user).json()["items"]]
        assert "new-1" not in before
        put = c.put("/v1/items/new-1", json=twin)
        assert put.status_code == 201 and put.json()["created"] is True and put.json()["catalog_size"] == 301
        after = [i["id"] for i in c.post("/v1/recommendations", json=user).json()["items"]]
        assert after[0] == "new-1"  # its text is the history item's: the closest item there is
        assert c.put("/v1/items/new-1", json={**twin, "title": "Halcyon Drift II"}).json()["created"] is False
        gone = before[0]
        assert c.delete(f"/v1/items/{gone}").json()["retired"] is True
        everything = c.post("/v1/recommendations", json={"history": ["m098"], "k": 299}).json()["items"]
        assert len(everything) == 299  # 301 items, one seen, one retired: every other item, and not that one
        assert gone not in [i["id"] for i in everything]
        too_many = c.post("/v1/recommendations", json={"history": ["m098"], "k": 300})
        assert too_many.json()["error"]["type"] == "invalid_k"
        assert (
            c.post("/v1/recommendations", json={"history": [gone], "k": 3}).status_code == 200
        )  # still a history item
        missing = c.delete("/v1/items/new-2")
        assert missing.status_code == 404 and missing.json()["error"]["suggestions"] == ["new-1"]
        served = c.post("/v1/recommendations", json=user).json()
    with TestClient(
        create_app(config), base_url="http://127.0.0.1", raise_server_exceptions=False
    ) as c:  # a restart: models and store reloaded
        again = c.post("/v1/recommendations", json=user).json()
        assert [(i["id"], i["title"]) for i in again["items"]] == [(i["id"], i["title"]) for i in served["items"]]
        assert again["items"][0]["title"] == "Halcyon Drift II" and gone not in [i["id"] for i in again["items"]]
        assert c.get("/readyz").json()["retired"] == 1
        assert c.put(f"/v1/items/{gone}", json={"title": "Back again"}).json()["created"] is False
        every = c.post("/v1/recommendations", json={"history": ["m098"], "k": 300}).json()["items"]
        assert gone in [i["id"] for i in every]  # put back: recommendable again


def test_an_item_needs_a_title(client: TestClient) -> None:
    response = client.put("/v1/items/x9", json={"title": "  "})
    assert response.status_code == 422 and response.json()["error"]["type"] == "invalid_request"


def test_a_bad_config_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('dataset = { path = "nowhere" }\nmax_btach = 3\n', encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("zsgen: error: ") and "max_btach: unknown key" in err and "\n" not in err
    path.write_text('dataset = { path = "nowhere" }\n', encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 1
    assert "does not exist" in capsys.readouterr().err
