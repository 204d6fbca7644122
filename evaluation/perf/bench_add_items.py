"""Adding one new item to the packaged fused first stage on ML-100K: without refitting vs a full rebuild.

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_add_items.py [--data ../shared/data/ml-100k --repeats 5]

Timed, median of ``--repeats``:

- ``add (no refit)``: :meth:`FusedRetriever.with_items` for one item (what ``Recommender.add_items`` and the service's
  PUT of a new item do): its text encoded with the packaged MiniLM, its log-signal scores imputed from its warm text
  neighbours, nothing refitted;
- ``full rebuild``: what the service's PUT did before: the packaged fusion fitted again over the extended catalog.
  The item vectors are handed over (as the live service's rebuild does not: it encodes the whole catalog again), so
  this is the rebuild's lower bound, fitting only.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from zsgen.catalog import Catalog
from zsgen.loaders import load_dataset
from zsgen.retrieval.fused import FusedRetriever
from zsgen.types import Item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).parents[3] / "shared" / "data" / "ml-100k"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    catalog, interactions = dataset.catalog, dataset.interactions
    stage = FusedRetriever.packaged(catalog, interactions)
    vectors = stage.scorer.scorers["text"].item_vectors  # type: ignore[attr-defined]
    star_wars = next(item for item in catalog if item.title == "Star Wars")
    adds, rebuilds = [], []
    for run in range(args.repeats):
        item = Item(
            id=f"new-{run}",
            title="Star Wars: The Special Edition",
            year=1997,
            genres=star_wars.genres,
            description="The Star Wars saga restored.",
        )
        start = time.perf_counter()
        added = stage.with_items([item])
        adds.append(time.perf_counter() - start)
        assert added is not None
        extended = added.scorer.scorers["text"].item_vectors  # type: ignore[attr-defined]
        start = time.perf_counter()
        FusedRetriever.packaged(Catalog([*catalog, item]), interactions, item_vectors=extended)
        rebuilds.append(time.perf_counter() - start)
    del vectors
    print(f"# {platform.node()} {os.cpu_count()} cpus, ML-100K ({len(catalog)} items, {len(interactions)} events)")
    print(f"add (no refit), 1 item:        median {statistics.median(adds) * 1000:8.1f} ms  (all: {adds})")
    print(f"full rebuild (fit only):       median {statistics.median(rebuilds) * 1000:8.1f} ms  (all: {rebuilds})")


if __name__ == "__main__":
    main()
