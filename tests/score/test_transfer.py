"""Cold-item transfer signals (zsgen.score.transfer): the ridge map and the text neighbours by hand, each signal on
data where the answer is known, clear errors for items without text, and no cold item in any fit of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.evaluate.test_coldstart import write_dataset
from tests.retrieval.test_fused_add_items import new_items
from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.evaluate import evaluate
from zsgen.interactions import Interactions
from zsgen.loaders import load_dataset
from zsgen.score import FusionConfig, TrainData, UserQuery
from zsgen.score.base import Scorer
from zsgen.score.fusion import build_signal
from zsgen.score.transfer import (
    NeighbourTransferConfig,
    NeighbourTransferScorer,
    PredictedPopularityConfig,
    PredictedPopularityScorer,
    TextFactorConfig,
    TextFactorScorer,
)
from zsgen.score.transfer.features import attribute_features, fit_ridge, text_neighbours
from zsgen.types import Item


def test_ridge_recovers_a_linear_map_and_its_penalty_grows_with_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    w = rng.normal(size=(5, 2))
    exact = fit_ridge(x, x @ w + 3.0)
    assert np.allclose(exact.predict(x), x @ w + 3.0, atol=1e-2)
    noisy = fit_ridge(x, x @ w * 0.01 + rng.normal(size=(200, 2)))
    assert noisy.alpha > exact.alpha  # leave-one-out error prefers shrinking when the signal is weak


def test_text_neighbours_are_warm_never_self_and_sum_to_one() -> None:
    vectors = np.eye(4, dtype=np.float32) + 0.1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    warm = np.array([0, 1, 2], dtype=np.int64)
    graph = text_neighbours(vectors, warm, k=2).toarray()
    assert np.allclose(graph.sum(axis=1), 1.0)
    assert np.all(np.diag(graph) == 0)  # no item inherits from itself
    assert np.all(graph[:, 3] == 0)  # item 3 has no interactions: nobody inherits from it


def _catalog(n: int) -> Catalog:
    return Catalog(Item(id=f"i{i}", title=f"Film {i}", year=1990 + i % 3, genres=("Drama",)) for i in range(n))


def _train(sequences: list[list[int]], n_items: int) -> TrainData:
    return TrainData([np.array(s, dtype=np.int64) for s in sequences], None, n_items)


def test_predicted_popularity_copies_its_text_twin() -> None:
    # Items 0-3 and 4-7 are two "topics" by text; topic A is popular, topic B is not. Item 8 reads like topic A,
    # item 9 like topic B; neither has an interaction.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=16), rng.normal(size=16)
    vectors = np.array(
        [a + 0.1 * rng.normal(size=16) for _ in range(4)] + [b + 0.1 * rng.normal(size=16) for _ in range(4)] + [a, b]
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sequences = [[0, 1, 2, 3, 4]] * 6 + [[5], [6], [7]]
    scorer = PredictedPopularityScorer(item_vectors=vectors).fit(_catalog(10), _train(sequences, 10))
    scores = scorer.score([UserQuery(history=np.array([0]))])[0]
    assert scores[8] > scores[9]
    assert scores[0] == pytest.approx(np.log1p(6))  # observed counts stay as they are (warm = "observed")
    predicted = PredictedPopularityScorer(PredictedPopularityConfig(warm="predicted"), item_vectors=vectors)
    assert (
        predicted.fit(_catalog(10), _train(sequences, 10)).score([UserQuery(history=np.array([0]))])[0][0] != scores[0]
    )


def test_text_factors_and_neighbours_send_a_cold_twin_to_its_fans() -> None:
    # Two taste groups: users 0-9 watch items 0-4, users 10-19 watch items 5-9. Item 10 (cold) reads like item 2,
    # item 11 (cold) like item 7.
    rng = np.random.default_rng(2)
    base = rng.normal(size=(10, 32))
    vectors = np.vstack([base, base[2] + 0.05 * rng.normal(size=32), base[7] + 0.05 * rng.normal(size=32)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sequences = [list(rng.permutation(5)) for _ in range(10)] + [list(5 + rng.permutation(5)) for _ in range(10)]
    catalog, train = _catalog(12), _train(sequences, 12)
    fan_a, fan_b = UserQuery(history=np.array([0, 1])), UserQuery(history=np.array([5, 6]))
    for scorer in (
        # Rank 2 is the log's whole structure (two blocks); higher ranks add directions with zero singular value,
        # which ARPACK returns differently from one BLAS build to another.
        TextFactorScorer(TextFactorConfig(factors=2), item_vectors=vectors),
        NeighbourTransferScorer(NeighbourTransferConfig(neighbours=1), item_vectors=vectors),
    ):
        scores = scorer.fit(catalog, train).score([fan_a, fan_b])
        assert scores[0, 10] > scores[0, 11] and scores[1, 11] > scores[1, 10], type(scorer).__name__


def test_items_without_text_are_refused_by_name() -> None:
    catalog = _catalog(5)
    vectors = np.ones((5, 4), dtype=np.float32)
    vectors[3] = 0.0
    train = _train([[0, 1, 2], [1, 2, 4], [0, 4]], 5)
    with pytest.raises(DataError, match=r"i3.*title or description"):
        TextFactorScorer(item_vectors=vectors).fit(catalog, train)
    with pytest.raises(DataError, match="item_vectors has shape"):
        PredictedPopularityScorer(item_vectors=vectors[:4]).fit(catalog, train)
    blank = Catalog([*catalog, Item(id="x", title=" ")])
    with pytest.raises(DataError, match=r"\['x'\]"):
        NeighbourTransferScorer().fit(blank, _train([[0, 1], [1, 2], [2, 3]], 6))


def test_transfer_signal_params_are_checked_by_name() -> None:
    """A transfer kind is a registered signal kind: its parameters are checked when the config is read."""
    with pytest.raises(ConfigError, match=r"signals\.tf\.params\.factorz: unknown key"):
        FusionConfig.model_validate(
            {"signals": {"tf": {"kind": "text_factors", "params": {"factorz": 8}}}, "weights": {"tf": 1.0}}
        )
    config = FusionConfig.model_validate(
        {"signals": {"tf": {"kind": "text_factors", "params": {"factors": 2}}}, "weights": {"tf": 1.0}}
    )
    scorer = build_signal("tf", config.signals["tf"], item_vectors=np.eye(3))
    assert scorer.config.factors == 2  # type: ignore[attr-defined]


def test_attribute_features_one_hot_and_standardised() -> None:
    catalog = Catalog(
        Item(id=str(i), title="t", year=1950 + 10 * i, genres=("A",) if i % 2 else ("B",), attributes={"lang": "en"})
        for i in range(6)
    )
    matrix, names = attribute_features(catalog)
    assert "genre=A" in names and "year" in names and "decade=1950" not in names  # single-item decade dropped
    assert "attr:lang=en" not in names  # a value every item shares says nothing
    assert np.allclose(matrix.std(axis=0), 1.0)


@pytest.fixture
def fitted_trains(monkeypatch: pytest.MonkeyPatch) -> list[TrainData]:
    """Every TrainData a transfer signal is fitted on during the test (the real scorers, fitted as usual)."""
    seen: list[TrainData] = []
    for cls in (PredictedPopularityScorer, TextFactorScorer, NeighbourTransferScorer):
        original = cls.fit

        def fit(self: Scorer, catalog: Catalog, train: TrainData | None, _original: Any = original) -> Any:
            assert train is not None
            seen.append(train)
            return _original(self, catalog, train)

        monkeypatch.setattr(cls, "fit", fit)
    return seen


def test_cold_item_run_never_fits_a_transfer_signal_on_a_cold_item(
    tmp_path: Path, fitted_trains: list[TrainData]
) -> None:
    folder = write_dataset(tmp_path / "toy")
    dataset = load_dataset(folder)
    assert isinstance(dataset.interactions, Interactions)
    fusion = folder / "fusion.toml"
    fusion.write_text(
        """
