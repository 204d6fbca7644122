"""Probe: the cold-item transfer signals on the cold-items protocol (ML-100K), each alone and fused.

Builds the protocol's validation and test cold splits exactly as ``zsgen evaluate`` does
(:func:`zsgen.evaluate.coldstart.cold_item_split`), fits every signal on each split's warm training data only,
tunes the fusion weights on the validation split (:func:`zsgen.evaluate.tuning.tune_weights`) and prints
validation and test NDCG@10 / HR@10 per signal, fused, and fused without each signal (leave-one-out ablation).
Numbers for the README and the issue come from the committed ``zsgen evaluate`` runs; this is the quick loop.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 python evaluation/experiments/coldstart_signals.py [--data ../shared/data/ml-100k]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from zsgen.evaluate.coldstart import cold_item_split
from zsgen.evaluate.generators import FullCatalogGenerator
from zsgen.evaluate.protocol import RankingTask
from zsgen.evaluate.tuning import tune_weights
from zsgen.loaders import load_dataset
from zsgen.metrics.metrics import metric_values
from zsgen.metrics.ranks import multi_target_ranks
from zsgen.score import TextCosineScorer
from zsgen.score.config import SearchSpace
from zsgen.score.transfer import (
    NeighbourTransferScorer,
    PredictedPopularityScorer,
    TextFactorScorer,
)


def signals(vectors: np.ndarray) -> dict[str, object]:
    return {
        "text_maxsim": TextCosineScorer("maxsim", 20, item_vectors=vectors),
        "text_mean": TextCosineScorer("mean", 20, item_vectors=vectors),
        "predicted_popularity": PredictedPopularityScorer(item_vectors=vectors),
        "text_factors": TextFactorScorer(item_vectors=vectors),
        "neighbour_transfer": NeighbourTransferScorer(item_vectors=vectors),
    }


def evaluate(split, catalog, vectors, seed=0):
    task = RankingTask.from_lists(
        split, FullCatalogGenerator(len(catalog), split.candidate_items, seed=seed).generate(split.cases)
    )
    scores = {}
    for name, scorer in signals(vectors).items():
        start = time.perf_counter()
        scorer.fit(catalog, split.train)  # type: ignore[attr-defined]
        scores[name] = scorer.score(split.queries)  # type: ignore[attr-defined]
        logging.info("%s: fit+score %.2fs", name, time.perf_counter() - start)
    return task, scores


def metrics(task, matrix):
    cols = np.take_along_axis(matrix, task.columns, axis=1)
    ranks = multi_target_ranks(cols, task.target_sets, task.exclude)
    return float(metric_values(ranks, "ndcg@10").mean()), float(metric_values(ranks, "hr@10").mean())


def fused(parts, weights):
    from zsgen.score.fusion import fuse

    return fuse(parts, weights, normalisation="zscore")


def tune(task, scores, names):
    result = tune_weights(
        {n: scores[n] for n in names},
        task.targets,
        task.exclude,
        columns=task.columns,
        target_sets=task.target_sets,
        search=SearchSpace(max_trials=150, samples=20),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/ml-100k"))
    parser.add_argument("--vectors", default="/tmp/zsgen_ml100k_vectors.npy")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    dataset = load_dataset(args.data)
    catalog, interactions = dataset.catalog, dataset.interactions
    path = Path(args.vectors)
    if path.exists():
        vectors = np.load(path)
    else:
        from zsgen.embed import default_encoder
        from zsgen.itemtext import ItemTextTemplate

        vectors = default_encoder().encode(ItemTextTemplate().render_all(catalog))
        np.save(path, vectors)
    val = cold_item_split(interactions, catalog, fraction=0.2, seed=0, holdout="validation")
    test = cold_item_split(interactions, catalog, fraction=0.2, seed=0, holdout="test")
    vtask, vscores = evaluate(val, catalog, vectors)
    ttask, tscores = evaluate(test, catalog, vectors)
    print(f"{'signal':28s} val NDCG@10  test NDCG@10  test HR@10")
    for name in vscores:
        v = metrics(vtask, vscores[name])
        t = metrics(ttask, tscores[name])
        print(f"{name:28s} {v[0]:.3f}        {t[0]:.3f}         {t[1]:.3f}")
    names = list(vscores)
    result = tune(vtask, vscores, names)
    t = metrics(ttask, fused(tscores, result.weights))
    print(f"{'fused (all)':28s} {result.val_metric:.3f}        {t[0]:.3f}         {t[1]:.3f}   {result.weights}")
    for left in names:
        rest = [n for n in names if n != left]
        r = tune(vtask, vscores, rest)
        t = metrics(ttask, fused({n: tscores[n] for n in rest}, r.weights))
        print(f"{'  without ' + left:28s} {r.val_metric:.3f}        {t[0]:.3f}         {t[1]:.3f}")


if __name__ == "__main__":
    main()
