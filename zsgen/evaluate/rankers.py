"""Rankers: each reorders the same candidate lists, so differences between them are differences of ranking alone.

Baselines (random, popularity, generator order, cosine order) work on whole batches of users; LLM rankers go through
:class:`zsgen.rerank.Reranker` one user at a time, exactly as the library's users call it, and report what the LLM
stage cost and whether it fell back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from zsgen._sync import run_sync
from zsgen.catalog import Catalog
from zsgen.evaluate.generators import CandidateList
from zsgen.interactions import Interactions
from zsgen.metrics.ranks import tie_safe
from zsgen.metrics.split import IndexArray, UserCase, derive_seed, queries_for, user_rng
from zsgen.score.base import Scorer
from zsgen.types import Candidate, History, Ranking

if TYPE_CHECKING:
    from zsgen.rerank import Reranker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMStats:
    """What one reranking call cost and how its answer was read."""

    fallback: bool
    fallback_reason: str | None
    parse_status: str
    repairs: int
    prompt_tokens: int
    completion_tokens: int
    calls: int
    latency_s: float


@dataclass(frozen=True)
class RankOutcome:
    """Positions into the candidate list, best first (a permutation of ``range(len(candidates))``)."""

    order: IndexArray
    llm: LLMStats | None = field(default=None)


class Ranker(Protocol):
    name: str
    kind: str

    def rank(self, cases: Sequence[UserCase], lists: Sequence[CandidateList]) -> list[RankOutcome]: ...


def order_by_scores(scores: np.ndarray) -> IndexArray:
    """Descending score; ties keep generator order (a stable sort on the negated score)."""
    return np.argsort(-tie_safe(scores), kind="stable").astype(np.int64)


class RandomRanker:
    """A uniformly random order per user, seeded by (seed, user): the floor every ranker must clear."""

    kind = "random"

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.seed = seed

    def rank(self, cases: Sequence[UserCase], lists: Sequence[CandidateList]) -> list[RankOutcome]:
        return [
            RankOutcome(order=user_rng(self.seed, case.user_id, f"ranker:{self.name}").permutation(len(c)))
            for case, c in zip(cases, lists, strict=True)
        ]


class GeneratorOrderRanker:
    """The candidates as the generator listed them."""

    kind = "generator"

    def __init__(self, name: str) -> None:
        self.name = name

    def rank(self, cases: Sequence[UserCase], lists: Sequence[CandidateList]) -> list[RankOutcome]:
        return [RankOutcome(order=np.arange(len(c), dtype=np.int64)) for c in lists]


class ScorerRanker:
    """Reorders candidates by a fitted scorer (popularity, cosine similarity of the user vector)."""

    def __init__(self, name: str, kind: str, scorer: Scorer) -> None:
        self.name = name
        self.kind = kind
        self.scorer = scorer

    def rank(self, cases: Sequence[UserCase], lists: Sequence[CandidateList]) -> list[RankOutcome]:
        if not cases:
            return []
        scores = tie_safe(self.scorer.score(queries_for(cases)))
        return [RankOutcome(order=order_by_scores(scores[row, c.items])) for row, c in enumerate(lists)]


class LLMRanker:
    """One rerank per user through :class:`zsgen.rerank.Reranker`, shown the most recent ``history_length`` items.

    The LLM sees the candidates in the generator's order (for LLMRank's protocol a seeded shuffle), while each
    candidate carries its cosine score from ``cosine``: a fault falls back to cosine order, as in the library, rather
    than to whatever order the generator happened to produce.

    A remote backend (``openai``) serves many requests at once, so :meth:`rank` sends a whole batch concurrently
    (bounded by the reranker's ``concurrency``); a local model computes one user at a time, so the runner calls
    :meth:`rank_one` and logs each user as soon as it is done.

    Each user's calls carry the user id as their :class:`~zsgen.rerank.scope.CallScope` (batch files name requests
    by it). ``timed=False`` records a latency of 0: answers read back from a batch file have no latency of their own,
    and a re-import must write the same bytes.
    """

    kind = "llm"

    def __init__(
        self,
        name: str,
        reranker: Reranker,
        *,
        catalog: Catalog,
        interactions: Interactions,
        seed: int,
        cosine: Scorer,
        timed: bool = True,
    ) -> None:
        self.name = name
        self.timed = timed
        self.reranker = reranker
        self.cosine = cosine
        self.catalog = catalog
        self.interactions = interactions
        self.history_length = reranker.config.history_length
        self.seed = seed

    @property
    def concurrent(self) -> bool:
        return self.reranker.config.backend == "openai"

    def rank(self, cases: Sequence[UserCase], lists: Sequence[CandidateList]) -> list[RankOutcome]:
        if not self.concurrent:
            return [self.rank_one(case, c) for case, c in zip(cases, lists, strict=True)]

        async def batch() -> list[RankOutcome]:
            tasks = [self._arank(case, c) for case, c in zip(cases, lists, strict=True)]
            return list(await asyncio.gather(*tasks))

        return run_sync(batch())

    def rank_one(self, case: UserCase, candidates: CandidateList) -> RankOutcome:
        history, shown, seed = self._request(case, candidates)
        start = time.perf_counter()
        ranking = self.reranker.rerank(history, shown, seed=seed, key=case.user_id)
        return self._outcome(case, shown, ranking, time.perf_counter() - start)

    async def _arank(self, case: UserCase, candidates: CandidateList) -> RankOutcome:
        history, shown, seed = self._request(case, candidates)
        start = time.perf_counter()
        ranking = await self.reranker.arerank(history, shown, seed=seed, key=case.user_id)
        return self._outcome(case, shown, ranking, time.perf_counter() - start)

    def _request(self, case: UserCase, candidates: CandidateList) -> tuple[History, list[Candidate], int]:
        history = case.history_model(self.interactions, self.catalog, self.history_length)
        cosine = tie_safe(self.cosine.score(queries_for([case])))[0, candidates.items]
        shown = [
            Candidate(id=self.catalog[int(i)].id, score=float(s)) for i, s in zip(candidates.items, cosine, strict=True)
        ]
        return history, shown, derive_seed(self.seed, "rerank", case.user_id) % (2**31)

    def _outcome(self, case: UserCase, shown: Sequence[Candidate], ranking: Ranking, latency: float) -> RankOutcome:
        position = {c.id: p for p, c in enumerate(shown)}
        order = [position[i] for i in ranking.item_ids if i in position]
        repairs = len(ranking.repairs)
        if len(set(order)) != len(shown):
            # The reranker promises a permutation; if it ever breaks that, keep the evaluation well-defined and say so.
            seen = set(order)
            order = list(dict.fromkeys(order)) + [p for p in range(len(shown)) if p not in seen]
            repairs += 1
            logger.warning("ranker %s returned no permutation for user %s; completed it", self.name, case.user_id)
        stats = LLMStats(
            fallback=bool(ranking.fallback),
            fallback_reason=ranking.fallback_reason,
            parse_status=str(ranking.parse_status),
            repairs=repairs,
            prompt_tokens=int(ranking.usage.prompt_tokens),
            completion_tokens=int(ranking.usage.completion_tokens),
            calls=int(ranking.usage.calls),
            latency_s=latency if self.timed else 0.0,
        )
        return RankOutcome(order=np.asarray(order, dtype=np.int64), llm=stats)
