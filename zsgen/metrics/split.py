"""Leave-one-out by time, and the seeded choices (user samples, per-user seeds) every part of a run shares.

The split follows LLMRank and NIR: each user's events are put in timestamp order (ties and unknown times keep file
order, :meth:`Interactions.event_order_by_user`), the last one is the target and everything before it is the history.
A validation split moves one step back (second-to-last is the target, the last is never seen) so weights can be tuned
without touching the test targets.

Seeds are derived from ``(seed, user id, purpose)`` with a hash rather than drawn from one shared generator, so a
user's random candidates or random ranking do not depend on which other users are in the run, on their order, or on
whether the run was interrupted and resumed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.interactions import Interactions
from zsgen.types import History, Interaction

if TYPE_CHECKING:  # scorers load scipy.stats; the split must stay cheap to import (configs, summaries, the CLI)
    from zsgen.score.base import TrainData, UserQuery

logger = logging.getLogger(__name__)

IndexArray = npt.NDArray[np.int64]
Holdout = Literal["test", "validation"]

#: How many trailing events each holdout removes from a user's training data.
HOLDOUT_EVENTS: dict[str, int] = {"test": 1, "validation": 2}


@dataclass(frozen=True)
class UserCase:
    """One user's evaluation case.

    ``user`` is the user's row in ``Interactions.user_ids`` (and so in :class:`zsgen.score.TrainData`);
    ``history`` holds catalog indices oldest first, every event before the target; ``events`` are the positions of
    those events in the log, kept so timestamps and ratings can be shown to the reranker.

    Leave-one-out cases have one ``target``. Cold-start cases (:mod:`zsgen.evaluate.coldstart`) have several:
    ``targets`` holds them all (``target`` is the first), and may carry the user's ``profile`` text and
    ``attributes`` (what a new user told us), which reach the scorers through :func:`queries_for`.
    """

    user: int
    user_id: str
    history: IndexArray
    events: IndexArray
    target: int
    targets: IndexArray | None = None
    profile: str | None = None
    attributes: Mapping[str, str] | None = None

    @property
    def all_targets(self) -> IndexArray:
        """Every target of the case (just ``target`` for leave-one-out)."""
        return self.targets if self.targets is not None else np.array([self.target], dtype=np.int64)

    def recent(self, length: int) -> IndexArray:
        """The most recent ``length`` history items: what a prompt sees."""
        return self.history[-length:] if length > 0 else self.history[:0]

    def history_model(self, interactions: Interactions, catalog: Catalog, length: int | None = None) -> History:
        """The (most recent ``length``) history as the public data model, with times and ratings when known."""
        events = self.events if length is None else (self.events[-length:] if length > 0 else self.events[:0])
        return History(
            interactions=[
                Interaction(
                    item_id=catalog[int(interactions.item_index[p])].id,
                    timestamp=None if np.isnan(interactions.timestamp[p]) else float(interactions.timestamp[p]),
                    rating=None if np.isnan(interactions.rating[p]) else float(interactions.rating[p]),
                )
                for p in events
            ]
        )


def holdout_events(holdout: str) -> int:
    """1 for the test split, 2 for validation: what ``TrainData.from_interactions(holdout=...)`` must drop."""
    try:
        return HOLDOUT_EVENTS[holdout]
    except KeyError:
        raise ConfigError(f"unknown holdout {holdout!r}; expected one of {sorted(HOLDOUT_EVENTS)}") from None


def leave_one_out(interactions: Interactions, holdout: Holdout = "test", *, min_history: int = 1) -> list[UserCase]:
    """One case per user with at least ``min_history`` events before the target; users with fewer are skipped.

    ``holdout="test"``: the last event is the target. ``holdout="validation"``: the second-to-last is the target and
    the last one is left out entirely (it is the test target).
    """
    drop = holdout_events(holdout)
    if min_history < 0:
        raise ConfigError(f"min_history must be >= 0, got {min_history}")
    cases: list[UserCase] = []
    skipped = 0
    for user, positions in enumerate(interactions.event_order_by_user()):
        visible = positions[: len(positions) - (drop - 1)]
        if len(visible) < min_history + 1:
            skipped += 1
            continue
        events = np.asarray(visible[:-1], dtype=np.int64)
        cases.append(
            UserCase(
                user=user,
                user_id=interactions.user_ids[user],
                history=np.asarray(interactions.item_index[events], dtype=np.int64),
                events=events,
                target=int(interactions.item_index[visible[-1]]),
            )
        )
    if skipped:
        logger.info("leave-one-out (%s): skipped %d users with too few events", holdout, skipped)
    return cases


def queries_for(cases: Sequence[UserCase]) -> list[UserQuery]:
    """Scorer queries for cases: the whole visible history, the user's row in the training data, and the profile
    text and attributes of cold-start cases."""
    from zsgen.score.base import UserQuery

    return [
        UserQuery(history=case.history, user=case.user, profile=case.profile, attributes=case.attributes)
        for case in cases
    ]


@dataclass(frozen=True)
class Split:
    """One holdout of the log: the evaluated cases and the training data their signals may be fitted on.

    ``train`` drops each user's last :func:`holdout_events` events, so neither the split's targets nor (for the
    validation split) the test targets can reach a scorer. ``candidate_items`` (cold-item protocol) restricts what
    may be ranked to those catalog items; None means every item outside the history.
    """

    holdout: Holdout
    cases: list[UserCase]
    train: TrainData
    candidate_items: IndexArray | None = None

    @property
    def queries(self) -> list[UserQuery]:
        return queries_for(self.cases)

    @property
    def targets(self) -> IndexArray:
        """Each case's (first) target."""
        return np.array([case.target for case in self.cases], dtype=np.int64)

    @property
    def users(self) -> IndexArray:
        """Each case's row in ``Interactions.user_ids`` (and in ``train``)."""
        return np.array([case.user for case in self.cases], dtype=np.int64)

    def subset(self, rows: npt.ArrayLike) -> Split:
        """The cases at ``rows`` (positions in :attr:`cases`), with the same training data."""
        cases = [self.cases[int(r)] for r in np.asarray(rows).ravel()]
        return Split(self.holdout, cases, self.train, self.candidate_items)


