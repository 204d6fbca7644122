"""Ranking metrics for one or several relevant items (targets) per user, with bootstrap confidence intervals.

A user's targets have 0-based ranks in the ranked list (a target the candidate generator missed has none and is a
miss for every metric — that is what makes metrics "over all users" honest about the candidate stage, DESIGN.md §2,
lesson 1). With ``h`` the number of targets ranked in the top K and ``T`` the number of targets:

- HR@K: 1 when any target is in the top K;
- Precision@K: ``h / K``; Recall@K: ``h / T``; F1@K: their harmonic mean (0 when both are 0) — the measures
  zero-shot recommendation articles report for cold-start protocols with several held-out items;
- NDCG@K: ``Σ 1/log2(rank + 2)`` over the targets in the top K, divided by the ideal DCG
  ``Σ_{i < min(K, T)} 1/log2(i + 2)`` (the standard binary-relevance definition);
- MRR: ``1 / (rank + 1)`` of the best-ranked target, over the whole list.

With one target (leave-one-out) the ideal DCG is 1, so NDCG@K is ``1 / log2(rank + 2)`` inside the top K, Recall@K
equals HR@K, Precision@K is ``HR@K / K`` and F1@K is ``2·HR@K / (K + 1)``: the single-target numbers are unchanged.

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


#: Metric kinds as :func:`parse_metric` reads them, and the column prefix the summary gives each.
KINDS: dict[str, str] = {
    "hr": "HR",
    "ndcg": "NDCG",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "mrr": "MRR",
}
#: Kinds that need a cut-off, in report order (MRR follows them).
CUTOFF_KINDS: tuple[str, ...] = ("hr", "ndcg", "precision", "recall", "f1")


def metric_names(ks: Sequence[int]) -> list[str]:
    """Column names in report order: HR@K for each K, NDCG@K, Precision@K, Recall@K, F1@K for each K, then MRR."""
    return [f"{KINDS[kind]}@{k}" for kind in CUTOFF_KINDS for k in ks] + ["MRR"]


Ranks = Sequence[int | None] | npt.NDArray[np.integer[Any]]
#: Per user, the ranks of each of their targets (``None`` or -1: not ranked).
MultiRanks = Sequence[Sequence[int | None] | npt.NDArray[np.integer[Any]]]


def _rank_array(ranks: Ranks) -> FloatArray:
    """Ranks as floats with ``inf`` for "not ranked" (``None``, or :data:`zsgen.metrics.ranks.NOT_RANKED`)."""
    if isinstance(ranks, np.ndarray):
        rank = ranks.astype(np.float64)
    else:
        rank = np.array([np.inf if r is None else float(r) for r in ranks], dtype=np.float64)
    if (rank < -1).any():
        raise ValueError("ranks must be >= 0 (or -1, or None, for a target that was not ranked)")
    rank[rank == -1] = np.inf
    return rank


def _rank_matrix(ranks: MultiRanks) -> FloatArray:
    """Users × targets ranks as floats, ``inf`` for "not ranked" and for padding (users with fewer targets); every
    user needs at least one target."""
    rows = [_rank_array(list(r) if not isinstance(r, np.ndarray) else r) for r in ranks]
    if any(row.size == 0 for row in rows):
        raise ValueError("every user needs at least one target")
    width = max((row.size for row in rows), default=1)
    out = np.full((len(rows), width), np.inf, dtype=np.float64)
    for i, row in enumerate(rows):
        out[i, : row.size] = row
    return out


def _values(rank: FloatArray, counts: FloatArray, kind: str, k: int | None) -> FloatArray:
    """One metric from a users × targets rank matrix (``inf``: not ranked or padding) and each user's number of
    targets; ``k`` None means no cut-off."""
    hit = np.isfinite(rank) if k is None else rank < k
    safe = np.where(hit, rank, 0.0)
    if kind == "hr":
        return np.asarray(hit.any(axis=1), dtype=np.float64)
    if kind == "mrr":
        best = rank.min(axis=1)
        found = np.isfinite(best) if k is None else best < k
        return np.where(found, 1.0 / (np.where(found, best, 0.0) + 1.0), 0.0)
    if k is None:
        raise ValueError(f"metric {kind!r} needs a cut-off")
    hits: FloatArray = hit.sum(axis=1).astype(np.float64)
    if kind == "precision":
        return np.asarray(hits / k, dtype=np.float64)
    if kind == "recall":
        return np.asarray(hits / counts, dtype=np.float64)
    if kind == "f1":
        precision, recall = hits / k, hits / counts
        total = precision + recall
        f1 = np.divide(2.0 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
        return np.asarray(f1, dtype=np.float64)
    if kind == "ndcg":
        dcg = np.where(hit, 1.0 / np.log2(safe + 2.0), 0.0).sum(axis=1)
        discounts = np.cumsum(1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0))
        ideal = discounts[np.minimum(counts, k).astype(np.int64) - 1]
        return np.asarray(dcg / ideal, dtype=np.float64)
    raise ValueError(f"unknown metric kind {kind!r}")


def _as_matrix(ranks: Ranks | MultiRanks) -> tuple[FloatArray, FloatArray]:
    """A rank matrix and target counts from single-target ranks (one per user) or per-user lists of ranks."""
    if isinstance(ranks, np.ndarray) or all(r is None or isinstance(r, int | np.integer) for r in ranks):
        rank = _rank_array(ranks)  # type: ignore[arg-type]
        return rank[:, None], np.ones(rank.size, dtype=np.float64)
    matrix = _rank_matrix(ranks)  # type: ignore[arg-type]
    counts = np.array([len(r) for r in ranks], dtype=np.float64)  # type: ignore[arg-type]
    return matrix, counts


def rank_metrics(ranks: Ranks | MultiRanks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, FloatArray]:
    """Per-user values of every metric, in :func:`metric_names` order.

    ``ranks`` is either one 0-based target rank per user (``None`` or negative: not ranked), or per user a sequence
    of the ranks of each of their targets (multi-target protocols such as cold items or cold users).
    """
    for k in ks:
        if k <= 0:
            raise ValueError(f"cut-offs must be positive, got {k}")
    rank, counts = _as_matrix(ranks)
    out: dict[str, FloatArray] = {}
    for kind in CUTOFF_KINDS:
        for k in ks:
            out[f"{KINDS[kind]}@{k}"] = _values(rank, counts, kind, k)
    out["MRR"] = _values(rank, counts, "mrr", None)
    return out


_METRIC = re.compile(r"^(ndcg|hr|mrr|precision|recall|f1)(?:@(\d+))?$")


def parse_metric(metric: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` → ``("ndcg", 10)``; ``mrr`` may omit the cut-off, the others need it. The names are the
    summary's columns in lower case (``NDCG@10``, ``HR@10``, ``Recall@10``, ``MRR``...), so a tuned metric names a
    reported one."""
    match = _METRIC.match(metric.strip().lower())
    if not match or (match.group(1) != "mrr" and match.group(2) is None):
        raise ConfigError(
            f"metric must look like ndcg@10, hr@10, precision@10, recall@10, f1@10, mrr or mrr@10; got {metric!r}"
        )
    k = int(match.group(2)) if match.group(2) else None
    if k is not None and k < 1:
        raise ConfigError(f"metric cut-off must be >= 1; got {metric!r}")
    return match.group(1), k


def metric_values(ranks: Ranks | MultiRanks, metric: str) -> FloatArray:
    """Per-user values of one named ``metric`` (see :func:`parse_metric`), by the formulas of :func:`rank_metrics`;
    ``ranks`` as there (one rank per user, or per-user lists)."""
    kind, k = parse_metric(metric)
    rank, counts = _as_matrix(ranks)
    return _values(rank, counts, kind, k)


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
