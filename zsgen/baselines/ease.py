"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): a closed-form item-item linear model.

``B = I - P · diag(1 / diag(P))`` with ``P = (XᵀX + λI)⁻¹`` and ``X`` the users × items incidence; a user's scores
are ``x_u B``. The zero diagonal keeps an item from predicting itself; ``λ`` is the only hyper-parameter, chosen here
from a grid on each training user's last training event (:mod:`zsgen.baselines.holdout`) and then refitted on all
the training data. One dense ``n_items × n_items`` inverse per grid value: seconds for catalogs of a few thousand
items, which is what the evaluation datasets are; it is a yardstick, not meant for a 100k-item catalog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from zsgen.baselines.config import EASEConfig
from zsgen.baselines.holdout import last_event_holdout, validation_ndcg
from zsgen.baselines.unseen import floor_unseen, trained_items
from zsgen.catalog import Catalog
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, history_matrix, not_fitted, require_logs

logger = logging.getLogger(__name__)

FloatMatrix = npt.NDArray[np.float64]


def gram(train: TrainData) -> FloatMatrix:
    """``XᵀX`` of the binary incidence, dense."""
    x = train.incidence()
    return np.asarray((x.T @ x).toarray(), dtype=np.float64)


def ease_weights(gram_matrix: FloatMatrix, l2: float) -> FloatMatrix:
    """The closed-form EASE item-item matrix for one L2 weight."""
    p = np.linalg.inv(gram_matrix + l2 * np.eye(gram_matrix.shape[0]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


class EASEScorer:
    """EASE over the binary history (every visible item weighs 1, as in training); see the module docstring."""

    needs_logs = True

    def __init__(self, config: EASEConfig | None = None, *, name: str = "ease") -> None:
        self.config = config or EASEConfig()
        self.name = name
        self._weights: FloatMatrix | None = None
        self._seen: npt.NDArray[np.bool_] | None = None
        #: What fitting did: the chosen L2 weight, the validation NDCG of each grid value, seconds spent.
        self.training: dict[str, Any] = {}

    def fit(self, catalog: Catalog, train: TrainData | None) -> EASEScorer:
        train = require_logs(self.name, train, catalog)
        start = time.perf_counter()
        grid = self.config.l2
        scores_by_l2: dict[float, float] = {}
        if len(grid) > 1:
            holdout = last_event_holdout(train)
            g = gram(holdout.train)
            seen = trained_items(holdout.train)
            history = history_matrix(holdout.queries, train.n_items)
            for l2 in grid:
                scores = floor_unseen(np.asarray(history @ ease_weights(g, l2)), seen)
                scores_by_l2[l2] = validation_ndcg(scores, holdout, self.config.validation_k)
                logger.info(
                    "%s: l2 %g -> validation ndcg@%d %.4f", self.name, l2, self.config.validation_k, scores_by_l2[l2]
                )
            best = max(grid, key=lambda value: (scores_by_l2[value], -value))  # ties: the smaller weight
        else:
            best = grid[0]
        self._weights = ease_weights(gram(train), best)
        self._seen = trained_items(train)
        seconds = time.perf_counter() - start
        self.training = {
            "l2": best,
            "validation": {f"{value:g}": round(metric, 6) for value, metric in scores_by_l2.items()},
            "validation_metric": f"ndcg@{self.config.validation_k}",
            "seconds": round(seconds, 2),
        }
        logger.info("%s: fitted with l2 %g in %.1fs", self.name, best, seconds)
        return self

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self._weights is None or self._seen is None:
            raise not_fitted(self.name)
        history = history_matrix(queries, self._weights.shape[0])
        return floor_unseen(np.asarray(history @ self._weights, dtype=np.float64), self._seen)
