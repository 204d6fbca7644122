"""The service with a reranker, on a real uvicorn server, against a real loopback LLM server that faults on cue:
an LLM fault or a stall past the deadline is a 200 flagged as a fallback, never a 5xx; LLM calls stay under the
configured bound; per-request rerank options; micro-batching of concurrent retrievals."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

import httpx2

from zsgen.cli import main
from zsgen.loaders import demo_catalog_path
from zsgen.retrieval.base import Request
from zsgen.serve.app import create_app
from zsgen.serve.batching import MicroBatcher
from zsgen.serve.config import ServeConfig, config_from_dict
from zsgen.testing.serve_app import running
from zsgen.testing.servers import Reply, ScriptedServer, completion_body
from zsgen.types import Candidate

LABEL = re.compile(r"^\[([A-Z]+)\] ", re.MULTILINE)
STALL_S = 30.0


def responder(body: Any) -> Reply:
    """Faults chosen by a word in the user's profile; otherwise the candidates' labels in reverse order."""
    prompt = "\n".join(str(m.get("content")) for m in body["messages"])
    if "FAULT500" in prompt:
        return Reply(status=500, body={"error": {"message": "boom", "type": "server_error"}})
    if "STALL" in prompt:
        return Reply(delay=STALL_S, body=completion_body('{"ranking": []}'))
    if "GARBAGE" in prompt:
        return Reply(body=completion_body("I cannot rank these."))
    if "SLOW" in prompt:
        return Reply(delay=0.2, body=completion_body(json.dumps({"ranking": LABEL.findall(prompt)[::-1]})))
    return Reply(body=completion_body(json.dumps({"ranking": LABEL.findall(prompt)[::-1]})))


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedServer]:
    with ScriptedServer(responder=responder) as server:
        yield server


@pytest.fixture(scope="module")
def config(llm: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> ServeConfig:
    folder = tmp_path_factory.mktemp("serve-llm")
    return config_from_dict(
        {
            "dataset": {"path": str(demo_catalog_path())},
            "embedding_cache": str(folder / "emb.sqlite"),
            "deadline_s": 3.0,
            "per_request": ["candidates", "bootstrap"],
            "rerank": {
                "method": "listwise",
                "backend": "openai",
                "base_url": llm.base_url,
                "model": "scripted-model",
                "candidates": 6,
                "max_retries": 0,
                "timeout": 60,
                "concurrency": 2,
            },
        }
    )


@pytest.fixture(scope="module")
def base_url(config: ServeConfig) -> Iterator[str]:
    with running(create_app(config)) as url:
        yield url


async def post_all(url: str, bodies: list[dict[str, Any]]) -> list[httpx2.Response]:
    async with httpx2.AsyncClient(base_url=url, timeout=120) as client:
        return list(await asyncio.gather(*(client.post("/v1/recommendations", json=b) for b in bodies)))


def ids(response: httpx2.Response) -> list[str]:
    return [item["id"] for item in response.json()["items"]]


@pytest.mark.slow
def test_faults_and_stalls_are_flagged_fallbacks_in_first_stage_order(base_url: str) -> None:
    users = {
        "good": {"history": ["m098", "m002"], "k": 6},
        "fault": {"history": ["m098", "m002"], "profile": "FAULT500", "k": 6},
        "stall": {"history": ["m098", "m002"], "profile": "STALL", "k": 6},
        "garbage": {"history": ["m098", "m002"], "profile": "GARBAGE", "k": 6},
    }
    plain = {name: {**body, "use_llm": False} for name, body in users.items()}
    first = dict(zip(plain, asyncio.run(post_all(base_url, list(plain.values()))), strict=True))
    got = dict(zip(users, asyncio.run(post_all(base_url, list(users.values()))), strict=True))
    assert all(r.status_code == 200 for r in got.values()), {n: r.text for n, r in got.items()}
    good = got["good"].json()
    assert not good["fallback"] and good["parse_status"] == "ok"
    assert ids(got["good"]) == ids(first["good"])[::-1]  # the LLM's order (it reverses the shown candidates)
    assert {item["source"] for item in good["items"]} == {"llm"}
    expected_reasons = {"fault": "server_error", "stall": "deadline", "garbage": "unparseable"}
    for name, reason in expected_reasons.items():
        body = got[name].json()
        assert body["fallback"] is True, name
        assert body["fallback_reason"] == reason, (name, body["fallback_reason"])
        assert body["parse_status"] == "fallback"
        assert ids(got[name]) == ids(first[name])  # the first-stage order, every candidate


@pytest.mark.slow
def test_llm_calls_stay_under_the_configured_bound(base_url: str, llm: ScriptedServer) -> None:
    stalled = llm.in_flight  # answers an earlier test's stall still holds back (its client went at the deadline)
    llm.max_in_flight = 0
    bodies = [{"history": [f"m{n:03d}"], "profile": "SLOW", "k": 3} for n in range(10, 18)]
    responses = asyncio.run(post_all(base_url, bodies))
    assert [r.status_code for r in responses] == [200] * 8
    assert not any(r.json()["fallback"] for r in responses)
    assert llm.max_in_flight - stalled == 2  # rerank.concurrency: reached, never passed


@pytest.mark.slow
def test_per_request_rerank_options(base_url: str) -> None:
    [boot, refused, wrong] = asyncio.run(
        post_all(
            base_url,
            [
                {"history": ["m098"], "k": 4, "rerank": {"bootstrap": 3, "candidates": 8}},
                {"history": ["m098"], "k": 4, "rerank": {"fuse_cosine": 0.5}},
                {"history": ["m098"], "k": 4, "rerank": {"candidates": 101}},
            ],
        )
    )
    assert boot.status_code == 200 and boot.json()["usage"]["calls"] == 3
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "rerank_option_not_allowed"
    assert "allowed: candidates, bootstrap" in refused.json()["error"]["message"]
    assert wrong.status_code == 422 and wrong.json()["error"]["type"] == "invalid_rerank_option"


@pytest.mark.slow
def test_a_reranked_recommendation_is_the_json_of_zsgen_recommend(
    base_url: str, config: ServeConfig, llm: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    [served] = asyncio.run(post_all(base_url, [{"history": ["Halcyon Drift", "m002"], "k": 5}]))
    argv = ["recommend", "--catalog", config.dataset.path, "--history", "Halcyon Drift", "m002", "-k", "5", "--json"]
    rerank = ["--rerank", "listwise", "--backend", "openai", "--base-url", llm.base_url, "--model", "scripted-model"]
    assert main([*argv, *rerank, "--candidates", "6", "--embedding-cache", str(config.embedding_cache)]) == 0
    cli = json.loads(capsys.readouterr().out)
    body = served.json()
    for key in ("timings", "request_id"):
        body.pop(key, None)
        cli.pop(key, None)
    assert body == cli


class CountingStage:
    """A first stage that records each ``retrieve_batch`` call and refuses the request whose history is ``bad``."""

    source = "cosine"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def retrieve(self, history: Any = None, profile: Any = None, *, k: int = 20, threshold: Any = None) -> Any:
        return self.retrieve_batch([Request(history, profile)], k=k)[0]

    def retrieve_batch(self, requests: Any, *, k: Any = 20, threshold: Any = None) -> list[list[Candidate]]:
        self.calls.append(len(requests))
        if any(r.item_keys == ["bad"] for r in requests):
            raise ValueError("bad request")
        return [[Candidate(id=r.item_keys[0], score=1.0)] for r in requests]


def test_concurrent_requests_share_one_retrieval_and_a_bad_one_fails_alone() -> None:
    stage = CountingStage()

    async def run() -> list[Any]:
        batcher = MicroBatcher(max_batch=4, max_wait_ms=60_000)  # a batch is cut by size here, never by time
        try:
            keys = ["a", "b", "bad", "c"]
            return list(
                await asyncio.gather(
                    *(batcher.retrieve(stage, Request([key]), 1) for key in keys), return_exceptions=True
                )
            )
        finally:
            await batcher.aclose()

    results = asyncio.run(run())
    assert stage.calls[0] == 4  # one pass for the four, then one each after it failed
    assert stage.calls[1:] == [1, 1, 1, 1]
    assert [r[0].id for r in (results[0], results[1], results[3])] == ["a", "b", "c"]
    assert isinstance(results[2], ValueError)


def test_batching_off_is_one_pass_per_request() -> None:
    stage = CountingStage()

    async def run() -> None:
        batcher = MicroBatcher(max_batch=1, max_wait_ms=60_000)
        try:
            await asyncio.gather(*(batcher.retrieve(stage, Request([key]), 1) for key in "abc"))
        finally:
            await batcher.aclose()

    asyncio.run(run())
    assert stage.calls == [1, 1, 1]


@pytest.mark.data
def test_the_ml100k_example_config_loads(shared_data: Path) -> None:
    from zsgen.serve.config import load_serve_config

    config = load_serve_config(Path(__file__).resolve().parents[2] / "examples" / "serve-ml100k.toml")
    assert Path(config.dataset.path) == (shared_data / "ml-100k").resolve()
    assert config.rerank is not None and config.first_stage == "fused" and config.store is not None


def test_the_example_config_loads(tmp_path: Path) -> None:
    from zsgen.serve.config import load_serve_config

    example = Path(__file__).resolve().parents[2] / "examples" / "serve-demo.toml"
    config = load_serve_config(example)
    assert config.rerank is not None and config.dataset.path.endswith("demo_catalog.jsonl")
