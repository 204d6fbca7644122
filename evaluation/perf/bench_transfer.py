"""Cold-item transfer signals at ML-1M size: fitting them, and scoring one new item.

    python evaluation/perf/bench_transfer.py [--users 6040 --items 4000 --events 1000000 --repeats 3]

The log is synthesized (seeded): users and items in 20 taste clusters, item popularity Zipf-like, 1M distinct
(user, item) events; item text vectors are random 384-d unit vectors around their cluster's centre (encoding text is
the encoder's cost, measured in ``bench_encode.py``, and not timed here); items carry a genre and a year. 20% of the
items have no interaction. Timed, median of ``--repeats``:

- ``fit``: each signal's ``fit`` (PureSVD + ridge map, popularity ridge, co-occurrence + text neighbours) and the
  fused scorer's cold imputer;
- ``new item``: what one item added at run time costs, without refitting: each signal's ``with_items`` (features in
  the fitted space, popularity and factor from the kept ridge maps, warm text neighbours found, the co-occurrence
  grown by an empty row and column) and one user's scores over the grown catalog.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from zsgen.catalog import Catalog
from zsgen.score import TrainData, UserQuery
from zsgen.score.transfer import NeighbourTransferScorer, PredictedPopularityScorer, TextFactorScorer
from zsgen.score.transfer.impute import ColdImputer
from zsgen.types import Item


def synthesize(users: int, items: int, events: int, seed: int = 0) -> tuple[Catalog, TrainData, np.ndarray]:
    rng = np.random.default_rng(seed)
    clusters = 20
    item_cluster = rng.integers(clusters, size=items)
    centres = rng.normal(size=(clusters, 384))
    vectors = centres[item_cluster] + 1.5 * rng.normal(size=(items, 384))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    cold = rng.random(items) < 0.2
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity = rng.permutation(popularity)
    popularity[cold] = 0.0
    user_cluster = rng.integers(clusters, size=users)
    per_user = rng.multinomial(events, np.full(users, 1.0 / users))
    sequences = []
    for u in range(users):
        weight = popularity * np.where(item_cluster == user_cluster[u], 5.0, 1.0)
        n = min(int(per_user[u]), int((weight > 0).sum()))
        sequences.append(rng.choice(items, size=n, replace=False, p=weight / weight.sum()).astype(np.int64))
    genres = ["Drama", "Comedy", "Action", "Horror", "Romance"]
    catalog = Catalog(
        Item(id=str(i), title=f"item {i}", year=1950 + int(rng.integers(50)), genres=(genres[item_cluster[i] % 5],))
        for i in range(items)
    )
    return catalog, TrainData(sequences, None, items), vectors


def median_time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    catalog, train, vectors = synthesize(args.users, args.items, args.events)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {train.n_users} users, "
        f"{train.n_items} items, {sum(s.size for s in train.sequences):,} events"
    )
    train.incidence()  # built once and cached, as every log signal of a fusion shares it
    scorers = {
        "predicted_popularity": PredictedPopularityScorer(item_vectors=vectors),
        "text_factors": TextFactorScorer(item_vectors=vectors),
        "neighbour_transfer": NeighbourTransferScorer(item_vectors=vectors),
    }
    total = 0.0
    for name, scorer in scorers.items():
        seconds = median_time(lambda s=scorer: s.fit(catalog, train), args.repeats)
        total += seconds
        print(f"fit {name:22s} {seconds:7.2f} s")
    seconds = median_time(lambda: ColdImputer.fit(vectors, train), args.repeats)
    total += seconds
    print(f"fit {'cold imputer':22s} {seconds:7.2f} s")
    print(f"fit all                    {total:7.2f} s")

    # One item added at run time, through each signal's ``with_items`` (what the fused first stage calls): its
    # features placed in the fitted space, its popularity and factor from the kept ridge maps, its warm text
    # neighbours found, then one user's scores over the grown catalog.
    new_item = Item(id="new", title="a new item", year=1999, genres=("Drama",))
    extended = Catalog([*catalog, new_item])
    new_vector = vectors[:1] + 0.01  # reads like item 0
    new_vector /= np.linalg.norm(new_vector)
    query = [UserQuery(history=train.sequences[0][:20])]

    def new_item_added() -> None:
        for scorer in scorers.values():
            grown = scorer.with_items(extended, new_vector)  # type: ignore[attr-defined]
            assert grown.score(query).shape == (1, len(extended))

    seconds = median_time(new_item_added, max(args.repeats, 20))
    print(f"new item (with_items on the three signals + score one user) {seconds * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
