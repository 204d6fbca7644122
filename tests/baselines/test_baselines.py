"""The trained yardsticks (EASE, SASRec) on small hand-built logs where the right answer is known.

EASE is checked against its definition solved column by column; SASRec must learn a pattern a sequence model can
learn and a co-occurrence count cannot tell apart; both must be deterministic for a seed and must not know anything
they were not given in their TrainData.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from zsgen.baselines import (
    EASEConfig,
    EASEScorer,
    SASRecConfig,
    SASRecScorer,
    floor_unseen,
    last_event_holdout,
    trained_items,
)
from zsgen.baselines.ease import ease_weights, gram
from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.interactions import Interactions
from zsgen.score.base import TrainData, UserQuery, mask_history, top_k
from zsgen.types import Item


def make_catalog(n: int) -> Catalog:
    return Catalog([Item(id=f"i{k}", title=f"Item {k}") for k in range(n)])


def train_of(sequences: list[list[int]], n_items: int) -> TrainData:
    return TrainData(sequences=[np.array(s, dtype=np.int64) for s in sequences], timestamps=None, n_items=n_items)


def queries(*histories: list[int]) -> list[UserQuery]:
    return [UserQuery(history=np.array(h, dtype=np.int64)) for h in histories]


# -- EASE ---------------------------------------------------------------------------------------------------------


def test_ease_weights_solve_the_constrained_least_squares_column_by_column() -> None:
    """Steck's closed form equals, for every item j, ridge regression of x_j on the other items' columns."""
    rng = np.random.default_rng(1)
    train = train_of([list(rng.choice(8, size=int(rng.integers(2, 6)), replace=False)) for _ in range(30)], 8)
    x = train.incidence().toarray()
    l2 = 3.0
    b = ease_weights(gram(train), l2)
    for j in range(8):
        others = [i for i in range(8) if i != j]
        xo = x[:, others]
        column = np.linalg.solve(xo.T @ xo + l2 * np.eye(7), xo.T @ x[:, j])
        assert b[j, j] == 0.0
        np.testing.assert_allclose(b[others, j], column, atol=1e-10)


def test_ease_ranks_the_always_co_consumed_item_first() -> None:
    # Items 0 and 1 always go together, so do 2 and 3; 4 and 5 are consumed with anything.
    sequences = [[0, 1, 4], [1, 0, 5], [0, 1], [2, 3, 4], [3, 2, 5], [2, 3], [4, 5], [5, 4, 0, 1]]
    scorer = EASEScorer(EASEConfig(l2=[1.0])).fit(make_catalog(6), train_of(sequences, 6))
    asked = queries([0], [3])
    best = top_k(mask_history(scorer.score(asked), asked), 1)[:, 0]
    assert best.tolist() == [1, 2]
    assert scorer.training["l2"] == 1.0 and scorer.training["validation"] == {}


def test_ease_chooses_its_l2_weight_on_the_held_out_last_events() -> None:
    rng = np.random.default_rng(2)
    sequences = [list(rng.choice(10, size=5, replace=False)) for _ in range(40)]
    scorer = EASEScorer(EASEConfig(l2=[0.1, 10.0, 1000.0])).fit(make_catalog(10), train_of(sequences, 10))
    assert set(scorer.training["validation"]) == {"0.1", "10", "1000"}
    best = max(scorer.training["validation"].items(), key=lambda kv: kv[1])
    assert scorer.training["validation"][f"{scorer.training['l2']:g}"] == best[1]


def test_ease_config_refuses_non_positive_weights() -> None:
    with pytest.raises(ConfigError, match="l2"):
        EASEConfig(l2=[0.0])


# -- what the models may know -------------------------------------------------------------------------------------


def test_last_event_holdout_removes_each_users_last_event_only() -> None:
    holdout = last_event_holdout(train_of([[0, 1, 2], [3], [4, 5]], 6))
    assert [s.tolist() for s in holdout.train.sequences] == [[0, 1], [3], [4]]
    assert holdout.targets.tolist() == [2, 5]
    assert [q.history.tolist() for q in holdout.queries] == [[0, 1], [4]]


def test_unseen_items_rank_below_every_learned_item() -> None:
    scores = np.array([[3.0, -2.0, 9.0, 0.5]])
    floored = floor_unseen(scores, np.array([True, True, False, True]))
    assert floored.tolist() == [[3.0, -2.0, -3.0, 0.5]]


def held_out_item_log() -> tuple[Catalog, TrainData, list[UserQuery]]:
    """Item 7 is only ever the last event of user 0: the test target. TrainData built as the evaluation builds it
    (``holdout=1``) never contains it, so no trained model may rank it above anything it has learnt."""
    sequences = [[0, 1, 2, 3, 7]] + [[k % 7, (k + 1) % 7, (k + 2) % 7, (k + 3) % 7] for k in range(20)]
    users = np.concatenate([np.full(len(s), u) for u, s in enumerate(sequences)])
    interactions = Interactions(
        user_ids=[f"u{u}" for u in range(len(sequences))],
        user_index=users.astype(np.int64),
        item_index=np.concatenate([np.array(s) for s in sequences]).astype(np.int64),
        timestamp=np.concatenate([np.arange(len(s), dtype=np.float64) for s in sequences]),
        rating=np.full(int(users.size), np.nan),
    )
    train = TrainData.from_interactions(interactions, holdout=1, n_items=8)
    assert 7 not in np.concatenate(train.sequences)
    return make_catalog(8), train, queries([0, 1, 2, 3])


@pytest.mark.parametrize("kind", ["ease", "sasrec"])
def test_a_held_out_target_is_never_learnt(kind: str) -> None:
    catalog, train, asked = held_out_item_log()
    scorer: EASEScorer | SASRecScorer
    if kind == "ease":
        scorer = EASEScorer()
    else:
        scorer = SASRecScorer(SASRecConfig(hidden=16, blocks=1, max_length=8, epochs=3, dropout=0.0))
    scores = scorer.fit(catalog, train).score(asked)
    assert not trained_items(train)[7]
    assert scores[0, 7] < scores[0, :7].min()


# -- SASRec -------------------------------------------------------------------------------------------------------

N_CYCLE = 12


def successor_log(n_users: int = 48) -> TrainData:
    """Every user walks the cycle 0 → 1 → … → 11 → 0 from a random start for 3 to 9 steps: the next item is always
    the successor. Every item co-occurs with its successor *and* its predecessor equally often, so only order tells
    them apart."""
    rng = np.random.default_rng(5)
    starts = rng.integers(0, N_CYCLE, size=n_users)
    lengths = rng.integers(3, 10, size=n_users)
    return train_of([[(s + k) % N_CYCLE for k in range(n)] for s, n in zip(starts, lengths, strict=True)], N_CYCLE)


SMALL = SASRecConfig(hidden=32, blocks=1, heads=1, max_length=8, dropout=0.0, lr=5e-3, epochs=40, patience=10)


def test_sasrec_learns_that_the_next_item_is_the_successor() -> None:
    scorer = SASRecScorer(SMALL, seed=0).fit(make_catalog(N_CYCLE), successor_log())
    asked = queries(*[[(k - 2) % N_CYCLE, (k - 1) % N_CYCLE, k] for k in range(N_CYCLE)])
    best = top_k(mask_history(scorer.score(asked), asked), 1)[:, 0]
    assert best.tolist() == [(k + 1) % N_CYCLE for k in range(N_CYCLE)]
    assert scorer.training["validation"] == pytest.approx(1.0)
    assert 1 <= scorer.training["best_epoch"] <= scorer.training["epochs"] <= SMALL.epochs


def test_sasrec_is_deterministic_for_a_seed() -> None:
    config = SMALL.model_copy(update={"epochs": 3, "dropout": 0.2})
    catalog, train = make_catalog(N_CYCLE), successor_log()
    asked = queries([0, 1, 2], [5], [])
    first = SASRecScorer(config, seed=7).fit(catalog, train).score(asked)
    second = SASRecScorer(config, seed=7).fit(catalog, train).score(asked)
    other = SASRecScorer(config, seed=8).fit(catalog, train).score(asked)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_sasrec_seed_in_the_config_wins_over_the_run_seed() -> None:
    assert SASRecScorer(SASRecConfig(seed=3), seed=9).seed == 3
    assert SASRecScorer(SASRecConfig(), seed=9).seed == 9


def test_sasrec_config_checks_heads_divide_the_width() -> None:
    with pytest.raises(ConfigError, match="multiple of heads"):
        SASRecConfig(hidden=30, heads=4)


def test_scorers_need_logs_and_a_fit() -> None:
    for scorer in (EASEScorer(), SASRecScorer()):
        with pytest.raises(ConfigError, match="needs interaction logs"):
            scorer.fit(make_catalog(3), None)
        with pytest.raises(ConfigError, match="before fit"):
            scorer.score(queries([0]))


def test_importing_zsgen_and_the_baselines_does_not_import_torch() -> None:
    code = "import sys, zsgen, zsgen.baselines, zsgen.evaluate.runner; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
