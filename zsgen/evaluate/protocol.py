"""A split and its candidates as one ranking task over whole score matrices: for the weight search and experiments.

``zsgen evaluate`` ranks user by user through generators and rankers; code that scores all users at once (weight
tuning, ablations in ``evaluation/experiments/``) needs the same task in matrix form. A :class:`RankingTask` is built
from the protocol's own parts — the split's cases, the run's :class:`~zsgen.evaluate.generators.RandomGenerator`
lists, the history rule and :func:`~zsgen.evaluate.ranks.target_ranks` — so its ranks are the ranks a run with the
same split and seed reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from zsgen.errors import ConfigError
from zsgen.evaluate.generators import RandomGenerator
from zsgen.evaluate.ranks import target_ranks
from zsgen.evaluate.split import IndexArray, Split

#: ``full_catalog``: every item outside the history is ranked; ``sampled``: LLMRank's target + n - 1 random items.
Protocol = Literal["full_catalog", "sampled"]


@dataclass(frozen=True)
class RankingTask:
    """What is ranked for each case of ``split``.

    ``columns`` is None for the full catalog (every item outside the history is ranked; ``exclude`` is the history);
    for ``sampled`` it holds each user's list in the order :class:`~zsgen.evaluate.generators.RandomGenerator` shows
    it to a run's rankers (same seed, same per-user shuffle), and ``targets`` are positions in those lists.
    """

    split: Split
    targets: IndexArray
    columns: IndexArray | None
    exclude: npt.NDArray[np.bool_] | None

    def ranks(self, scores: npt.NDArray[np.floating[Any]]) -> IndexArray:
        """Target ranks of full-row ``scores`` (cases × catalog) under this task and the reported tie rule."""
        if self.columns is not None:
            return target_ranks(np.take_along_axis(scores, self.columns, axis=1), self.targets)
        return target_ranks(scores, self.targets, self.exclude)

    def subset(self, rows: npt.ArrayLike) -> RankingTask:
        """The task restricted to the cases at ``rows`` (positions in ``split.cases``)."""
        index = np.asarray(rows).ravel()
        return RankingTask(
            self.split.subset(index),
            self.targets[index],
            None if self.columns is None else self.columns[index],
            None if self.exclude is None else self.exclude[index],
        )


def ranking_task(
    split: Split, n_items: int, protocol: Protocol = "full_catalog", *, n: int = 20, seed: int = 0
) -> RankingTask:
    """The task ``protocol`` sets on ``split``; ``n`` and ``seed`` are the sampled lists' length and the run seed."""
    from zsgen.score.base import history_mask

    if protocol == "sampled":
        lists = RandomGenerator(n_items, n, seed).generate(split.cases)
        columns = np.stack([c.items for c in lists]).astype(np.int64)
        positions = [c.position_of(case.target) for case, c in zip(split.cases, lists, strict=True)]
        return RankingTask(split, np.asarray(positions, dtype=np.int64), columns, None)
    if protocol != "full_catalog":
        raise ConfigError(f"protocol must be full_catalog or sampled; got {protocol!r}")
    return RankingTask(split, split.targets, None, history_mask(split.queries, n_items))
