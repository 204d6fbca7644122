"""The LLM stage against a real vLLM OpenAI server (the CPU build, packaged SmolLM2-135M-Instruct).

Constrained decoding is the point: with a schema that names the shown labels and fixes how many to give, even a
135M model's served answer always parses; a schema vLLM's grammar backend cannot compile is rejected once, clearly.
"""

from __future__ import annotations

import pytest

from zsgen.catalog import Catalog
from zsgen.errors import BackendError
from zsgen.llm import OpenAIChatBackend
from zsgen.loaders import load_demo
from zsgen.rerank import RerankConfig, Reranker, make_labels, ranking_schema
from zsgen.testing.servers import VLLM_MODEL
from zsgen.types import Candidate, History

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

N_CANDIDATES = 20


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_demo().catalog


def users(catalog: Catalog, n: int) -> list[tuple[History, list[Candidate], None]]:
    ids = catalog.ids
    return [
        (
            History.from_ids(ids[7 * u : 7 * u + 5]),
            [
                Candidate(id=i, score=1.0 - k / 100)
                for k, i in enumerate(ids[100 + 20 * u : 100 + 20 * u + N_CANDIDATES])
            ],
            None,
        )
        for u in range(n)
    ]


def reranker(base_url: str, catalog: Catalog, **settings: object) -> Reranker:
    options: dict[str, object] = {
        "method": "listwise",
        "backend": "openai",
        "base_url": base_url,
        "model": VLLM_MODEL,
        "structured": "json_schema",
        "max_tokens": 100,
        "timeout": 300.0,
        "max_retries": 1,
    }
    options.update(settings)
    return Reranker(RerankConfig(**options), catalog=catalog)  # type: ignore[arg-type]


def test_constrained_listwise_answers_parse_without_fallback(vllm_server: str, catalog: Catalog) -> None:
    requests = users(catalog, 3)
    with reranker(vllm_server, catalog) as model:
        rankings = model.rerank_many(requests)
    for (_, candidates, _), ranking in zip(requests, rankings, strict=True):
        assert not ranking.fallback, ranking.fallback_reason
        assert sorted(ranking.item_ids) == sorted(c.id for c in candidates)
        assert ranking.model == VLLM_MODEL
        # The grammar fixes the labels and their number; only repeated labels can still need a repair.
        assert all(repair.startswith(("dropped", "appended")) for repair in ranking.repairs), ranking.repairs


def test_one_pick_with_the_choice_constraint_is_a_shown_label(vllm_server: str, catalog: Catalog) -> None:
    requests = users(catalog, 2)
    with reranker(vllm_server, catalog, picks=1, structured_choice=True) as model:
        rankings = model.rerank_many(requests)
    for ranking in rankings:
        assert not ranking.fallback and ranking.parse_status == "ok", (ranking.raw_text, ranking.repairs)
        assert (ranking.raw_text or "").strip() in make_labels(N_CANDIDATES, "letters")
        assert [item.source for item in ranking.items].count("llm") == 1


def test_a_schema_vllm_cannot_compile_is_rejected_once_with_its_reason(vllm_server: str) -> None:
    schema = ranking_schema(["A", "B", "C"], 3)
    schema["properties"]["ranking"]["uniqueItems"] = True  # vLLM 0.32's grammar backend rejects this key
    messages = [{"role": "user", "content": "Rank A, B and C."}]
    with OpenAIChatBackend(vllm_server, model=VLLM_MODEL, structured="json_schema", max_retries=0) as backend:
        for _ in range(2):
            with pytest.raises(BackendError) as info:
                backend.chat(messages, max_tokens=20, json_schema=schema)
            assert info.value.reason == "schema_rejected"
        assert "uniqueItems" in str(info.value)
        # The same request without the constraint is fine: the server is healthy, only the schema was refused.
        assert backend.chat(messages, max_tokens=5).text
