"""Fusion, the fusion config, weight tuning on the validation split, and the fused scorer end to end."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.evaluate.protocol import ranking_task
from zsgen.evaluate.tuning import tune_on_validation, tune_weights
from zsgen.interactions import Interactions
from zsgen.metrics.ranks import target_ranks
from zsgen.metrics.split import validation_split
from zsgen.score import PopularityScorer, TrainData, UserQuery, history_mask, mask_history, top_k
from zsgen.score.config import FusionConfig, SearchSpace, SignalConfig
from zsgen.score.cooccurrence import CooccurrenceScorer
from zsgen.score.fusion import FusedScorer, combine, fuse, normalise, reciprocal_rank_fusion
from zsgen.score.userfilter import UserFilteringScorer
from zsgen.types import History, Item

# -- a synthetic log where the validation and the test targets follow different signals --------------------------
N_ITEMS = 40
POPULAR = [0, 1, 2, 3, 4]


def two_regime_log(seed: int = 0, n_users: int = 80) -> Interactions:
    """Per user: pairs (a, a+1) with popular items mixed in; the validation target is the partner of the item
    before it (a sequential signal finds it); the test target is an unseen popular item (popularity finds it).

    Tuning on validation must prefer the sequential signal; tuning on the test targets would prefer popularity.
    """
    rng = np.random.default_rng(seed)
    users: list[int] = []
    items: list[int] = []
    for user in range(n_users):
        firsts = rng.choice(np.arange(10, 38, 2), size=5, replace=False)
        popular = rng.choice(POPULAR, size=2, replace=False)
        body = [int(x) for a in firsts[:4] for x in (a, a + 1)]
        for p in popular:
            body.insert(int(rng.integers(0, len(body) + 1)), int(p))
        unseen_popular = [p for p in POPULAR if p not in popular]
        seq = [*body, int(firsts[4]), int(firsts[4]) + 1, int(rng.choice(unseen_popular))]
        users += [user] * len(seq)
        items += seq
    order = rng.permutation(len(items))  # file order is shuffled; timestamps give the sequence order
    stamps = np.concatenate([np.arange(np.sum(np.array(users) == u)) for u in range(n_users)]).astype(float)
    return Interactions(
        user_ids=[f"u{u}" for u in range(n_users)],
        user_index=np.array(users, dtype=np.int64)[order],
        item_index=np.array(items, dtype=np.int64)[order],
        timestamp=(stamps + 1000.0 * np.array(users))[order],
        rating=np.full(len(items), np.nan),
    )


def corrupt_test_events(interactions: Interactions, seed: int) -> Interactions:
    """The same log with every user's last (test) event replaced by another random item."""
    rng = np.random.default_rng(seed)
    items = interactions.item_index.copy()
    for positions in interactions.event_order_by_user():
        items[positions[-1]] = int(rng.integers(0, N_ITEMS))
    return Interactions(
        user_ids=interactions.user_ids,
        user_index=interactions.user_index,
        item_index=items,
        timestamp=interactions.timestamp,
        rating=interactions.rating,
    )


def catalog(n: int = N_ITEMS) -> Catalog:
    return Catalog([Item(id=str(k), title=f"Item {k}") for k in range(n)])


TWO_SIGNALS = FusionConfig(
    signals={
        "popularity": SignalConfig(kind="popularity"),
        "sequential": SignalConfig(
            kind="cooccurrence", params={"window": 1, "recent": 1, "backward": 0.0, "normalise": "none"}
        ),
    },
    normalisation="zscore",
    search=SearchSpace(default_values=[0.0, 0.25, 1.0, 4.0], max_trials=50),
)


