"""The service runs the library's pipeline (issue 22 point 1): for the same requests, ``POST /v1/recommendations``
ranks exactly as :meth:`zsgen.recommender.Recommender.recommend` does, for several users, both first stages, with and
without per-request rerank options (a scripted loopback LLM that reverses the candidates it is shown)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")

import httpx2

from tests.serve.test_llm import responder
from zsgen.embed import default_encoder
from zsgen.loaders import demo_catalog_path, load_dataset
from zsgen.recommender import Recommender
from zsgen.rerank import RerankConfig
from zsgen.serve.app import create_app
from zsgen.serve.config import config_from_dict
from zsgen.testing.serve_app import running
from zsgen.testing.servers import ScriptedServer

USERS: list[dict[str, Any]] = [
    {"history": ["m098", "m002"], "k": 5},
    {"history": ["m010", "m011", "m012"], "k": 4},
    {"history": ["m003"], "profile": "likes quiet dramas", "k": 6},
]
OPTIONS: list[dict[str, Any]] = [{}, {"candidates": 8, "bootstrap": 2}]


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedServer]:
    with ScriptedServer(responder=responder) as server:  # test_llm's: reverses the labels it is shown
        yield server


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small interaction log over the demo catalog, so that the fused first stage has log signals to fit."""
    ids = [json.loads(line)["id"] for line in demo_catalog_path().read_text(encoding="utf-8").splitlines() if line]
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("log") / "interactions.jsonl"
    rows = []
    for user in range(30):
        for t, item in enumerate(rng.choice(ids, size=6, replace=False).tolist()):
            rows.append(json.dumps({"user_id": f"u{user}", "item_id": item, "timestamp": 1000 * user + t}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def rerank_table(llm: ScriptedServer) -> dict[str, Any]:
    return {
        "method": "listwise",
        "backend": "openai",
        "base_url": llm.base_url,
        "model": "scripted-model",
        "candidates": 6,
        "max_retries": 0,
        "timeout": 60,
        "concurrency": 2,
    }


async def post_all(url: str, bodies: list[dict[str, Any]]) -> list[Any]:
    async with httpx2.AsyncClient(base_url=url, timeout=120) as client:
        responses = await asyncio.gather(*(client.post("/v1/recommendations", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
    return [r.json() for r in responses]


@pytest.mark.slow
@pytest.mark.parametrize("first_stage", ["cosine", "fused"])
def test_the_service_ranks_as_the_library(
    first_stage: str, llm: ScriptedServer, log_path: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "emb.sqlite"
    rerank = rerank_table(llm)
    config = config_from_dict(
        {
            "dataset": {"path": str(demo_catalog_path()), "interactions": str(log_path)},
            "first_stage": first_stage,
            "embedding_cache": str(cache),
            "deadline_s": 60.0,
            "per_request": ["candidates", "bootstrap"],
            "rerank": rerank,
        }
    )
    bodies = [
        {**user, "use_llm": use_llm, **({"rerank": options} if options else {})}
        for user in USERS
        for use_llm, options in [(False, {}), *((True, o) for o in OPTIONS)]
    ]
    with running(create_app(config)) as url:
        served = asyncio.run(post_all(url, bodies))

    dataset = load_dataset(demo_catalog_path(), interactions=log_path)
    encoder = default_encoder(cache=cache)
    for body, answer in zip(bodies, served, strict=True):
        reranker = None
        if body["use_llm"]:
            reranker = RerankConfig(**{**rerank, **body.get("rerank", {})})
        library = Recommender(
            dataset.catalog,
            encoder=encoder,
            interactions=dataset.interactions,
            first_stage=first_stage,  # type: ignore[arg-type]
            reranker=reranker,
        )
        with library:
            expected = library.recommend(body["history"], profile=body.get("profile"), k=body["k"])
        assert answer["first_stage"] == expected.first_stage == ("fusion" if first_stage == "fused" else "cosine")
        assert [item["id"] for item in answer["items"]] == expected.item_ids, body
        assert [item["source"] for item in answer["items"]] == [item.source for item in expected.items]
        assert answer["fallback"] is expected.fallback is False
        if body["use_llm"]:  # the scripted model reverses what it was shown: the LLM's order, not the first stage's
            assert {item["source"] for item in answer["items"]} == {"llm"}
