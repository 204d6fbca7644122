"""How a recommender is measured: the splits, the rank of each held-out target, and the metrics over those ranks.

- :mod:`~zsgen.metrics.split`: leave-one-out splits (:func:`leave_one_out`, :func:`make_split`), the per-user
  evaluation cases (:class:`UserCase`) and seeded user sampling.
- :mod:`~zsgen.metrics.ranks`: a target's rank among scored candidates, ties broken the same way everywhere
  (:func:`target_ranks`, :data:`NOT_RANKED`).
- :mod:`~zsgen.metrics.metrics`: NDCG, HR, MRR, precision, recall and F1 at cutoffs, bootstrap intervals and paired
  differences (:func:`rank_metrics`).

One implementation, used by ``zsgen evaluate``, the trained baselines' validation (:mod:`zsgen.baselines`) and the
service's playground runs, so a number means the same thing wherever it is reported. This package builds on the
data types only; evaluation, baselines and the service build on it.
"""

from zsgen.metrics.metrics import (
    DEFAULT_KS,
    Interval,
    bootstrap_interval,
    metric_names,
    metric_values,
    paired_difference,
    parse_metric,
    rank_metrics,
)
from zsgen.metrics.ranks import NOT_RANKED, multi_target_ranks, target_ranks, tie_safe
from zsgen.metrics.split import Split, UserCase, leave_one_out, make_split, sample_users, validation_split

__all__ = [
    "DEFAULT_KS",
    "NOT_RANKED",
    "Interval",
    "Split",
    "UserCase",
    "bootstrap_interval",
    "leave_one_out",
    "make_split",
    "metric_names",
    "metric_values",
    "multi_target_ranks",
    "paired_difference",
    "parse_metric",
    "rank_metrics",
    "sample_users",
    "target_ranks",
    "tie_safe",
    "validation_split",
]
