"""``zsgen tune``: tune a fusion config's weights on a dataset's validation split and write the resolved config.

    zsgen tune --catalog DATASET --config fusion.toml --out tuned.toml [--metric ndcg@10]
        [--protocol full_catalog|sampled] [--candidates 20] [--seed 0]

The written file is the input config with ``weights`` and a ``[tuned]`` record (metric, value, trials, users) filled
in; ``zsgen recommend --catalog DATASET --fusion tuned.toml`` then ranks with those weights. Only the validation split
is read for tuning: each user's last event is cut off before anything else (see :mod:`zsgen.evaluate.tuning`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from zsgen.errors import ConfigError

if TYPE_CHECKING:
    from zsgen.cli.common import Subparsers


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``tune``."""
    p = subparsers.add_parser(
        "tune",
        help="tune a fusion config's weights on a validation split and write the tuned config",
        description="Tune the weights of a fusion config (multi-signal first stage) on the dataset's validation "
        "split — each user's test event is cut off first — and write the config with the chosen weights, for "
        "zsgen recommend --fusion.",
    )
    p.add_argument("--catalog", type=Path, required=True, help="dataset folder or file with an interaction log")
    p.add_argument(
        "--format", dest="data_format", metavar="FORMAT", help="force a loader: jsonl, csv, ml-100k, ml-1m, recbole"
    )
    p.add_argument("--config", type=Path, required=True, help="fusion config (TOML/JSON) to tune")
    p.add_argument("--out", type=Path, required=True, help="where to write the tuned config (.toml or .json)")
    p.add_argument("--metric", default="ndcg@10", help="validation metric to maximise: ndcg@K, hr@K or mrr")
    p.add_argument(
        "--protocol",
        choices=("full_catalog", "sampled"),
        default="full_catalog",
        help="rank every unseen item (full_catalog, default) or the target among --candidates sampled items",
    )
    p.add_argument("--candidates", type=int, default=20, help="list length of the sampled protocol (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled protocol's lists (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the dataset and config, tune, write ``--out`` and print the validation metric and weights."""
    from zsgen.evaluate.tuning import tune_on_validation
    from zsgen.loaders import load_dataset
    from zsgen.score.config import FusionConfig

    if not args.out.parent.is_dir():  # found out now, not after minutes of tuning
        raise ConfigError(f"--out {args.out}: folder {args.out.parent} does not exist")
    dataset = load_dataset(args.catalog, format=args.data_format)
    if dataset.interactions is None:
        raise ConfigError(f"{args.catalog}: tuning needs an interaction log, and this dataset has none")
    config = FusionConfig.load(args.config)
    tuned, result = tune_on_validation(
        config,
        dataset.catalog,
        dataset.interactions,
        metric=args.metric,
        protocol=args.protocol,
        n_candidates=args.candidates,
        seed=args.seed,
        source=str(args.catalog),
    )
    tuned.save(args.out)
    print(f"validation {result.metric} = {result.val_metric:.4f} after {len(result.trials)} trials; wrote {args.out}")
    print("weights: " + ", ".join(f"{k} {v:g}" for k, v in result.weights.items()))
    return 0
