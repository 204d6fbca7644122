"""Interaction logs (user, item, time, rating) as column arrays aligned to a catalog's item order."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.types import History, Interaction


@dataclass(frozen=True)
class Interactions:
    """All events of a log, in file order.

    ``user_index`` points into ``user_ids``; ``item_index`` points into the catalog. ``timestamp`` and ``rating`` are
    NaN where unknown. Keeping file order lets splits break timestamp ties the way the file lists them.
    """

    user_ids: list[str]
    user_index: npt.NDArray[np.int64]
    item_index: npt.NDArray[np.int64]
    timestamp: npt.NDArray[np.float64]
    rating: npt.NDArray[np.float64]
    source: str | None = None
    _by_user: list[npt.NDArray[np.int64]] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.user_index.shape[0])

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def event_order_by_user(self) -> list[npt.NDArray[np.int64]]:
        """For each user, the positions of their events sorted by time; ties (and unknown times) keep file order."""
        if self._by_user is None:
            ts = np.where(np.isnan(self.timestamp), -np.inf, self.timestamp)
            order = np.lexsort((np.arange(len(self)), ts, self.user_index))
            bounds = np.searchsorted(self.user_index[order], np.arange(self.n_users + 1))
            groups = [order[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]
            object.__setattr__(self, "_by_user", groups)
        assert self._by_user is not None
        return self._by_user

    def item_sequences(self) -> list[npt.NDArray[np.int64]]:
        """Each user's catalog item indices in time order."""
        return [self.item_index[positions] for positions in self.event_order_by_user()]

    def history(self, user_position: int, catalog: Catalog) -> History:
        """One user's history as the public data model (oldest first)."""
        positions = self.event_order_by_user()[user_position]
        return History(
            interactions=[
                Interaction(
                    item_id=catalog[int(self.item_index[p])].id,
                    timestamp=None if np.isnan(self.timestamp[p]) else float(self.timestamp[p]),
                    rating=None if np.isnan(self.rating[p]) else float(self.rating[p]),
                )
                for p in positions
            ]
        )


@dataclass(frozen=True)
class Dataset:
    """A catalog and, when the source has one, its interaction log."""

    catalog: Catalog
    interactions: Interactions | None = None
