"""``zsgen evaluate``: run an evaluation config into an output folder (resuming if it holds an unfinished run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the ``zsgen`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="offline evaluation from a config: metrics, per-user log, report and plots",
        description="Run an evaluation config. Re-running into the same --out resumes an interrupted run.",
    )
    p.add_argument("--config", type=Path, required=True, help="evaluation config (TOML file)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; resumed if it holds a partial run)")
    p.add_argument("--users", type=int, help="evaluate a seeded sample of N users (overrides the config)")
    p.add_argument("--seed", type=int, help="run seed (overrides the config)")
    p.add_argument("--dataset", help="dataset path (overrides the config; relative to the current directory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)
    return p


def run_command(args: argparse.Namespace) -> int:
    from zsgen.evaluate import evaluate
    from zsgen.evaluate.config import load_config

    overrides: dict[str, Any] = {"users": args.users, "seed": args.seed}
    if args.dataset:
        overrides["dataset"] = {"path": str(Path(args.dataset).resolve())}
    config = load_config(args.config, overrides)
    summary = evaluate(config, args.out, progress=False if args.no_progress else None)
    k = summary.headline_k
    print(
        f"{summary.name}: {summary.users} users, candidate recall {summary.candidate_recall:.3f}; "
        f"report: {args.out / 'report.md'}"
    )
    for ranker in summary.rankers:
        hr, ndcg = ranker.all_users[f"HR@{k}"], ranker.all_users[f"NDCG@{k}"]
        print(f"  {ranker.name:<24} HR@{k} {hr.mean:.4f}  NDCG@{k} {ndcg.mean:.4f}", file=sys.stdout)
    return 0
