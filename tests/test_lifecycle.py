"""Clients have a lifecycle: synchronous recommending reuses one HTTP client and its connections, and ``close``
releases them. Measured on the server side (accepted and open connections of the scripted loopback server) and by
counting live ``AsyncOpenAI`` objects, with the real packaged MiniLM retrieval in front."""

from __future__ import annotations

import asyncio
import gc
import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from zsgen._sync import arun_on_portal, portal_loop, run_sync
from zsgen.catalog import Catalog
from zsgen.loaders import load_demo, load_demo_user
from zsgen.recommender import Recommender, Request
from zsgen.rerank import RerankConfig
from zsgen.retrieval import Retriever
from zsgen.testing.servers import Reply, ScriptedServer, completion_body

CALLS = 1000
CONCURRENCY = 4


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_demo().catalog


@pytest.fixture(scope="module")
def retriever(catalog: Catalog) -> Retriever:
    from zsgen.embed import default_encoder

    return Retriever(catalog, default_encoder(cache=False))


def clients_for(server: ScriptedServer) -> int:
    """Live ``AsyncOpenAI`` objects pointed at ``server`` (its port is unique to this test)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is openai.AsyncOpenAI and f":{server.port}/" in str(o.base_url))


def recommender(catalog: Catalog, retriever: Retriever, server: ScriptedServer) -> Recommender:
    config = RerankConfig(
        method="listwise", backend="openai", base_url=server.base_url, candidates=5, concurrency=CONCURRENCY
    )
    return Recommender(catalog, retriever=retriever, reranker=config)


@pytest.mark.slow
def test_a_thousand_sync_recommendations_reuse_one_client(catalog: Catalog, retriever: Retriever) -> None:
    user = load_demo_user()
    with ScriptedServer(default=Reply(body=completion_body(json.dumps({"ranking": ["B", "A"]})))) as server:
        rec = recommender(catalog, retriever, server)
        clients, open_connections = [], []
        for call in range(CALLS):
            ranking = rec.recommend(user.history, k=3)
            assert not ranking.fallback
            if call % 100 == 99:
                clients.append(clients_for(server))
                open_connections.append(server.open_connections)
        assert len(server.chat_requests) == CALLS
        assert max(clients) == 1
        assert max(open_connections) <= CONCURRENCY + 1
        assert server.connections_accepted <= CONCURRENCY + 1  # not one per call: connections are reused

        rec.close()
        assert server.wait_for_open_connections(0) == 0
        assert clients_for(server) == 0


def test_batches_and_context_manager_release_connections(catalog: Catalog, retriever: Retriever) -> None:
    user = load_demo_user()
    with ScriptedServer(default=Reply(delay=0.05, body=completion_body(json.dumps({"ranking": ["A"]})))) as server:
        with recommender(catalog, retriever, server) as rec:
            for _ in range(3):
                rankings = rec.recommend_batch([Request(history=user.history)] * 12, k=3)
                assert not any(r.fallback for r in rankings)
            assert server.max_in_flight <= CONCURRENCY
            assert clients_for(server) == 1
            assert server.connections_accepted <= CONCURRENCY + 1
        assert server.wait_for_open_connections(0) == 0
        assert clients_for(server) == 0


def test_run_sync_from_the_portal_itself_raises_instead_of_deadlocking() -> None:
    async def nested() -> int:
        return run_sync(asyncio.sleep(0, result=1))

    with pytest.raises(RuntimeError, match="portal"):
        run_sync(nested())


def test_run_sync_serves_many_threads_and_loops_on_one_portal() -> None:
    async def where() -> int:
        await asyncio.sleep(0)
        return id(asyncio.get_running_loop())

    async def from_another_loop() -> int:
        return await arun_on_portal(where())

    with ThreadPoolExecutor(max_workers=4) as pool:
        loops = set(pool.map(lambda _: run_sync(where()), range(16)))
    loops.add(asyncio.run(from_another_loop()))
    assert loops == {id(portal_loop())}
