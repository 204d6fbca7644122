"""The async pipeline (issue 22 point 1): :meth:`Recommender.arecommend` is the implementation and ``recommend`` its
synchronous face, so both rank alike; a rerank in flight leaves the event loop free; ``timeout=`` bounds the LLM and
turns a stall into a flagged first-stage order. The LLM is a scripted loopback server that reverses the candidates it
is shown (so the LLM's order is visibly not the first stage's) and, for the stall tests, holds its answer until the
test releases it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serve.test_llm import LABEL
from zsgen.catalog import Catalog
from zsgen.embed import default_encoder
from zsgen.loaders import load_demo
from zsgen.recommender import Recommender, Request
from zsgen.rerank import RerankConfig
from zsgen.retrieval import Retriever
from zsgen.testing.servers import Reply, ScriptedServer, completion_body

USERS = [
    Request(history=["m098", "m002"]),
    Request(history=["m010", "m011", "m012"]),
    Request(history=["m003"], profile="likes quiet dramas"),
]


class HoldingLLM:
    """Reverses the labels it is shown; while ``hold`` is clear, a request waits (the server thread blocks)."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()

    def __call__(self, body: Any) -> Reply:
        self.arrived.set()
        self.hold.wait(timeout=120)
        prompt = "\n".join(str(m.get("content")) for m in body["messages"])
        return Reply(body=completion_body(json.dumps({"ranking": LABEL.findall(prompt)[::-1]})))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_demo().catalog


@pytest.fixture(scope="module")
def retriever(catalog: Catalog) -> Retriever:
    return Retriever(catalog, default_encoder(cache=False))


@pytest.fixture
def llm() -> Iterator[tuple[ScriptedServer, HoldingLLM]]:
    script = HoldingLLM()
    with ScriptedServer(responder=script) as server:
        try:
            yield server, script
        finally:
            script.hold.set()  # whatever a test left waiting answers now, so the server closes


def reranker_for(server: ScriptedServer) -> RerankConfig:
    return RerankConfig(
        method="listwise",
        backend="openai",
        base_url=server.base_url,
        model="scripted-model",
        candidates=6,
        max_retries=0,
        timeout=60,
        concurrency=2,
    )


def test_arecommend_ranks_as_recommend(
    catalog: Catalog, retriever: Retriever, llm: tuple[ScriptedServer, HoldingLLM]
) -> None:
    server, _ = llm
    with Recommender(catalog, retriever=retriever, reranker=reranker_for(server)) as recommender:
        synchronous = [recommender.recommend(r.history, profile=r.profile, k=5) for r in USERS]

        async def both() -> tuple[list[Any], list[Any]]:
            one_by_one = [await recommender.arecommend(r.history, profile=r.profile, k=5) for r in USERS]
            return one_by_one, await recommender.arecommend_batch(USERS, k=5)

        one_by_one, batched = asyncio.run(both())
    first_stage = [Recommender(catalog, retriever=retriever).recommend(r.history, k=5) for r in USERS[:1]]
    for got in (one_by_one, batched):
        assert [r.item_ids for r in got] == [r.item_ids for r in synchronous]
        assert all(not r.fallback and {i.source for i in r.items} == {"llm"} for r in got)
    assert synchronous[0].item_ids != first_stage[0].item_ids  # the reversal shows: the LLM's order came back


def test_a_rerank_in_flight_leaves_the_event_loop_free(
    catalog: Catalog, retriever: Retriever, llm: tuple[ScriptedServer, HoldingLLM]
) -> None:
    server, script = llm
    script.hold.clear()
    with Recommender(catalog, retriever=retriever, reranker=reranker_for(server)) as recommender:

        async def scenario() -> tuple[bool, Any]:
            task = asyncio.create_task(recommender.arecommend(["m098", "m002"], k=5))
            # The loop runs this coroutine while the model holds its answer: the request reached the server and
            # the recommendation is still pending.
            await asyncio.to_thread(script.arrived.wait, 60)
            pending = not task.done()
            script.hold.set()
            return pending, await task

        pending, ranking = asyncio.run(scenario())
    assert pending
    assert not ranking.fallback and {i.source for i in ranking.items} == {"llm"}


def test_timeout_turns_a_stalled_model_into_a_flagged_first_stage_order(
    catalog: Catalog, retriever: Retriever, llm: tuple[ScriptedServer, HoldingLLM]
) -> None:
    server, script = llm
    script.hold.clear()  # the model never answers while the test runs
    plain = Recommender(catalog, retriever=retriever).recommend(["m098", "m002"], k=6)
    with Recommender(catalog, retriever=retriever, reranker=reranker_for(server)) as recommender:
        ranking = recommender.recommend(["m098", "m002"], k=6, timeout=0.5)
        batch = asyncio.run(recommender.arecommend_batch(USERS, k=4, timeout=0.5))
    assert script.arrived.is_set()  # the model was asked; it was its silence that ran out the clock
    assert ranking.fallback and ranking.fallback_reason == "deadline"
    assert ranking.item_ids == plain.item_ids and {i.source for i in ranking.items} == {"cosine"}
    assert "rerank_s" in ranking.timings  # the time the model was given (a timing: asserted in no test)
    assert [r.fallback_reason for r in batch] == ["deadline"] * len(USERS)
    assert all(len(r.items) == 4 for r in batch)