[signals.text]
kind = "text"
[signals.pop]
kind = "predicted_popularity"
[signals.factors]
kind = "text_factors"
[signals.factors.params]
factors = 4
[signals.neighbours]
kind = "neighbour_transfer"
[weights]
pop = 1.0
factors = 1.0
neighbours = 1.0
[search]
max_trials = 8
""",
        encoding="utf-8",
    )
    config = {
        "name": "cold",
        "protocol": "cold_items",
        "seed": 1,
        "dataset": {"path": str(folder)},
        "cold": {"fraction": 0.25},
        "metrics": {"bootstrap": 20, "ks": [1, 5]},
        "rankers": [{"name": "fused", "kind": "fused", "fusion": str(fusion)}],
    }
    out = tmp_path / "run"
    evaluate(config, out, progress=False)

    records = [json.loads(line) for line in (out / "per_user.jsonl").read_text(encoding="utf-8").splitlines()]
    cold = {dataset.catalog.index_of(t) for r in records for t in r["targets"]}
    # All three signals on the validation split (tuning fits every signal), those with weight on the test split.
    assert cold and len(fitted_trains) >= 4
    for train in fitted_trains:
        fitted_items = {int(i) for sequence in train.sequences for i in sequence}
        assert not cold & fitted_items


def test_a_new_item_that_reads_like_a_favourite_reaches_its_fans_under_the_fused_stage(shared_data: Path) -> None:
    """The packaged fused first stage over ML-100K plus two items nobody has touched (as a PUT adds them): a Star
    Wars re-release reaches the top 20 of many users who just watched Star Wars, a tax-filing video reaches nobody's."""
    from zsgen.retrieval.base import Request
    from zsgen.retrieval.fused import FusedRetriever

    dataset = load_dataset(shared_data / "ml-100k")
    catalog, interactions = dataset.catalog, dataset.interactions
    assert interactions is not None
    star_wars, new, dull = new_items(catalog)
    stage = FusedRetriever.packaged(Catalog([*catalog, new, dull]), interactions)
    index = catalog.index_of(star_wars.id)
    fans, others = [], []
    for positions in interactions.event_order_by_user():
        items = interactions.item_index[positions]
        (fans if index in items[-5:] else others).append([catalog[int(i)].id for i in items])
    assert len(fans) >= 20

    def share(histories: list[list[str]], item: str) -> float:
        lists = stage.retrieve_batch([Request(h, None) for h in histories], k=20)
        return float(np.mean([any(c.id == item for c in found) for found in lists]))

    assert share(fans, "new-star-wars") >= 0.25  # measured 0.43; 0.0 before cold items were imputed
    assert share(fans, "new-star-wars") > 2 * share(others[:300], "new-star-wars")
    assert share(fans + others[:300], "new-dull") == 0.0


