"""Tune a fusion config's weights on a dataset's validation split and write the resolved config.

    python -m zsgen.score --catalog DATASET --config fusion.toml --out tuned.toml [--metric ndcg@10]
        [--protocol full_catalog|sampled] [--candidates 20] [--seed 0]

The written file is the input config with ``weights`` and a ``[tuned]`` record (metric, value, trials, users) filled
in; ``zsgen recommend --catalog DATASET --fusion tuned.toml`` then ranks with those weights. Only the validation split
is read for tuning: each user's last event is cut off before anything else (see :mod:`zsgen.evaluate.tuning`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from zsgen.errors import ConfigError, ZsgenError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zsgen.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, required=True, help="dataset folder or file with an interaction log")
    parser.add_argument("--format", dest="data_format", help="force a loader: jsonl, csv, ml-100k, ml-1m, recbole")
    parser.add_argument("--config", type=Path, required=True, help="fusion config (TOML/JSON) to tune")
    parser.add_argument("--out", type=Path, required=True, help="where to write the tuned config (.toml or .json)")
    parser.add_argument("--metric", default="ndcg@10", help="validation metric to maximise (ndcg@K, hr@K, mrr)")
    parser.add_argument("--protocol", choices=("full_catalog", "sampled"), default="full_catalog")
    parser.add_argument("--candidates", type=int, default=20, help="list length of the sampled protocol")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled protocol's lists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from zsgen.evaluate.tuning import tune_on_validation
        from zsgen.loaders import load_dataset
        from zsgen.score.config import FusionConfig

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
    except ZsgenError as exc:
        print(f"zsgen: error: {exc}", file=sys.stderr)
        return 1
    print(f"validation {result.metric} = {result.val_metric:.4f} after {len(result.trials)} trials; wrote {args.out}")
    print("weights: " + ", ".join(f"{k} {v:g}" for k, v in result.weights.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
