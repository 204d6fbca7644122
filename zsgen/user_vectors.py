"""How a user becomes queries over unit item vectors: the one implementation of ``user_vector``.

Both the cosine first stage (:class:`~zsgen.retrieval.cosine.Retriever`) and the text signal of a fusion
(:class:`~zsgen.score.text.TextCosineScorer`) build their queries here, so "text cosine" means one thing whether it
retrieves candidates or is one signal among several.

A history (catalog item vectors, oldest first) becomes a query in one of four ways (``UserVector``):

- ``mean``: the normalised average of the history vectors;
- ``recency``: a weighted average, the newest item weighted 1 and each older one halved every ``half_life`` items;
- ``last``: the newest item alone (a strong zero-shot baseline, LLMSeqSim);
- ``maxsim``: no single vector; an item scores its best cosine to any history item, so distinct tastes are not
  averaged into a point between them.

With both history and profile, the query is ``(1 - w) * history + w * profile`` of the two unit vectors, normalised
(``w = profile_weight``); under ``maxsim`` the same blend is applied to each history item (left unnormalised), so
the score is ``(1 - w) * max_j cos(h_j, item) + w * cos(profile, item)``. A profile alone is its own query.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from zsgen.errors import ConfigError, DataError, EmptyHistoryError

FloatMatrix = npt.NDArray[np.float32]

UserVector = Literal["mean", "recency", "last", "maxsim"]
USER_VECTORS: tuple[UserVector, ...] = get_args(UserVector)
DEFAULT_HALF_LIFE = 3.0
DEFAULT_PROFILE_WEIGHT = 0.5


def check_options(
    *,
    user_vector: str,
    history_length: int | None,
    half_life: float,
    profile_weight: float,
    owner: str,
) -> None:
    """Refuse user-vector options no query can be built with; ``owner`` says whose options they are."""
    if user_vector not in USER_VECTORS:
        raise ConfigError(f"{owner}: unknown user_vector {user_vector!r}; use one of {', '.join(USER_VECTORS)}")
    if history_length is not None and (
        isinstance(history_length, bool) or not isinstance(history_length, int | np.integer) or history_length < 1
    ):
        raise ConfigError(f"{owner}: history_length must be a positive integer or None, got {history_length!r}")
    if not half_life > 0:
        raise ConfigError(f"{owner}: half_life must be positive, got {half_life}")
    if not 0.0 <= profile_weight <= 1.0:
        raise ConfigError(f"{owner}: profile_weight must be within [0, 1], got {profile_weight}")


def recency_weights(n: int, half_life: float = DEFAULT_HALF_LIFE) -> npt.NDArray[np.float64]:
    """Weights for ``n`` items oldest first: the newest gets 1, an item ``half_life`` steps older gets 0.5."""
    if half_life <= 0:
        raise ConfigError(f"half_life must be positive, got {half_life}")
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    return np.asarray(0.5 ** (age / half_life), dtype=np.float64)


def _unit(vector: npt.NDArray[np.floating]) -> FloatMatrix:
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not np.isfinite(norm):
        # Opposite vectors can cancel exactly; there is then no direction to search in.
        raise DataError("the user vector is zero (history and profile vectors cancel out)", field="history")
    return np.asarray(vector / norm, dtype=np.float32)


def history_vector(
    vectors: npt.ArrayLike, user_vector: UserVector, *, half_life: float = DEFAULT_HALF_LIFE
) -> FloatMatrix:
    """One unit query vector from history item vectors (oldest first); ``maxsim`` has none and is refused."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise EmptyHistoryError("a history vector needs at least one item")
    if user_vector == "last":
        return _unit(matrix[-1])
    if user_vector == "mean":
        return _unit(matrix.astype(np.float64).mean(axis=0))
    if user_vector == "recency":
        weights = recency_weights(matrix.shape[0], half_life)
        return _unit(weights @ matrix.astype(np.float64))
    raise ConfigError(f"user_vector {user_vector!r} has no single user vector (maxsim compares items one by one)")


def blend(history: npt.ArrayLike, profile: npt.ArrayLike, profile_weight: float) -> FloatMatrix:
    """The normalised mix of two unit vectors: ``(1 - w) * history + w * profile``."""
    h = np.asarray(history, dtype=np.float64)
    p = np.asarray(profile, dtype=np.float64)
    return _unit((1.0 - profile_weight) * h + profile_weight * p)


def single_query(
    history_vectors: FloatMatrix,
    profile: FloatMatrix | None,
    user_vector: UserVector,
    *,
    half_life: float = DEFAULT_HALF_LIFE,
    profile_weight: float = DEFAULT_PROFILE_WEIGHT,
) -> FloatMatrix:
    """The one unit query of a user: the history's vector (blended with the profile when there is one), or the
    profile alone when the history is empty. ``history_vectors`` are the rows already cut to the recent items."""
    if history_vectors.shape[0] == 0:
        if profile is None:
            raise EmptyHistoryError("a user vector needs a history or a profile")
        return profile
    vector = history_vector(history_vectors, user_vector, half_life=half_life)
    return vector if profile is None else blend(vector, profile, profile_weight)


def maxsim_queries(
    history_vectors: FloatMatrix,
    profile: FloatMatrix | None,
    *,
    profile_weight: float = DEFAULT_PROFILE_WEIGHT,
) -> FloatMatrix:
    """``maxsim``'s queries: one row per history item, each blended with the profile when there is one (left
    unnormalised on purpose, so that a row's cosine is the weighted sum of the two cosines); the profile alone when
    the history is empty. A user's score of an item is the maximum over the rows (:func:`maxsim_scores`)."""
    if history_vectors.shape[0] == 0:
        if profile is None:
            raise EmptyHistoryError("a user vector needs a history or a profile")
        return np.asarray(profile[None, :], dtype=np.float32)
    if profile is None:
        return history_vectors
    w = profile_weight
    return np.asarray((1.0 - w) * history_vectors + w * profile[None, :], dtype=np.float32)


def maxsim_scores(queries: FloatMatrix, item_vectors: FloatMatrix) -> FloatMatrix:
    """Every item's ``maxsim`` score: its best cosine over the rows of :func:`maxsim_queries`."""
    return np.asarray((queries @ item_vectors.T).max(axis=0), dtype=np.float32)
