"""Signals that score every catalog item for a user, and their fusion (DESIGN.md §2, lesson 9).

Each scorer follows :class:`~zsgen.score.base.Scorer`: ``fit(catalog, train)`` once, then ``score(queries)`` gives a
``(n_queries, n_items)`` array. Log-based signals need :class:`~zsgen.score.base.TrainData`; text works without.
"""

from zsgen.score.base import (
    ScoreMatrix,
    Scorer,
    TrainData,
    UserQuery,
    history_matrix,
    mask_history,
    top_k,
)
from zsgen.score.cooccurrence import CooccurrenceScorer, ItemFilteringScorer
from zsgen.score.llm import LLMScorer, ranking_to_scores, reranker_scores
from zsgen.score.popularity import PopularityScorer
from zsgen.score.text import TextCosineScorer
from zsgen.score.userfilter import UserFilteringScorer

__all__ = [
    "CooccurrenceScorer",
    "ItemFilteringScorer",
    "LLMScorer",
    "PopularityScorer",
    "ScoreMatrix",
    "Scorer",
    "TextCosineScorer",
    "TrainData",
    "UserFilteringScorer",
    "UserQuery",
    "history_matrix",
    "mask_history",
    "ranking_to_scores",
    "reranker_scores",
    "top_k",
]
