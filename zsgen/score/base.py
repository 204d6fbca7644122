"""The scorer interface: every signal gives a score to every catalog item for a batch of users.

One interface for text cosine, popularity, co-occurrence, user filtering and the LLM lets fusion, tuning, candidate
generation and evaluation treat them alike. Scores are dense ``(n_queries, n_items)`` float arrays: the catalogs this
library targets (thousands to a few hundred thousand items) make that cheap, and it keeps fusion a matrix operation.

Scorers never mask the user's history: whether seen items may be recommended again is the caller's decision
(:func:`mask_history` does the usual thing; :func:`history_mask` is the same rule as a boolean mask).

Which data a scorer may learn from is :class:`TrainData`, built so that evaluation targets can never be in it:
:meth:`TrainData.from_interactions` drops each user's last ``holdout`` events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.interactions import Interactions

ScoreMatrix = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrainData:
    """What signals may learn from: per-user item sequences in time order, with evaluation targets already removed.

    ``timestamps`` is ``None`` when the log has no times (then time-window options of scorers are unavailable);
    individual unknown times are NaN. ``attributes`` optionally holds each user row's attributes (age, gender...,
    as text), for signals that group users by them; ``None`` when the dataset has none.
    """

    sequences: list[IndexArray]
    timestamps: list[npt.NDArray[np.float64]] | None
    n_items: int
    _cache: dict[str, object] = field(default_factory=dict, repr=False, compare=False)
    attributes: list[Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        if self.timestamps is not None and len(self.timestamps) != len(self.sequences):
            raise DataError(
                f"{len(self.timestamps)} timestamp arrays for {len(self.sequences)} sequences", field="timestamps"
            )
        for row, seq in enumerate(self.sequences):
            if seq.size and (int(seq.min()) < 0 or int(seq.max()) >= self.n_items):
                raise DataError(f"user row {row} has item indices outside 0..{self.n_items - 1}", field="sequences")
            if self.timestamps is not None and self.timestamps[row].shape != seq.shape:
                raise DataError(f"user row {row}: timestamps and items differ in length", field="timestamps")
        if self.attributes is not None and len(self.attributes) != len(self.sequences):
            raise DataError(
                f"{len(self.attributes)} attribute rows for {len(self.sequences)} sequences", field="attributes"
            )

    @classmethod
    def from_interactions(
        cls, interactions: Interactions, *, holdout: int = 0, n_items: int | None = None
    ) -> TrainData:
        """Each user's events in time order (ties keep file order), minus the last ``holdout`` of them.

        ``holdout=1`` is the training data of a leave-one-out test split, ``holdout=2`` that of its validation split.
        ``n_items`` defaults to one past the largest item index; pass ``len(catalog)`` to keep items nobody saw.
        """
        if holdout < 0:
            raise ConfigError(f"holdout must be >= 0, got {holdout}")
        orders = interactions.event_order_by_user()
        sequences = [interactions.item_index[p[: max(len(p) - holdout, 0)]] for p in orders]
        has_times = bool(np.isfinite(interactions.timestamp).any())
        timestamps = [interactions.timestamp[p[: max(len(p) - holdout, 0)]] for p in orders] if has_times else None
        if n_items is None:
            n_items = int(interactions.item_index.max()) + 1 if len(interactions) else 0
        return cls(sequences=sequences, timestamps=timestamps, n_items=n_items)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    def incidence(self) -> sp.csr_matrix:
        """Users × items, 1 where the user consumed the item (repeats count once). Built once and cached."""
        cached = self._cache.get("incidence")
        if cached is None:
            lengths = np.fromiter((s.size for s in self.sequences), dtype=np.int64, count=self.n_users)
            rows = np.repeat(np.arange(self.n_users, dtype=np.int64), lengths)
            cols = np.concatenate(self.sequences) if self.sequences else np.zeros(0, dtype=np.int64)
            matrix = sp.csr_matrix(
                (np.ones(rows.size, dtype=np.float64), (rows, cols.astype(np.int64))),
                shape=(self.n_users, self.n_items),
            )
            matrix.sum_duplicates()
            matrix.data[:] = 1.0
            cached = matrix
            self._cache["incidence"] = cached
        assert isinstance(cached, sp.csr_matrix)
        return cached


@dataclass(frozen=True)
class UserQuery:
    """One user to score for.

    ``history`` is the visible history (catalog indices, oldest first). ``user`` is the user's row in
    :attr:`TrainData.sequences` when the user is known to the training data, which lets user filtering leave the
    user's own training row out of the neighbour search; ``None`` for a new user. ``profile`` is free text for users
    without history (used by text scoring). ``attributes`` are the user's known attributes (age, gender...), used by
    signals that group users (:class:`~zsgen.score.grouppop.GroupPopularityScorer`).
    """

    history: IndexArray
    user: int | None = None
    profile: str | None = None
    attributes: Mapping[str, str] | None = None


@runtime_checkable
class Scorer(Protocol):
    """A signal: fitted once on a catalog (and, if it needs them, interaction logs), then scores batches of users.

    Log-based scorers raise :class:`~zsgen.errors.ConfigError` from ``fit`` when ``train`` is ``None``; check
    :attr:`needs_logs` first to leave them out of a text-only setup (``FusedScorer`` does this).
    """

    name: str
    needs_logs: bool

    def fit(self, catalog: Catalog, train: TrainData | None) -> Scorer: ...

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        """``(len(queries), n_items)`` scores; higher is better; history items are not masked."""
        ...


def require_logs(name: str, train: TrainData | None, catalog: Catalog) -> TrainData:
    """The check every log-based scorer's ``fit`` starts with, so the message is the same everywhere."""
    if train is None:
        raise ConfigError(
            f"signal {name!r} needs interaction logs, but the catalog has none; "
            "use text signals only (or give a log with the catalog)"
        )
    if train.n_items != len(catalog):
        raise ConfigError(f"signal {name!r}: training data has {train.n_items} items, catalog has {len(catalog)}")
    return train


