"""Probes for the LLMRank-style gap: signals and fusion changes tried on top of the committed sampled fusion.

The committed fusion (``evaluation/configs/fusion/sampled.toml``) reaches NDCG@10 0.742 over all 943 users against a
goal of 0.75. Each probe below is chosen on the validation split only and then read once on test, with the candidate
lists of ``zsgen evaluate``'s LLMRank-style protocol (target + 19 random unseen items, seeded per user, seed 0: the
test lists of ``evaluation/configs/llmrank-all.toml``), built by ``zsgen.evaluate.experiment``. None of these
became a zsgen signal, because none moved the test value; this script keeps the evidence reproducible.

Probes:
1. more co-occurrence variants for the "sequential" signal (window, backward weight, normalisation, recency, time
   windows), each alone on validation;
2. popularity counted as of each user's last history time (a 7-day window blended with all-time counts);
3. ``log1p`` of the count signals before z-scoring;
4. extra co-occurrence signals on top: forward-only "next item", a short asymmetric window, whole-history;
5. item age (days since the item was first seen, as of the user's time);
6. separate weights for users with short and long histories (median split).

Run:  HF_HUB_OFFLINE=1 python evaluation/experiments/archive/fusion_probes.py   (about a minute on 2 cores; output
      kept in evaluation/results/fusion_probes.txt)
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsgen.evaluate.experiment import Experiment, FusionProbe, mean_metric, query_times, training_events
from zsgen.evaluate.tuning import tune_weights
from zsgen.metrics.split import Split
from zsgen.score.base import ScoreMatrix
from zsgen.score.config import FusionConfig, SignalConfig

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data" / "ml-100k"
FUSION = ROOT / "evaluation" / "configs" / "fusion" / "sampled.toml"
COUNT_SIGNALS = ("sequential", "cooccurrence", "user_filtering", "item_filtering")
DAY = 86400.0


def popularity_as_of(split: Split, window: float, blend: float = 0.5) -> ScoreMatrix:
    stamps, items = training_events(split)
    n_items = split.train.n_items
    all_time = np.log1p(np.bincount(items, minlength=n_items).astype(np.float64))
    out = np.empty((len(split.cases), n_items))
    for row, t in enumerate(query_times(split)):
        lo, hi = np.searchsorted(stamps, [t - window, t], side="right")
        recent = np.log1p(np.bincount(items[lo:hi], minlength=n_items).astype(np.float64))
        out[row] = blend * recent + (1.0 - blend) * all_time
    return out


def item_age(split: Split) -> ScoreMatrix:
    """Higher for items first seen shortly before the user's time; items not yet seen score lowest."""
    stamps, items = training_events(split)
    first = np.full(split.train.n_items, np.inf)
    np.minimum.at(first, items, stamps)
    out = np.empty((len(split.cases), split.train.n_items))
    for row, t in enumerate(query_times(split)):
        known = first <= t
        out[row] = np.where(known, -np.log1p(np.where(known, t - first, 0.0) / DAY), -10.0)
    return out


