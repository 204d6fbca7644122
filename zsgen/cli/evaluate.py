"""``zsgen evaluate``: run an evaluation config into an output folder (resuming if it holds an unfinished run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zsgen.cli.common import Subparsers


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help="offline evaluation from a config: metrics, per-user log, report and plots",
        description="Run an evaluation config. Re-running into the same --out resumes an interrupted run.",
    )
    p.add_argument("--config", type=Path, required=True, help="evaluation config (TOML file)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; resumed if it holds a partial run)")
    p.add_argument("--users", type=int, help="evaluate a seeded sample of N users (overrides the config)")
    p.add_argument("--seed", type=int, help="run seed (overrides the config)")
    p.add_argument("--dataset", help="dataset path (overrides the config; relative to the current directory)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="where a config's `dataset.name` is looked up (default: $ZSGEN_DATA_DIR, else the user data dir)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also with -q)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the config (resuming into ``--out``), then print each ranker's headline metrics."""
    from zsgen.evaluate import evaluate
    from zsgen.evaluate.config import load_config

    # Without matplotlib (the eval extra) the run still completes; write_report skips the plots with one warning.

    overrides: dict[str, Any] = {"users": args.users, "seed": args.seed}
    if args.dataset:
        overrides["dataset"] = {"path": str(Path(args.dataset).resolve()), "name": None}
    config = load_config(args.config, overrides, data_dir=args.data_dir)
    summary = evaluate(config, args.out, progress=False if args.no_progress or args.verbosity < 0 else None)
    k = summary.headline_k
    print(
        f"{summary.name}: {summary.users} users, candidate recall {summary.candidate_recall:.3f}; "
        f"report: {args.out / 'report.md'}"
    )
    for ranker in summary.rankers:
        hr, ndcg = ranker.all_users[f"HR@{k}"], ranker.all_users[f"NDCG@{k}"]
        print(f"  {ranker.name:<24} HR@{k} {hr.mean:.4f}  NDCG@{k} {ndcg.mean:.4f}")
    return 0