def not_fitted(name: str) -> ConfigError:
    return ConfigError(f"signal {name!r} is used before fit() was called")


def history_matrix(
    queries: Sequence[UserQuery], n_items: int, *, recent: int | None = None, decay: float = 1.0
) -> sp.csr_matrix:
    """Queries × items, weighted by recency: the k-th most recent item (k=0 newest) weighs ``decay**k``.

    Only the last ``recent`` items count (all when ``None``). An item seen several times keeps its largest weight,
    so a rewatch does not outvote a distinct recent item.
    """
    rows: list[IndexArray] = []
    cols: list[IndexArray] = []
    vals: list[npt.NDArray[np.float64]] = []
    for row, query in enumerate(queries):
        hist = np.asarray(query.history, dtype=np.int64)
        if recent is not None:
            hist = hist[-recent:] if recent > 0 else hist[:0]
        if hist.size == 0:
            continue
        if int(hist.min()) < 0 or int(hist.max()) >= n_items:
            raise DataError(f"query {row}: history has item indices outside 0..{n_items - 1}", field="history")
        weights = decay ** np.arange(hist.size - 1, -1, -1, dtype=np.float64)
        rows.append(np.full(hist.size, row, dtype=np.int64))
        cols.append(hist)
        vals.append(weights)
    if not rows:
        return sp.csr_matrix((len(queries), n_items), dtype=np.float64)
    coo = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(queries), n_items)
    )
    # Keep the largest weight per (query, item): sort by value so the last write wins in a dense-free way.
    order = np.lexsort((coo.data, coo.col, coo.row))
    r, c, v = coo.row[order], coo.col[order], coo.data[order]
    last = np.ones(r.size, dtype=bool)
    last[:-1] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    return sp.csr_matrix((v[last], (r[last], c[last])), shape=(len(queries), n_items))


def history_mask(queries: Sequence[UserQuery], n_items: int) -> npt.NDArray[np.bool_]:
    """Queries × items, True where the item is in the query's history: the items "no repeats" leaves out."""
    mask = np.zeros((len(queries), n_items), dtype=bool)
    for row, query in enumerate(queries):
        if len(query.history):
            mask[row, np.asarray(query.history, dtype=np.int64)] = True
    return mask


def mask_history(scores: ScoreMatrix, queries: Sequence[UserQuery], value: float = -np.inf) -> ScoreMatrix:
    """A copy of ``scores`` with each user's history items set to ``value`` (the usual "no repeats" rule)."""
    out = np.array(scores, dtype=np.float64, copy=True)
    out[history_mask(queries, out.shape[1])] = value
    return out


def top_k(scores: ScoreMatrix, k: int) -> IndexArray:
    """Per row, the indices of the ``k`` highest scores, best first; ties go to the lower item index.

    The deterministic tie rule matters: several signals (popularity, filtering counts) have many equal scores, and
    evaluation must not depend on how a sort happened to break them.
    """
    n_items = scores.shape[1]
    k = min(k, n_items)
    if k <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    # Stable sort on the negated score keeps lower indices first among equals.
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.ascontiguousarray(order[:, :k]).astype(np.int64)
