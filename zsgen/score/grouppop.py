"""Popularity within the user's attribute group: the classic cold-user baseline when only a profile is known.

A new user who has told us their age band, gender or occupation gets the items most consumed by training users who
share those attributes. Groups are keys over ``group_by`` attributes; numeric attributes named in ``banded`` are cut
into bands of ``band_width`` (ages 20-29 form one group). A user whose group has no training user, or who has no
attributes at all, gets the all-time popularity; the all-time count also breaks ties inside a group (with a weight too
small to reorder distinct group counts), so the ranking is total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, not_fitted, require_logs

#: Weight of the all-time popularity inside a group: below the smallest gap between two distinct ``log1p`` group
#: counts (over 1e-4 for counts up to a few thousand) and above the rounding of tie-safe comparisons (1e-10).
TIE_BREAK = 1e-6


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(name.strip() for name in items if name.strip())


class GroupPopularityScorer:
    """``log1p`` of the distinct training users in the query user's group who consumed each item.

    ``group_by``: attribute names (a list, or one comma-separated string as fusion configs write it). ``banded``:
    those of them that are numbers to cut into bands of ``band_width``. Training users' attributes come from
    :attr:`TrainData.attributes`, the query user's from :attr:`UserQuery.attributes`.
    """

    needs_logs = True

    def __init__(
        self,
        group_by: str | Sequence[str] = "gender,age",
        *,
        banded: str | Sequence[str] = "age",
        band_width: float = 10.0,
        name: str = "group_popularity",
    ) -> None:
        self.group_by = _names(group_by)
        if not self.group_by:
            raise ConfigError(f"signal {name!r}: group_by names no attribute")
        if band_width <= 0:
            raise ConfigError(f"signal {name!r}: band_width must be positive, got {band_width}")
        self.banded = frozenset(_names(banded))
        self.band_width = float(band_width)
        self.name = name
        self._groups: dict[tuple[str, ...], np.ndarray] = {}
        self._all: np.ndarray | None = None

    def group_key(self, attributes: Mapping[str, str] | None) -> tuple[str, ...] | None:
        """The group of a user with ``attributes``; None when any grouping attribute is unknown."""
        if not attributes:
            return None
        key: list[str] = []
        for name in self.group_by:
            value = str(attributes.get(name, "")).strip()
            if not value:
                return None
            if name in self.banded:
                try:
                    number = float(value)
                except ValueError:
                    return None
                value = f"{int(number // self.band_width * self.band_width)}+"
            key.append(value)
        return tuple(key)

    def fit(self, catalog: Catalog, train: TrainData | None) -> GroupPopularityScorer:
        train = require_logs(self.name, train, catalog)
        if train.attributes is None:
            raise ConfigError(f"signal {self.name!r} needs user attributes, and the training data has none")
        incidence = train.incidence()
        self._all = np.log1p(np.asarray(incidence.sum(axis=0), dtype=np.float64).ravel())
        rows: dict[tuple[str, ...], list[int]] = {}
        for row, attributes in enumerate(train.attributes):
            key = self.group_key(attributes)
            if key is not None and train.sequences[row].size:
                rows.setdefault(key, []).append(row)
        self._groups = {
            key: np.log1p(np.asarray(incidence[members].sum(axis=0), dtype=np.float64).ravel())
            for key, members in rows.items()
        }
        return self

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self._all is None:
            raise not_fitted(self.name)
        out = np.empty((len(queries), self._all.size), dtype=np.float64)
        for row, query in enumerate(queries):
            key = self.group_key(query.attributes)
            group = self._groups.get(key) if key is not None else None
            out[row] = self._all if group is None else group + TIE_BREAK * self._all
        return out
