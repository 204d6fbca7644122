"""A split and its candidates as one ranking task over whole score matrices: for the weight search and experiments.

``zsgen evaluate`` ranks user by user through generators and rankers; code that scores all users at once (weight
tuning, ablations in ``evaluation/experiments/``) needs the same task in matrix form. A :class:`RankingTask` is built
from the protocol's own parts — the split's cases, the run's :class:`~zsgen.evaluate.generators.RandomGenerator`
lists, the history rule and :func:`~zsgen.metrics.ranks.target_ranks` — so its ranks are the ranks a run with the
same split and seed reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from zsgen.errors import ConfigError
from zsgen.evaluate.generators import CandidateList, RandomGenerator
from zsgen.metrics.ranks import NOT_RANKED, target_ranks
from zsgen.metrics.split import IndexArray, Split

#: ``full_catalog``: every item outside the history is ranked; ``sampled``: LLMRank's target + n - 1 random items.
Protocol = Literal["full_catalog", "sampled"]


@dataclass(frozen=True)
class RankingTask:
    """What is ranked for each case of ``split``.

    ``columns`` is None for the full catalog (every item outside the history is ranked; ``exclude`` is the history).
    Otherwise it holds each user's candidate list in the order a run shows it to its rankers (so ties go to the
    earlier candidate, as the rankers' stable sort breaks them), ``targets`` are positions in those lists and
    ``exclude`` marks padding; a target missing from its list points at an excluded padding column and is a miss.
    ``max_rank``: ranks from there on are misses (a run that ranks the top ``n`` of the very score being tuned).
    ``target_sets``: for multi-target cases (cold-start protocols), each case's target positions in its list
    (-1: not listed); ``targets`` then holds the first of them.
    """

    split: Split
    targets: IndexArray
    columns: IndexArray | None
    exclude: npt.NDArray[np.bool_] | None
    max_rank: int | None = None
    target_sets: list[IndexArray] | None = None

    def ranks(self, scores: npt.NDArray[np.floating[Any]]) -> IndexArray:
        """Target ranks of full-row ``scores`` (cases × catalog) under this task and the reported tie rule."""
        if self.columns is not None:
            ranks = target_ranks(np.take_along_axis(scores, self.columns, axis=1), self.targets, self.exclude)
        else:
            ranks = target_ranks(scores, self.targets, self.exclude)
        if self.max_rank is not None:
            ranks[ranks >= self.max_rank] = NOT_RANKED
        return ranks

    def subset(self, rows: npt.ArrayLike) -> RankingTask:
        """The task restricted to the cases at ``rows`` (positions in ``split.cases``)."""
        index = np.asarray(rows).ravel()
        return RankingTask(
            self.split.subset(index),
            self.targets[index],
            None if self.columns is None else self.columns[index],
            None if self.exclude is None else self.exclude[index],
            self.max_rank,
            None if self.target_sets is None else [self.target_sets[int(i)] for i in index],
        )

    @classmethod
    def from_lists(cls, split: Split, lists: Sequence[CandidateList]) -> RankingTask:
        """The task of ranking each case's candidate list (as a generator produced it for ``split.cases``)."""
        if len(lists) != len(split.cases):
            raise ConfigError(f"{len(lists)} candidate lists for {len(split.cases)} cases")
        longest = max((len(c) for c in lists), default=0)
        positions = [c.position_of(case.target) for case, c in zip(split.cases, lists, strict=True)]
        # Padding only where needed: shorter lists, and one excluded column that missed targets point at.
        padded = any(len(c) != longest for c in lists) or any(p is None for p in positions)
        width = longest + 1 if padded else longest
        columns = np.zeros((len(lists), width), dtype=np.int64)
        exclude = np.ones((len(lists), width), dtype=bool)
        targets = np.full(len(lists), width - 1, dtype=np.int64)
        for row, (candidates, position) in enumerate(zip(lists, positions, strict=True)):
            columns[row, : len(candidates)] = candidates.items
            exclude[row, : len(candidates)] = False
            if position is not None:
                targets[row] = position
        sets = None
        if any(case.targets is not None for case in split.cases):
            sets = [
                np.array([-1 if (p := c.position_of(int(t))) is None else p for t in case.all_targets], dtype=np.int64)
                for case, c in zip(split.cases, lists, strict=True)
            ]
        return cls(split, targets, columns, exclude if padded else None, target_sets=sets)


def ranking_task(
    split: Split,
    n_items: int,
    protocol: Protocol = "full_catalog",
    *,
    n: int = 20,
    seed: int = 0,
    max_rank: int | None = None,
) -> RankingTask:
    """The task ``protocol`` sets on ``split``; ``n`` and ``seed`` are the sampled lists' length and the run seed;
    ``max_rank`` (full catalog only) makes ranks from there on misses."""
    from zsgen.score.base import history_mask

    if protocol == "sampled":
        return RankingTask.from_lists(split, RandomGenerator(n_items, n, seed).generate(split.cases))
    if protocol != "full_catalog":
        raise ConfigError(f"protocol must be full_catalog or sampled; got {protocol!r}")
    return RankingTask(split, split.targets, None, history_mask(split.queries, n_items), max_rank)
