"""Signals that score every catalog item for a user, and their fusion (DESIGN.md §2, lesson 9).

Each scorer follows :class:`~zsgen.score.base.Scorer`: ``fit(catalog, train)`` once, then ``score(queries)`` gives a
``(n_queries, n_items)`` array. Log-based signals need :class:`~zsgen.score.base.TrainData`; text works without.
Choosing the fusion weights is part of the evaluation protocol and lives in :mod:`zsgen.evaluate.tuning`.
"""

from zsgen.score.base import (
    ScoreMatrix,
    Scorer,
    TrainData,
    UserQuery,
    history_mask,
    history_matrix,
    mask_history,
    top_k,
)
from zsgen.score.config import FusionConfig, SearchSpace, SignalConfig
from zsgen.score.cooccurrence import CooccurrenceScorer, ItemFilteringScorer
from zsgen.score.fusion import FusedScorer, fuse, normalise, reciprocal_rank_fusion
from zsgen.score.grouppop import GroupPopularityScorer
from zsgen.score.llm import LLMScorer, ranking_to_scores, reranker_scores
from zsgen.score.popularity import PopularityScorer
from zsgen.score.text import TextCosineScorer
from zsgen.score.userfilter import UserFilteringScorer

__all__ = [
    "CooccurrenceScorer",
    "FusedScorer",
    "FusionConfig",
    "GroupPopularityScorer",
    "ItemFilteringScorer",
    "LLMScorer",
    "PopularityScorer",
    "ScoreMatrix",
    "Scorer",
    "SearchSpace",
    "SignalConfig",
    "TextCosineScorer",
    "TrainData",
    "UserFilteringScorer",
    "UserQuery",
    "fuse",
    "history_mask",
    "history_matrix",
    "mask_history",
    "normalise",
    "ranking_to_scores",
    "reciprocal_rank_fusion",
    "reranker_scores",
    "top_k",
]
