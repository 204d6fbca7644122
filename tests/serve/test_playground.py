"""The prompt playground inside ``zsgen serve``: mounted by ``create_app`` from the config's ``[playground]`` table,
on a real uvicorn, with a real loopback LLM server and the packaged MiniLM. The page is public, its API sits behind
the service's token and outside its OpenAPI schema, it follows items put and retired at runtime, and a template
saved in the playground is one the service can then serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

import httpx2

from zsgen.errors import ConfigError
from zsgen.loaders import demo_catalog_path
from zsgen.serve.app import create_app
from zsgen.serve.config import ServeConfig, config_from_dict, load_serve_config
from zsgen.testing.playground import GARBLE, responder
from zsgen.testing.serve_app import running
from zsgen.testing.servers import ScriptedServer

TOKEN = "playground-in-service-token"
TOKEN_ENV = "ZSGEN_TEST_PLAYGROUND_TOKEN"
SPACE_FAN = ["m098", "m002"]  # generation starship, astronomer: science fiction
CANDIDATES = 8


def rerank_table(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "method": "listwise",
        "backend": "openai",
        "base_url": base_url,
        "model": "scripted-model",
        "candidates": CANDIDATES,
        "max_retries": 0,
        **extra,
    }


def base_config(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {"dataset": {"path": str(demo_catalog_path())}, "embedding_cache": str(tmp / "emb.sqlite"), **extra}


# -- configuration --------------------------------------------------------------------------------------------------
def test_a_playground_needs_a_folder_to_save_into(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="playground: give template_dir"):
        config_from_dict(base_config(tmp_path, playground={}))


def test_the_playground_and_the_reranker_share_one_template_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    shared = config_from_dict(
        base_config(tmp_path, playground={"template_dir": str(tmp_path / "mine")}, rerank=rerank_table("http://x/v1"))
    )
    assert shared.rerank is not None and shared.rerank.template_dir == tmp_path / "mine"

    (tmp_path / "other").mkdir()
    differing = base_config(
        tmp_path,
        playground={"template_dir": str(tmp_path / "mine")},
        rerank=rerank_table("http://x/v1", template_dir=str(tmp_path / "other")),
    )
    with pytest.raises(ConfigError, match="differ: templates saved in the playground would not be the ones served"):
        config_from_dict(differing)

    # Given only as the reranker's folder, the playground saves there.
    only_rerank = config_from_dict(
        base_config(tmp_path, playground={}, rerank=rerank_table("http://x/v1", template_dir=str(tmp_path / "other")))
    )
    assert only_rerank.playground is not None and only_rerank.playground.template_dir is None


def test_a_relative_template_folder_is_beside_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        f'dataset = {{ path = "{demo_catalog_path().as_posix()}" }}\n[playground]\ntemplate_dir = "prompts"\n',
        encoding="utf-8",
    )
    config = load_serve_config(path)
    assert config.playground is not None and config.playground.template_dir == str(tmp_path / "prompts")


def test_an_unknown_playground_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_try_user"):
        config_from_dict(base_config(tmp_path, playground={"template_dir": str(tmp_path), "max_try_user": 5}))


def test_without_a_playground_table_there_is_no_page(tmp_path: Path) -> None:
    config = config_from_dict(base_config(tmp_path))
    with running(create_app(config)) as url, httpx2.Client(base_url=url, timeout=60) as client:
        assert client.get("/playground").status_code == 404
        assert client.get("/healthz").status_code == 200


# -- the mounted playground -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedServer]:
    with ScriptedServer(responder=responder) as server:
        yield server


@pytest.fixture(scope="module")
def config(llm: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> ServeConfig:
    folder = tmp_path_factory.mktemp("serve-playground")
    return config_from_dict(
        base_config(
            folder,
            token_env=TOKEN_ENV,
            per_request=["template"],
            rerank=rerank_table(llm.base_url),
            playground={"template_dir": str(folder / "prompts"), "default_try_users": 3},
        )
    )


@pytest.fixture(scope="module")
def service(config: ServeConfig) -> Iterator[httpx2.Client]:
    """The service (token required) on a real uvicorn; the client sends no token unless a test adds it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_ENV, TOKEN)
        with running(create_app(config)) as url, httpx2.Client(base_url=url, timeout=120) as client:
            yield client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_template(service: httpx2.Client) -> str:
    info = service.get("/playground/api/info", headers=AUTH).json()
    template = service.get(f"/playground/api/templates/{info['start_template']}", headers=AUTH).json()
    return str(template["source"])


