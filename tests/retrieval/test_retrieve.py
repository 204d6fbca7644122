"""Retrieval: exact top-k, every user-vector user_vector by hand, cold start, and each bad input (real MiniLM)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.embed.local import TransformersEncoder
from zsgen.errors import (
    ConfigError,
    DataError,
    DuplicateItemError,
    EmptyHistoryError,
    EmptyTextError,
    InvalidKError,
    UnknownItemError,
)
from zsgen.itemtext import ItemTextTemplate
from zsgen.retrieval import (
    Request,
    Retriever,
    UserVector,
    blend,
    history_vector,
    recency_weights,
)
from zsgen.retrieval.index import FaissIndex, ItemIndex, trim
from zsgen.types import Candidate, History, Item, Profile

SCIFI = [
    ("s1", "Star Voyagers", "A starship crew explores distant galaxies and meets alien civilisations."),
    ("s2", "Mars Colony", "Settlers on Mars fight to survive a dust storm that cuts off their spaceport."),
    ("s3", "The Orbit", "An astronaut stranded on a space station races to repair her rocket."),
    ("s4", "Nebula Wars", "Interstellar fleets battle over a planet at the edge of the galaxy."),
    ("s5", "Warp Drive", "Physicists build a faster-than-light engine and travel to another star system."),
    ("s6", "Alien Signal", "Astronomers decode a radio message from an extraterrestrial species."),
    ("s7", "Moonbase Alpha", "Miners on the Moon discover an ancient alien artifact."),
    ("s8", "Robot Galaxy", "Androids pilot a spaceship through an asteroid field."),
]
COOKING = [
    ("c1", "Pasta Nights", "A chef teaches how to make fresh pasta and rich tomato sauce."),
    ("c2", "Bread & Butter", "A baker shares recipes for sourdough bread and pastries."),
    ("c3", "Spice Route", "Cooking curries with cumin, turmeric and fresh coriander."),
    ("c4", "Sweet Oven", "Baking cakes, cookies and chocolate desserts at home."),
    ("c5", "Grill Master", "Barbecue recipes for steak, ribs and grilled vegetables."),
    ("c6", "Soup Kitchen", "Hearty soups and stews simmered slowly in the kitchen."),
    ("c7", "Sushi School", "A chef slices fish and rolls rice for perfect sushi."),
    ("c8", "Farm to Table", "Cooking seasonal vegetables from the market into simple dinners."),
]
OTHER = [
    ("o1", "Final Whistle", "A football team fights relegation in the last match of the season."),
    ("o2", "Court Drama", "A lawyer defends an innocent man in a murder trial."),
    ("o3", "Mountain Run", "A marathon runner trains in the Alps for the race of her life."),
    ("o4", "Jazz Club", "A saxophonist plays late nights in a smoky jazz bar."),
]


@pytest.fixture(scope="session")
def minilm() -> TransformersEncoder:
    return TransformersEncoder()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog(Item(id=i, title=t, description=d) for i, t, d in SCIFI + COOKING + OTHER)


@pytest.fixture(scope="session")
def retriever(catalog: Catalog, minilm: TransformersEncoder) -> Retriever:
    return Retriever(catalog, minilm)


def ids(candidates: Sequence[Candidate]) -> list[str]:
    return [c.id for c in candidates]


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    m = rng.standard_normal((n, d)).astype(np.float32)
    return np.asarray(m / np.linalg.norm(m, axis=1, keepdims=True), dtype=np.float32)


# ------------------------------------------------------------------------------------------ semantic sanity


def test_space_history_ranks_scifi_above_cooking(retriever: Retriever) -> None:
    result = retriever.retrieve(History.from_ids(["s1", "s3", "s6"]), k=17)
    order = ids(result)
    assert not {"s1", "s3", "s6"} & set(order)
    scifi_ranks = [order.index(i) for i, _, _ in SCIFI if i in order]
    cooking_ranks = [order.index(i) for i, _, _ in COOKING]
    assert len(scifi_ranks) == 5
    assert max(scifi_ranks) < min(cooking_ranks)
    scores = [c.score for c in result]
    assert scores == sorted(scores, reverse=True)


def test_profile_only_user_gets_cooking(retriever: Retriever) -> None:
    result = retriever.retrieve(profile=Profile(text="I love cooking dinner and baking bread at home"), k=5)
    assert all(i.startswith("c") for i in ids(result))


def test_item_vectors_follow_catalog_order(retriever: Retriever, catalog: Catalog, minilm: TransformersEncoder) -> None:
    texts = ItemTextTemplate().render_all(catalog)
    np.testing.assert_allclose(retriever.item_vectors, minilm.encode(texts), atol=2e-5)


# ------------------------------------------------------------------------------------------ exact top-k


def naive_topk(
    queries: np.ndarray, items: np.ndarray, k: int, exclude: list[set[int]] | None, threshold: float | None
) -> list[list[int]]:
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    out = []
    for row, s in enumerate(scores):
        keyed = sorted(range(items.shape[0]), key=lambda j: (-s[j], j))
        allowed = [
            j for j in keyed if (exclude is None or j not in exclude[row]) and (threshold is None or s[j] >= threshold)
        ]
        out.append(allowed[:k])
    return out


@pytest.mark.parametrize("chunk", [1, 5, 16, 64, 10_000])
def test_index_matches_naive_reference(chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    items, queries = unit(rng, 300, 12), unit(rng, 23, 12)
    exclude = [set(rng.choice(300, size=int(rng.integers(0, 40)), replace=False).tolist()) for _ in range(23)]
    index = ItemIndex(items, chunk_size=chunk, block_elements=200)  # several query blocks too
    for k, ex, threshold in [(10, None, None), (25, exclude, None), (40, exclude, 0.5), (300, exclude, None)]:
        scores, found = index.search(queries, k, exclude=ex, threshold=threshold)
        assert scores.shape == found.shape == (23, k)
        got_s, got_i = trim(scores, found)
        reference = naive_topk(queries, items, k, ex, threshold)
        assert got_i == reference
        for row, (row_s, row_i) in enumerate(zip(got_s, got_i, strict=True)):
            np.testing.assert_allclose(row_s, items[row_i] @ queries[row], atol=1e-5)
        # Short rows are padded at the end with -1 / -inf.
        padded = found < 0
        assert padded.sum(axis=1).tolist() == [k - len(r) for r in reference]
        assert np.all(np.isneginf(scores[padded]))
        if threshold is not None or k == 300:
            assert padded.any()


def test_index_breaks_exact_ties_by_lower_index() -> None:
    """Vectors with four entries of +-0.5: unit length and every dot product exact, so ties are real ties."""
    rng = np.random.default_rng(7)
    items = np.zeros((120, 8), dtype=np.float32)
    for row in items:
        row[rng.choice(8, size=4, replace=False)] = rng.choice([-0.5, 0.5], size=4)
    queries = items[[3, 50, 77, 119]]
    reference = naive_topk(queries, items, 30, None, None)
    assert len({float(items[j] @ queries[0]) for j in reference[0]}) < 30  # the reference really has ties
    for chunk in (1, 7, 33, 1000):
        _, found = ItemIndex(items, chunk_size=chunk).search(queries, 30)
        assert found.tolist() == reference


def test_index_handles_items_in_ascending_score_order() -> None:
    """Every chunk beats the previous one entirely: the path that tightens crowded rows to the chunk's k-th."""
    angles = np.linspace(np.pi, 0.0, 200)  # item i's cosine to the query grows with i
    items = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1).astype(np.float32)
    queries = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=np.float32)
    _, found = ItemIndex(items, chunk_size=20).search(queries, 3)
    assert found.tolist() == [[199, 198, 197], [0, 1, 2]]


