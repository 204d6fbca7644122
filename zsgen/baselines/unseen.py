"""Items a trained baseline never saw get no learned score: they rank after every item it learned something about.

An embedding row or an EASE column of an item absent from training is only its initial value (random for SASRec,
zero for EASE), and ranking by it would be ranking by noise. Putting such items last, below the row's lowest learned
score, is what the count-based signals do in effect (they give them nothing) and keeps the score finite, since
``-inf`` means "not ranked at all" to the evaluation (:func:`zsgen.metrics.ranks.target_ranks`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from zsgen.score.base import ScoreMatrix, TrainData


def trained_items(train: TrainData) -> npt.NDArray[np.bool_]:
    """True for every item that occurs in ``train``."""
    seen = np.zeros(train.n_items, dtype=bool)
    for sequence in train.sequences:
        seen[sequence] = True
    return seen


def floor_unseen(scores: ScoreMatrix, seen: npt.NDArray[np.bool_]) -> ScoreMatrix:
    """``scores`` with every unseen item's column set to one below the row's lowest score among seen items."""
    out = np.array(scores, dtype=np.float64, copy=True)
    if seen.all() or out.size == 0:
        return out
    if not seen.any():
        out[:] = 0.0
        return out
    floor = out[:, seen].min(axis=1) - 1.0
    out[:, ~seen] = floor[:, None]
    return out
