"""The validation split a trained baseline tunes itself on: each training user's last training event held out.

Fitting on the rest and ranking that event over the full catalog (history removed) is how EASE picks its L2 weight
and SASRec its stopping epoch. It is carved out of the :class:`~zsgen.score.base.TrainData` the baseline is given,
never out of the evaluation log, so an evaluation target cannot reach it: on the test split of ``zsgen evaluate`` the
held-out event is each user's second-to-last one, the same target the fused ranker is tuned on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zsgen.errors import DataError
from zsgen.metrics.metrics import metric_values
from zsgen.metrics.ranks import target_ranks
from zsgen.score.base import IndexArray, ScoreMatrix, TrainData, UserQuery, history_mask


@dataclass(frozen=True)
class Holdout:
    """``train`` without each user's last event; ``queries`` and ``targets`` are the users who keep at least
    ``min_history`` events, their remaining events as history and the held-out event as target."""

    train: TrainData
    queries: list[UserQuery]
    targets: IndexArray


def last_event_holdout(train: TrainData, *, min_history: int = 1) -> Holdout:
    """Each user's last training event held out (users with fewer than ``min_history + 1`` events are kept whole
    for training and not evaluated)."""
    sequences: list[IndexArray] = []
    stamps: list[npt.NDArray[np.float64]] | None = [] if train.timestamps is not None else None
    queries: list[UserQuery] = []
    targets: list[int] = []
    for row, sequence in enumerate(train.sequences):
        if sequence.size >= max(min_history, 0) + 1:
            kept = sequence[:-1]
            queries.append(UserQuery(history=kept, user=row))
            targets.append(int(sequence[-1]))
        else:
            kept = sequence
        sequences.append(kept)
        if stamps is not None and train.timestamps is not None:
            stamps.append(train.timestamps[row][: kept.size])
    if not queries:
        raise DataError(f"no training user has {min_history + 1} events, so there is nothing to validate on")
    return Holdout(
        train=TrainData(sequences=sequences, timestamps=stamps, n_items=train.n_items),
        queries=queries,
        targets=np.asarray(targets, dtype=np.int64),
    )


def validation_ndcg(scores: ScoreMatrix, holdout: Holdout, k: int = 10) -> float:
    """Mean NDCG@k of the held-out events over the full catalog with each user's history removed (the tie rule of
    the evaluation), by the evaluation's own metric (:func:`zsgen.metrics.metric_values`), so early stopping and the
    report agree on what NDCG is."""
    ranks = target_ranks(scores, holdout.targets, exclude=history_mask(holdout.queries, scores.shape[1]))
    return float(metric_values(ranks, f"ndcg@{k}").mean())