def test_index_scores_add_and_bad_input() -> None:
    rng = np.random.default_rng(1)
    items = unit(rng, 10, 4)
    index = ItemIndex(items)
    np.testing.assert_allclose(index.scores(items[:2]), items[:2] @ items.T, atol=1e-6)
    new = unit(rng, 2, 4)
    index.add(new)
    _, found = index.search(new, 1)
    assert found[:, 0].tolist() == [10, 11]
    with pytest.raises(InvalidKError):
        index.search(new, 0)
    with pytest.raises(ConfigError, match="dimension"):
        index.search(np.ones((1, 5), dtype=np.float32), 1)
    with pytest.raises(DataError, match="exclude"):
        index.search(new, 1, exclude=[{99}, set()])
    with pytest.raises(DataError, match="exclude"):
        index.search(new, 1, exclude=[set()])


def test_faiss_index_agrees_with_numpy_index() -> None:
    rng = np.random.default_rng(3)
    items, queries = unit(rng, 500, 16), unit(rng, 9, 16)
    exclude = [set(rng.choice(500, size=20, replace=False).tolist()) for _ in range(9)]
    ours = ItemIndex(items, chunk_size=64).search(queries, 15, exclude=exclude, threshold=0.1)
    theirs = FaissIndex(items).search(queries, 15, exclude=exclude, threshold=0.1)
    assert ours[1].tolist() == theirs[1].tolist()
    np.testing.assert_allclose(ours[0], theirs[0], atol=1e-5)