class Probe(FusionProbe):
    """The committed sampled fusion's signals on both splits, plus the probes' own."""

    def __init__(self) -> None:
        super().__init__(Experiment(DATA, seed=0), FusionConfig.load(FUSION), "sampled")

    def add_cooccurrence(self, name: str, params: dict[str, Any]) -> None:
        self.add_signal(name, SignalConfig(kind="cooccurrence", params=dict(params)))

    def fuse(
        self, names: Sequence[str], *, log_counts: bool = False, users: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        """Tune weights on validation (optionally for a subset of users), then score test; prints validation."""
        val_task, test_task = self.task("validation"), self.task("test")
        assert val_task.columns is not None
        val_rows = np.ones(len(val_task.targets), dtype=bool) if users is None else users[0]
        test_rows = np.ones(len(test_task.targets), dtype=bool) if users is None else users[1]

        def prepared(holdout: str, name: str, rows: np.ndarray) -> ScoreMatrix:
            matrix = self.scores[holdout][name][rows]
            return np.asarray(np.log1p(np.maximum(matrix, 0.0))) if log_counts and name in COUNT_SIGNALS else matrix

        result = tune_weights(
            {name: prepared("validation", name, val_rows) for name in names},
            val_task.targets[val_rows],
            None,
            search=self.fusion.search,
            normalisation=self.fusion.normalisation,
            columns=val_task.columns[val_rows],
        )
        test = {name: prepared("test", name, test_rows) for name in names}
        self.last = (result.val_metric, self.fused("test", result.weights, scores=test))
        print(f"  validation {result.val_metric:.4f}; weights {result.weights}")

    def test_value(self, total: ScoreMatrix) -> float:
        return mean_metric(self.task("test").ranks(total))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    probe = Probe()
    base = list(probe.fusion.signals)
    print("committed fusion:")
    probe.fuse(base)
    print(f"  test {probe.test_value(probe.last[1]):.4f}")

    print("1. sequential co-occurrence variants, each alone on validation (committed variant first):")
    committed = probe.fusion.signals["sequential"].params.given()
    variants: list[dict[str, Any]] = [committed]
    for window, backward, norm, (recent, decay) in itertools.product(
        (5, 20, 50), (0.3, 1.0), ("cosine", 0.7, 0.85, "none"), ((10, 0.7), (20, 0.85))
    ):
        params: dict[str, Any] = {"window": window, "recent": recent, "decay": decay, "position_decay": 0.9}
        params |= {"user_weight": 0.5, "backward": backward}
        params |= {"normalise": "asymmetric", "alpha": norm} if isinstance(norm, float) else {"normalise": norm}
        variants.append(params)
    variants += [committed | {"time_window": w * DAY} for w in (1 / 24, 1, 7)]
    best = (-1.0, committed)
    for params in variants:
        probe.add_cooccurrence("probe", params)
        value = probe.solo("probe")
        best = max(best, (value, params), key=lambda pair: pair[0])
    print(f"  {len(variants)} variants; best on validation {best[0]:.4f}: {best[1]}")

    probe.add("as_of_popularity", lambda split: popularity_as_of(split, 7 * DAY))
    probe.add("item_age", item_age)
    probe.add_cooccurrence("next", {"window": 3, "backward": 0.0, "recent": 3, "decay": 0.5, "user_weight": 0.5})
    probe.add_cooccurrence(
        "short_asymmetric",
        {"window": 5, "backward": 0.2, "recent": 5, "decay": 0.6, "position_decay": 0.8, "user_weight": 0.5}
        | {"normalise": "asymmetric", "alpha": 0.7},
    )
    probe.add_cooccurrence("whole_history", {"recent": 500, "decay": 1.0, "user_weight": 1.0})
    print(
        f"2. popularity as of the user's time, alone on validation: {probe.solo('as_of_popularity'):.4f}"
        f" (all-time popularity {probe.solo('popularity'):.4f})"
    )
    print(f"5. item age alone on validation: {probe.solo('item_age'):.4f}")

    fusions: list[tuple[str, list[str], bool]] = [
        ("2. + popularity as of the user's time", [*base, "as_of_popularity"], False),
        ("3. log1p of count signals", base, True),
        ("4. + next item", [*base, "next"], False),
        ("4. + short asymmetric", [*base, "short_asymmetric"], False),
        ("4. + whole history", [*base, "whole_history"], False),
        ("5. + item age", [*base, "item_age"], False),
    ]
    for label, names, log_counts in fusions:
        print(label)
        probe.fuse(names, log_counts=log_counts)
        print(f"  test {probe.test_value(probe.last[1]):.4f}")

    print("6. separate weights for short and long histories (median split of validation history lengths):")
    val_lengths = np.array([len(case.history) for case in probe.exp.val.cases])
    test_lengths = np.array([len(case.history) for case in probe.exp.test.cases])
    cut = float(np.median(val_lengths))
    total = np.zeros((len(probe.exp.test.cases), probe.exp.n_items))
    weighted_val = 0.0
    for long_history in (False, True):
        rows = (val_lengths >= cut) == long_history, (test_lengths >= cut) == long_history
        probe.fuse(base, users=rows)
        weighted_val += probe.last[0] * rows[0].sum() / len(rows[0])
        total[rows[1]] = probe.last[1]
    print(f"  validation {weighted_val:.4f}; test {probe.test_value(total):.4f}")


if __name__ == "__main__":
    main()
