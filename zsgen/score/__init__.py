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
from zsgen.score.kinds import (
    CooccurrenceParams,
    GroupPopularityParams,
    ItemFilteringParams,
    LLMParams,
    PopularityParams,
    TextParams,
    UserFilteringParams,
)
from zsgen.score.llm import LLMScorer, ranking_to_scores, reranker_scores
from zsgen.score.popularity import PopularityScorer
from zsgen.score.registry import SignalKind, SignalParams, SignalResources, register_signal, signal_kind, signal_kinds
from zsgen.score.text import TextCosineScorer
from zsgen.score.userfilter import UserFilteringScorer

__all__ = [
    "CooccurrenceParams",
    "CooccurrenceScorer",
    "FusedScorer",
    "FusionConfig",
    "GroupPopularityParams",
    "GroupPopularityScorer",
    "ItemFilteringParams",
    "ItemFilteringScorer",
    "LLMParams",
    "LLMScorer",
    "PopularityParams",
    "PopularityScorer",
    "ScoreMatrix",
    "Scorer",
    "SearchSpace",
    "SignalConfig",
    "SignalKind",
    "SignalParams",
    "SignalResources",
    "TextCosineScorer",
    "TextParams",
    "TrainData",
    "UserFilteringParams",
    "UserFilteringScorer",
    "UserQuery",
    "fuse",
    "history_mask",
    "history_matrix",
    "mask_history",
    "normalise",
    "ranking_to_scores",
    "reciprocal_rank_fusion",
    "register_signal",
    "reranker_scores",
    "signal_kind",
    "signal_kinds",
    "top_k",
]