def test_the_page_is_public_and_its_api_needs_the_token(service: httpx2.Client, config: ServeConfig) -> None:
    page = service.get("/playground")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    refused = service.get("/playground/api/info")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "missing or wrong bearer token"
    assert service.get("/playground/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    info = service.get("/playground/api/info", headers=AUTH)
    assert info.status_code == 200
    body = info.json()
    assert body["can_run"] is True and body["method"] == "listwise" and body["model"] == "scripted-model"
    assert body["default_try_users"] == 3
    assert config.playground is not None and Path(config.playground.template_dir or "").is_dir()  # created at start


def test_the_playground_api_is_not_in_the_services_schema(service: httpx2.Client) -> None:
    paths = service.get("/openapi.json").json()["paths"]
    assert "/v1/recommendations" in paths
    assert not [path for path in paths if path.startswith("/playground")]


def test_a_run_reranks_the_services_own_first_stage(service: httpx2.Client) -> None:
    template = start_template(service)
    run = service.post(
        "/playground/api/run", json={"template": template, "user": {"history": SPACE_FAN}}, headers=AUTH
    ).json()
    first_stage = [item["id"] for item in run["first_stage"]]
    reranked = [item["id"] for item in run["reranked"]]
    assert run["fallback"] is False and run["parse_status"] == "ok"
    assert reranked == first_stage[::-1]  # the scripted LLM answers the shown labels reversed
    served = service.post(
        "/v1/recommendations", json={"history": SPACE_FAN, "k": CANDIDATES, "use_llm": False}, headers=AUTH
    ).json()
    assert first_stage == [item["id"] for item in served["items"]]


def test_items_put_and_retired_at_runtime_are_seen_by_the_playground(service: httpx2.Client) -> None:
    template = start_template(service)
    profile = "a lighthouse keeper's cat who paints seascapes"

    def first_stage() -> list[str]:
        rendered = service.post(
            "/playground/api/render", json={"template": template, "user": {"profile": profile}}, headers=AUTH
        )
        assert rendered.status_code == 200, rendered.text
        return [item["id"] for item in rendered.json()["first_stage"]]

    assert "cat-painter" not in first_stage()
    item = {"title": "The Lighthouse Cat", "description": "A lighthouse keeper's cat paints seascapes at night."}
    assert service.put("/v1/items/cat-painter", json=item, headers=AUTH).status_code == 201
    try:
        assert first_stage()[0] == "cat-painter"
        history = service.post(
            "/playground/api/render",
            json={"template": template, "user": {"history": ["The Lighthouse Cat"]}},
            headers=AUTH,
        ).json()
        assert [entry["id"] for entry in history["user"]["history"]] == ["cat-painter"]  # its title resolves too
    finally:
        assert service.delete("/v1/items/cat-painter", headers=AUTH).status_code == 200
    assert "cat-painter" not in first_stage()


def test_a_template_saved_in_the_playground_is_served(service: httpx2.Client, config: ServeConfig) -> None:
    source = start_template(service)
    assert "Reply with the JSON object only." in source
    garbled = source.replace("Reply with the JSON object only.", f"{GARBLE}.", 1)  # the scripted LLM answers prose
    saved = service.post(
        "/playground/api/save", json={"name": "garbled_listwise.jinja", "template": garbled}, headers=AUTH
    )
    assert saved.status_code == 200, saved.text
    assert config.playground is not None
    assert (Path(config.playground.template_dir or "") / "garbled_listwise.jinja").read_text() == garbled

    names = service.get("/playground/api/info", headers=AUTH).json()["templates"]
    assert "garbled_listwise" in names
    body = {"history": SPACE_FAN, "k": 5, "rerank": {"template": "garbled_listwise"}}
    served = service.post("/v1/recommendations", json=body, headers=AUTH).json()
    assert served["fallback"] is True and served["fallback_reason"] == "unparseable"
    plain = service.post("/v1/recommendations", json={"history": SPACE_FAN, "k": 5}, headers=AUTH).json()
    assert plain["fallback"] is False

    # Saved again (overwriting) with the packaged text: the next request naming it reads the new file.
    again = {"name": "garbled_listwise.jinja", "template": source, "overwrite": True}
    assert service.post("/playground/api/save", json=again, headers=AUTH).json()["overwritten"] is True
    fixed = service.post("/v1/recommendations", json=body, headers=AUTH).json()
    assert fixed["fallback"] is False and fixed["parse_status"] == "ok"


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_works_in_a_browser_through_the_service(service: httpx2.Client, chromium_path: Path) -> None:
    """Chromium on the service's own page: the service's 401 reads as a prompt for the token, then a typed user is
    rendered and run against the loopback LLM."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM_ARGS

    def press(page: Any, button: str) -> str:
        seq = int(page.get_attribute("#status", "data-seq") or 0)
        page.click(button)
        page.wait_for_selector(f'#status[data-seq="{seq + 1}"]', state="attached")
        return str(page.text_content("#status"))

    def listed(page: Any, list_id: str) -> list[str]:
        return list(page.eval_on_selector_all(f"#{list_id} li", "items => items.map(i => i.dataset.id)"))

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(chromium_path), args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(120_000)  # a loaded shared machine; no pass/fail depends on it
            page.goto(f"{service.base_url}/playground")
            page.wait_for_selector('#status[data-seq="1"]', state="attached")
            status = str(page.text_content("#status"))
            assert "missing or wrong bearer token" in status and "enter the API token" in status
            page.fill("#token", TOKEN)
            assert press(page, "#btn-token") == "load done"
            page.check("#who-typed")
            page.fill("#history", "\n".join(SPACE_FAN))
            assert press(page, "#btn-render") == "render done"
            first_stage = listed(page, "first-stage")
            assert len(first_stage) == CANDIDATES
            assert press(page, "#btn-run") == "run done"
            assert listed(page, "reranked") == first_stage[::-1]
            assert page.text_content("#parse-status") == "ok"
        finally:
            browser.close()
