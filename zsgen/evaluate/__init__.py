"""Offline evaluation: leave-one-out splits, candidate generators, baselines and LLM rankers on the same candidates,
metrics with bootstrap intervals, resumable runs and reports.

    from zsgen.evaluate import evaluate, load_config
    summary = evaluate("evaluation/configs/nir.toml", "runs/nir")

The same as ``zsgen evaluate --config evaluation/configs/nir.toml --out runs/nir``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zsgen.evaluate.config import EvalConfig, config_from_dict, load_config
from zsgen.evaluate.metrics import Interval, rank_metrics
from zsgen.evaluate.split import UserCase, leave_one_out
from zsgen.evaluate.summary import Summary


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
    "Summary",
    "UserCase",
    "config_from_dict",
    "evaluate",
    "leave_one_out",
    "load_config",
    "rank_metrics",
]
