"""Fused full-catalog scoring of every ML-100K user: fit once, then score all 943 users against all 1682 items.

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_fusion.py [--repeats 5] [--config FILE]

The fusion is the tuned full-catalog config from ``evaluation/results/fusion_ml100k_full.toml`` (every signal but
the LLM; signals with weight 0 included anyway, so every scorer is exercised), or ``--config``. Item text vectors are
encoded once beforehand (one-off per catalog, cached on disk) and are not timed. Timed, median of ``--repeats``:

- ``fit``: every signal built from the training log (co-occurrence matrices, incidence, popularity);
- ``score``: every signal's ``(943, 1682)`` scores plus their fusion;
- ``score + top-10``: the same, then history masked and each user's top 10 taken (what ``recommend`` needs).

For the co-occurrence build it also times a per-user Python loop that counts the same windowed pairs (on all users)
and checks both matrices agree — the reason the library builds them with offset-vectorised sparse products.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from zsgen.loaders import load_dataset
from zsgen.score import TrainData, UserQuery, mask_history, top_k
from zsgen.score.config import FusionConfig, SignalConfig
from zsgen.score.cooccurrence import pair_counts
from zsgen.score.fusion import FusedScorer, combine

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "ml-100k"
TUNED = ROOT / "evaluation" / "results" / "fusion_ml100k_full.toml"

FALLBACK = FusionConfig(
    signals={
        "text": SignalConfig(kind="text", params={"user_vector": "last", "history_length": 5}),
        "popularity": SignalConfig(kind="popularity"),
        "sequential": SignalConfig(kind="cooccurrence", params={"window": 20, "recent": 15, "decay": 0.8}),
        "cooccurrence": SignalConfig(kind="cooccurrence", params={"recent": 5, "decay": 0.6}),
        "user_filtering": SignalConfig(kind="user_filtering", params={"neighbours": 50}),
        "item_filtering": SignalConfig(kind="item_filtering", params={"neighbours": 12}),
    },
    weights={"text": 1.0, "popularity": 0.1, "sequential": 4.0, "cooccurrence": 2.0, "user_filtering": 0.25},
)


def naive_window_counts(train: TrainData, window: int, position_decay: float) -> dict[tuple[int, int], float]:
    """The windowed pair counts the slow way: a Python loop over users and positions."""
    counts: dict[tuple[int, int], float] = defaultdict(float)
    for seq in train.sequences:
        items = seq.tolist()
        for p, a in enumerate(items):
            for q in range(p + 1, min(len(items), p + window + 1)):
                b = items[q]
                if a != b:
                    w = position_decay ** (q - p - 1)
                    counts[a, b] += w
                    counts[b, a] += w
    return counts


def median_time(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", type=Path, default=TUNED if TUNED.exists() else None)
    args = parser.parse_args()

    dataset = load_dataset(DATA)
    catalog, interactions = dataset.catalog, dataset.interactions
    assert interactions is not None
    config = FusionConfig.load(args.config) if args.config else FALLBACK
    config = config.model_copy(update={"signals": {k: v for k, v in config.signals.items() if v.kind != "llm"}})
    config = config.with_weights({k: w for k, w in config.weights.items() if k in config.signals})
    every_signal = list(config.signals)

    from zsgen.embed import default_encoder
    from zsgen.itemtext import ItemTextTemplate

    start = time.perf_counter()
    vectors = default_encoder().encode(ItemTextTemplate().render_all(catalog))
    encode_s = time.perf_counter() - start

    train = TrainData.from_interactions(interactions, holdout=1, n_items=len(catalog))
    queries = [UserQuery(history=s[:-1], user=u) for u, s in enumerate(interactions.item_sequences())]

    def fit() -> FusedScorer:
        fresh = TrainData(sequences=train.sequences, timestamps=train.timestamps, n_items=train.n_items)
        return FusedScorer(config, item_vectors=vectors, signals=every_signal).fit(catalog, fresh)

    scorer = fit()

    def score() -> np.ndarray:
        return combine(scorer.score_signals(queries), config)

    def score_top10() -> np.ndarray:
        return top_k(mask_history(score(), queries), 10)

    fit_s = median_time(fit, args.repeats)
    score_s = median_time(score, args.repeats)
    top_s = median_time(score_top10, args.repeats)
    per_signal = {}
    for name, signal_scorer in scorer.scorers.items():
        per_signal[name] = median_time(lambda s=signal_scorer: s.score(queries), args.repeats)

    window_signal = next(
        (s for s in config.signals.values() if s.kind == "cooccurrence" and s.params.given().get("window")), None
    )
    window = int(window_signal.params.given()["window"]) if window_signal else 20
    decay = float(window_signal.params.given().get("position_decay", 1.0)) if window_signal else 1.0
    sparse_s = median_time(lambda: pair_counts(train, window=window, position_decay=decay), args.repeats)
    start = time.perf_counter()
    naive = naive_window_counts(train, window, decay)
    naive_s = time.perf_counter() - start
    fast = pair_counts(train, window=window, position_decay=decay).todok()
    agree = len(naive) == fast.nnz and all(abs(fast[k] - v) < 1e-9 for k, v in naive.items())

    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"config: {args.config or 'built-in fallback'}; signals {every_signal}; {config.method}/{config.normalisation}"
    )
    print(f"users {len(queries)}, items {len(catalog)}, events {len(interactions)}, repeats {args.repeats} (median)")
    print(f"one-off item text encoding (not part of scoring; cache may apply): {encode_s:.2f} s")
    print(f"fit all signals:                     {fit_s:.3f} s")
    print(f"score all users, all signals + fuse: {score_s:.3f} s")
    print(f"score + mask history + top-10:       {top_s:.3f} s")
    for name, seconds in per_signal.items():
        print(f"  {name:<16} {seconds:.3f} s")
    print(
        f"windowed co-occurrence build (window {window}): sparse {sparse_s:.3f} s, "
        f"per-user Python loop {naive_s:.3f} s ({naive_s / sparse_s:.0f}x), identical: {agree}"
    )
    if not agree:
        raise SystemExit("the sparse and the loop co-occurrence counts disagree")


if __name__ == "__main__":
    main()