# ----------------------------------------------------------------------------------------- user vectors


@pytest.fixture(scope="session")
def vector_retriever(catalog: Catalog, minilm: TransformersEncoder) -> Retriever:
    """The same catalog with random item vectors, so hand computations are independent of the model."""
    rng = np.random.default_rng(11)
    return Retriever(catalog, minilm, item_vectors=unit(rng, len(catalog), 384))


def configured(base: Retriever, **options: Any) -> Retriever:
    """A retriever over ``base``'s item vectors (nothing re-encoded) with other user-vector options."""
    return Retriever(base.catalog, base.encoder, item_vectors=base.item_vectors, **options)


def ranked_by(scores: np.ndarray, exclude: set[int], k: int) -> list[int]:
    order = sorted((j for j in range(scores.size) if j not in exclude), key=lambda j: (-scores[j], j))
    return order[:k]


def test_recency_weights_by_hand() -> None:
    np.testing.assert_allclose(recency_weights(4, 3.0), [0.5, 0.5 ** (2 / 3), 0.5 ** (1 / 3), 1.0])
    np.testing.assert_allclose(recency_weights(3, 1.0), [0.25, 0.5, 1.0])
    with pytest.raises(ConfigError):
        recency_weights(3, 0.0)


@pytest.mark.parametrize("name", ["mean", "recency", "last"])
def test_single_vector_strategies_by_hand(vector_retriever: Retriever, catalog: Catalog, name: str) -> None:
    user_vector = cast(UserVector, name)
    x = vector_retriever.item_vectors.astype(np.float64)
    history = ["s2", "c5", "o1", "s7"]
    rows = [catalog.index_of(i) for i in history]
    h = x[rows]
    if user_vector == "mean":
        user = h.sum(axis=0) / 4
    elif user_vector == "recency":
        user = 0.5 * h[0] + 0.5 ** (2 / 3) * h[1] + 0.5 ** (1 / 3) * h[2] + 1.0 * h[3]
    else:
        user = h[3]
    user /= np.linalg.norm(user)
    expected_scores = x @ user
    retriever = configured(vector_retriever, user_vector=user_vector)
    result = retriever.retrieve(History.from_ids(history), k=8)
    assert [catalog.index_of(i) for i in ids(result)] == ranked_by(expected_scores, set(rows), 8)
    np.testing.assert_allclose(
        [c.score for c in result], np.sort(expected_scores[[catalog.index_of(i) for i in ids(result)]])[::-1], atol=1e-5
    )
    np.testing.assert_allclose(
        retriever.scores(History.from_ids(history)),
        expected_scores,
        atol=1e-5,
    )
    np.testing.assert_allclose(history_vector(h, user_vector), user, atol=1e-6)


def test_maxsim_by_hand(vector_retriever: Retriever, catalog: Catalog) -> None:
    x = vector_retriever.item_vectors.astype(np.float64)
    history = ["s1", "c3", "o4"]
    rows = [catalog.index_of(i) for i in history]
    expected_scores = np.array([max(float(x[j] @ x[r]) for r in rows) for j in range(len(catalog))])
    maxsim = configured(vector_retriever, user_vector="maxsim")
    result = maxsim.retrieve(History.from_ids(history), k=10)
    assert [catalog.index_of(i) for i in ids(result)] == ranked_by(expected_scores, set(rows), 10)
    for c in result:
        assert c.score == pytest.approx(expected_scores[catalog.index_of(c.id)], abs=1e-5)
    np.testing.assert_allclose(maxsim.scores(History.from_ids(history)), expected_scores, atol=1e-5)
    # maxsim is not any single vector: it differs from mean here.
    assert ids(result) != ids(vector_retriever.retrieve(History.from_ids(history), k=10))