def test_mixed_split_never_fits_or_shows_a_cold_item(tmp_path: Path) -> None:
    from zsgen.evaluate.coldstart import seeded_subset
    from zsgen.evaluate.mixed import mixed_item_split

    dataset = load_dataset(write_dataset(tmp_path / "toy"))
    catalog, interactions = dataset.catalog, dataset.interactions
    assert interactions is not None
    cold = set(np.flatnonzero(seeded_subset(catalog.ids, 0.25, 1, "cold_items")).tolist())
    test = mixed_item_split(interactions, catalog, fraction=0.25, seed=1)
    orders = interactions.event_order_by_user()
    assert any(case.target in cold for case in test.cases) and any(case.target not in cold for case in test.cases)
    for case in test.cases:
        assert case.target == int(interactions.item_index[orders[case.user][-1]])  # the last event, cold or warm
        assert not cold & set(case.history.tolist())
    fitted = {int(i) for sequence in test.train.sequences for i in sequence}
    assert not cold & fitted
    val = mixed_item_split(interactions, catalog, fraction=0.25, seed=1, holdout="validation")
    fitted_val = {int(i) for sequence in val.train.sequences for i in sequence}
    assert not cold & fitted_val
    for case in val.cases:
        assert case.target not in cold and case.target != int(interactions.item_index[orders[case.user][-1]])
    test_targets = {(c.user, c.target) for c in test.cases}
    for user, sequence in enumerate(val.train.sequences):  # no test target reaches the validation fit
        assert not {(user, int(i)) for i in sequence} & test_targets


