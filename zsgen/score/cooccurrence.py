"""Item-to-item signals learnt from interaction logs: co-occurrence (windowed or whole-history) and NIR item filtering.

Both build an item × item matrix once, with scipy.sparse products over the whole log (no Python loop over users),
then score a batch of users as one sparse product: ``recency-weighted history (queries × items) @ item matrix``.

Why a window: next-item targets are mostly items consumed close in time to the last ones (on ML-100K 44% of test
targets share the second of the previous event), so pairs of events a few positions apart carry the signal and pairs
months apart mostly add popularity noise. Why normalise: raw counts rank the most popular items first for everyone;
dividing by item supports (``count_i**alpha * count_j**(1-alpha)``, cosine at ``alpha=0.5``) asks which items go
*with* the user's recent ones more than popularity alone explains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, history_matrix, not_fitted, require_logs

Normalise = Literal["none", "cosine", "conditional", "asymmetric"]
_NORMALISATIONS = ("none", "cosine", "conditional", "asymmetric")


def pair_counts(
    train: TrainData,
    *,
    window: int | None,
    backward: float = 1.0,
    position_decay: float = 1.0,
    time_window: float | None = None,
    user_weight: float = 0.0,
) -> sp.csr_matrix:
    """Item × item matrix of how often item ``j`` was consumed near item ``i``; the diagonal is zero.

    ``window=None``: the number of users who consumed both (``XᵀX`` of the binary incidence). ``window=w``: over
    every user's sequence, each pair of events ``d <= w`` positions apart adds ``position_decay**(d-1)`` to
    ``[earlier, later]`` and ``backward`` times that to ``[later, earlier]`` (``backward=1`` is symmetric,
    ``backward=0`` purely "j after i"). ``time_window`` (seconds) further keeps only pairs at most that far apart
    in time. ``user_weight`` (γ) weighs every pair of a user with ``n_u**-γ`` (``n_u`` the user's event count), so
    the few users with hundreds of events do not dominate the counts. The loop is over offsets ``d``, each one
    vectorised over the concatenated log.
    """
    n = train.n_items
    lengths = np.array([s.size for s in train.sequences], dtype=np.float64)
    per_user = np.maximum(lengths, 1.0) ** (-user_weight)
    if window is None:
        if time_window is not None:
            raise ConfigError("co-occurrence time_window needs a position window too (set window)")
        x = train.incidence()
        counts = (x.T @ sp.diags(per_user) @ x).tocsr()
    else:
        if window < 1:
            raise ConfigError(f"co-occurrence window must be >= 1, got {window}")
        items = np.concatenate(train.sequences) if train.sequences else np.zeros(0, dtype=np.int64)
        users = np.repeat(np.arange(train.n_users), [s.size for s in train.sequences])
        stamps: npt.NDArray[np.float64] | None = None
        if time_window is not None:
            if train.timestamps is None:
                raise ConfigError("co-occurrence time_window needs timestamps, and the log has none")
            stamps = np.concatenate(train.timestamps)
        rows: list[npt.NDArray[np.int64]] = []
        cols: list[npt.NDArray[np.int64]] = []
        vals: list[npt.NDArray[np.float64]] = []
        for d in range(1, min(window, max(items.size - 1, 0)) + 1):
            same = users[:-d] == users[d:]
            if stamps is not None:
                same &= np.abs(stamps[d:] - stamps[:-d]) <= time_window
            earlier, later = items[:-d][same], items[d:][same]
            weight = position_decay ** (d - 1) * per_user[users[:-d][same]]
            rows += [earlier, later]
            cols += [later, earlier]
            vals += [weight, weight * backward]
        if rows:
            counts = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        else:
            counts = sp.csr_matrix((n, n), dtype=np.float64)
    counts = counts.astype(np.float64).tocsr()
    counts.setdiag(0.0)
    counts.eliminate_zeros()
    return counts


def normalise_pairs(
    counts: sp.csr_matrix, support: npt.NDArray[np.float64], how: Normalise, alpha: float
) -> sp.csr_matrix:
    """Divide ``counts[i, j]`` by ``support_i**a * support_j**(1-a)`` (``a`` = 0.5 cosine, 1 conditional)."""
    if how == "none":
        return counts
    a = {"cosine": 0.5, "conditional": 1.0, "asymmetric": alpha}[how]
    safe = np.maximum(support, 1.0)
    left = sp.diags(safe ** (-a))
    right = sp.diags(safe ** (a - 1.0))
    return (left @ counts @ right).tocsr()


def keep_top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's ``k`` largest entries (ties to the lower column), without densifying the matrix."""
    coo = matrix.tocoo()
    order = np.lexsort((coo.col, -coo.data, coo.row))
    rows = coo.row[order]
    starts = np.searchsorted(rows, rows, side="left")
    keep = (np.arange(rows.size) - starts) < k
    kept = order[keep]
    return sp.csr_matrix((coo.data[kept], (coo.row[kept], coo.col[kept])), shape=matrix.shape)


class CooccurrenceScorer:
    """Sum over the user's ``recent`` last items (the k-th newest weighted ``decay**k``) of item-item similarity.

    See :func:`pair_counts` for ``window``/``backward``/``position_decay``/``time_window``/``user_weight`` and
    :func:`normalise_pairs` for ``normalise``/``alpha``. Defaults are a reasonable start; tune them on validation.
    """

    needs_logs = True

    def __init__(
        self,
        recent: int | None = 5,
        decay: float = 0.7,
        normalise: Normalise = "cosine",
        *,
        window: int | None = None,
        backward: float = 1.0,
        position_decay: float = 1.0,
        time_window: float | None = None,
        alpha: float = 0.5,
        user_weight: float = 0.0,
        name: str = "cooccurrence",
    ) -> None:
        if normalise not in _NORMALISATIONS:
            raise ConfigError(f"co-occurrence normalise must be one of {', '.join(_NORMALISATIONS)}; got {normalise!r}")
        if recent is not None and recent < 1:
            raise ConfigError(f"co-occurrence recent must be >= 1 (or None for all), got {recent}")
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"co-occurrence decay must be within (0, 1], got {decay}")
        if backward < 0 or position_decay <= 0 or user_weight < 0:
            raise ConfigError("co-occurrence backward and user_weight must be >= 0, position_decay > 0")
        self.recent = recent
        self.decay = decay
        self.normalise: Normalise = normalise
        self.window = window
        self.backward = backward
        self.position_decay = position_decay
        self.time_window = time_window
        self.alpha = alpha
        self.user_weight = user_weight
        self.name = name
        self.similarity: sp.csr_matrix | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> CooccurrenceScorer:
        train = require_logs(self.name, train, catalog)
        counts = pair_counts(
            train,
            window=self.window,
            backward=self.backward,
            position_decay=self.position_decay,
            time_window=self.time_window,
            user_weight=self.user_weight,
        )
        support = np.asarray(train.incidence().sum(axis=0), dtype=np.float64).ravel()
        self.similarity = normalise_pairs(counts, support, self.normalise, self.alpha)
        return self

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self.similarity is None:
            raise not_fitted(self.name)
        weights = history_matrix(queries, self.similarity.shape[0], recent=self.recent, decay=self.decay)
        return np.asarray((weights @ self.similarity).toarray(), dtype=np.float64)


class ItemFilteringScorer:
    """NIR item filtering: for each history item its ``neighbours`` most co-occurring items, co-occurrence summed.

    Co-occurrence is the number of training users who consumed both items; only each item's top ``neighbours``
    (ties to the lower index) contribute. ``recent`` limits the history to the last items (NIR used 8); ``None``
    uses all of it.
    """

    needs_logs = True

    def __init__(self, neighbours: int = 12, *, recent: int | None = None, name: str = "item_filtering") -> None:
        if neighbours < 1:
            raise ConfigError(f"item filtering neighbours must be >= 1, got {neighbours}")
        self.neighbours = neighbours
        self.recent = recent
        self.name = name
        self.similarity: sp.csr_matrix | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> ItemFilteringScorer:
        train = require_logs(self.name, train, catalog)
        self.similarity = keep_top_per_row(pair_counts(train, window=None), self.neighbours)
        return self

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self.similarity is None:
            raise not_fitted(self.name)
        weights = history_matrix(queries, self.similarity.shape[0], recent=self.recent, decay=1.0)
        return np.asarray((weights @ self.similarity).toarray(), dtype=np.float64)
