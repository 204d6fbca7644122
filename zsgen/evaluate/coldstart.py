"""Cold-start protocols: held-out items nobody has touched, and new users with at most a few events.

zsgen exists for the cases where a recommender has little or nothing to learn from, so these protocols hold out what
the log-based signals would need and measure what is left:

- ``cold_items``: a seeded ``fraction`` of the catalog's items is *cold*. Every interaction with a cold item is
  removed from the training data (so from popularity, co-occurrence, filtering, any trained baseline and the fusion
  tuning). Each user with cold-item interactions is a case: the history is their warm events (time order), the
  candidates are all cold items, the targets are the cold items they interacted with (several per user). Log-based
  signals give every cold item the same score (nothing), so only text (and LLM) signals can order them.
- ``cold_users``: a seeded ``fraction`` of the users is *cold*; all their events are removed from the training data.
  Each cold user is evaluated with only their first ``history_events`` events (n) as history, and the next
  ``targets`` events after them (all of them when ``targets`` is 0) as the targets; candidates are every item outside
  the n-event history. The user's attributes (``<name>.user`` file, e.g. ML-100K's age, gender, occupation) are the
  case's attributes and, rendered as a short profile text, what the text signal reads — at n = 0 the only knowledge.

The fused ranker's weights are tuned on a validation split built the same way from warm data only: a second seeded
cold split carved out of the warm items (the test's cold items removed entirely) or out of the warm users (the
test's cold users removed entirely). No test target, and no test cold item or cold user, reaches a fitted signal.
Splits are seeded by hashing (seed, id), as :func:`zsgen.metrics.split.sample_users` is, so the choice does not
depend on file order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.evaluate.config import COLD_PROTOCOLS, EvalConfig
from zsgen.interactions import Interactions
from zsgen.metrics.split import Holdout, IndexArray, Split, UserCase, derive_seed
from zsgen.score.base import TrainData

logger = logging.getLogger(__name__)

__all__ = ["COLD_PROTOCOLS", "cold_item_split", "cold_split", "cold_user_split", "profile_text", "seeded_subset"]

ColdProtocol = Literal["cold_items", "cold_users"]
BoolArray = npt.NDArray[np.bool_]


def seeded_subset(ids: Sequence[str], fraction: float, seed: int, purpose: str) -> BoolArray:
    """A mask choosing ``round(fraction * len(ids))`` of ``ids``: those first in the order of a hash of
    (seed, purpose, id). Independent of the order of ``ids``; a smaller fraction picks a subset of a larger one."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"cold fraction must be between 0 and 1 (exclusive), got {fraction}")
    count = round(fraction * len(ids))
    order = sorted(range(len(ids)), key=lambda i: derive_seed(seed, purpose, ids[i]))
    mask = np.zeros(len(ids), dtype=bool)
    mask[order[:count]] = True
    return mask


