"""Offline evaluation: leave-one-out splits, candidate generators, baselines and LLM rankers on the same candidates,
metrics with bootstrap intervals, resumable runs and reports.

    from zsgen.evaluate import evaluate, load_config
    summary = evaluate("evaluation/configs/nir.toml", "runs/nir")

The same as ``zsgen evaluate --config evaluation/configs/nir.toml --out runs/nir``.

This package is the one implementation of the protocol; everything that measures (``zsgen evaluate``, weight tuning,
the scripts in ``evaluation/experiments/``) uses it:

- :mod:`~zsgen.metrics.split`: leave-one-out by time (test and validation), seeded user samples and per-user seeds;
- :mod:`~zsgen.evaluate.generators`: candidate lists (score-based top N, LLMRank's random lists, the full catalog);
- :mod:`~zsgen.metrics.ranks`: the tie rule and the target's rank; :mod:`~zsgen.metrics.metrics`: HR, NDCG, MRR,
  bootstrap intervals;
- :mod:`~zsgen.evaluate.protocol`: a split and its candidates as one task over score matrices;
- :mod:`~zsgen.evaluate.tuning`: fusion weights searched on the validation split by the reported metric;
- :mod:`~zsgen.evaluate.experiment`: helpers for experiment scripts;
- :mod:`~zsgen.evaluate.runner`, :mod:`~zsgen.evaluate.summary`, :mod:`~zsgen.evaluate.report`: the run and its
  artefacts.

History masking and top-k selection are ranking primitives the serving path shares, so they live with the scorers
(:func:`zsgen.score.base.mask_history`, :func:`~zsgen.score.base.history_mask`, :func:`~zsgen.score.base.top_k`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zsgen.evaluate.config import EvalConfig, config_from_dict, load_config
from zsgen.evaluate.summary import Summary
from zsgen.metrics.metrics import Interval, rank_metrics
from zsgen.metrics.split import Split, UserCase, leave_one_out, make_split, validation_split


def evaluate(
    config: EvalConfig | str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    progress: bool | None = None,
) -> Summary:
    """Run (or resume) an evaluation into ``out_dir``; ``config`` is a model, a TOML path or a dict.

    A dict's relative paths resolve against the current directory.
    """
    from zsgen.evaluate.runner import run_evaluation

    if isinstance(config, str | Path):
        config = load_config(config)
    elif not isinstance(config, EvalConfig):
        config = config_from_dict(config)
    return run_evaluation(config, out_dir, progress=progress)


__all__ = [
    "EvalConfig",
    "Interval",
    "Split",
    "Summary",
    "UserCase",
    "config_from_dict",
    "evaluate",
    "leave_one_out",
    "load_config",
    "make_split",
    "rank_metrics",
    "validation_split",
]
