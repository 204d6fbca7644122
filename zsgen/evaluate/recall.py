"""Candidate recall at N: how often each generator's top N unseen items hold the user's target.

A reranker can only reorder the list it is given, so this is the ceiling on every ranker of such a list; the table
makes the cost of a short list (and the gain of a better first stage) visible before any LLM is asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zsgen.evaluate.config import EvalConfig
from zsgen.evaluate.fusion import RunFusion
from zsgen.evaluate.generators import ScorerFactory
from zsgen.metrics.ranks import target_ranks
from zsgen.metrics.split import UserCase, queries_for

#: Users scored at once (a users × items score matrix per chunk).
CHUNK_USERS = 256


def generator_recall(
    config: EvalConfig, factory: ScorerFactory, cases: Sequence[UserCase], fusions: Mapping[str, RunFusion]
) -> dict[str, dict[str, float]]:
    """Recall at each N of ``config.metrics.recall_at`` for every generator of ``config.recall_generators()``."""
    from zsgen.score.base import mask_history

    out: dict[str, dict[str, float]] = {}
    if not cases:
        return out
    targets = np.array([case.target for case in cases], dtype=np.int64)
    for name in config.recall_generators():
        scorer = _scorer(config, factory, name, fusions)
        ranks = np.empty(len(cases), dtype=np.int64)
        for start in range(0, len(cases), CHUNK_USERS):
            chunk = cases[start : start + CHUNK_USERS]
            queries = queries_for(chunk)
            scores = mask_history(scorer.score(queries), queries)
            ranks[start : start + len(chunk)] = target_ranks(scores, targets[start : start + len(chunk)])
        found = ranks >= 0
        out[name] = {str(n): float(np.mean(found & (ranks < n))) for n in config.metrics.recall_at}
    return out


def _scorer(config: EvalConfig, factory: ScorerFactory, name: str, fusions: Mapping[str, RunFusion]) -> Any:
    if name == "fused":
        source = config.fusion_source()
        return factory.fitted("fused", fusion=fusions[str(source)].config)
    if name == config.candidates.generator:  # the run's own generator, with its settings
        c = config.candidates
        return factory.fitted(
            name,
            neighbours=c.neighbours,
            include_self=c.include_self,
            user_vector=c.user_vector,
            history_length=c.history_length,
        )
    return factory.fitted(name)
