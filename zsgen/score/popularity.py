"""Popularity prior: how many training users consumed each item, optionally only recently.

The same score for every user, yet on MovieLens it beats text similarity (DESIGN.md §2, lesson 9). ``log1p`` keeps
it on a scale where a fused weighted sum is not dominated by the head items; the recent-window variant follows
what is popular *now*, which matters for next-item prediction in logs that span months.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, not_fitted, require_logs

logger = logging.getLogger(__name__)


class PopularityScorer:
    """``log1p(count)`` of distinct training users per item.

    ``window`` (seconds) counts only events within that span before the last training timestamp of the whole log;
    it needs timestamps. ``blend`` mixes the windowed and all-time counts (``log1p`` of each, ``blend`` on the
    windowed one) so a short window does not zero out the long tail.
    """

    needs_logs = True

    def __init__(self, window: float | None = None, *, blend: float = 1.0, name: str = "popularity") -> None:
        if window is not None and window <= 0:
            raise ConfigError(f"popularity window must be positive seconds, got {window}")
        if not 0.0 <= blend <= 1.0:
            raise ConfigError(f"popularity blend must be within [0, 1], got {blend}")
        self.window = window
        self.blend = blend
        self.name = name
        self._scores: np.ndarray | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> PopularityScorer:
        train = require_logs(self.name, train, catalog)
        incidence = train.incidence()
        all_time = np.log1p(np.asarray(incidence.sum(axis=0), dtype=np.float64).ravel())
        if self.window is None:
            self._scores = all_time
            return self
        if train.timestamps is None:
            raise ConfigError(f"signal {self.name!r}: a time window needs timestamps, and the log has none")
        stamps = np.concatenate(train.timestamps) if train.timestamps else np.zeros(0)
        items = np.concatenate(train.sequences) if train.sequences else np.zeros(0, dtype=np.int64)
        users = np.repeat(np.arange(train.n_users), [s.size for s in train.sequences])
        known = np.isfinite(stamps)
        end = float(stamps[known].max()) if known.any() else 0.0
        recent = known & (stamps > end - self.window)
        # Distinct users per item inside the window: unique (user, item) pairs, then a bincount over items.
        pairs = np.unique(users[recent] * train.n_items + items[recent])
        windowed = np.log1p(np.bincount(pairs % train.n_items, minlength=train.n_items).astype(np.float64))
        self._scores = self.blend * windowed + (1.0 - self.blend) * all_time
        logger.debug("popularity window %.0fs keeps %d of %d events", self.window, int(recent.sum()), stamps.size)
        return self

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self._scores is None:
            raise not_fitted(self.name)
        return np.broadcast_to(self._scores, (len(queries), self._scores.size)).copy()
