"""The mixed-items run split by target: users whose target is a cold item vs a warm one, and the cold share of the
top 10 — read from the committed log (``per_user.jsonl``), written as ``breakdown.md`` beside it.

    PYTHONPATH=$PWD python evaluation/experiments/mixed_breakdown.py evaluation/results/mixed-items

Cold items are recomputed exactly as the protocol chose them (:func:`zsgen.evaluate.coldstart.seeded_subset` over the
catalog's ids, the run's seed and fraction). Intervals: 1,000 bootstrap resamples of users (seed 0); the paired
difference against the run's baseline uses the same resamples.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np

from zsgen.evaluate.coldstart import seeded_subset
from zsgen.loaders import load_dataset


def ndcg10(rank: int | None) -> float:
    return 0.0 if rank is None or rank >= 10 else 1.0 / float(np.log2(rank + 2))


def interval(values: np.ndarray, rows: np.ndarray, draws: np.ndarray) -> str:
    means = values[draws].mean(axis=1)
    return f"{values[rows].mean():.3f} [{np.quantile(means, 0.025):.3f}, {np.quantile(means, 0.975):.3f}]"


def main() -> None:
    out = Path(sys.argv[1])
    config = tomllib.loads((out / "config.toml").read_text(encoding="utf-8"))
    catalog = load_dataset((out / config["dataset"]["path"]).resolve()).catalog
    ids = catalog.ids
    cold_mask = seeded_subset(ids, config["cold"]["fraction"], config["seed"], "cold_items")
    cold = {ids[i] for i in np.flatnonzero(cold_mask)}
    records = [json.loads(line) for line in (out / "per_user.jsonl").read_text(encoding="utf-8").splitlines()]
    is_cold = np.array([r["target"] in cold for r in records])
    names = [r["name"] for r in config["rankers"]]
    baseline = config.get("metrics", {}).get("baseline")
    rng = np.random.default_rng(0)
    groups = {
        "all": np.arange(len(records)),
        "cold target": np.flatnonzero(is_cold),
        "warm target": np.flatnonzero(~is_cold),
    }
    draws = {g: rows[rng.integers(rows.size, size=(1000, rows.size))] for g, rows in groups.items()}
    lines = [
        f"# {config['name']}: cold and warm targets\n",
        f"{len(records)} users; {int(is_cold.sum())} with a cold target, {int((~is_cold).sum())} with a warm one; "
        f"{len(cold)} cold items of {len(ids)}. NDCG@10 and HR@10 with 95% bootstrap intervals; `cold@10`: mean share "
        f"of cold items in the top 10. Written by `evaluation/experiments/mixed_breakdown.py`.\n",
        "| ranker | NDCG@10 all | NDCG@10 cold target | NDCG@10 warm target | HR@10 all | HR@10 cold | HR@10 warm "
        "| cold@10 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ndcg = {n: np.array([ndcg10(r["rankers"][n]["rank"]) for r in records]) for n in names}
    hr = {
        n: np.array([float(r["rankers"][n]["rank"] is not None and r["rankers"][n]["rank"] < 10) for r in records])
        for n in names
    }
    for n in names:
        share = np.mean([np.mean([i in cold for i in r["rankers"][n]["top"]]) for r in records])
        cells = [interval(ndcg[n], groups[g], draws[g]) for g in groups]
        cells += [interval(hr[n], groups[g], draws[g]) for g in groups]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {share:.3f} |")
    if baseline:
        lines += [
            "",
            f"Paired NDCG@10 difference against `{baseline}` (same users, same resamples):",
            "",
            "| ranker | all | cold target | warm target |",
            "| --- | --- | --- | --- |",
        ]
        for n in names:
            if n != baseline:
                diff = ndcg[n] - ndcg[baseline]
                lines.append(f"| {n} | " + " | ".join(interval(diff, groups[g], draws[g]) for g in groups) + " |")
    (out / "breakdown.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
