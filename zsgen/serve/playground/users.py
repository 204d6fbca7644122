"""The user a template is tried on: one of the dataset's users (with their held-out event) or one typed in.

A dataset user is shown as leave-one-out evaluation sees them (:func:`zsgen.metrics.split.leave_one_out`): every
event but the last is the history, the last is the held-out target, so the page can say where the item the user
really chose next lands in the first-stage and in the reranked order. A typed user is item ids or titles (resolved
by the catalog, with suggestions on a typo) and/or a profile text, and has no target.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from zsgen.errors import ConfigError, EmptyHistoryError
from zsgen.interactions import Dataset
from zsgen.metrics.split import UserCase, leave_one_out
from zsgen.recommender import Recommender
from zsgen.types import History, Profile

__all__ = ["PickedUser", "UserBook"]


@dataclass(frozen=True)
class PickedUser:
    """One user as the prompt sees them, and the item they chose next when the dataset says so."""

    label: str
    history: History
    profile: Profile | None
    target: str | None = None


class UserBook:
    """The dataset's users by id, as leave-one-out cases (built once, on first use: a log may be large)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._cases: list[UserCase] | None = None
        self._by_id: dict[str, UserCase] = {}
        self._lock = threading.Lock()

    @property
    def has_users(self) -> bool:
        return self.dataset.interactions is not None

    def cases(self) -> list[UserCase]:
        """Every user with at least one event before the held-out one, in log order."""
        with self._lock:
            if self._cases is None:
                log = self.dataset.interactions
                self._cases = leave_one_out(log, "test", min_history=1) if log is not None else []
                self._by_id = {case.user_id: case for case in self._cases}
            return self._cases

    def ids(self, prefix: str = "", limit: int = 50) -> list[str]:
        """User ids starting with ``prefix``, in log order, at most ``limit`` (the page's typeahead)."""
        found: list[str] = []
        for case in self.cases():
            if case.user_id.startswith(prefix):
                found.append(case.user_id)
                if len(found) >= limit:
                    break
        return found

    def case(self, user_id: str) -> UserCase:
        self.cases()
        try:
            return self._by_id[user_id]
        except KeyError:
            if not self.has_users:
                raise ConfigError("the loaded dataset has no interaction log, so no users to pick: type one") from None
            raise ConfigError(f"no user {user_id!r} with a held-out event in the loaded dataset") from None

    def picked(self, case: UserCase) -> PickedUser:
        log = self.dataset.interactions
        assert log is not None  # cases exist only with a log
        catalog = self.dataset.catalog
        return PickedUser(
            label=f"user {case.user_id}",
            history=case.history_model(log, catalog),
            profile=Profile(text=case.profile) if case.profile else None,
            target=catalog[case.target].id,
        )

    def resolve(
        self,
        recommender: Recommender,
        *,
        user_id: str | None,
        history: Sequence[str] | None,
        profile: str | None,
    ) -> PickedUser:
        """A dataset user (``user_id``) or a typed one (``history`` ids/titles and/or ``profile``), not both."""
        typed = bool(history) or bool(profile and profile.strip())
        if user_id:
            if typed:
                raise ConfigError("pick a dataset user or type a history/profile, not both")
            return self.picked(self.case(user_id))
        keys = [key for key in (history or []) if key.strip()]
        text = profile.strip() if profile else ""
        if not keys and not text:
            raise EmptyHistoryError("pick a dataset user, or type a history (item ids or titles) or a profile text")
        return PickedUser(
            label="typed-in user",
            history=recommender.resolve_history(keys),
            profile=Profile(text=text) if text else None,
        )