# -- normalisation and fusion ---------------------------------------------------------------------------------------
def test_normalisations_follow_their_definitions() -> None:
    scores = np.array([[3.0, 1.0, 3.0, 0.0, 2.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    rank = normalise(scores, "rank")
    np.testing.assert_allclose(rank[0], [1.0, 0.25, 1.0, 0.0, 0.5])  # ties share the best rank; n-1 = 4
    np.testing.assert_allclose(rank[1], [1.0] * 5)
    z = normalise(scores, "zscore")
    np.testing.assert_allclose(z[0], (scores[0] - scores[0].mean()) / scores[0].std())
    assert np.all(z[1] == 0.0)  # a constant row carries no information
    np.testing.assert_allclose(normalise(scores, "minmax")[0], [1.0, 1 / 3, 1.0, 0.0, 2 / 3])
    with pytest.raises(Exception, match="finite"):
        normalise(np.array([[1.0, -np.inf]]), "zscore")


def test_reciprocal_rank_fusion_matches_formula() -> None:
    a = np.array([[0.9, 0.1, 0.5]])
    b = np.array([[1.0, 2.0, 3.0]])
    fused = reciprocal_rank_fusion({"a": a, "b": b}, {"a": 2.0, "b": 1.0}, k=10)
    np.testing.assert_allclose(fused[0], [2 / 11 + 1 / 13, 2 / 13 + 1 / 12, 2 / 12 + 1 / 11])


def real_signals() -> tuple[dict[str, np.ndarray], list[UserQuery]]:
    """Real scorer outputs (with many ties: popularity, user filtering) on the synthetic log, plus noise."""
    inter = two_regime_log(1)
    train = TrainData.from_interactions(inter, holdout=1, n_items=N_ITEMS)
    queries = [UserQuery(history=s[:-1], user=u) for u, s in enumerate(inter.item_sequences())]
    signals = {
        "popularity": PopularityScorer(),
        "cooccurrence": CooccurrenceScorer(window=2),
        "user_filtering": UserFilteringScorer(neighbours=5),
    }
    out = {name: s.fit(catalog(), train).score(queries) for name, s in signals.items()}
    out["noise"] = np.random.default_rng(2).normal(size=out["popularity"].shape)
    return out, queries


@pytest.mark.parametrize("how", ["rank", "zscore", "minmax", "none", "rrf"])
def test_one_nonzero_weight_reproduces_that_signal_exactly(how: str) -> None:
    signals, queries = real_signals()
    for name, scores in signals.items():
        weights = {other: 0.0 for other in signals} | {name: 0.37}
        fused = (
            reciprocal_rank_fusion(signals, weights) if how == "rrf" else fuse(signals, weights, normalisation=how)  # type: ignore[arg-type]
        )
        for masked in (False, True):
            left = mask_history(fused, queries) if masked else fused
            right = mask_history(scores, queries) if masked else scores
            assert np.array_equal(top_k(left, N_ITEMS), top_k(right, N_ITEMS)), (name, masked)


def test_fuse_rejects_bad_weights() -> None:
    signals = {"a": np.zeros((2, 3)), "b": np.ones((2, 3))}
    with pytest.raises(ConfigError, match="zero"):
        fuse(signals, {"a": 0.0})
    with pytest.raises(ConfigError, match=">= 0"):
        fuse(signals, {"a": -1.0, "b": 1.0})
    with pytest.raises(ConfigError, match="without scores"):
        fuse(signals, {"c": 1.0})


# -- the config -----------------------------------------------------------------------------------------------------
def test_fusion_config_round_trips_through_toml_and_json(tmp_path: Path) -> None:
    config = TWO_SIGNALS.model_copy(
        update={"weights": {"popularity": 0.25, "sequential": 1.0}, "method": "rrf", "rrf_k": 30.0}
    )
    assert FusionConfig.from_toml(config.to_toml()) == config
    assert FusionConfig.from_json(config.to_json()) == config
    for suffix in (".toml", ".json"):
        path = tmp_path / f"fusion{suffix}"
        config.save(path)
        assert FusionConfig.load(path) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[signals.a]\nkind = "popularity"\n[weights]\nb = 1.0\n', "unknown signals"),
        ('[signals.a]\nkind = "popularity"\n[weights]\na = -1.0\n', ">= 0"),
        ('[signals.a]\nkind = "telepathy"\n', "signals.a.kind"),
        ('[signals.a]\nkind = "popularity"\ncolour = 3\n', "signals.a.colour"),
        ("[signals.a\n", "not valid TOML"),
    ],
)
def test_fusion_config_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FusionConfig.from_toml(text, source="fusion.toml")


def test_fusion_config_errors_are_one_located_line() -> None:
    with pytest.raises(ConfigError) as caught:
        FusionConfig.from_toml('[signals.a]\nkind = "telepathy"\ncolour = 3\n', source="fusion.toml")
    message = str(caught.value)
    assert message.startswith("fusion.toml: invalid fusion config: signals.a.kind: ")
    assert "(got 'telepathy')" in message and "signals.a.colour: unknown key" in message
    assert "\n" not in message and "Value error" not in message
    with pytest.raises(ConfigError, match=r"^invalid fusion config: at least one signal is required$"):
        FusionConfig(signals={})  # built in Python: the same error type, without a file name


def test_bad_signal_parameter_is_a_config_error() -> None:
    # Refused when the config is built (each kind's parameters are typed), not later when the scorer is fitted.
    with pytest.raises(ConfigError, match=r"params\.windw: unknown key"):
        SignalConfig(kind="popularity", params={"windw": 3.0})


# -- tuning ---------------------------------------------------------------------------------------------------------
def test_tune_weights_finds_the_informative_signal_within_budget() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 200, 30
    targets = rng.integers(0, n_items, size=n_users)
    informative = rng.normal(size=(n_users, n_items))
    informative[np.arange(n_users), targets] += 2.5
    noise = {f"noise{k}": rng.normal(size=(n_users, n_items)) for k in range(4)}
    space = SearchSpace(samples=10, seed=3, max_trials=40, rounds=5)
    result = tune_weights({"good": informative, **noise}, targets, metric="hr@5", search=space)
    assert len(result.trials) <= 40
    assert result.weights["good"] > 0
    assert result.weights["good"] >= 2 * max(result.weights[n] for n in noise)
    # the reported value is the metric of the chosen weights, recomputed independently
    fused = fuse({"good": informative, **noise}, result.weights)
    assert result.val_metric == pytest.approx(float((target_ranks(fused, targets, None) < 5).mean()), abs=1e-9)


def test_tune_weights_enumerates_a_small_grid_and_respects_fixed_weights() -> None:
    rng = np.random.default_rng(1)
    scores = {"a": rng.normal(size=(20, 8)), "b": rng.normal(size=(20, 8))}
    targets = rng.integers(0, 8, size=20)
    space = SearchSpace(default_values=[0.0, 1.0, 2.0], max_trials=100)
    result = tune_weights(scores, targets, search=space)
    # the 3x3 grid has 5 distinct directions: (1,0) (0,1) (1,1) (1,2) (2,1); scaled copies and all-zero are skipped
    assert sorted(tuple(t.weights.values()) for t in result.trials) == [
        (0.0, 1.0),
        (1.0, 0.0),
        (1.0, 1.0),
        (1.0, 2.0),
        (2.0, 1.0),
    ]
    held = tune_weights(scores, targets, search=space, fixed={"a": 2.0})
    assert all(t.weights["a"] == 2.0 for t in held.trials)
    assert held.trials[0].weights == {"a": 2.0, "b": 0.0}  # the fixed signals alone come first
    # a signal that cannot change any ranking never wins a tie against the fixed signals alone
    useless = tune_weights({**scores, "flat": np.zeros((20, 8))}, targets, search=space, fixed={"a": 1.0, "b": 1.0})
    assert useless.weights["flat"] == 0.0


def test_tune_weights_tries_the_start_vector_and_never_ends_below_it() -> None:
    rng = np.random.default_rng(2)
    n_users, n_items = 300, 12
    targets = rng.integers(0, n_items, size=n_users)
    a, b = rng.normal(size=(n_users, n_items)), rng.normal(size=(n_users, n_items))
    a[np.arange(n_users), targets] += 1.0
    b[np.arange(n_users), targets] += 1.0
    space = SearchSpace(default_values=[0.0, 1.0], max_trials=50)
    start = {"a": 1.0, "b": 0.3}
    without = tune_weights({"a": a, "b": b}, targets, search=space, normalisation="none")
    assert all(t.weights != start for t in without.trials)
    with_start = tune_weights({"a": a, "b": b}, targets, search=space, normalisation="none", start=start)
    started = [t for t in with_start.trials if t.weights == start]
    assert len(started) == 1
    assert with_start.val_metric >= started[0].value
    assert with_start.val_metric >= without.val_metric


def test_validation_split_never_reads_the_last_event() -> None:
    inter = two_regime_log()
    split = validation_split(inter, n_items=N_ITEMS)
    sequences = inter.item_sequences()
    assert split.targets.tolist() == [int(s[-2]) for s in sequences]
    assert [q.history.tolist() for q in split.queries] == [s[:-2].tolist() for s in sequences]
    assert [s.tolist() for s in split.train.sequences] == [s[:-2].tolist() for s in sequences]
    corrupted = validation_split(corrupt_test_events(inter, 5), n_items=N_ITEMS)
    assert corrupted.targets.tolist() == split.targets.tolist()


def test_tuning_never_reads_the_test_targets() -> None:
    inter = two_regime_log()
    tuned, result = tune_on_validation(TWO_SIGNALS, catalog(), inter, metric="ndcg@10")
    # The validation targets are sequential partners: the sequential signal must carry the fusion.
    assert result.weights["sequential"] > result.weights["popularity"]
    assert tuned.weights == result.weights and tuned.tuned is not None and tuned.tuned.split == "validation"
    # Control: had the search seen the test targets, it would have chosen popularity — so a leak would show.
    train = TrainData.from_interactions(inter, holdout=1, n_items=N_ITEMS)
    queries = [UserQuery(history=s[:-1], user=u) for u, s in enumerate(inter.item_sequences())]
    test_targets = np.array([s[-1] for s in inter.item_sequences()])
    scores = FusedScorer(TWO_SIGNALS, signals=["popularity", "sequential"]).fit(catalog(), train).score_signals(queries)
    leaked = tune_weights(scores, test_targets, history_mask(queries, N_ITEMS), search=TWO_SIGNALS.search)
    assert leaked.weights["popularity"] > leaked.weights["sequential"]
    # Replacing every test item changes nothing the tuner sees: same weights, same value, same trials.
    for seed in (1, 2):
        _, again = tune_on_validation(TWO_SIGNALS, catalog(), corrupt_test_events(inter, seed), metric="ndcg@10")
        assert again.weights == result.weights
        assert again.val_metric == result.val_metric
        assert [t.value for t in again.trials] == [t.value for t in result.trials]


def test_sampled_candidates_hold_the_target_and_no_history() -> None:
    inter = two_regime_log()
    split = validation_split(inter, n_items=N_ITEMS)
    task = ranking_task(split, N_ITEMS, "sampled", n=8, seed=4)
    assert task.columns is not None
    lists, positions = task.columns, task.targets
    again = ranking_task(split, N_ITEMS, "sampled", n=8, seed=4).columns
    assert np.array_equal(lists, again)
    assert np.array_equal(lists[np.arange(len(lists)), positions], split.targets)
    assert len(set(positions.tolist())) > 1  # the target is not always in the same slot
    for row, query in enumerate(split.queries):
        assert len(set(lists[row].tolist())) == 8
        assert not set(lists[row].tolist()) & set(query.history.tolist())
    tuned, result = tune_on_validation(TWO_SIGNALS, catalog(), inter, protocol="sampled", n_candidates=8)
    assert result.weights["sequential"] > 0 and tuned.tuned is not None


def test_tuned_value_is_the_metric_the_rankers_report_when_float_noise_ties() -> None:
    """0.2 + 0.01 is 0.21000000000000002 (and more than 0.21 in float32 too): a tuner comparing raw sums ranks such an
    item above a target scored 0.21 and listed earlier, while the reported ordering (tie-safe scores, earlier item
    first) ranks the target first. The tuned value must be the reported one."""
    from zsgen.evaluate.rankers import order_by_scores
    from zsgen.metrics.metrics import rank_metrics

    a = np.array([[0.21, 0.2, 0.0, 0.05], [0.0, 0.21, 0.2, 0.0], [0.2, 0.0, 0.21, 0.2]])
    b = np.array([[0.0, 0.01, 0.0, 0.05], [0.0, 0.0, 0.01, 0.0], [0.01, 0.0, 0.0, 0.0]])
    targets = np.array([0, 1, 2])  # row 2: the target (0.21) is listed after an item scoring 0.2 + 0.01
    assert (a + b)[0, 1] > (a + b)[0, 0] and (a + b)[1, 2] > (a + b)[1, 1]  # the raw sums do not tie...
    assert np.float32(0.2) + np.float32(0.01) > np.float32(0.21)  # ...in float32 either
    result = tune_weights({"a": a, "b": b}, targets, metric="ndcg@1", normalisation="none", fixed={"a": 1.0, "b": 1.0})
    reported = []
    for row, target in enumerate(targets):
        order = order_by_scores(fuse({"a": a, "b": b}, result.weights, normalisation="none")[row])
        reported.append(int(np.flatnonzero(order == target)[0]))
    assert reported == [0, 0, 1]  # rows 0 and 1 tie and the target is earlier; row 2's target is later
    assert result.val_metric == float(rank_metrics(reported, [1])["NDCG@1"].mean()) == pytest.approx(2 / 3)


def test_tune_on_validation_starts_from_the_configured_weights() -> None:
    """A configured vector outside the search grid is tried, so re-tuning never ends below it on validation."""
    inter = two_regime_log(3)
    configured = {"popularity": 0.3, "sequential": 1.0}
    config = TWO_SIGNALS.model_copy(
        update={"weights": configured, "search": SearchSpace(default_values=[0.0, 1.0], max_trials=10)}
    )
    for protocol in ("full_catalog", "sampled"):
        tuned, result = tune_on_validation(config, catalog(), inter, protocol=protocol, n_candidates=8)  # type: ignore[arg-type]
        started = [t for t in result.trials if t.weights == configured]
        assert len(started) == 1, protocol
        # The configured weights' validation value, computed the way a run reports it.
        split = validation_split(inter, n_items=N_ITEMS)
        task = ranking_task(split, N_ITEMS, protocol, n=8)  # type: ignore[arg-type]
        scores = FusedScorer(config).fit(catalog(), split.train).score(split.queries)
        from zsgen.metrics.metrics import metric_values

        value = float(metric_values(task.ranks(scores), "ndcg@10").mean())
        assert started[0].value == value
        assert result.val_metric >= value
        assert tuned.tuned is not None and tuned.tuned.value == result.val_metric


# -- the fused scorer -----------------------------------------------------------------------------------------------
def test_fused_scorer_reuses_tuned_weights_after_a_round_trip(tmp_path: Path) -> None:
    inter = two_regime_log()
    tuned, _ = tune_on_validation(TWO_SIGNALS, catalog(), inter)
    path = tmp_path / "resolved.toml"
    tuned.save(path)
    reloaded = FusionConfig.load(path)
    assert reloaded == tuned
    train = TrainData.from_interactions(inter, holdout=1, n_items=N_ITEMS)
    queries = [UserQuery(history=s[:-1], user=u) for u, s in enumerate(inter.item_sequences())]
    first = FusedScorer(tuned).fit(catalog(), train)
    second = FusedScorer(reloaded).fit(catalog(), train)
    np.testing.assert_array_equal(first.score(queries), second.score(queries))
    np.testing.assert_array_equal(first.score(queries), combine(first.score_signals(queries), tuned))
    assert set(first.scorers) == set(tuned.active())


def test_llm_signal_scores_the_top_of_the_other_signals() -> None:
    inter = two_regime_log()
    train = TrainData.from_interactions(inter, holdout=1, n_items=N_ITEMS)
    queries = [UserQuery(history=s[:-1], user=u) for u, s in enumerate(inter.item_sequences())][:10]
    calls: list[list[int]] = []

    def reverse(query: UserQuery, candidates: np.ndarray) -> np.ndarray:
        calls.append(candidates.tolist())
        return np.arange(candidates.size, dtype=float)  # prefers the generator's last candidate

    config = TWO_SIGNALS.model_copy(
        update={
            "signals": {**TWO_SIGNALS.signals, "llm": SignalConfig(kind="llm", params={"n_candidates": 5})},
            "weights": {"popularity": 0.5, "sequential": 1.0, "llm": 1.0},
        }
    )
    fused = FusedScorer(config, llm=reverse).fit(catalog(), train)
    scores = fused.score_signals(queries)
    base = combine({k: v for k, v in scores.items() if k != "llm"}, config)
    expected_lists = top_k(mask_history(base, queries), 5)
    assert calls == expected_lists.tolist()
    for row in range(len(queries)):
        assert np.argmax(scores["llm"][row]) == expected_lists[row, -1]


@pytest.fixture(scope="session")
def encoder() -> Iterator[Any]:
    from zsgen.embed import default_encoder

    yield default_encoder()


@pytest.mark.slow
def test_text_only_catalog_works_end_to_end(encoder: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The demo catalog has no log: log signals drop out, text carries the ranking with the real MiniLM."""
    from zsgen.loaders import load_demo, load_demo_user

    dataset = load_demo()
    assert dataset.interactions is None
    demo_catalog = dataset.catalog
    config = FusionConfig(
        signals={
            "text": SignalConfig(kind="text", params={"user_vector": "mean", "history_length": 5}),
            "popularity": SignalConfig(kind="popularity"),
            "cooccurrence": SignalConfig(kind="cooccurrence"),
        },
        weights={"text": 1.0, "popularity": 0.5, "cooccurrence": 2.0},
    )
    with caplog.at_level(logging.WARNING):
        fused = FusedScorer(config, encoder=encoder).fit(demo_catalog, None)
    assert set(fused.scorers) == {"text"} and "leaving out" in caplog.text
    user = load_demo_user()
    history = np.array(demo_catalog.indices_of(user.history), dtype=np.int64)
    queries = [UserQuery(history=history), UserQuery(history=np.zeros(0, dtype=np.int64), profile=user.profile)]
    scores = mask_history(fused.score(queries), queries)
    text_only = mask_history(fused.scorers["text"].score(queries), queries)
    assert np.array_equal(top_k(scores, 20), top_k(text_only, 20))
    liked = {g for i in history for g in demo_catalog[int(i)].genres}
    for row in top_k(scores, 10):
        shared = sum(bool(liked & set(demo_catalog[int(i)].genres)) for i in row)
        assert shared >= 7, [demo_catalog[int(i)].title for i in row]
    # history and profile together: the same blend first-stage retrieval uses
    text = fused.scorers["text"]
    both = text.score([UserQuery(history=history, profile=user.profile)])[0]
    profile_vector = encoder.encode([user.profile])[0].astype(np.float64)
    history_vector = text.user_vectors([UserQuery(history=history)])[0].astype(np.float64)
    mixed = 0.5 * history_vector + 0.5 * profile_vector
    expected = text.item_vectors @ (mixed / np.linalg.norm(mixed))
    np.testing.assert_allclose(both, expected, atol=1e-5)
    only_logs = config.model_copy(update={"weights": {"popularity": 1.0}})
    with pytest.raises(ConfigError, match="need interaction logs"):
        FusedScorer(only_logs, encoder=encoder).fit(demo_catalog, None)


def test_recommender_reuses_tuned_weights_through_the_fused_retriever(tmp_path: Path) -> None:
    from zsgen.recommender import Recommender
    from zsgen.retrieval import FirstStage, FusedRetriever, Request

    inter = two_regime_log()
    tuned, _ = tune_on_validation(TWO_SIGNALS, catalog(), inter)
    path = tmp_path / "resolved.toml"
    tuned.save(path)
    retriever = FusedRetriever.from_file(path, catalog(), inter)
    history = [14, 15, 20]
    # The served stage scores items nobody consumed through their text neighbours (impute_cold), as here.
    expected_scorer = FusedScorer(tuned, impute_cold=True).fit(
        catalog(), TrainData.from_interactions(inter, n_items=N_ITEMS)
    )
    query = [UserQuery(history=np.array(history))]
    expected = top_k(mask_history(expected_scorer.score(query), query), 5)[0]
    found = retriever.retrieve(History.from_ids([str(i) for i in history]), k=5)
    assert [c.id for c in found] == [str(i) for i in expected]
    assert all(a.score >= b.score for a, b in pairwise(found))
    assert isinstance(retriever, FirstStage)
    recommender = Recommender(catalog(), retriever=retriever)
    ranking = recommender.recommend([str(i) for i in history], k=5)
    assert ranking.item_ids == [str(i) for i in expected]
    assert {item.source for item in ranking.items} == {"fusion"}  # not mislabelled as cosine order
    assert not set(ranking.item_ids) & {str(i) for i in history}
    # the batch path takes the one request type, and the first stage's own batch call gives the same lists
    (batched,) = recommender.recommend_batch([Request([str(i) for i in history])], k=5)
    assert batched.item_ids == ranking.item_ids
    (direct,) = retriever.retrieve_batch([Request(History.from_ids([str(i) for i in history]))], k=5)
    assert [c.id for c in direct] == ranking.item_ids


def test_fused_first_stage_refuses_options_it_cannot_honour() -> None:
    """user_vector / history_length belong to the cosine retriever; a fused stage's text signals carry their own.
    Given with a fused first stage they are an error naming the option and the stage, never silently dropped."""
    from zsgen.recommender import Recommender
    from zsgen.retrieval import FusedRetriever

    weighted = TWO_SIGNALS.model_copy(update={"weights": {"popularity": 1.0, "sequential": 1.0}})
    retriever = FusedRetriever(catalog(), weighted, two_regime_log())
    with pytest.raises(ConfigError, match=r"fusion first stage FusedRetriever cannot honour user_vector\b"):
        Recommender(catalog(), retriever=retriever, user_vector="last")
    with pytest.raises(ConfigError, match=r"cannot honour history_length; its text signals take"):
        Recommender(catalog(), retriever=retriever, history_length=3)
    with pytest.raises(ConfigError, match="user_vector, history_length"):
        Recommender(catalog(), retriever=retriever, user_vector="mean", history_length=3)
    # nor does the stage itself take them per call (no **kwargs swallowing them)
    with pytest.raises(TypeError, match="user_vector"):
        retriever.retrieve(History.from_ids(["14"]), k=3, user_vector="last")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="history_length"):
        retriever.retrieve_batch([], k=3, history_length=2)  # type: ignore[call-arg]
    # without them the same stage works through the recommender
    assert len(Recommender(catalog(), retriever=retriever).recommend(["14"], k=3).items) == 3


@pytest.mark.slow
def test_zsgen_recommend_uses_the_tuned_fusion_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`zsgen tune` tunes and writes the config; `zsgen recommend --fusion` ranks with those weights."""
    import json

    from zsgen.cli import main
    from zsgen.retrieval import FusedRetriever

    inter = two_regime_log()
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\n" + "".join(f"{k}\tItem {k}\n" for k in range(N_ITEMS))
    )
    rows = zip(inter.user_index, inter.item_index, inter.timestamp, strict=True)
    (folder / "toy.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"u{u}\t{i}\t{t:.0f}\n" for u, i, t in rows)
    )
    base_path, config_path = tmp_path / "fusion.toml", tmp_path / "resolved.toml"
    TWO_SIGNALS.save(base_path)
    assert main(["tune", "--catalog", str(folder), "--config", str(base_path), "--out", str(config_path)]) == 0
    assert "validation ndcg@10" in capsys.readouterr().out
    tuned, _ = tune_on_validation(TWO_SIGNALS, catalog(), inter, source=str(folder))
    assert FusionConfig.load(config_path) == tuned  # the tuning command wrote what the API computes
    args = ["recommend", "--catalog", str(folder), "--fusion", str(config_path), "--k", "4", "--json"]
    code = main([*args, "--history", "14", "15"])
    assert code == 0
    shown = [item["id"] for item in json.loads(capsys.readouterr().out)["items"]]
    expected = FusedRetriever(catalog(), tuned, inter).retrieve(History.from_ids(["14", "15"]), k=4)
    assert shown == [c.id for c in expected]
    # --user-vector is a cosine option: with --fusion it is refused, not ignored
    assert main([*args, "--history", "14", "15", "--user-vector", "last"]) == 1
    assert "cannot honour user_vector" in capsys.readouterr().err
