"""Where a user's target lands in a ranking: the one tie rule that generators, rankers, the recall table and the weight
search all share.

A ranking orders items by descending score; equal scores keep the order the items were given in (for the full
catalog that is catalog order, so the lower catalog index comes first; for a shown candidate list it is the list's
order). Scores are compared after :func:`tie_safe` rounding, so float noise from summing the same numbers in another
order cannot decide a tie. :func:`target_ranks` counts a target's rank under exactly that rule, which is what makes
the weight search (:mod:`zsgen.evaluate.tuning`) maximise the very number ``zsgen evaluate`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Scores are compared after rounding to this many decimals. Summing the same weights in another order changes the
#: last bits (NIR's user filtering gives 5/17 as 0.29411764705882354 for one item and 0.2941176470588235 for
#: another), and float noise must not decide a tie that the "earlier item first" rule is meant to decide.
TIE_DECIMALS = 10

#: The rank of a target that is not ranked at all (excluded, or not among the candidates): a miss for every metric.
NOT_RANKED = -1


def tie_safe(scores: npt.ArrayLike) -> FloatArray:
    """Scores with float noise below :data:`TIE_DECIMALS` removed, so equal scores compare equal."""
    values = np.asarray(scores, dtype=np.float64)
    return np.asarray(values.round(TIE_DECIMALS), dtype=np.float64)


def target_ranks(
    scores: npt.NDArray[np.floating[Any]],
    targets: npt.ArrayLike,
    exclude: npt.NDArray[np.bool_] | None = None,
) -> IndexArray:
    """0-based rank of each row's target column under the reported ordering rule.

    Scores are made :func:`tie_safe`; an item ranks before the target when its score is higher, or equal and its
    column is lower (the stable "earlier first" rule of ``top_k`` and of the rankers' stable sort). Columns in
    ``exclude`` (a boolean mask of the scores' shape, e.g. the history) and columns scored ``-inf`` (history masked by
    :func:`zsgen.score.base.mask_history`) are not ranked; a target that is one of them gets :data:`NOT_RANKED`.
    """
    values = tie_safe(scores)
    if values.ndim != 2:
        raise ValueError(f"scores must be (users, items), got shape {values.shape}")
    cols = np.asarray(targets, dtype=np.int64)
    if cols.shape != (values.shape[0],):
        raise ValueError(f"{cols.shape[0] if cols.ndim else 0} targets for {values.shape[0]} score rows")
    if exclude is not None:
        if exclude.shape != values.shape:
            raise ValueError(f"exclude mask has shape {exclude.shape}, scores {values.shape}")
        values = np.where(exclude, -np.inf, values)
    rows = np.arange(values.shape[0])
    target_scores = values[rows, cols]
    above = (values > target_scores[:, None]).sum(axis=1)
    tied_before = ((values == target_scores[:, None]) & (np.arange(values.shape[1])[None, :] < cols[:, None])).sum(
        axis=1
    )
    ranks: IndexArray = np.asarray(above + tied_before, dtype=np.int64)
    ranks[np.isneginf(target_scores)] = NOT_RANKED
    return ranks


def multi_target_ranks(
    scores: npt.NDArray[np.floating[Any]],
    targets: Sequence[npt.ArrayLike],
    exclude: npt.NDArray[np.bool_] | None = None,
) -> list[IndexArray]:
    """0-based ranks of each row's several target columns, under the same rule as :func:`target_ranks`.

    The ranked list is the whole row (other targets included) ordered by descending :func:`tie_safe` score, equal
    scores going to the lower column; a target column that is excluded, scored ``-inf`` or negative (a target not
    among the candidates) gets :data:`NOT_RANKED`. With one target per row this equals :func:`target_ranks`.
    """
    values = tie_safe(scores)
    if values.ndim != 2:
        raise ValueError(f"scores must be (users, items), got shape {values.shape}")
    if len(targets) != values.shape[0]:
        raise ValueError(f"{len(targets)} target sets for {values.shape[0]} score rows")
    if exclude is not None:
        if exclude.shape != values.shape:
            raise ValueError(f"exclude mask has shape {exclude.shape}, scores {values.shape}")
        values = np.where(exclude, -np.inf, values)
    order = np.argsort(-values, axis=1, kind="stable")
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.broadcast_to(np.arange(values.shape[1]), values.shape), axis=1)
    out: list[IndexArray] = []
    for row, wanted in enumerate(targets):
        cols = np.asarray(wanted, dtype=np.int64)
        ranks = np.full(cols.shape, NOT_RANKED, dtype=np.int64)
        listed = cols >= 0
        ranks[listed] = position[row, cols[listed]]
        ranks[listed & np.isneginf(values[row, np.where(listed, cols, 0)])] = NOT_RANKED
        out.append(ranks)
    return out
