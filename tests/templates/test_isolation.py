"""A user's template that runs one long operation (a single filter over a huge list: the sandbox's budget is only
checked between operations) is stopped at the render limit in a worker process, and never holds the service's event
loop: /healthz and other users' requests are answered meanwhile, and the request that named it answers a flagged
fallback saying the template hit a limit."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zsgen.errors import TemplateError
from zsgen.paths import prompts_dir
from zsgen.templates import PromptTemplate, sample_variables, worker

#: One filter call over 50,000 strings of 400,000 characters: past the 1 s budget, but nothing checks it meanwhile.
HOSTILE = "{% set _b = (['a' * 400000] * 50000)|max %}"


def hostile_copy(folder: Path, name: str = "stall") -> Path:
    """The packaged listwise template with the hostile line after its ``<<user>>`` marker, saved as a user's file."""
    lines = (prompts_dir() / "listwise.jinja").read_text(encoding="utf-8").splitlines()
    at = next(number for number, line in enumerate(lines) if "<<user>>" in line) + 1
    path = folder / f"{name}.jinja"
    path.write_text("\n".join([*lines[:at], HOSTILE, *lines[at:]]) + "\n", encoding="utf-8")
    return path


def test_a_user_template_renders_in_a_worker_exactly_as_in_process(tmp_path: Path) -> None:
    packaged = PromptTemplate.from_file(prompts_dir() / "listwise.jinja")
    copy = tmp_path / "mine.jinja"
    copy.write_text(packaged.source, encoding="utf-8")
    mine = PromptTemplate.from_file(copy)
    assert mine.isolated and not packaged.isolated
    assert mine.render(**sample_variables()) == packaged.render(**sample_variables())


def test_a_long_operation_is_stopped_at_the_limit_and_the_next_render_works(tmp_path: Path) -> None:
    stall = PromptTemplate.from_file(hostile_copy(tmp_path))
    with pytest.raises(TemplateError, match="template limit exceeded: time") as caught:
        stall.render(**sample_variables())
    assert caught.value.limit == "time" and str(tmp_path) in str(caught.value)
    fine = tmp_path / "fine.jinja"
    fine.write_text((prompts_dir() / "listwise.jinja").read_text(encoding="utf-8"), encoding="utf-8")
    assert PromptTemplate.from_file(fine).render(**sample_variables())  # a fresh worker took over


def test_a_template_error_in_the_worker_keeps_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jinja"
    source = (prompts_dir() / "listwise.jinja").read_text(encoding="utf-8").replace("<<user>>", "<<user>>\n{{ 1 / 0 }}")
    path.write_text(source, encoding="utf-8")
    with pytest.raises(TemplateError, match="ZeroDivisionError") as caught:
        PromptTemplate.from_file(path).render(**sample_variables())
    assert caught.value.line is not None and caught.value.limit is None


# -- through the service ----------------------------------------------------------------------------------------

pytest.importorskip("fastapi")

LABEL = re.compile(r"^\[([A-Z]{1,2})\]", re.MULTILINE)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from zsgen.loaders import demo_catalog_path
    from zsgen.serve.app import create_app
    from zsgen.serve.config import config_from_dict
    from zsgen.testing.serve_app import running
    from zsgen.testing.servers import Reply, ScriptedServer, completion_body

    def answer(body: Any) -> Reply:
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        return Reply(body=completion_body(json.dumps({"ranking": LABEL.findall(prompt)[::-1]})))

    folder = tmp_path_factory.mktemp("isolation")
    hostile_copy(folder)
    with ScriptedServer(responder=answer) as llm:
        config = config_from_dict(
            {
                "dataset": {"path": str(demo_catalog_path())},
                "embedding_cache": str(folder / "emb.sqlite"),
                "deadline_s": 60.0,
                "per_request": ["template"],
                "rerank": {
                    "method": "listwise",
                    "backend": "openai",
                    "base_url": llm.base_url,
                    "model": "scripted-model",
                    "candidates": 6,
                    "max_retries": 0,
                    "template_dir": str(folder),
                },
            }
        )
        with running(create_app(config)) as url:
            yield url


@pytest.mark.slow
def test_the_service_answers_others_while_a_template_stalls(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2

    rendering = threading.Event()
    ask = worker._Worker.ask

    def watched(self: worker._Worker, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        if "_b = " in request["source"]:
            rendering.set()
        return ask(self, request, timeout)

    monkeypatch.setattr(worker._Worker, "ask", watched)
    stalled: dict[str, Any] = {}

    def name_the_stalling_template() -> None:
        body = {"history": ["m098"], "k": 3, "rerank": {"template": "stall"}}
        stalled.update(httpx2.post(f"{service}/v1/recommendations", json=body, timeout=120).json())

    thread = threading.Thread(target=name_the_stalling_template)
    thread.start()
    try:
        assert rendering.wait(120), "the user's template never reached a worker process"
        with httpx2.Client(base_url=service, timeout=120) as client:
            assert client.get("/healthz").status_code == 200
            other = client.post("/v1/recommendations", json={"history": ["m002"], "k": 3})
            still_stalled = thread.is_alive()
        assert other.status_code == 200 and other.json()["fallback"] is False
        assert still_stalled, "the other requests waited for the stalled render"
    finally:
        thread.join(120)
    assert stalled["fallback"] is True and stalled["fallback_reason"] == "template_limit"