@pytest.mark.slow
def test_hybrid_yardstick_is_seeded_and_scores_a_cold_twin_from_its_features() -> None:
    from zsgen.baselines.config import HybridConfig
    from zsgen.baselines.hybrid import HybridScorer

    rng = np.random.default_rng(3)
    base = rng.normal(size=(10, 32))
    vectors = np.vstack([base, base[2] + 0.05 * rng.normal(size=32), base[7] + 0.05 * rng.normal(size=32)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sequences = [list(rng.permutation(5)) for _ in range(10)] + [list(5 + rng.permutation(5)) for _ in range(10)]
    catalog, train = _catalog(12), _train(sequences, 12)
    config = HybridConfig(factors=8, epochs=30, patience=30, lr=0.05, batch_size=16)
    first = HybridScorer(config, seed=1, item_vectors=vectors).fit(catalog, train)
    again = HybridScorer(config, seed=1, item_vectors=vectors).fit(catalog, train)
    queries = [UserQuery(history=np.array([0, 1])), UserQuery(history=np.array([5, 6]))]
    scores = first.score(queries)
    np.testing.assert_array_equal(scores, again.score(queries))  # same seed, same thread count: same model
    assert first.training["best_epoch"] >= 1
    assert scores[0, 10] > scores[0, 11] and scores[1, 11] > scores[1, 10]


def test_new_items_join_each_transfer_signal_without_a_refit() -> None:
    """``with_items`` places appended items through what each signal learnt; nothing is fitted again. The old
    items keep their scores, and the new item scores as a refit over the extended catalog would score it."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(12, 16))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    catalog = Catalog(
        Item(id=str(i), title=f"t{i}", year=1980 + i, genres=("A",) if i % 2 else ("B",)) for i in range(12)
    )
    # Items 0-5 are each watched by about half their group, items 6-11 by all of theirs: popularity differs.
    sequences = [list(rng.permutation(6))[:3] for _ in range(10)] + [list(6 + rng.permutation(6)) for _ in range(10)]
    train = _train(sequences, 12)
    twin = base[7] + 0.02 * rng.normal(size=16)
    new_vectors = (twin / np.linalg.norm(twin))[None, :]
    extended = Catalog([*catalog, Item(id="new", title="t7 again", year=1987, genres=("A",))])
    queries = [UserQuery(history=np.array([0, 1])), UserQuery(history=np.array([6, 8]))]
    for scorer in (
        PredictedPopularityScorer(item_vectors=base),
        TextFactorScorer(TextFactorConfig(factors=2), item_vectors=base),
        NeighbourTransferScorer(NeighbourTransferConfig(neighbours=3), item_vectors=base),
    ):
        fitted = scorer.fit(catalog, train)
        before = fitted.score(queries)
        fitted.fit = None  # type: ignore[assignment,method-assign]  # anything that fits again fails
        grown = fitted.with_items(extended, new_vectors)
        scores = grown.score(queries)
        name = type(scorer).__name__
        assert scores.shape == (2, 13), name
        np.testing.assert_allclose(scores[:, :12], before, rtol=1e-9, err_msg=name)  # old items as they were
        refit = type(scorer)(scorer.config, item_vectors=np.vstack([base, new_vectors]))  # type: ignore[arg-type]
        refitted = refit.fit(extended, _train(sequences, 13)).score(queries)
        # As a refit over the extended catalog scores the new (cold) item: the same numbers for the neighbours (up to
        # float32 rounding), and
        # for the maps up to the attribute columns' centring and spread, which a refit takes over 13 items, not 12.
        exact = isinstance(scorer, NeighbourTransferScorer)
        np.testing.assert_allclose(scores[:, 12], refitted[:, 12], rtol=1e-6 if exact else 1e-2, err_msg=name)
        if not isinstance(scorer, PredictedPopularityScorer):  # the twin of a group-B item goes to the B fan
            assert scores[1, 12] > scores[0, 12], name
        assert fitted.score(queries).shape == (2, 12), name  # the fitted signal itself is untouched
    with pytest.raises(DataError, match="item_vectors has shape"):
        grown.with_items(Catalog([*extended, Item(id="x", title="x")]), np.ones((2, 16)))


def test_feature_space_places_new_items_in_the_fitted_columns() -> None:
    """A new item's attribute row uses the columns chosen on the fitted catalog: an unseen genre adds no column, a
    missing year reads as missing, and the fitted items' rows equal ``item_features``."""
    from zsgen.score.transfer.features import item_features
    from zsgen.score.transfer.space import fit_feature_space

    catalog = Catalog(
        Item(id=str(i), title="t", year=1950 + 10 * (i % 3), genres=("A",) if i % 2 else ("B",)) for i in range(6)
    )
    vectors = np.random.default_rng(0).normal(size=(6, 4))
    space = fit_feature_space(catalog, vectors)
    np.testing.assert_array_equal(space.transform(list(catalog), vectors), item_features(catalog, vectors))
    assert space.attributes is not None
    assert "genre=A" in space.attributes.names and "genre=Z" not in space.attributes.names
    [row] = space.transform([Item(id="n", title="n", genres=("Z",))], vectors[:1])
    attributes = dict(zip(space.attributes.names, row[4:], strict=True))
    assert attributes["genre=A"] == attributes["genre=B"] == 0.0
    assert attributes["year"] == 0.0  # no year: the centred value is zero (the fitted catalog has no missing flag)
