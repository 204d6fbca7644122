"""Leave-one-out by time on hand-built logs, and the seeded choices every run shares."""

from __future__ import annotations

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.interactions import Interactions
from zsgen.metrics.split import (
    derive_seed,
    holdout_events,
    leave_one_out,
    make_split,
    sample_users,
    user_rng,
    validation_split,
)
from zsgen.types import Item

NAN = float("nan")


def make_log(events: list[tuple[str, int, float]], users: list[str]) -> Interactions:
    """(user id, item index, timestamp) in file order."""
    return Interactions(
        user_ids=users,
        user_index=np.array([users.index(u) for u, _, _ in events], dtype=np.int64),
        item_index=np.array([i for _, i, _ in events], dtype=np.int64),
        timestamp=np.array([t for _, _, t in events], dtype=np.float64),
        rating=np.full(len(events), 4.0),
    )


LOG = make_log(
    [
        ("a", 0, 30.0),
        ("b", 5, 1.0),
        ("a", 1, 10.0),
        ("a", 2, 20.0),
        ("c", 7, 5.0),  # c has a single event: no history, skipped
        ("b", 6, 2.0),
        ("a", 3, 20.0),  # ties with item 2: file order keeps 2 before 3
        ("b", 4, 2.0),  # ties with item 6, listed after it
    ],
    ["a", "b", "c"],
)


def test_last_event_by_time_is_the_target_and_ties_keep_file_order() -> None:
    cases = {c.user_id: c for c in leave_one_out(LOG)}
    assert sorted(cases) == ["a", "b"]
    assert cases["a"].history.tolist() == [1, 2, 3]
    assert cases["a"].target == 0
    assert cases["b"].history.tolist() == [5, 6]
    assert cases["b"].target == 4
    assert cases["a"].user == 0 and cases["b"].user == 1


def test_validation_split_moves_one_step_back_and_hides_the_last_event() -> None:
    cases = {c.user_id: c for c in leave_one_out(LOG, "validation")}
    assert cases["a"].target == 3 and cases["a"].history.tolist() == [1, 2]
    assert cases["b"].target == 6 and cases["b"].history.tolist() == [5]
    assert holdout_events("validation") == 2 and holdout_events("test") == 1


def test_a_split_is_its_cases_and_training_data_without_the_held_out_events() -> None:
    test = make_split(LOG, "test", n_items=8)
    assert [c.user_id for c in test.cases] == [c.user_id for c in leave_one_out(LOG)]
    assert test.targets.tolist() == [0, 4] and test.users.tolist() == [0, 1]
    assert [q.history.tolist() for q in test.queries] == [[1, 2, 3], [5, 6]]
    assert [q.user for q in test.queries] == [0, 1]
    assert [s.tolist() for s in test.train.sequences] == [[1, 2, 3], [5, 6], []]  # the targets never reach scorers
    validation = validation_split(LOG, n_items=8)
    assert validation.targets.tolist() == [3, 6]
    assert [s.tolist() for s in validation.train.sequences] == [[1, 2], [5], []]
    assert make_split(LOG, "test", n_items=8, users=[1]).targets.tolist() == [4]
    assert test.subset([1]).targets.tolist() == [4] and test.subset([1]).train is test.train
    with pytest.raises(DataError, match="no user"):
        make_split(LOG, "validation", n_items=8, min_history=5)


def test_min_history_skips_short_users() -> None:
    assert [c.user_id for c in leave_one_out(LOG, min_history=3)] == ["a"]
    assert [c.user_id for c in leave_one_out(LOG, min_history=0)] == ["a", "b", "c"]
    c = leave_one_out(LOG, min_history=0)[2]
    assert c.history.size == 0 and c.target == 7


def test_unknown_times_keep_file_order() -> None:
    log = make_log([("u", 2, NAN), ("u", 0, NAN), ("u", 1, NAN)], ["u"])
    (case,) = leave_one_out(log)
    assert case.history.tolist() == [2, 0] and case.target == 1


def test_recent_history_and_history_model() -> None:
    catalog = Catalog([Item(id=f"i{n}", title=f"Item {n}") for n in range(8)])
    case = next(c for c in leave_one_out(LOG) if c.user_id == "a")
    assert case.recent(2).tolist() == [2, 3]
    assert case.recent(0).tolist() == []
    history = case.history_model(LOG, catalog, 2)
    assert history.item_ids == ["i2", "i3"]
    assert [e.timestamp for e in history.interactions] == [20.0, 20.0]
    assert case.history_model(LOG, catalog).item_ids == ["i1", "i2", "i3"]


def test_bad_holdout_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown holdout"):
        leave_one_out(LOG, "train")  # type: ignore[arg-type]


def test_user_sample_is_seeded_nested_and_order_free() -> None:
    log = make_log([(f"u{n}", k, float(k)) for n in range(60) for k in range(3)], [f"u{n}" for n in range(60)])
    cases = leave_one_out(log)
    small = sample_users(cases, 10, seed=7)
    large = sample_users(cases, 25, seed=7)
    assert len(small) == 10 and len(large) == 25
    assert {c.user_id for c in small} <= {c.user_id for c in large}
    assert [c.user for c in small] == sorted(c.user for c in small)
    assert [c.user_id for c in sample_users(list(reversed(cases)), 10, seed=7)][::-1] == [c.user_id for c in small]
    assert {c.user_id for c in sample_users(cases, 10, seed=8)} != {c.user_id for c in small}
    assert sample_users(cases, None, seed=7) == cases
    with pytest.raises(ConfigError):
        sample_users(cases, 0, seed=7)


def test_per_user_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(1, "user", "42") == derive_seed(1, "user", "42")
    assert len({derive_seed(s, "user", u) for s in range(3) for u in ("1", "2", "3")}) == 9
    assert user_rng(3, "9", "x").integers(1 << 30) == user_rng(3, "9", "x").integers(1 << 30)
    assert user_rng(3, "9", "x").integers(1 << 30) != user_rng(3, "9", "y").integers(1 << 30)