def make_split(
    interactions: Interactions,
    holdout: Holdout = "test",
    *,
    n_items: int,
    min_history: int = 1,
    users: npt.ArrayLike | None = None,
) -> Split:
    """:func:`leave_one_out` cases and their training data; ``users`` keeps only those user rows (e.g. a sample)."""
    from zsgen.score.base import TrainData

    cases = leave_one_out(interactions, holdout, min_history=min_history)
    if users is not None:
        wanted = {int(u) for u in np.asarray(users, dtype=np.int64).ravel()}
        cases = [case for case in cases if case.user in wanted]
    if not cases:
        raise DataError(f"no user has enough events for a {holdout} split", path=interactions.source)
    train = TrainData.from_interactions(interactions, holdout=holdout_events(holdout), n_items=n_items)
    return Split(holdout, cases, train)


def validation_split(
    interactions: Interactions, *, n_items: int, min_history: int = 1, users: npt.ArrayLike | None = None
) -> Split:
    """The split weights are tuned on: each user's second-to-last event is the target and the last one (the test
    target) is cut off before any item is looked at."""
    return make_split(interactions, "validation", n_items=n_items, min_history=min_history, users=users)


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from a run seed and labels, stable across processes and Python versions (unlike ``hash``)."""
    text = "\x1f".join([str(seed), *parts]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


def user_rng(seed: int, user_id: str, purpose: str) -> np.random.Generator:
    """A generator private to one user and one use (candidates, random ranking...)."""
    return np.random.default_rng(derive_seed(seed, "user", user_id, purpose))


def sample_users(cases: Sequence[UserCase], n: int | None, seed: int) -> list[UserCase]:
    """A seeded sample of ``n`` cases (all when ``n`` is None), kept in log order.

    Users are ordered by a hash of (seed, user id) and the first ``n`` are taken, so a sample of 200 is contained in
    the sample of 300 with the same seed, and the choice does not depend on the order cases arrive in.
    """
    if n is None or n >= len(cases):
        return list(cases)
    if n <= 0:
        raise ConfigError(f"user sample size must be positive, got {n}")
    keys = sorted(range(len(cases)), key=lambda i: derive_seed(seed, "sample", cases[i].user_id))
    chosen = sorted(keys[:n])
    return [cases[i] for i in chosen]
