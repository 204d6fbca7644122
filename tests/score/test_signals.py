"""Each scorer against a naive, loop-by-loop reference on small hand-built logs."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError, EmptyHistoryError
from zsgen.interactions import Interactions
from zsgen.score import (
    CooccurrenceScorer,
    ItemFilteringScorer,
    LLMScorer,
    PopularityScorer,
    TextCosineScorer,
    TrainData,
    UserFilteringScorer,
    UserQuery,
    history_mask,
    history_matrix,
    mask_history,
    ranking_to_scores,
    top_k,
)
from zsgen.types import Item, RankedItem, Ranking

N_ITEMS = 12


def make_catalog(n: int = N_ITEMS) -> Catalog:
    return Catalog([Item(id=f"i{k}", title=f"Item {k}") for k in range(n)])


def make_interactions(events: list[tuple[int, int, float]], n_users: int) -> Interactions:
    """Events as (user row, item index, timestamp) in file order."""
    users, items, stamps = (np.array(col) for col in zip(*events, strict=True))
    return Interactions(
        user_ids=[f"u{k}" for k in range(n_users)],
        user_index=users.astype(np.int64),
        item_index=items.astype(np.int64),
        timestamp=stamps.astype(np.float64),
        rating=np.full(len(events), np.nan),
    )


def random_sequences(seed: int, n_users: int = 9, n_items: int = N_ITEMS) -> list[list[int]]:
    """Sequences with repeats allowed (so the 'distinct users' rules are exercised)."""
    rng = np.random.default_rng(seed)
    return [list(rng.integers(0, n_items, size=int(rng.integers(2, 9)))) for _ in range(n_users)]


def train_of(sequences: list[list[int]], n_items: int = N_ITEMS, stamps: list[list[float]] | None = None) -> TrainData:
    return TrainData(
        sequences=[np.array(s, dtype=np.int64) for s in sequences],
        timestamps=None if stamps is None else [np.array(t, dtype=np.float64) for t in stamps],
        n_items=n_items,
    )


QUERIES = [
    UserQuery(history=np.array([3, 1, 4, 1, 5], dtype=np.int64), user=0),
    UserQuery(history=np.array([9], dtype=np.int64), user=None),
    UserQuery(history=np.array([2, 6, 5, 3, 5, 8, 9, 7], dtype=np.int64), user=4),
    UserQuery(history=np.array([], dtype=np.int64), user=None),
]


# -- TrainData ------------------------------------------------------------------------------------------------------
def test_train_data_drops_last_events_and_keeps_file_order_on_ties() -> None:
    events = [(0, 5, 20.0), (1, 2, 1.0), (0, 3, 10.0), (0, 7, 10.0), (1, 4, 2.0), (0, 1, 30.0)]
    inter = make_interactions(events, 2)
    full = TrainData.from_interactions(inter, n_items=N_ITEMS)
    assert [s.tolist() for s in full.sequences] == [[3, 7, 5, 1], [2, 4]]
    test_train = TrainData.from_interactions(inter, holdout=1, n_items=N_ITEMS)
    assert [s.tolist() for s in test_train.sequences] == [[3, 7, 5], [2]]
    val_train = TrainData.from_interactions(inter, holdout=2, n_items=N_ITEMS)
    assert [s.tolist() for s in val_train.sequences] == [[3, 7], []]
    assert val_train.timestamps is not None and val_train.timestamps[0].tolist() == [10.0, 10.0]
    with pytest.raises(ConfigError):
        TrainData.from_interactions(inter, holdout=-1)


def test_train_data_rejects_out_of_range_items() -> None:
    with pytest.raises(DataError, match="outside"):
        train_of([[0, N_ITEMS]])


def test_history_matrix_keeps_largest_weight_of_a_repeat() -> None:
    matrix = history_matrix(QUERIES[:1], N_ITEMS, recent=4, decay=0.5).toarray()[0]
    # last four: 1, 4, 1, 5 → weights 0.125, 0.25, 0.5, 1 ; item 1 keeps 0.5
    expected = np.zeros(N_ITEMS)
    expected[[4, 1, 5]] = [0.25, 0.5, 1.0]
    np.testing.assert_allclose(matrix, expected)


def test_top_k_breaks_ties_by_lower_index_and_mask_history() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0]])
    assert top_k(scores, 4).tolist() == [[1, 2, 4, 5]]
    big = np.random.default_rng(0).integers(0, 5, size=(7, 3000)).astype(float)
    reference = np.array([sorted(range(3000), key=lambda j, r=r: (-big[r, j], j))[:25] for r in range(7)])
    assert np.array_equal(top_k(big, 25), reference)
    masked = mask_history(scores, [UserQuery(history=np.array([1, 4]))])
    assert top_k(masked, 2).tolist() == [[2, 5]]
    mask = history_mask([UserQuery(history=np.array([1, 4])), UserQuery(history=np.array([], dtype=np.int64))], 6)
    assert mask.tolist() == [[False, True, False, False, True, False], [False] * 6]
    assert np.array_equal(np.isneginf(masked), mask[:1])  # one rule, as a mask or as -inf scores


# -- popularity -----------------------------------------------------------------------------------------------------
def test_popularity_counts_distinct_users() -> None:
    sequences = random_sequences(1)
    scorer = PopularityScorer().fit(make_catalog(), train_of(sequences))
    counts = Counter(item for seq in sequences for item in set(seq))
    expected = np.array([math.log1p(counts[j]) for j in range(N_ITEMS)])
    scores = scorer.score(QUERIES)
    assert scores.shape == (len(QUERIES), N_ITEMS)
    for row in scores:
        np.testing.assert_allclose(row, expected)


def test_popularity_window_counts_only_recent_events() -> None:
    sequences = random_sequences(2)
    rng = np.random.default_rng(3)
    stamps = [sorted(rng.uniform(0, 100, size=len(s)).tolist()) for s in sequences]
    scorer = PopularityScorer(window=30.0, blend=0.75).fit(make_catalog(), train_of(sequences, stamps=stamps))
    end = max(max(t) for t in stamps)
    recent = Counter(
        item
        for seq, ts in zip(sequences, stamps, strict=True)
        for item in {i for i, t in zip(seq, ts, strict=True) if t > end - 30.0}
    )
    overall = Counter(item for seq in sequences for item in set(seq))
    expected = [0.75 * math.log1p(recent[j]) + 0.25 * math.log1p(overall[j]) for j in range(N_ITEMS)]
    np.testing.assert_allclose(scorer.score(QUERIES[:1])[0], expected)
    with pytest.raises(ConfigError, match="timestamps"):
        PopularityScorer(window=3.0).fit(make_catalog(), train_of(sequences))


# -- co-occurrence --------------------------------------------------------------------------------------------------
def naive_cooccurrence(
    sequences: list[list[int]],
    window: int | None,
    backward: float,
    position_decay: float,
    user_weight: float = 0.0,
) -> np.ndarray:
    counts = np.zeros((N_ITEMS, N_ITEMS))
    for seq in sequences:
        per_user = len(seq) ** -user_weight
        if window is None:
            for a in set(seq):
                for b in set(seq):
                    if a != b:
                        counts[a, b] += per_user
            continue
        for p, a in enumerate(seq):
            for q in range(p + 1, min(len(seq), p + window + 1)):
                b = seq[q]
                if a == b:
                    continue
                w = position_decay ** (q - p - 1) * per_user
                counts[a, b] += w
                counts[b, a] += backward * w
    return counts


def naive_user_scores(similarity: np.ndarray, history: list[int], recent: int | None, decay: float) -> np.ndarray:
    last = history[-recent:] if recent else history
    weight: dict[int, float] = {}
    for k, item in enumerate(reversed(last)):
        weight[item] = max(weight.get(item, 0.0), decay**k)
    return sum((w * similarity[item] for item, w in weight.items()), np.zeros(N_ITEMS))


@pytest.mark.parametrize(
    ("window", "backward", "position_decay", "normalise", "recent", "decay", "user_weight"),
    [
        (None, 1.0, 1.0, "none", 5, 0.7, 0.0),
        (None, 1.0, 1.0, "cosine", 3, 0.5, 0.5),
        (2, 1.0, 1.0, "cosine", 4, 0.8, 0.0),
        (3, 0.0, 0.5, "conditional", None, 1.0, 1.0),
        (4, 0.3, 0.8, "asymmetric", 2, 0.6, 0.25),
    ],
)
def test_cooccurrence_matches_naive(
    window: int | None,
    backward: float,
    position_decay: float,
    normalise: str,
    recent: int | None,
    decay: float,
    user_weight: float,
) -> None:
    sequences = random_sequences(4)
    scorer = CooccurrenceScorer(
        recent=recent,
        decay=decay,
        normalise=normalise,  # type: ignore[arg-type]
        window=window,
        backward=backward,
        position_decay=position_decay,
        alpha=0.3,
        user_weight=user_weight,
    ).fit(make_catalog(), train_of(sequences))
    counts = naive_cooccurrence(sequences, window, backward, position_decay, user_weight)
    support = np.array([max(sum(j in s for s in sequences), 1) for j in range(N_ITEMS)], dtype=float)
    a = {"none": 0.0, "cosine": 0.5, "conditional": 1.0, "asymmetric": 0.3}[normalise]
    similarity = counts if normalise == "none" else counts / np.outer(support**a, support ** (1 - a))
    scores = scorer.score(QUERIES)
    for row, query in enumerate(QUERIES):
        expected = naive_user_scores(similarity, query.history.tolist(), recent, decay)
        np.testing.assert_allclose(scores[row], expected, atol=1e-12)


def test_cooccurrence_time_window_drops_distant_pairs() -> None:
    sequences = [[0, 1, 2], [0, 1, 3]]
    stamps = [[0.0, 5.0, 100.0], [0.0, 50.0, 51.0]]
    scorer = CooccurrenceScorer(recent=1, decay=1.0, normalise="none", window=2, time_window=10.0)
    scorer.fit(make_catalog(), train_of(sequences, stamps=stamps))
    assert scorer.similarity is not None
    dense = scorer.similarity.toarray()
    assert dense[0, 1] == 1.0 and dense[1, 3] == 1.0  # 5 s and 1 s apart
    assert dense[1, 2] == 0.0 and dense[0, 2] == 0.0  # 95 s and 100 s apart


def test_item_filtering_matches_naive() -> None:
    sequences = random_sequences(5, n_users=15)
    k = 3
    scorer = ItemFilteringScorer(neighbours=k, recent=4).fit(make_catalog(), train_of(sequences))
    counts = naive_cooccurrence(sequences, None, 1.0, 1.0)
    kept = np.zeros_like(counts)
    for i in range(N_ITEMS):
        order = sorted((j for j in range(N_ITEMS) if counts[i, j] > 0), key=lambda j, i=i: (-counts[i, j], j))
        for j in order[:k]:
            kept[i, j] = counts[i, j]
    scores = scorer.score(QUERIES)
    for row, query in enumerate(QUERIES):
        expected = sum((kept[i] for i in set(query.history.tolist()[-4:])), np.zeros(N_ITEMS))
        np.testing.assert_allclose(scores[row], expected)


# -- user filtering -------------------------------------------------------------------------------------------------
def naive_user_filtering(sequences: list[list[int]], query: UserQuery, k: int, include_self: bool) -> np.ndarray:
    mine = set(query.history.tolist())
    people: list[tuple[float, int, set[int]]] = []  # (similarity, tie order, items); self has tie order -1
    if include_self:
        people.append((float(len(mine)), -1, mine))
    for row, seq in enumerate(sequences):
        if row != query.user:
            people.append((float(len(mine & set(seq))), row, set(seq)))
    people.sort(key=lambda p: (-p[0], p[1]))
    chosen = people[:k]
    total = sum(p[0] for p in chosen)
    scores = np.zeros(N_ITEMS)
    for similarity, _, items in chosen:
        for item in items:
            scores[item] += similarity / total if total > 0 else 0.0
    return scores


@pytest.mark.parametrize(("k", "include_self"), [(1, True), (3, True), (4, False), (50, True)])
def test_user_filtering_matches_naive(k: int, include_self: bool) -> None:
    sequences = random_sequences(6, n_users=10)
    scorer = UserFilteringScorer(neighbours=k, include_self=include_self).fit(make_catalog(), train_of(sequences))
    scores = scorer.score(QUERIES)
    for row, query in enumerate(QUERIES):
        np.testing.assert_allclose(scores[row], naive_user_filtering(sequences, query, k, include_self), atol=1e-12)


def test_user_filtering_nir_weights_sum_to_one() -> None:
    sequences = [[0, 1, 2], [0, 1, 3], [5, 6]]
    scorer = UserFilteringScorer(neighbours=2).fit(make_catalog(), train_of(sequences))
    scores = scorer.score([UserQuery(history=np.array([0, 1]), user=None)])[0]
    # neighbours: self (2 shared) and user 0 (2 shared, lower row than user 1): weights 0.5 / 0.5
    assert scores[0] == pytest.approx(1.0) and scores[2] == pytest.approx(0.5) and scores[3] == 0.0


def test_log_scorers_need_logs() -> None:
    for scorer in (PopularityScorer(), CooccurrenceScorer(), ItemFilteringScorer(), UserFilteringScorer()):
        assert scorer.needs_logs
        with pytest.raises(ConfigError, match="needs interaction logs"):
            scorer.fit(make_catalog(), None)
        with pytest.raises(ConfigError, match="before fit"):
            scorer.score(QUERIES)


# -- text -----------------------------------------------------------------------------------------------------------
def unit_vectors(seed: int, n: int = N_ITEMS, dim: int = 6) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("user_vector", ["mean", "recency", "last", "maxsim"])
def test_text_cosine_matches_naive(user_vector: str) -> None:
    vectors = unit_vectors(7)
    scorer = TextCosineScorer(user_vector, history_length=3, item_vectors=vectors, half_life=2.0)  # type: ignore[arg-type]
    scorer.fit(make_catalog(), None)
    queries = QUERIES[:3]
    scores = scorer.score(queries)
    for row, query in enumerate(queries):
        recent = query.history.tolist()[-3:]
        if user_vector != "maxsim":
            weights = {
                "mean": [1.0] * len(recent),
                "recency": [0.5 ** ((len(recent) - 1 - p) / 2.0) for p in range(len(recent))],
                "last": [0.0] * (len(recent) - 1) + [1.0],
            }[user_vector]
            user = sum(w * vectors[h] for w, h in zip(weights, recent, strict=True))
            user = user / np.linalg.norm(user)
        for j in range(N_ITEMS):
            if user_vector == "maxsim":
                expected = max(float(vectors[h] @ vectors[j]) for h in recent)
            else:
                expected = float(user @ vectors[j])
            assert scores[row, j] == pytest.approx(expected, abs=1e-6)


def test_text_cosine_input_errors() -> None:
    with pytest.raises(ConfigError):
        TextCosineScorer("centroid")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="item_vectors"):
        TextCosineScorer(item_vectors=unit_vectors(1, n=5)).fit(make_catalog(), None)
    scorer = TextCosineScorer(item_vectors=unit_vectors(1)).fit(make_catalog(), None)
    with pytest.raises(EmptyHistoryError):
        scorer.score([UserQuery(history=np.array([], dtype=np.int64))])


# -- LLM adapter ----------------------------------------------------------------------------------------------------
def test_llm_scorer_scores_generator_candidates_and_floors_the_rest() -> None:
    sequences = random_sequences(8)
    seen: list[list[int]] = []

    def by_index(query: UserQuery, candidates: np.ndarray) -> np.ndarray:
        seen.append(candidates.tolist())
        return -candidates.astype(float)  # prefers low item indices, unlike popularity

    popularity = PopularityScorer()
    scorer = LLMScorer(by_index, popularity, n_candidates=4).fit(make_catalog(), train_of(sequences))
    assert scorer.needs_logs
    queries = QUERIES[:3]
    scores = scorer.score(queries)
    pop = mask_history(PopularityScorer().fit(make_catalog(), train_of(sequences)).score(queries), queries)
    for row, query in enumerate(queries):
        expected_candidates = top_k(pop[row : row + 1], 4)[0]
        assert seen[row] == expected_candidates.tolist()
        assert not set(seen[row]) & set(query.history.tolist())
        others = np.setdiff1d(np.arange(N_ITEMS), expected_candidates)
        assert np.all(scores[row, others] == -expected_candidates.max() - 1.0)
        np.testing.assert_array_equal(scores[row, expected_candidates], -expected_candidates.astype(float))


def test_ranking_to_scores_uses_positions_and_neutralises_fallbacks() -> None:
    catalog = make_catalog()
    candidates = np.array([4, 7, 2, 9])
    ranking = Ranking(
        items=[RankedItem(id=f"i{k}", title="", score=0.0, source="llm") for k in (2, 9, 4)],
        parse_status="repaired",
    )
    scores = ranking_to_scores(ranking, catalog, candidates)
    # ranked: 2, 9, 4, then the missing 7 → reciprocal ranks 1, 1/2, 1/3, 1/4
    np.testing.assert_allclose(scores, [1 / 3, 1 / 4, 1.0, 1 / 2])
    fallback = ranking.model_copy(update={"fallback": True, "fallback_reason": "timeout"})
    assert np.all(ranking_to_scores(fallback, catalog, candidates) == 0.0)
    np.testing.assert_allclose(ranking_to_scores(ranking, catalog, candidates, kind="linear"), [0.5, 0.25, 1.0, 0.75])
    scored = ranking.model_copy(
        update={"items": [RankedItem(id=f"i{k}", title="", score=s, source="llm") for k, s in ((2, -0.1), (9, -2.0))]}
    )
    # the ranking's own scores (verbalizer log-probabilities); missing candidates get the lowest score present
    np.testing.assert_allclose(ranking_to_scores(scored, catalog, candidates, kind="score"), [-2.0, -2.0, -0.1, -2.0])
