"""The first stage: from a user to a short list of candidate items, behind one interface.

- :mod:`~zsgen.retrieval.base`: the one request type, :class:`Request` (a history and/or a profile text), and the
  one :class:`FirstStage` protocol (``source``, ``retrieve``, ``retrieve_batch``) the recommender relies on.
- :mod:`~zsgen.user_vectors` (also importable as ``zsgen.retrieval.user_vectors``): how a history (and a profile)
  becomes query vectors (``mean``, ``recency``, ``last``, ``maxsim``; the blend with a profile). The cosine
  retriever and the fusion's text signal (:class:`~zsgen.score.text.TextCosineScorer`) both build their queries there.
- :mod:`~zsgen.retrieval.index`: exact top-k inner-product search in bounded memory (:class:`ItemIndex`), or faiss.
- :mod:`~zsgen.retrieval.ann`: approximate search for catalogs of millions (:class:`~zsgen.retrieval.ann.AnnIndex`, a
  faiss factory-string index whose candidates are re-scored exactly; saved once and memory-mapped), opt-in with
  ``Retriever(..., index_backend="ann")``. Imported on use: it needs faiss.
- :mod:`~zsgen.retrieval.cosine`: :class:`Retriever`, cosine over item text vectors.
- :mod:`~zsgen.retrieval.fused`: :class:`FusedRetriever`, a tuned fusion of signals (text, popularity,
  co-occurrence, ...) from :mod:`zsgen.score`.
- :mod:`~zsgen.retrieval.choice`: which first stage a recommender builds when not handed one (fused with the
  packaged weights when there is an interaction log, cosine otherwise; ``first_stage`` / ``fusion`` override).

Design: a call carries only what every first stage honours, the users (``Request``), ``k`` and a score
``threshold``. Options that only some stages have are given when the stage is built: the cosine retriever takes
``user_vector``, ``history_length``, ``half_life``, ``profile_weight`` and ``exclude_seen`` in its constructor, and a
fused stage reads the equivalents of each text signal from its config. So no stage ever receives an option it would
have to ignore; :class:`~zsgen.recommender.Recommender`, which builds a cosine retriever from its own
``user_vector`` / ``history_length`` when given no first stage, raises :class:`~zsgen.errors.ConfigError` naming the
option and the stage when they come with a first stage it did not build.

:class:`FusedRetriever` is imported on first use: it needs :mod:`zsgen.score`, which is heavier to load. The user
vectors live outside both packages (:mod:`zsgen.user_vectors`), so :mod:`zsgen.score` never imports this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zsgen.retrieval.base import FirstStage, Request
from zsgen.retrieval.cosine import Retriever
from zsgen.retrieval.index import FaissIndex, IndexBackend, ItemIndex, SearchIndex, make_index
from zsgen.user_vectors import (
    DEFAULT_HALF_LIFE,
    DEFAULT_PROFILE_WEIGHT,
    USER_VECTORS,
    UserVector,
    blend,
    history_vector,
    maxsim_queries,
    recency_weights,
    single_query,
)

if TYPE_CHECKING:
    from zsgen.retrieval.fused import FusedRetriever

__all__ = [
    "DEFAULT_HALF_LIFE",
    "DEFAULT_PROFILE_WEIGHT",
    "USER_VECTORS",
    "FaissIndex",
    "FirstStage",
    "FusedRetriever",
    "IndexBackend",
    "ItemIndex",
    "Request",
    "Retriever",
    "SearchIndex",
    "UserVector",
    "blend",
    "history_vector",
    "make_index",
    "maxsim_queries",
    "recency_weights",
    "single_query",
]


def __getattr__(name: str) -> Any:
    if name == "FusedRetriever":
        from zsgen.retrieval.fused import FusedRetriever

        return FusedRetriever
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
