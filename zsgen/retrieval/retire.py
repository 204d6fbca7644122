"""Retired items: still in the catalog (a history may name them), never retrieved again, for any first stage.

A catalog's order never changes (every vector matrix and score array follows it), so an item a service takes out of
circulation cannot simply be removed: users' histories keep naming it, and the fused stage's log signals are fitted
over its position. :class:`RetiredFilter` wraps any :class:`~zsgen.retrieval.base.FirstStage` instead and applies the
retired ids as an exclusion, like a user's seen items: it asks the stage for ``k`` plus the number of retired items
the user has not seen (capped at what the stage can rank), so that after dropping the retired ones at least ``k``
remain whenever the catalog has them. That is exact for both stages, because dropping items from a best-first list
leaves the best of the rest in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from zsgen.catalog import Catalog
from zsgen.retrieval.base import FirstStage, Request, check_requests, per_request_k
from zsgen.types import Candidate, History, Profile, Source

__all__ = ["RetiredFilter"]


class RetiredFilter:
    """``stage`` with the items of ``retired`` (ids of ``catalog``) never returned (a
    :class:`~zsgen.retrieval.base.FirstStage`; see the module docstring)."""

    def __init__(self, stage: FirstStage, catalog: Catalog, retired: Iterable[str] = ()) -> None:
        self.stage = stage
        self.catalog = catalog
        self.retired = frozenset(retired)
        catalog.indices_of(self.retired)  # an unknown id is an UnknownItemError now, not a silent no-op
        self.source: Source = stage.source

    @property
    def weights_origin(self) -> str | None:
        """The wrapped stage's provenance (a fused stage's weights), for the recommender's rankings."""
        origin = getattr(self.stage, "weights_origin", None)
        return None if origin is None else str(origin)

    def available(self, seen: Iterable[str]) -> int:
        """How many items a user who has seen ``seen`` can be recommended: neither seen nor retired."""
        return len(self.catalog) - len(self.retired.union(seen))

    def retrieve(
        self,
        history: History | Sequence[str] | None = None,
        profile: Profile | str | None = None,
        *,
        k: int = 20,
        threshold: float | None = None,
    ) -> list[Candidate]:
        """The ``k`` best items that are not retired (see :meth:`retrieve_batch`)."""
        return self.retrieve_batch([Request(history, profile)], k=k, threshold=threshold)[0]

    def retrieve_batch(
        self,
        requests: Sequence[Request],
        *,
        k: int | Sequence[int] = 20,
        threshold: float | None = None,
    ) -> list[list[Candidate]]:
        """The wrapped stage's answer over-fetched by the retired items each user has not seen, retired dropped."""
        batch = check_requests(requests)
        ks = per_request_k(k, len(batch))
        if not self.retired:
            return self.stage.retrieve_batch(batch, k=ks, threshold=threshold)
        asks = []
        for request, want in zip(batch, ks, strict=True):
            seen = set(request.item_keys)
            rankable = len(self.catalog) - len(seen)
            asks.append(min(want + len(self.retired - seen), rankable) if want >= 1 else want)
        found = self.stage.retrieve_batch(batch, k=asks, threshold=threshold)
        return [[c for c in cands if c.id not in self.retired][:want] for cands, want in zip(found, ks, strict=True)]
