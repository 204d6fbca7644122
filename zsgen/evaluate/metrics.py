"""Ranking metrics for one relevant item per user, with bootstrap confidence intervals.

With a single relevant item the ideal DCG is 1, so NDCG@K is ``1 / log2(rank + 2)`` when the target is in the top K
(0-based ``rank``) and 0 otherwise; HR@K is the indicator of the same event; MRR is ``1 / (rank + 1)`` over the
whole ranked list. A target the candidate generator missed has no rank and scores 0 everywhere — that is what makes
metrics "over all users" honest about the candidate stage (DESIGN.md §2, lesson 1).

Intervals are percentile bootstraps over users. Paired comparisons resample the per-user *differences*, which keeps
the pairing (the same users, the same candidates) and gives much tighter intervals than comparing two marginal ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from zsgen.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)


class Interval(BaseModel):
    """A mean with its bootstrap interval."""

    mean: float
    low: float
    high: float


def metric_names(ks: Sequence[int]) -> list[str]:
    """Column names in report order: HR@K for each K, NDCG@K for each K, then MRR."""
    return [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks] + ["MRR"]


Ranks = Sequence[int | None] | npt.NDArray[np.integer[Any]]


def _rank_array(ranks: Ranks) -> FloatArray:
    """Ranks as floats with ``inf`` for "not ranked" (``None``, or :data:`zsgen.evaluate.ranks.NOT_RANKED`)."""
    if isinstance(ranks, np.ndarray):
        rank = ranks.astype(np.float64)
    else:
        rank = np.array([np.inf if r is None else float(r) for r in ranks], dtype=np.float64)
    if (rank < -1).any():
        raise ValueError("ranks must be >= 0 (or -1, or None, for a target that was not ranked)")
    rank[rank == -1] = np.inf
    return rank


def _values(rank: FloatArray, kind: str, k: int | None) -> FloatArray:
    """One metric from ranks (``inf``: not ranked); ``k`` None means no cut-off."""
    hit = np.isfinite(rank) if k is None else rank < k
    if kind == "hr":
        return hit.astype(np.float64)
    safe = np.where(hit, rank, 0.0)
    if kind == "ndcg":
        return np.where(hit, 1.0 / np.log2(safe + 2.0), 0.0)
    if kind == "mrr":
        return np.where(hit, 1.0 / (safe + 1.0), 0.0)
    raise ValueError(f"unknown metric kind {kind!r}")


def rank_metrics(ranks: Ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, FloatArray]:
    """Per-user values of every metric, from each user's 0-based target rank (``None`` or negative: not ranked)."""
    for k in ks:
        if k <= 0:
            raise ValueError(f"cut-offs must be positive, got {k}")
    rank = _rank_array(ranks)
    out: dict[str, FloatArray] = {}
    for k in ks:
        out[f"HR@{k}"] = _values(rank, "hr", k)
    for k in ks:
        out[f"NDCG@{k}"] = _values(rank, "ndcg", k)
    out["MRR"] = _values(rank, "mrr", None)
    return out


_METRIC = re.compile(r"^(ndcg|hr|mrr)(?:@(\d+))?$")


def parse_metric(metric: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` → ``("ndcg", 10)``; ``mrr`` may omit the cut-off, the others need it. The names are the
    summary's columns in lower case (``NDCG@10``, ``HR@10``, ``MRR``), so a tuned metric names a reported one."""
    match = _METRIC.match(metric.strip().lower())
    if not match or (match.group(1) != "mrr" and match.group(2) is None):
        raise ConfigError(f"metric must look like ndcg@10, hr@10, mrr or mrr@10; got {metric!r}")
    k = int(match.group(2)) if match.group(2) else None
    if k is not None and k < 1:
        raise ConfigError(f"metric cut-off must be >= 1; got {metric!r}")
    return match.group(1), k


def metric_values(ranks: Ranks, metric: str) -> FloatArray:
    """Per-user values of one named ``metric`` (see :func:`parse_metric`), by the formulas of :func:`rank_metrics`."""
    kind, k = parse_metric(metric)
    return _values(_rank_array(ranks), kind, k)


def bootstrap_indices(n: int, *, resamples: int, seed: int) -> npt.NDArray[np.int64]:
    """``(resamples, n)`` user indices drawn with replacement; one draw shared by every metric of a run."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n), dtype=np.int64)


def bootstrap_interval(
    values: FloatArray, indices: npt.NDArray[np.int64] | None = None, *, level: float = 0.95
) -> Interval:
    """The mean of ``values`` and the percentile interval of its bootstrap distribution.

    With no users the mean is NaN (and so are the bounds): an empty subgroup must not look like a score of 0.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return Interval(mean=float("nan"), low=float("nan"), high=float("nan"))
    mean = float(values.mean())
    if indices is None or indices.shape[0] == 0:
        return Interval(mean=mean, low=mean, high=mean)
    if indices.shape[1] != values.size:
        raise ValueError(f"bootstrap indices are for {indices.shape[1]} users, values for {values.size}")
    means = values[indices].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(mean=mean, low=float(low), high=float(high))


def paired_difference(
    values: FloatArray, baseline: FloatArray, indices: npt.NDArray[np.int64] | None = None, *, level: float = 0.95
) -> Interval:
    """Mean of ``values - baseline`` over the same users, with its paired bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape:
        raise ValueError(f"paired comparison needs equal shapes, got {values.shape} and {baseline.shape}")
    return bootstrap_interval(values - baseline, indices, level=level)