def test_history_and_profile_blend_by_hand(
    vector_retriever: Retriever, catalog: Catalog, minilm: TransformersEncoder
) -> None:
    x = vector_retriever.item_vectors.astype(np.float64)
    text = "a cosy cooking show"
    p = minilm.encode([text])[0].astype(np.float64)
    rows = [catalog.index_of(i) for i in ("s3", "o2")]
    h = x[rows].mean(axis=0)
    h /= np.linalg.norm(h)
    user = 0.5 * h + 0.5 * p
    user /= np.linalg.norm(user)
    result = vector_retriever.retrieve(History.from_ids(["s3", "o2"]), Profile(text=text), k=6)
    assert [catalog.index_of(i) for i in ids(result)] == ranked_by(x @ user, set(rows), 6)
    np.testing.assert_allclose(blend(h, p, 0.5), user, atol=1e-6)
    # maxsim with a profile: (1 - w) * max_j cos(h_j, item) + w * cos(profile, item)
    both = np.array([0.5 * max(float(x[j] @ x[r]) for r in rows) + 0.5 * float(x[j] @ p) for j in range(len(catalog))])
    maxsim = configured(vector_retriever, user_vector="maxsim")
    result = maxsim.retrieve(History.from_ids(["s3", "o2"]), Profile(text=text), k=6)
    assert [catalog.index_of(i) for i in ids(result)] == ranked_by(both, set(rows), 6)
    assert [c.score for c in result] == pytest.approx(
        sorted(both[[catalog.index_of(i) for i in ids(result)]], reverse=True), abs=1e-5
    )


def test_profile_weight_extremes(catalog: Catalog, minilm: TransformersEncoder) -> None:
    rng = np.random.default_rng(5)
    vectors = unit(rng, len(catalog), 384)
    history, profile = History.from_ids(["s1", "s2"]), Profile(text="baking bread")
    only_history = Retriever(catalog, minilm, item_vectors=vectors, profile_weight=0.0)
    only_profile = Retriever(catalog, minilm, item_vectors=vectors, profile_weight=1.0)
    assert ids(only_history.retrieve(history, profile, k=5)) == ids(only_history.retrieve(history, k=5))
    assert ids(only_profile.retrieve(history, profile, k=5)) == ids(only_profile.retrieve(profile=profile, k=5))
    with pytest.raises(ConfigError):
        Retriever(catalog, minilm, item_vectors=vectors, profile_weight=1.5)


def test_history_length_limits_the_query_but_not_exclusion(vector_retriever: Retriever, catalog: Catalog) -> None:
    full = History.from_ids(["c1", "c2", "s5", "o3"])
    limited = configured(vector_retriever, history_length=2).retrieve(full, k=8)
    by_hand = vector_retriever.retrieve(History.from_ids(["s5", "o3"]), k=10)
    assert ids(limited) == [i for i in ids(by_hand) if i not in {"c1", "c2"}][:8]
    assert not {"c1", "c2", "s5", "o3"} & set(ids(limited))


def test_exclude_seen_false_and_threshold(vector_retriever: Retriever) -> None:
    history = History.from_ids(["s4"])
    kept = configured(vector_retriever, user_vector="last", exclude_seen=False).retrieve(history, k=3)
    assert kept[0].id == "s4" and kept[0].score == pytest.approx(1.0, abs=1e-5)
    last = configured(vector_retriever, user_vector="last")
    everything = last.retrieve(history, k=19)
    cut = everything[4].score
    thresholded = last.retrieve(history, k=19, threshold=cut)
    assert ids(thresholded) == ids(everything[:5])
    assert all(c.score >= cut for c in thresholded)


@pytest.mark.parametrize("name", ["mean", "recency", "last", "maxsim"])
def test_batch_equals_one_by_one(vector_retriever: Retriever, name: str) -> None:
    retriever = configured(vector_retriever, user_vector=cast(UserVector, name))
    requests = [
        Request(History.from_ids(["s1", "c2", "o3"])),
        Request(None, Profile(text="space adventure")),
        Request(["c7"], "sushi and rice"),
        Request(History.from_ids(["o1", "o2", "o3", "o4", "s8"])),
    ]
    ks = [5, 3, 7, 15]
    batch = retriever.retrieve_batch(requests, k=ks)
    single = [retriever.retrieve(r.history, r.profile, k=k) for r, k in zip(requests, ks, strict=True)]
    assert [ids(b) for b in batch] == [ids(s) for s in single]
    assert [len(b) for b in batch] == ks
    for b, s in zip(batch, single, strict=True):
        assert [c.score for c in b] == pytest.approx([c.score for c in s], abs=1e-6)


