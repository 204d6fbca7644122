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
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="run here (default) or with the catalog embedding and LLM requests on a Ray cluster (pip install "
        "'zsgen[ray]'; LLM rankers must be single-call chat methods with backend = 'openai')",
    )
    p.add_argument("--ray-address", help="with --engine ray: the cluster to join (e.g. auto); default: a local one")
    p.add_argument("--ray-workers", type=int, default=2, help="with --engine ray: worker actors per stage (default 2)")
    p.set_defaults(func=run)


def _evaluate_on_ray(args: argparse.Namespace, config: Any, progress: bool | None) -> Any:
    """``--engine ray``: join (or start) the cluster, run, and leave it as found."""
    from zsgen.engines.ray.cluster import connected
    from zsgen.engines.ray.evaluate import check_sendable, evaluate_ray

    check_sendable(config, args.out)  # before a cluster starts
    with connected(args.ray_address, log_to_driver=args.verbosity > 0):
        return evaluate_ray(config, args.out, workers=args.ray_workers, progress=progress)


def run(args: argparse.Namespace) -> int:
    """Run the config (resuming into ``--out``), then print each ranker's headline metrics."""
    from zsgen.evaluate import evaluate
    from zsgen.evaluate.config import load_config

    # Without matplotlib (the eval extra) the run still completes; write_report skips the plots with one warning.

    overrides: dict[str, Any] = {"users": args.users, "seed": args.seed}
    if args.dataset:
        overrides["dataset"] = {"path": str(Path(args.dataset).resolve()), "name": None}
    config = load_config(args.config, overrides, data_dir=args.data_dir)
    progress = False if args.no_progress or args.verbosity < 0 else None
    if args.engine == "ray":
        summary = _evaluate_on_ray(args, config, progress)
    else:
        summary = evaluate(config, args.out, progress=progress)
    k = summary.headline_k
    print(
        f"{summary.name}: {summary.users} users, candidate recall {summary.candidate_recall:.3f}; "
        f"report: {args.out / 'report.md'}"
    )
    for ranker in summary.rankers:
        hr, ndcg = ranker.all_users[f"HR@{k}"], ranker.all_users[f"NDCG@{k}"]
        print(f"  {ranker.name:<24} HR@{k} {hr.mean:.4f}  NDCG@{k} {ndcg.mean:.4f}")
    return 0
