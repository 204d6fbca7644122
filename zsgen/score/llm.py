"""The LLM as one signal among others: per-candidate scores from any reranker, a floor for everything else.

An LLM can only look at a short candidate list, so this scorer asks a candidate generator (any other scorer) for
each user's top ``n_candidates`` unseen items, hands them to a callable ``(query, candidate_indices) -> scores``, and
puts a floor below the lowest candidate score for every other item. It knows nothing of prompts or backends: the
callable may wrap :class:`zsgen.rerank.Reranker` (:func:`reranker_scores`), verbalizer label log-probabilities, or
anything else, which keeps the measured worth of "the LLM" about the LLM and not about this adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.score.base import IndexArray, ScoreMatrix, Scorer, TrainData, UserQuery, mask_history, not_fitted, top_k
from zsgen.types import Candidate, History, Profile, Ranking

logger = logging.getLogger(__name__)

#: ``(query, candidate catalog indices in generator order) -> one score per candidate, higher = better``.
CandidateScoreFn = Callable[[UserQuery, IndexArray], npt.NDArray[np.float64]]
RankScore = Literal["reciprocal", "linear", "score"]


def position_scores(n: int, kind: Literal["reciprocal", "linear"] = "reciprocal") -> npt.NDArray[np.float64]:
    """Scores for ranks 0..n-1: ``1/(rank+1)`` (reciprocal) or ``1 - rank/n`` (linear)."""
    ranks = np.arange(n, dtype=np.float64)
    return 1.0 / (ranks + 1.0) if kind == "reciprocal" else 1.0 - ranks / max(n, 1)


def ranking_to_scores(
    ranking: Ranking,
    catalog: Catalog,
    candidate_indices: IndexArray,
    *,
    kind: RankScore = "reciprocal",
    fallback: Literal["neutral", "keep"] = "neutral",
) -> npt.NDArray[np.float64]:
    """Turn a :class:`~zsgen.types.Ranking` of the candidates into one score per candidate (in candidate order).

    ``kind="reciprocal"``/``"linear"`` score rank positions, which every rerank method produces (generated lists and
    verbalizer alike); ``kind="score"`` keeps the ranking's own item scores (a verbalizer's label log-probabilities)
    and gives candidates missing from the ranking the lowest score present. A fallback ranking carries no LLM
    information, so by default all candidates get the same score and the other signals decide; ``fallback="keep"``
    scores the fallback order like any other. Candidates missing from the ranking (a truncated answer) rank after
    those present, in candidate order.
    """
    n = len(candidate_indices)
    if ranking.fallback and fallback == "neutral":
        return np.zeros(n, dtype=np.float64)
    position = {int(i): p for p, i in enumerate(candidate_indices)}
    order: list[int] = []
    given: dict[int, float] = {}
    for item in ranking.items:
        p = position.get(catalog.index_of(item.id))
        if p is not None and p not in given:
            order.append(p)
            given[p] = float(item.score)
    if kind == "score":
        floor = min(given.values(), default=0.0)
        return np.array([given.get(p, floor) for p in range(n)], dtype=np.float64)
    present = set(order)
    order += [p for p in range(n) if p not in present]
    scores = np.empty(n, dtype=np.float64)
    scores[order] = position_scores(n, kind)
    return scores


def reranker_scores(
    reranker: Any, catalog: Catalog, *, kind: RankScore = "reciprocal", fallback: Literal["neutral", "keep"] = "neutral"
) -> CandidateScoreFn:
    """Wrap an object with ``rerank(history, candidates, profile=...) -> Ranking`` (the zsgen Reranker) as a callable.

    Candidates are passed in generator order with a descending placeholder score (their generator rank), which a
    cosine fallback inside the reranker would keep. A known user's row seeds the reranker, so candidate shuffles
    differ between users (a fixed shuffle would give every user the same position bias) yet repeat across runs.
    """

    def score(query: UserQuery, candidate_indices: IndexArray) -> npt.NDArray[np.float64]:
        history = History.from_ids([catalog[int(i)].id for i in query.history])
        n = len(candidate_indices)
        candidates = [
            Candidate(id=catalog[int(i)].id, score=float(n - rank)) for rank, i in enumerate(candidate_indices)
        ]
        profile = Profile(text=query.profile) if query.profile and query.profile.strip() else None
        seed = None if query.user is None else int(query.user)
        ranking = reranker.rerank(history, candidates, profile=profile, seed=seed)
        return ranking_to_scores(ranking, catalog, candidate_indices, kind=kind, fallback=fallback)

    return score


class LLMScorer:
    """Scores the top ``n_candidates`` unseen items of ``candidates`` with ``score_candidates``; others get a floor.

    The floor is ``min(candidate scores) - floor_margin`` per user, so every candidate outranks every
    non-candidate under any normalisation, and non-candidates tie among themselves (the LLM says nothing about them).
    """

    def __init__(
        self,
        score_candidates: CandidateScoreFn,
        candidates: Scorer | None = None,
        n_candidates: int = 20,
        *,
        floor_margin: float = 1.0,
        name: str = "llm",
    ) -> None:
        if n_candidates < 1:
            raise ConfigError(f"LLM n_candidates must be >= 1, got {n_candidates}")
        if floor_margin <= 0:
            raise ConfigError(f"LLM floor_margin must be positive, got {floor_margin}")
        self.score_candidates = score_candidates
        self.candidates = candidates
        self.n_candidates = n_candidates
        self.floor_margin = floor_margin
        self.name = name
        self.needs_logs = bool(candidates is not None and candidates.needs_logs)
        self._n_items: int | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> LLMScorer:
        if self.candidates is not None:
            self.candidates.fit(catalog, train)
        self._n_items = len(catalog)
        return self

    def candidate_lists(self, queries: Sequence[UserQuery]) -> IndexArray:
        """Each user's top ``n_candidates`` unseen items under the candidate generator, best first."""
        if self.candidates is None:
            raise ConfigError(f"signal {self.name!r} has no candidate generator; use score_lists() with given lists")
        return top_k(mask_history(self.candidates.score(queries), queries), self.n_candidates)

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        return self.score_lists(queries, list(self.candidate_lists(queries)))

    def score_lists(self, queries: Sequence[UserQuery], lists: Sequence[IndexArray]) -> ScoreMatrix:
        """Scores for given candidate lists (e.g. an evaluation protocol's target + sampled negatives)."""
        if self._n_items is None:
            raise not_fitted(self.name)
        if len(lists) != len(queries):
            raise ConfigError(f"{len(lists)} candidate lists for {len(queries)} queries")
        out = np.zeros((len(queries), self._n_items), dtype=np.float64)
        for row, (query, cands) in enumerate(zip(queries, lists, strict=True)):
            cands = np.asarray(cands, dtype=np.int64)
            if cands.size == 0:
                continue
            values = np.asarray(self.score_candidates(query, cands), dtype=np.float64)
            if values.shape != cands.shape or not np.isfinite(values).all():
                raise ConfigError(
                    f"signal {self.name!r}: the candidate scorer returned {values.shape} values (finite: "
                    f"{bool(np.isfinite(values).all())}) for {cands.size} candidates"
                )
            out[row] = values.min() - self.floor_margin
            out[row, cands] = values
        return out