@pytest.mark.parametrize("name", ["mean", "recency", "last", "maxsim"])
def test_fusion_text_signal_builds_the_same_queries(
    vector_retriever: Retriever, catalog: Catalog, minilm: TransformersEncoder, name: str
) -> None:
    """Text cosine means one thing: the fusion's text signal and the cosine first stage score every item alike
    (both build their queries in zsgen.user_vectors), with and without a profile."""
    from zsgen.score import TextCosineScorer, UserQuery

    user_vector = cast(UserVector, name)
    retriever = configured(vector_retriever, user_vector=user_vector, history_length=3)
    text = TextCosineScorer(user_vector, history_length=3, encoder=minilm, item_vectors=vector_retriever.item_vectors)
    text.fit(catalog, None)
    history = ["c1", "s2", "o4", "s6", "c3"]
    for profile in (None, "a cosy cooking show"):
        query = UserQuery(history=np.asarray(catalog.indices_of(history), dtype=np.int64), profile=profile)
        np.testing.assert_allclose(
            text.score([query])[0], retriever.scores(History.from_ids(history), profile), rtol=0, atol=1e-6
        )


# ----------------------------------------------------------------------------------------------- cold start


def test_cold_start_items_are_retrievable_at_once(catalog: Catalog, minilm: TransformersEncoder) -> None:
    retriever = Retriever(catalog, minilm)
    new = Item(id="s9", title="Comet Chasers", description="A spaceship crew chases a comet across the galaxy.")
    retriever.add_items([new])
    assert len(retriever.catalog) == len(catalog) + 1 and retriever.catalog.index_of("s9") == len(catalog)
    np.testing.assert_allclose(
        retriever.item_vectors[-1], minilm.encode([ItemTextTemplate().render(new)])[0], atol=2e-5
    )
    top = ids(retriever.retrieve(History.from_ids(["s1", "s4", "s8"]), k=3))
    assert "s9" in top
    with pytest.raises(DuplicateItemError):
        retriever.add_items([new])
    assert len(retriever.catalog) == len(catalog) + 1 and retriever.item_vectors.shape[0] == len(catalog) + 1


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_typed_errors(vector_retriever: Retriever) -> None:
    with pytest.raises(EmptyHistoryError):
        vector_retriever.retrieve()
    with pytest.raises(EmptyHistoryError):
        vector_retriever.retrieve(History())
    with pytest.raises(UnknownItemError, match="s99"):
        vector_retriever.retrieve(History.from_ids(["s1", "s99"]))
    with pytest.raises(InvalidKError):
        vector_retriever.retrieve(History.from_ids(["s1"]), k=0)
    with pytest.raises(InvalidKError, match="19 items"):
        vector_retriever.retrieve(History.from_ids(["s1"]), k=20)
    assert len(vector_retriever.retrieve(History.from_ids(["s1", "s1"]), k=19)) == 19  # repeats count once
    keep_seen = configured(vector_retriever, exclude_seen=False)
    assert len(keep_seen.retrieve(History.from_ids(["s1"]), k=20)) == 20
    with pytest.raises(EmptyTextError, match="profile"):
        vector_retriever.retrieve(profile="   ")
    with pytest.raises(ConfigError, match="user_vector"):
        configured(vector_retriever, user_vector="median")
    with pytest.raises(ConfigError, match="history_length"):
        configured(vector_retriever, history_length=0)
    with pytest.raises(InvalidKError, match="request 1"):
        vector_retriever.retrieve_batch([Request(["s1"]), Request(["s2"])], k=[3, 0])
    # one request type: anything else is refused with a pointer to it, and a bare string is not a history
    with pytest.raises(ConfigError, match="Request"):
        vector_retriever.retrieve_batch([History.from_ids(["s1"])])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="one string"):
        Request("s1")


def test_bad_item_vectors_and_blank_item_text(catalog: Catalog, minilm: TransformersEncoder) -> None:
    with pytest.raises(DataError, match="item_vectors"):
        Retriever(catalog, minilm, item_vectors=np.ones((3, 384), dtype=np.float32))
    blank = Catalog([Item(id="x", title="   ")])
    with pytest.raises(EmptyTextError, match="'x'"):
        Retriever(blank, minilm)
