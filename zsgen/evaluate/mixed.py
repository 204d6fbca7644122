"""The mixed protocol: leave-one-out by time over the whole catalog, with 20% of the items cold.

Cold items are those of the cold-items protocol (same seed, same hash; :func:`~zsgen.evaluate.coldstart.seeded_subset`),
and every interaction with them is removed from what any signal fits, the validation included, and from the
histories. Each user's last event is the target, cold or warm; candidates are every item outside the history; the
training data is every user's visible history. Warm and cold items therefore compete in one list, which is what the
served first stage must do with items added at run time.

The validation split removes the test's cold items for good, cuts off each user's last event (the test target),
makes the last remaining event the target, and holds a second cold set out of the warm items (as the cold-items
protocol's validation does), so the fusion weights are chosen on warm data with cold targets in the mix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from zsgen.catalog import Catalog
from zsgen.errors import DataError
from zsgen.evaluate.coldstart import seeded_subset, train_without
from zsgen.interactions import Interactions
from zsgen.metrics.split import Holdout, Split, UserCase

logger = logging.getLogger(__name__)


def mixed_item_split(
    interactions: Interactions,
    catalog: Catalog,
    *,
    fraction: float,
    seed: int,
    holdout: Holdout = "test",
    min_history: int = 1,
    validation_fraction: float | None = None,
    attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> Split:
    """The mixed split (module docstring); ``candidate_items`` is None (the full catalog)."""
    item_ids = [catalog[i].id for i in range(len(catalog))]
    cold = seeded_subset(item_ids, fraction, seed, "cold_items")
    hidden = cold.copy()  # items whose events nothing may see
    if holdout == "validation":
        warm = np.flatnonzero(~cold)
        inner = seeded_subset([item_ids[i] for i in warm], validation_fraction or fraction, seed, "cold_items_val")
        hidden[warm[inner]] = True
    keep = np.zeros(len(interactions), dtype=bool)
    cases: list[UserCase] = []
    for user, positions in enumerate(interactions.event_order_by_user()):
        if holdout == "validation":
            positions = positions[:-1]  # the test target is cut off first
            positions = positions[~cold[interactions.item_index[positions]]]  # the test's cold items are gone
        if positions.size < 2:
            continue
        target_event = positions[-1]
        earlier = positions[:-1]
        visible = earlier[~hidden[interactions.item_index[earlier]]]
        keep[visible] = True
        if visible.size < min_history:
            continue
        cases.append(
            UserCase(
                user=user,
                user_id=interactions.user_ids[user],
                history=np.asarray(interactions.item_index[visible], dtype=np.int64),
                events=np.asarray(visible, dtype=np.int64),
                target=int(interactions.item_index[target_event]),
            )
        )
    if not cases:
        raise DataError(f"no user has the events the mixed protocol needs ({holdout} split)", path=interactions.source)
    train = train_without(interactions, keep, len(catalog), attributes)
    is_cold = hidden & ~cold if holdout == "validation" else cold
    logger.info(
        "mixed items (%s): %d cold items, %d users, %d with a cold target",
        holdout,
        int(is_cold.sum()),
        len(cases),
        sum(bool(is_cold[c.target]) for c in cases),
    )
    return Split(holdout, cases, train)
