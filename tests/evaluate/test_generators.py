"""Each candidate generator against a naive pure-Python reference on a generated log."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from zsgen.catalog import Catalog
from zsgen.evaluate.config import CandidateConfig
from zsgen.evaluate.generators import (
    FullCatalogGenerator,
    RandomGenerator,
    ScorerFactory,
    build_generator,
)
from zsgen.interactions import Interactions
from zsgen.metrics.split import UserCase, leave_one_out
from zsgen.score import TrainData
from zsgen.types import Item

N_ITEMS = 45
N_USERS = 40


@pytest.fixture(scope="module")
def world() -> tuple[Catalog, Interactions, list[UserCase], TrainData]:
    rng = np.random.default_rng(11)
    users, items, stamps = [], [], []
    popularity = rng.dirichlet(np.full(N_ITEMS, 0.6))
    for u in range(N_USERS):
        length = int(rng.integers(3, 16))
        chosen = rng.choice(N_ITEMS, size=length, replace=False, p=popularity)
        users += [u] * length
        items += chosen.tolist()
        stamps += sorted(rng.integers(0, 50, size=length).tolist())  # some equal times: ties keep file order
    log = Interactions(
        user_ids=[f"u{u}" for u in range(N_USERS)],
        user_index=np.array(users, dtype=np.int64),
        item_index=np.array(items, dtype=np.int64),
        timestamp=np.array(stamps, dtype=np.float64),
        rating=np.full(len(items), np.nan),
    )
    catalog = Catalog([Item(id=str(i), title=f"Item {i}") for i in range(N_ITEMS)])
    return catalog, log, leave_one_out(log), TrainData.from_interactions(log, holdout=1, n_items=N_ITEMS)


def top_by_exact_score(scores: dict[int, Fraction | float], history: set[int], n: int) -> list[int]:
    """The reference rule: unseen items, highest score first, ties to the lower catalog index."""
    unseen = [i for i in range(N_ITEMS) if i not in history]
    return sorted(unseen, key=lambda i: (-scores.get(i, 0), i))[:n]


def generate(world, config: CandidateConfig) -> list[list[int]]:  # type: ignore[no-untyped-def]
    catalog, _, cases, train = world
    generator = build_generator(config, ScorerFactory(catalog, train), seed=0)
    return [c.items.tolist() for c in generator.generate(cases)]


def training_sets(world) -> list[set[int]]:  # type: ignore[no-untyped-def]
    return [set(seq.tolist()) for seq in world[3].sequences]


def test_popularity_generator_matches_counting_users(world) -> None:  # type: ignore[no-untyped-def]
    counts = {i: sum(i in s for s in training_sets(world)) for i in range(N_ITEMS)}
    got = generate(world, CandidateConfig(generator="popularity", n=10))
    for case, items in zip(world[2], got, strict=True):
        assert items == top_by_exact_score(counts, set(case.history.tolist()), 10)  # type: ignore[arg-type]


def test_user_filtering_generator_matches_nir_by_hand(world) -> None:  # type: ignore[no-untyped-def]
    rows = training_sets(world)
    got = generate(world, CandidateConfig(generator="user_filtering", n=19, neighbours=12))
    for case, items in zip(world[2], got, strict=True):
        history = set(case.history.tolist())
        # Neighbours: the user (similarity |history|) first, then other users by shared items, ties to lower rows.
        others = [(len(history & rows[v]), v) for v in range(len(rows)) if v != case.user]
        ranked = [(len(history), None), *sorted(others, key=lambda sv: (-sv[0], sv[1]))]
        neighbours = [(s, v) for s, v in ranked[:12] if s > 0]
        total = sum(s for s, _ in neighbours)
        scores: dict[int, Fraction] = {}
        for s, v in neighbours:
            for item in history if v is None else rows[v]:
                scores[item] = scores.get(item, Fraction(0)) + Fraction(s, total)
        assert items == top_by_exact_score(scores, history, 19), case.user_id  # type: ignore[arg-type]


def test_item_filtering_generator_matches_cooccurrence_by_hand(world) -> None:  # type: ignore[no-untyped-def]
    rows = training_sets(world)
    both = {(i, j): sum(i in s and j in s for s in rows) for i in range(N_ITEMS) for j in range(N_ITEMS) if i != j}
    top12 = {
        i: sorted((j for j in range(N_ITEMS) if j != i and both[i, j] > 0), key=lambda j: (-both[i, j], j))[:12]
        for i in range(N_ITEMS)
    }
    got = generate(world, CandidateConfig(generator="item_filtering", n=19, neighbours=12))
    for case, items in zip(world[2], got, strict=True):
        history = set(case.history.tolist())
        scores: dict[int, int] = {}
        for h in history:
            for j in top12[h]:
                scores[j] = scores.get(j, 0) + both[h, j]
        assert items == top_by_exact_score(scores, history, 19), case.user_id  # type: ignore[arg-type]


def test_embedding_generator_matches_mean_of_recent_vectors(world) -> None:  # type: ignore[no-untyped-def]
    catalog, _, cases, train = world
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(N_ITEMS, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    factory = ScorerFactory(catalog, train, item_vectors=vectors)  # the vectors an encoder would have produced
    config = CandidateConfig(generator="text", n=7, user_vector="mean", history_length=4)
    got = [c.items.tolist() for c in build_generator(config, factory, seed=0).generate(cases)]
    for case, items in zip(cases, got, strict=True):
        recent = case.history.tolist()[-4:]
        user = [sum(float(vectors[i][d]) for i in recent) / len(recent) for d in range(16)]
        cosine = {j: sum(user[d] * float(vectors[j][d]) for d in range(16)) for j in range(N_ITEMS)}
        assert items == top_by_exact_score(cosine, set(case.history.tolist()), 7)  # type: ignore[arg-type]


def test_random_generator_is_llmrank_style(world) -> None:  # type: ignore[no-untyped-def]
    _, _, cases, _ = world
    first = RandomGenerator(N_ITEMS, 20, seed=3).generate(cases)
    again = RandomGenerator(N_ITEMS, 20, seed=3).generate(list(reversed(cases)))[::-1]
    other_seed = RandomGenerator(N_ITEMS, 20, seed=4).generate(cases)
    for case, lst, same in zip(cases, first, again, strict=True):
        items = lst.items.tolist()
        history = set(case.history.tolist())
        assert len(items) == len(set(items)) == min(20, N_ITEMS - len(history - {case.target}))
        assert case.target in items
        assert not (set(items) - {case.target}) & history
        assert items == same.items.tolist()  # seeded per user: independent of the other users and their order
        assert np.all(np.diff(lst.scores) < 0)  # scores encode the shown order
    assert any(a.items.tolist() != b.items.tolist() for a, b in zip(first, other_seed, strict=True))


def test_random_generator_places_the_target_uniformly() -> None:
    cases = [
        UserCase(user=u, user_id=str(u), history=np.arange(5, dtype=np.int64), events=np.arange(5), target=7)
        for u in range(4000)
    ]
    positions = np.array([c.position_of(7) for c in RandomGenerator(300, 20, seed=1).generate(cases)])
    counts = np.bincount(positions, minlength=20)
    expected = len(cases) / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.3  # 99.9th percentile of chi-square with 19 degrees of freedom


def test_full_catalog_lists_every_unseen_item(world) -> None:  # type: ignore[no-untyped-def]
    _, _, cases, _ = world
    for case, lst in zip(cases, FullCatalogGenerator(N_ITEMS).generate(cases), strict=True):
        assert lst.items.tolist() == [i for i in range(N_ITEMS) if i not in set(case.history.tolist())]
        assert lst.position_of(case.target) is not None
