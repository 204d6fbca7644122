"""The prompt playground's HTTP API, through the app ``zsgen serve`` builds from a real serve config (the demo catalog
and a small log written to files, the packaged MiniLM cosine first stage, a scripted LLM server on loopback), on a
real uvicorn (zsgen/testing/playground.py). The browser tests (test_playground_browser.py) drive the page."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.itemtext import display_title
from zsgen.loaders import load_demo
from zsgen.paths import prompts_dir
from zsgen.rerank import RerankConfig, Reranker
from zsgen.retrieval import Retriever
from zsgen.templates import PromptTemplate
from zsgen.testing.playground import ALPHABETICAL, GARBLE, STUTTER, LiveApp, answer_for, serve_playground

TOKEN = "s3cret-playground-token"


@pytest.fixture(scope="module")
def retriever() -> Retriever:
    from zsgen.embed import default_encoder

    return Retriever(load_demo().catalog, default_encoder(cache=False))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with serve_playground(tmp_path_factory.mktemp("playground"), token=TOKEN) as live:
        yield live


@pytest.fixture(scope="module")
def listwise() -> str:
    return (prompts_dir() / "listwise.jinja").read_text(encoding="utf-8")


def call(app: LiveApp, path: str, body: Any = None, *, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{app.base_url}/playground/api{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def edited(source: str, old: str, new: str) -> str:
    assert old in source, old
    return source.replace(old, new, 1)


def ndcg10(rank: int | None) -> float:
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < 10 else 0.0


# -- page and auth --------------------------------------------------------------------------------------------------
def test_page_loads_without_the_token_and_holds_no_data(app: LiveApp) -> None:
    with urllib.request.urlopen(f"{app.base_url}/playground", timeout=30) as response:
        html = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert 'data-api="/playground/api"' in html and "playground.js" in html
    assert "u00" not in html and "<<system>>" not in html  # no user ids, no template text without the token
    for asset, kind in (("playground.js", "javascript"), ("playground.css", "css")):
        with urllib.request.urlopen(f"{app.base_url}/playground/static/{asset}", timeout=30) as response:
            assert kind in response.headers["Content-Type"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{app.base_url}/playground/static/..%2Froutes.py", timeout=30)
    assert missing.value.code == 404


def test_the_api_needs_the_token_the_service_asks_for(app: LiveApp) -> None:
    assert call(app, "/info", token=None)[0] == 401
    assert call(app, "/info", token="wrong")[0] == 401
    status, info = call(app, "/info")
    assert status == 200
    assert info["can_run"] and info["method"] == "listwise" and info["backend"] == "openai"
    assert info["start_template"] == "listwise" and "listwise" in info["templates"]
    assert info["has_users"] and info["users"] == 12
    assert info["max_try_users"] == 50 and info["default_try_users"] == 10


def test_users_typeahead_and_template_text(app: LiveApp, listwise: str) -> None:
    assert call(app, "/users?prefix=u0&limit=3") == (200, ["u00", "u01", "u02"])
    assert call(app, "/users?prefix=nobody")[1] == []
    status, found = call(app, "/templates/listwise")
    assert status == 200 and found == {"name": "listwise", "origin": "packaged", "source": listwise}
    status, error = call(app, "/templates/no_such")
    assert status == 404 and "no template named 'no_such'" in error["detail"]


# -- render ---------------------------------------------------------------------------------------------------------
def test_render_shows_the_edit_for_a_dataset_user(app: LiveApp, listwise: str) -> None:
    asked = len(app.llm.chat_requests)
    source = edited(listwise, "You are a recommender system.", "You are a film buff with strong opinions.")
    status, result = call(app, "/render", {"template": source, "user": {"user_id": "u01"}})
    assert status == 200, result
    assert [m["role"] for m in result["messages"]] == ["system", "user"]
    assert "film buff with strong opinions" in result["messages"][0]["content"]
    assert result["user"]["label"] == "user u01" and len(result["user"]["history"]) == 5
    catalog = app.dataset.catalog
    first = result["first_stage"]
    assert len(first) == 12 and all(item["title"] == catalog.get(item["id"]).title for item in first)
    assert all(item["title"].split(",")[0] in result["messages"][1]["content"] for item in first)
    target = result["user"]["target"]["id"]
    ids = [item["id"] for item in first]
    assert result["target_rank_first_stage"] == (ids.index(target) if target in ids else None)
    assert len(app.llm.chat_requests) == asked  # rendering asks no model


def test_render_a_typed_user_by_titles_and_profile(app: LiveApp, listwise: str) -> None:
    catalog: Catalog = app.dataset.catalog
    titles = [catalog[0].title, catalog[1].title]
    body = {"template": listwise, "user": {"history": titles, "profile": "loves quiet documentaries"}}
    status, result = call(app, "/render", body)
    assert status == 200, result
    assert [h["id"] for h in result["user"]["history"]] == [catalog[0].id, catalog[1].id]
    assert result["user"]["target"] is None and result["target_rank_first_stage"] is None
    assert "loves quiet documentaries" in result["messages"][1]["content"]


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({}, "pick a dataset user"),
        ({"user_id": "nobody"}, "no user 'nobody'"),
        ({"user_id": "u01", "profile": "x"}, "not both"),
        ({"history": ["No Such Film At All"]}, "No Such Film At All"),
    ],
)
def test_render_refuses_a_user_it_cannot_resolve(app: LiveApp, listwise: str, user: Any, message: str) -> None:
    status, error = call(app, "/render", {"template": listwise, "user": user})
    assert status == 400 and message in error["detail"] and "\n" not in error["detail"]


def test_render_reports_a_runtime_template_error_with_its_line(app: LiveApp, listwise: str) -> None:
    source = edited(listwise, "{{ loop.index }}.", "{{ loop.index }}. {{ no_such_name }}")
    line = source.splitlines().index(next(x for x in source.splitlines() if "no_such_name" in x)) + 1
    status, error = call(app, "/render", {"template": source, "user": {"user_id": "u01"}})
    assert status == 422
    assert error["line"] == line and error["detail"] == f"line {line}: undefined: 'no_such_name' is undefined"


def test_the_sandbox_blocks_python_internals(app: LiveApp, listwise: str) -> None:
    source = edited(listwise, "Reply with the JSON object only.", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    status, error = call(app, "/render", {"template": source, "user": {"user_id": "u01"}})
    line = source.splitlines().index("{{ ''.__class__.__mro__[1].__subclasses__() }}") + 1
    assert status == 422 and error["line"] == line
    assert error["detail"] == (
        f"line {line}: unsafe operation blocked by the sandbox: access to attribute '__class__' of 'str' object is "
        "unsafe."
    )


# -- run ------------------------------------------------------------------------------------------------------------
def test_run_shows_the_answer_and_the_reranked_order_and_an_edit_changes_it(app: LiveApp, listwise: str) -> None:
    before = len(app.llm.chat_requests)
    status, plain = call(app, "/run", {"template": listwise, "user": {"user_id": "u02"}})
    assert status == 200, plain
    first_ids = [i["id"] for i in plain["first_stage"]]
    assert [i["id"] for i in plain["reranked"]] == first_ids[::-1]  # the scripted LLM reverses the shown order
    assert plain["parse_status"] == "ok" and not plain["fallback"] and plain["repairs"] == []
    assert json.loads(plain["raw_text"]) == {"ranking": answer_for(plain["messages"][1]["content"])}
    sent = app.llm.chat_requests[before:]
    assert len(sent) == 1 and plain["calls"] == [sent[0].body["messages"]]  # the messages shown are those sent
    assert plain["calls"][0] == plain["messages"] and plain["model"] == "scripted-model"

    alpha = edited(listwise, "Reply with the JSON object only.", f"Order them {ALPHABETICAL}LY by title.")
    status, sorted_run = call(app, "/run", {"template": alpha, "user": {"user_id": "u02"}})
    assert status == 200
    reranked = [i["id"] for i in sorted_run["reranked"]]
    titles = [display_title(app.dataset.catalog.get(i).title).lower() for i in reranked]  # as the prompt shows them
    assert titles == sorted(titles)
    assert reranked != first_ids and reranked != first_ids[::-1]
    assert sorted_run["template_hash"] == PromptTemplate("x", alpha).hash != plain["template_hash"]
    target = plain["user"]["target"]["id"]
    assert plain["target_rank_reranked"] == (reranked_index(plain, target))


def reranked_index(result: dict[str, Any], target: str) -> int | None:
    ids = [i["id"] for i in result["reranked"]]
    return ids.index(target) if target in ids else None


def test_run_shows_repairs_and_fallbacks(app: LiveApp, listwise: str) -> None:
    stutter = edited(listwise, "Reply with the JSON object only.", f"{STUTTER}: reply with the JSON object only.")
    status, repaired = call(app, "/run", {"template": stutter, "user": {"user_id": "u03"}})
    assert status == 200 and repaired["parse_status"] == "repaired" and repaired["repairs"]
    assert not repaired["fallback"]
    garble = edited(listwise, "Reply with the JSON object only.", f"{GARBLE}.")
    status, fell = call(app, "/run", {"template": garble, "user": {"user_id": "u03"}})
    assert status == 200 and fell["fallback"] and fell["fallback_reason"] == "unparseable"
    assert fell["parse_status"] == "fallback" and "rather not rank" in fell["raw_text"]
    assert [i["id"] for i in fell["reranked"]] == [i["id"] for i in fell["first_stage"]]  # cosine order


def test_run_refuses_a_template_the_method_cannot_read(app: LiveApp) -> None:
    pointwise = (prompts_dir() / "pointwise.jinja").read_text(encoding="utf-8")
    before = len(app.llm.chat_requests)
    status, error = call(app, "/run", {"template": pointwise, "user": {"user_id": "u01"}})
    assert status == 400 and "output: yes_no" in error["detail"] and "listwise" in error["detail"]
    assert len(app.llm.chat_requests) == before


# -- check ----------------------------------------------------------------------------------------------------------
def test_check_lists_problems_with_line_numbers(app: LiveApp, listwise: str) -> None:
    assert call(app, "/check", {"template": listwise}) == (200, {"ok": True, "problems": []})
    broken = edited(listwise, "{% endfor %}", "{% endfo %}")
    line = broken.splitlines().index("{% endfo %}") + 1
    status, result = call(app, "/check", {"template": broken})
    assert status == 200 and not result["ok"]
    assert result["problems"][0]["line"] == line and "endfo" in result["problems"][0]["message"]
    undeclared = edited(listwise, "Reply with the JSON object only.", "{{ mood }}")
    problems = call(app, "/check", {"template": undeclared})[1]["problems"]
    assert any(p["message"].startswith("uses variable 'mood'") and p["line"] for p in problems)
    pointwise = (prompts_dir() / "pointwise.jinja").read_text(encoding="utf-8")
    problems = call(app, "/check", {"template": pointwise})[1]["problems"]
    output_line = pointwise.splitlines().index("output: yes_no") + 1
    message = "declares output: yes_no, but method 'listwise' reads output: labels"
    assert problems == [{"line": output_line, "message": message}]
    assert call(app, "/check", {"template": "x" * 100_001})[0] == 422  # the body's own bound


# -- try on N users -------------------------------------------------------------------------------------------------
def test_try_runs_a_paired_comparison_on_held_out_users(app: LiveApp, listwise: str) -> None:
    status, result = call(app, "/try", {"template": listwise, "n": 8})
    assert status == 200, result
    assert result["n"] == 8 and len(result["users"]) == 8 and result["k"] == 10 and result["candidates"] == 12
    assert len({u["user_id"] for u in result["users"]}) == 8 and result["fallbacks"] == 0
    first = [ndcg10(u["first_stage_rank"]) for u in result["users"]]
    reranked = [ndcg10(u["reranked_rank"]) for u in result["users"]]
    assert result["first_stage"]["mean"] == pytest.approx(sum(first) / 8)
    assert result["reranked"]["mean"] == pytest.approx(sum(reranked) / 8)
    difference = result["difference"]
    assert difference["mean"] == pytest.approx((sum(reranked) - sum(first)) / 8)
    assert difference["low"] <= difference["mean"] <= difference["high"]
    for user in result["users"]:  # reversed lists of 12: a retrieved target moves from r to 11 - r
        if user["first_stage_rank"] is not None:
            assert user["reranked_rank"] == 11 - user["first_stage_rank"]
    assert any(u["first_stage_rank"] is not None for u in result["users"])  # the comparison is not all misses

    garble = edited(listwise, "Reply with the JSON object only.", f"{GARBLE}.")
    status, fell = call(app, "/try", {"template": garble, "n": 3})
    assert status == 200 and fell["fallbacks"] == 3 and fell["difference"]["mean"] == 0.0


@pytest.mark.parametrize(("n", "status"), [(0, 422), (51, 400)])
def test_try_is_bounded(app: LiveApp, listwise: str, n: int, status: int) -> None:
    assert call(app, "/try", {"template": listwise, "n": n})[0] == status


# -- save -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["../escape.jinja", "a/b.jinja", "notes.txt", ".jinja", "x.jinja/..", "", "evil.jinja\n", "listwise.jinja"]
)
def test_save_refuses_names_outside_the_folder_or_shadowing_a_packaged_template(
    app: LiveApp, listwise: str, name: str
) -> None:
    call(app, "/info")  # the service is built (it creates the save folder) before the folder is looked at
    before = sorted(app.template_dir.parent.rglob("*"))
    status, error = call(app, "/save", {"template": listwise, "name": name})
    assert status == 400 and "file name" in error["detail"]
    assert sorted(app.template_dir.parent.rglob("*")) == before  # nothing written, inside the folder or beside it


def test_save_writes_checks_and_refuses_to_overwrite_unless_asked(app: LiveApp, listwise: str) -> None:
    broken = edited(listwise, "{% endfor %}", "{% endfo %}")
    status, error = call(app, "/save", {"template": broken, "name": "broken.jinja"})
    assert status == 422 and error["line"] is not None
    assert not (app.template_dir / "broken.jinja").exists()

    mine = edited(listwise, "You are a recommender system.", "You are my recommender.")
    assert call(app, "/save", {"template": mine, "name": "mine.jinja"}) == (
        200,
        {"name": "mine.jinja", "overwritten": False},
    )
    assert (app.template_dir / "mine.jinja").read_text(encoding="utf-8") == mine
    status, error = call(app, "/save", {"template": listwise, "name": "mine.jinja"})
    assert status == 409 and "overwrite" in error["detail"]
    assert (app.template_dir / "mine.jinja").read_text(encoding="utf-8") == mine
    status, saved = call(app, "/save", {"template": listwise, "name": "mine.jinja", "overwrite": True})
    assert status == 200 and saved["overwritten"]
    assert (app.template_dir / "mine.jinja").read_text(encoding="utf-8") == listwise
    assert [p.name for p in app.template_dir.iterdir()] == ["mine.jinja"]  # no temporary file left behind
    assert "mine" in call(app, "/info")[1]["templates"]
    assert call(app, "/templates/mine")[1]["origin"] == "user"


def test_save_name_may_leave_out_the_suffix(app: LiveApp, listwise: str) -> None:
    """Requests name templates without ``.jinja``; the save name may too, and the answer names the file."""
    status, saved = call(app, "/save", {"template": listwise, "name": "bare_name"})
    assert (status, saved) == (200, {"name": "bare_name.jinja", "overwritten": False})
    assert (app.template_dir / "bare_name.jinja").read_text(encoding="utf-8") == listwise
    assert call(app, "/save", {"template": listwise, "name": "bare_name"})[0] == 409
    assert "bare_name" in call(app, "/info")[1]["templates"]


# -- without an LLM -------------------------------------------------------------------------------------------------
def test_without_rerank_settings_render_and_check_work_and_run_says_why_not(
    app: LiveApp, tmp_path: Path, listwise: str
) -> None:
    cache = Path(app.config.embedding_cache or "")  # the catalog is already encoded there
    with serve_playground(tmp_path, with_llm=False, embedding_cache=cache) as bare:
        info = call(bare, "/info", token=None)[1]
        assert not info["can_run"] and info["method"] is None and info["start_template"] == "listwise"
        assert call(bare, "/render", {"template": listwise, "user": {"user_id": "u01"}}, token=None)[0] == 200
        assert call(bare, "/check", {"template": listwise}, token=None)[1]["ok"]
        status, error = call(bare, "/run", {"template": listwise, "user": {"user_id": "u01"}}, token=None)
        assert status == 400 and "no LLM configured" in error["detail"]
        assert bare.llm.chat_requests == []


# -- the rerank hook ------------------------------------------------------------------------------------------------
def test_with_template_shares_the_backend_and_checks_the_output(listwise: str) -> None:
    catalog = load_demo().catalog
    base = Reranker(RerankConfig(backend="openai", base_url="http://127.0.0.1:9/v1"), catalog=catalog, api_key="sk")
    clone = base.with_template(PromptTemplate("edit", edited(listwise, "You are", "You are, today,")))
    assert clone.backend is base.backend and clone.templates[-1].name == "edit" and base.templates[-1].name != "edit"
    assert clone.template_hash != base.template_hash and clone.method is not base.method
    pointwise = (prompts_dir() / "pointwise.jinja").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="output: yes_no"):
        base.with_template(PromptTemplate("p", pointwise))
    base.close()


def test_one_router_serves_page_and_api(retriever: Retriever, tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from zsgen.recommender import Recommender
    from zsgen.serve.playground import PlaygroundContext, build_playground_router

    demo = load_demo()
    ctx = PlaygroundContext(
        dataset=demo,
        recommender=Recommender(demo.catalog, retriever=retriever),
        rerank_config=None,
        template_dir=tmp_path,
    )
    app = FastAPI()
    app.include_router(build_playground_router(ctx))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/playground").status_code == 200
        info = client.get("/playground/api/info").json()
        assert info["has_users"] is False and info["users"] == 0 and not info["can_run"]
        error = client.post("/playground/api/try", json={"template": "x"}).json()
        assert "header" in error["detail"]  # the template is compiled before users are looked for
        listwise = (prompts_dir() / "listwise.jinja").read_text(encoding="utf-8")
        response = client.post("/playground/api/render", json={"template": listwise, "user": {"user_id": "1"}})
        assert response.status_code == 400 and "no interaction log" in response.json()["detail"]


@pytest.mark.data
@pytest.mark.slow
def test_try_on_movielens_with_the_fused_first_stage(shared_data: Path, tmp_path: Path, listwise: str) -> None:
    """The real ML-100K, its default (fused) first stage and a scripted LLM: held-out users come from the RecBole
    log, and the paired comparison follows the per-user ranks."""
    from zsgen.embed import default_encoder
    from zsgen.loaders import load_dataset
    from zsgen.recommender import Recommender
    from zsgen.serve.playground import Playground, PlaygroundContext
    from zsgen.testing.playground import responder
    from zsgen.testing.servers import ScriptedServer

    ml = load_dataset(shared_data / "ml-100k")
    encoder = default_encoder(cache=tmp_path / "emb.sqlite")
    recommender = Recommender(ml.catalog, encoder=encoder, interactions=ml.interactions)
    with ScriptedServer(responder=responder) as llm:
        config = RerankConfig(backend="openai", base_url=llm.base_url, model="scripted-model", candidates=20)
        ctx = PlaygroundContext(
            dataset=ml, recommender=recommender, rerank_config=config, template_dir=tmp_path, api_key="sk-test"
        )
        playground = Playground(ctx)
        user = playground.users.resolve(recommender, user_id="1", history=None, profile=None)
        rendered = playground.render(listwise, user)
        assert len(rendered.first_stage) == 20 and rendered.user.target is not None
        assert all(i.source == "fusion" for i in rendered.first_stage)
        result = playground.try_users(listwise, 10)
        ctx.close()
    assert result.n == 10 and result.fallbacks == 0 and len(llm.chat_requests) == 10
    for row in result.users:
        assert row.reranked_rank == (None if row.first_stage_rank is None else 19 - row.first_stage_rank)
    first = sum(ndcg10(r.first_stage_rank) for r in result.users) / 10
    assert result.first_stage.mean == pytest.approx(first)


def test_a_chain_method_shows_every_call_sent_with_the_real_answers(retriever: Retriever, tmp_path: Path) -> None:
    """NIR renders three templates; the page edits the last. Render fills the earlier answers with placeholders (and
    says so); run shows the three calls as sent, the later ones carrying the earlier answers."""
    from zsgen.recommender import Recommender
    from zsgen.serve.playground import Playground, PlaygroundContext
    from zsgen.testing.playground import demo_dataset, responder
    from zsgen.testing.servers import ScriptedServer

    dataset = demo_dataset()
    rank_step = (prompts_dir() / "nir_rank.jinja").read_text(encoding="utf-8")
    edit = edited(rank_step, "Candidates, each with a label in square brackets:", "Candidates, labelled in brackets:")
    with ScriptedServer(responder=responder) as llm:
        config = RerankConfig(method="nir", backend="openai", base_url=llm.base_url, model="m", candidates=6)
        ctx = PlaygroundContext(
            dataset=dataset,
            recommender=Recommender(dataset.catalog, retriever=retriever),
            rerank_config=config,
            template_dir=tmp_path,
            api_key="sk-test",
        )
        playground = Playground(ctx)
        user = playground.users.resolve(ctx.recommender, user_id="u05", history=None, profile=None)
        rendered = playground.render(edit, user)
        assert rendered.note and "placeholders" in rendered.note
        assert "(step 1's answer, filled in when run)" in rendered.messages[-1]["content"]
        result = playground.run(edit, user)
        sent = [r.body["messages"] for r in llm.chat_requests]
        ctx.close()
    assert result.calls == sent and len(sent) == 3
    assert "Candidates, labelled in brackets:" in sent[2][-1]["content"]
    assert "filled in when run" not in sent[2][-1]["content"]
    assert result.note is None and result.parse_status in {"ok", "repaired"}
    assert [i.id for i in result.reranked] == [i.id for i in result.first_stage][::-1]
