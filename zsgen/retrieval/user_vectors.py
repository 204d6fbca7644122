"""Kept so the documented path ``zsgen.retrieval.user_vectors`` still imports; the module is :mod:`zsgen.user_vectors`.

It moved out of this package because the fusion's text signal (:mod:`zsgen.score`) builds its queries with it too,
and :mod:`zsgen.score` must not import the first stage, which builds on it.
"""

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

__all__ = [
    "DEFAULT_HALF_LIFE",
    "DEFAULT_PROFILE_WEIGHT",
    "USER_VECTORS",
    "UserVector",
    "blend",
    "history_vector",
    "maxsim_queries",
    "recency_weights",
    "single_query",
]