def train_without(
    interactions: Interactions,
    keep: BoolArray,
    n_items: int,
    attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> TrainData:
    """Training data from the events where ``keep`` is True only (every user keeps their row, possibly empty), with
    each row's user attributes when they are known."""
    subset = Interactions(
        user_ids=interactions.user_ids,
        user_index=interactions.user_index[keep],
        item_index=interactions.item_index[keep],
        timestamp=interactions.timestamp[keep],
        rating=interactions.rating[keep],
        source=interactions.source,
    )
    train = TrainData.from_interactions(subset, n_items=n_items)
    rows: list[Mapping[str, str]] | None = None
    if attributes:
        rows = [dict(attributes.get(user, {})) for user in interactions.user_ids]
    return TrainData(train.sequences, train.timestamps, train.n_items, attributes=rows)


def profile_text(attributes: Mapping[str, str] | None, fields: Sequence[str] | None = None) -> str | None:
    """What a new user told us, as one line of text for the text encoder (``fields`` chooses and orders the
    attributes; all of them when None); None when nothing is known."""
    if not attributes:
        return None
    names = list(fields) if fields is not None else list(attributes)
    parts = [f"{name.replace('_', ' ')} {attributes[name]}" for name in names if attributes.get(name)]
    return ("User profile: " + ", ".join(parts) + ".") if parts else None


def _first_unique(items: npt.NDArray[np.int64], skip: npt.NDArray[np.int64] | None = None) -> IndexArray:
    """``items`` without repeats (first occurrence order), leaving out those in ``skip``."""
    seen: set[int] = set() if skip is None else {int(i) for i in skip}
    out: list[int] = []
    for item in items:
        if int(item) not in seen:
            seen.add(int(item))
            out.append(int(item))
    return np.array(out, dtype=np.int64)


def cold_item_split(
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
    """The cold-item split (see the module docstring). ``holdout="validation"``: the test's cold items are removed
    everywhere and a second cold set (``validation_fraction`` of the warm items, default ``fraction``) plays their
    part. Users need ``min_history`` warm events and at least one cold target to be a case."""
    item_ids = [catalog[i].id for i in range(len(catalog))]
    cold = seeded_subset(item_ids, fraction, seed, "cold_items")
    removed = cold.copy()
    if holdout == "validation":
        warm = np.flatnonzero(~cold)
        inner = seeded_subset([item_ids[i] for i in warm], validation_fraction or fraction, seed, "cold_items_val")
        cold = np.zeros(len(catalog), dtype=bool)
        cold[warm[inner]] = True
        removed |= cold
    keep = ~removed[interactions.item_index]
    train = train_without(interactions, keep, len(catalog), attributes)
    visible = ~(removed & ~cold)[interactions.item_index]  # validation: the test's cold items are gone for good
    cases: list[UserCase] = []
    for user, positions in enumerate(interactions.event_order_by_user()):
        positions = positions[visible[positions]]
        items = interactions.item_index[positions]
        is_cold = cold[items]
        events = np.asarray(positions[~is_cold], dtype=np.int64)
        targets = _first_unique(items[is_cold])
        if targets.size == 0 or events.size < min_history:
            continue
        user_id = interactions.user_ids[user]
        cases.append(
            UserCase(
                user=user,
                user_id=user_id,
                history=np.asarray(interactions.item_index[events], dtype=np.int64),
                events=events,
                target=int(targets[0]),
                targets=targets,
                attributes=None if attributes is None else attributes.get(user_id),
            )
        )
    if not cases:
        raise DataError(f"no user interacted with a cold item ({holdout} split)", path=interactions.source)
    logger.info(
        "cold items (%s): %d cold items, %d users, %.1f targets per user",
        holdout,
        int(cold.sum()),
        len(cases),
        float(np.mean([c.all_targets.size for c in cases])),
    )
    return Split(holdout, cases, train, candidate_items=np.flatnonzero(cold).astype(np.int64))


def cold_user_split(
    interactions: Interactions,
    catalog: Catalog,
    *,
    fraction: float,
    seed: int,
    history_events: int,
    targets: int = 10,
    holdout: Holdout = "test",
    validation_fraction: float | None = None,
    attributes: Mapping[str, Mapping[str, str]] | None = None,
    profile_fields: Sequence[str] | None = None,
) -> Split:
    """The cold-user split (see the module docstring). ``holdout="validation"``: the test's cold users are removed
    everywhere and a second cold set (``validation_fraction`` of the warm users, default ``fraction``) is evaluated
    the same way. ``targets``: how many events after the history are targets (0: all of them); repeats and items
    already in the history are left out of the targets (they cannot be recommended)."""
    if history_events < 0:
        raise ConfigError(f"history_events must be >= 0, got {history_events}")
    if targets < 0:
        raise ConfigError(f"targets must be >= 0 (0: every later event), got {targets}")
    cold = seeded_subset(interactions.user_ids, fraction, seed, "cold_users")
    removed = cold.copy()
    evaluated = cold
    if holdout == "validation":
        warm = np.flatnonzero(~cold)
        inner = seeded_subset(
            [interactions.user_ids[u] for u in warm], validation_fraction or fraction, seed, "cold_users_val"
        )
        evaluated = np.zeros(interactions.n_users, dtype=bool)
        evaluated[warm[inner]] = True
        removed |= evaluated
    keep = ~removed[interactions.user_index]
    train = train_without(interactions, keep, len(catalog), attributes)
    cases: list[UserCase] = []
    orders = interactions.event_order_by_user()
    for user in np.flatnonzero(evaluated):
        positions = orders[int(user)]
        events = np.asarray(positions[:history_events], dtype=np.int64)
        history = np.asarray(interactions.item_index[events], dtype=np.int64)
        later = _first_unique(interactions.item_index[positions[history_events:]], skip=history)
        chosen = later if targets == 0 else later[:targets]
        if len(positions) < history_events or chosen.size == 0:
            continue
        user_id = interactions.user_ids[int(user)]
        known = None if attributes is None else attributes.get(user_id)
        cases.append(
            UserCase(
                user=int(user),
                user_id=user_id,
                history=history,
                events=events,
                target=int(chosen[0]),
                targets=chosen,
                profile=profile_text(known, profile_fields),
                attributes=known,
            )
        )
    if not cases:
        raise DataError(
            f"no cold user has more than {history_events} events ({holdout} split)", path=interactions.source
        )
    logger.info(
        "cold users (%s, n=%d): %d users, %.1f targets per user, %d with a profile",
        holdout,
        history_events,
        len(cases),
        float(np.mean([c.all_targets.size for c in cases])),
        sum(c.profile is not None for c in cases),
    )
    return Split(holdout, cases, train)


def cold_split(config: EvalConfig, catalog: Catalog, interactions: Interactions, holdout: Holdout) -> Split:
    """The ``holdout`` split of a cold-start run, as its ``[cold]`` table says; user attributes are read from the
    dataset's user file (none: no profiles, no groups, and a warning)."""
    from zsgen.loaders.users import load_user_attributes

    attributes = load_user_attributes(config.dataset.path)
    if not attributes:
        logger.warning("%s has no user attributes: cold users get no profile text", config.dataset.path)
    cold = config.cold
    if config.protocol == "cold_items":
        return cold_item_split(
            interactions,
            catalog,
            fraction=cold.fraction,
            seed=config.seed,
            holdout=holdout,
            min_history=config.min_history,
            validation_fraction=cold.validation_fraction,
            attributes=attributes or None,
        )
    if config.protocol == "cold_users":
        return cold_user_split(
            interactions,
            catalog,
            fraction=cold.fraction,
            seed=config.seed,
            history_events=cold.history_events,
            targets=cold.targets,
            holdout=holdout,
            validation_fraction=cold.validation_fraction,
            attributes=attributes or None,
            profile_fields=cold.profile_fields,
        )
    if config.protocol == "mixed_items":
        from zsgen.evaluate.mixed import mixed_item_split

        return mixed_item_split(
            interactions,
            catalog,
            fraction=cold.fraction,
            seed=config.seed,
            holdout=holdout,
            min_history=config.min_history,
            validation_fraction=cold.validation_fraction,
            attributes=attributes or None,
        )
    raise ConfigError(f"protocol {config.protocol!r} is not a cold-start protocol; expected one of {COLD_PROTOCOLS}")
