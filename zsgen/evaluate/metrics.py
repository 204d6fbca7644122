"""Ranking metrics for one relevant item per user, with bootstrap confidence intervals.

With a single relevant item the ideal DCG is 1, so NDCG@K is ``1 / log2(rank + 2)`` when the target is in the top K
(0-based ``rank``) and 0 otherwise; HR@K is the indicator of the same event; MRR is ``1 / (rank + 1)`` over the
whole ranked list. A target the candidate generator missed has no rank and scores 0 everywhere — that is what makes
metrics "over all users" honest about the candidate stage (DESIGN.md §2, lesson 1).

Intervals are percentile bootstraps over users. Paired comparisons resample the per-user *differences*, which keeps
the pairing (the same users, the same candidates) and gives much tighter intervals than comparing two marginal ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

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


def rank_metrics(ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS) -> dict[str, FloatArray]:
    """Per-user values of every metric, from each user's 0-based target rank (``None``: target not ranked)."""
    for k in ks:
        if k <= 0:
            raise ValueError(f"cut-offs must be positive, got {k}")
    rank = np.array([np.inf if r is None else float(r) for r in ranks], dtype=np.float64)
    if (rank < 0).any():
        raise ValueError("ranks must be >= 0")
    found = np.isfinite(rank)
    gain = np.zeros_like(rank)
    gain[found] = 1.0 / np.log2(rank[found] + 2.0)
    out: dict[str, FloatArray] = {}
    for k in ks:
        out[f"HR@{k}"] = (rank < k).astype(np.float64)
    for k in ks:
        out[f"NDCG@{k}"] = np.where(rank < k, gain, 0.0)
    rr = np.zeros_like(rank)
    rr[found] = 1.0 / (rank[found] + 1.0)
    out["MRR"] = rr
    return out


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
