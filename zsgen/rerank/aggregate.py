"""Turning several orders into one: Borda count over bootstrap rounds, weighted reciprocal-rank fusion with cosine
order, and the seeded, pairwise-distinct shuffles that bootstrap rounds show.

All of it works on candidate *indices* (positions in the retrieval list), so it knows nothing of items or models.
Ties always go to the earlier candidate, i.e. to retrieval order, which keeps every result deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from zsgen.types import Candidate

__all__ = ["RRF_K", "borda", "cosine_order", "distinct_permutations", "order_by", "weighted_rrf"]

#: The usual reciprocal-rank-fusion constant: damps the difference between the very first places.
RRF_K = 60.0


def distinct_permutations(n: int, rounds: int, seed: int) -> list[list[int]]:
    """``rounds`` seeded shuffles of ``range(n)``, pairwise different whenever ``n!`` allows it.

    Position bias is what bootstrap rounds average out (LLMRank), so two rounds showing the same order would only
    count one order twice.
    """
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    result: list[list[int]] = []
    limit = 1
    for f in range(2, n + 1):
        limit *= f
        if limit >= rounds:
            break
    attempts = 0
    while len(result) < rounds:
        perm = list(range(n))
        rng.shuffle(perm)
        key = tuple(perm)
        attempts += 1
        if key in seen and len(seen) < limit and attempts < rounds * 100:
            continue
        seen.add(key)
        result.append(perm)
    return result


def borda(orders: Sequence[Sequence[int]], n: int) -> list[float]:
    """Borda points per candidate (n-1 for first place ... 0 for last), averaged over rounds."""
    points = [0.0] * n
    for order in orders:
        for position, index in enumerate(order):
            points[index] += n - 1 - position
    return [p / max(len(orders), 1) for p in points]


def weighted_rrf(orders: Sequence[Sequence[int]], weights: Sequence[float], n: int) -> list[float]:
    """Weighted reciprocal-rank fusion scores (k=60), for blending a weak model's order with cosine order."""
    scores = [0.0] * n
    for order, weight in zip(orders, weights, strict=True):
        for position, index in enumerate(order):
            scores[index] += weight / (RRF_K + position + 1)
    return scores


def order_by(scores: Sequence[float]) -> list[int]:
    """Indices by descending score; ties keep the earlier (retrieval-order) candidate first."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def cosine_order(candidates: Sequence[Candidate]) -> list[int]:
    """The candidates' own order by their first-stage (cosine) scores: what a fault falls back to and what fusion blends
    with. Retrieval hands candidates over best first, so this is usually ``range(n)``; a caller that shows them in
    another order (an evaluation showing a generator's shuffled list) still gets cosine order back on a fault."""
    return order_by([c.score for c in candidates])
