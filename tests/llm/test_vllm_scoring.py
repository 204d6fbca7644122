"""The verbalizer and pointwise methods through a real vLLM server's log-probabilities (CPU build, packaged SmolLM2),
bootstrap rounds and the response cache against it, and one fault: the server killed in the middle of a run.

Few tests, since every request costs real seconds here; each checks several things about one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zsgen.catalog import Catalog
from zsgen.errors import LabelTokenError
from zsgen.llm import OpenAIScoringBackend, VerbalizerBackend
from zsgen.loaders import load_demo
from zsgen.rerank import RerankConfig, Reranker, build_messages, make_labels
from zsgen.templates import PromptLibrary
from zsgen.testing.servers import VLLM_MODEL, kill_group, vllm_process, vllm_requests
from zsgen.types import Candidate, History

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

#: Largest difference allowed between a label log-probability (nats) or a P(yes) read through vLLM and the same
#: value from the local verbalizer (transformers, float32, same weights). Measured on this machine: 3.2e-5 nats for
#: the 20 verbalizer labels of three demo users and 5e-6 for ten P(yes); 2.6e-5 nats and 8.5e-6 for three MovieLens
#: users (evaluation/perf/bench_http_scoring.py --compare-local). 1e-3 leaves a 30x margin for batching noise.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_demo().catalog


def users(catalog: Catalog, n: int, size: int = 20) -> list[tuple[History, list[Candidate], None]]:
    ids = catalog.ids
    return [
        (
            History.from_ids(ids[7 * u : 7 * u + 5]),
            [Candidate(id=i, score=1.0 - k / 100) for k, i in enumerate(ids[100 + 20 * u : 100 + 20 * u + size])],
            None,
        )
        for u in range(n)
    ]


def config(base_url: str, method: str, **settings: Any) -> RerankConfig:
    options: dict[str, Any] = {
        "method": method,
        "backend": "openai",
        "base_url": base_url,
        "model": VLLM_MODEL,
        "timeout": 300.0,
        "max_retries": 1,
    }
    options.update(settings)
    return RerankConfig(**options)


def test_http_scores_agree_with_the_local_verbalizer(vllm_server: str, catalog: Catalog, local_model_dir: Path) -> None:
    library = PromptLibrary()
    listwise, pointwise = library.get("verbalizer_listwise"), library.get("pointwise")
    labels = make_labels(20, "letters")
    local = VerbalizerBackend(local_model_dir)
    with OpenAIScoringBackend(vllm_server, model=VLLM_MODEL, timeout=300.0) as remote:
        worst = 0.0
        for history, candidates, _ in users(catalog, 2):
            ids = [c.id for c in candidates]
            messages = build_messages(listwise, catalog, history, None, ids, history_length=10, n=1)
            served = remote.label_logprobs(messages, labels)
            assert remote.floored_labels == 0  # the choice constraint brought every label back
            assert remote.count_tokens(messages) == local.count_tokens(messages)
            worst = max(
                worst, *(abs(a - b) for a, b in zip(served, local.label_logprobs(messages, labels), strict=True))
            )
        history, candidates, _ = users(catalog, 1, size=6)[0]
        ids = [c.id for c in candidates]
        conversations = [
            build_messages(pointwise, catalog, history, None, ids, [k], history_length=10) for k in range(6)
        ]
        served = remote.yes_probabilities(conversations)
        worst = max(worst, *(abs(a - b) for a, b in zip(served, local.yes_probabilities(conversations), strict=True)))
        assert worst < TOLERANCE
        # The label check runs against the server's own tokenizer: "Z9x" is several tokens for SmolLM2.
        with pytest.raises(LabelTokenError, match="'Z9x' is not a single token"):
            remote.check_labels(messages, ["A", "Z9x"])


def test_verbalizer_over_http_ranks_every_candidate_and_a_cached_rerun_sends_nothing(
    vllm_server: str, catalog: Catalog, tmp_path: Path
) -> None:
    requests = users(catalog, 2)
    cache = tmp_path / "responses.sqlite"
    with Reranker(config(vllm_server, "verbalizer", cache=cache), catalog=catalog) as reranker:
        rankings = reranker.rerank_many(requests)
    for (_, candidates, _), ranking in zip(requests, rankings, strict=True):
        assert not ranking.fallback and ranking.parse_status == "ok", ranking.fallback_reason
        assert sorted(ranking.item_ids) == sorted(c.id for c in candidates)
        assert all(item.source == "llm" for item in ranking.items)
        scores = [item.score for item in ranking.items]
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
        assert ranking.backend == "openai" and ranking.usage.calls == 1 and ranking.usage.prompt_tokens > 500

    before = vllm_requests(vllm_server)
    with Reranker(config(vllm_server, "verbalizer", cache=cache), catalog=catalog) as again:
        rerun = again.rerank_many(requests)
        assert isinstance(again.backend, OpenAIScoringBackend) and again.backend.requests_sent == 0
    assert vllm_requests(vllm_server) == before  # the server saw no request at all, the probe included
    assert [r.item_ids for r in rerun] == [r.item_ids for r in rankings]
    assert [r.usage.prompt_tokens for r in rerun] == [r.usage.prompt_tokens for r in rankings]


def test_pointwise_over_http(vllm_server: str, catalog: Catalog) -> None:
    history, candidates, _ = users(catalog, 1, size=8)[0]
    with Reranker(config(vllm_server, "pointwise", candidates=8), catalog=catalog) as reranker:
        ranking = reranker.rerank(history, candidates)
    assert not ranking.fallback and ranking.parse_status == "ok", ranking.fallback_reason
    assert sorted(ranking.item_ids) == sorted(c.id for c in candidates)
    assert all(0.0 < item.score < 1.0 for item in ranking.items)
    assert ranking.usage.calls == 8 and ranking.usage.prompt_tokens > 8 * 100


def test_bootstrap_rounds_of_constrained_listwise(vllm_server: str, catalog: Catalog) -> None:
    history, candidates, _ = users(catalog, 1, size=8)[0]
    settings = {"structured": "json_schema", "bootstrap": 3, "max_tokens": 60, "candidates": 8}
    with Reranker(config(vllm_server, "listwise", **settings), catalog=catalog) as reranker:
        ranking = reranker.rerank(history, candidates)
    assert not ranking.fallback, ranking.fallback_reason
    assert ranking.usage.calls == 3  # three rounds, three differently shuffled prompts, each answered
    assert not any("rounds failed" in repair for repair in ranking.repairs), ranking.repairs
    assert sorted(ranking.item_ids) == sorted(c.id for c in candidates)
    assert ranking.raw_text is not None and len(ranking.raw_text.split("\n---\n")) == 3
    scores = [item.score for item in ranking.items]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)  # Borda, strictly decreasing


class _KilledAfter(OpenAIScoringBackend):
    """Kills the server right after its ``answers``-th scoring answer is read: a crash between two users' requests,
    placed by the run itself rather than by a timer."""

    def __init__(self, *args: Any, server: Any, answers: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server, self._answers = server, answers

    def _read_logprobs(self, raw: bytes, model: str) -> Any:
        answer = super()._read_logprobs(raw, model)
        self._answers -= 1
        if self._answers == 0:
            kill_group(self._server)
        return answer


def test_the_server_killed_mid_run_leaves_flagged_fallbacks_and_loses_nobody(
    vllm_python: Path, local_model_dir: Path, catalog: Catalog
) -> None:
    requests = users(catalog, 5)
    with vllm_process(vllm_python, local_model_dir) as (base_url, process):
        settings = config(base_url, "verbalizer", concurrency=1)
        # concurrency 1: one request at a time, so the kill after the probe and two users falls between requests.
        backend = _KilledAfter(
            base_url,
            model=VLLM_MODEL,
            timeout=300.0,
            max_retries=1,
            backoff_initial=0.01,
            backoff_max=0.02,
            concurrency=1,
            server=process,
            answers=3,
        )
        with Reranker(settings, catalog=catalog, backend=backend) as reranker:
            rankings = reranker.rerank_many(requests)
        assert process.poll() is not None
    assert len(rankings) == len(requests)
    served = [r for r in rankings if not r.fallback]
    fallen = [r for r in rankings if r.fallback]
    assert len(served) == 2 and len(fallen) == 3
    assert {r.fallback_reason for r in fallen} == {"connection"}
    for (_, candidates, _), ranking in zip(requests, rankings, strict=True):
        assert sorted(ranking.item_ids) == sorted(c.id for c in candidates)
        if ranking.fallback:
            assert ranking.item_ids == [c.id for c in candidates] and ranking.parse_status == "fallback"
