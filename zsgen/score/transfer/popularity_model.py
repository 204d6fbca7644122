"""Predicted popularity: how many users an item would have, learnt from the warm items' text, attributes and counts.

The same score for every user, like :class:`~zsgen.score.popularity.PopularityScorer`, but defined for items the
log has never seen. On MovieLens an item's year, genres and what its title reads like predict a good share of its
popularity, and with many cold items to order that prior alone beats every text-similarity ranking (DESIGN.md §2,
lesson 11). The regression (:func:`~zsgen.score.transfer.features.fit_ridge`) maps the item features — text
embedding, attribute columns, and the mean log count of the item's nearest warm items by text — to ``log1p`` of
the item's distinct training users, fitted on warm items only.

``warm = "observed"`` (the default) keeps the observed ``log1p`` count for items that have one and predicts only
for the others; both are on the same scale (predicted log counts), so warm and cold items compete in one list.
``warm = "predicted"`` scores every item by the prediction (e.g. to study the model).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from zsgen.catalog import Catalog
from zsgen.configbase import StrictConfig
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, not_fitted, require_logs
from zsgen.score.transfer.features import (
    RidgeMap,
    fit_ridge,
    item_features,
    resolve_vectors,
    text_neighbours,
    warm_items,
)

if TYPE_CHECKING:
    from zsgen.embed.base import Encoder

logger = logging.getLogger(__name__)


class PredictedPopularityConfig(StrictConfig):
    """Options of the ``predicted_popularity`` signal."""

    kind: Literal["predicted_popularity"] = "predicted_popularity"
    attributes: bool = Field(default=True, description="use catalog attributes (genres, year, ...) besides text")
    neighbours: int = Field(default=20, ge=0, description="text neighbours whose mean log count is a feature; 0: off")
    warm: Literal["observed", "predicted"] = Field(default="observed", description="what items with a count get")


class PredictedPopularityScorer:
    """A :class:`~zsgen.score.base.Scorer`: ``log1p`` distinct users, predicted where the log has none."""

    needs_logs = True

    def __init__(
        self,
        config: PredictedPopularityConfig | None = None,
        *,
        encoder: Encoder | None = None,
        item_vectors: npt.ArrayLike | None = None,
        name: str = "predicted_popularity",
    ) -> None:
        self.config = config or PredictedPopularityConfig()
        self.encoder = encoder
        self.name = name
        self._given = item_vectors
        self.ridge: RidgeMap | None = None
        self._scores: npt.NDArray[np.float64] | None = None
        self.observed: npt.NDArray[np.float64] | None = None
        self.predicted: npt.NDArray[np.float64] | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> PredictedPopularityScorer:
        train = require_logs(self.name, train, catalog)
        vectors = resolve_vectors(catalog, self._given, self.encoder, f"signal {self.name!r}")
        counts = np.log1p(np.asarray(train.incidence().sum(axis=0), dtype=np.float64).ravel())
        warm = warm_items(counts, self.name)
        features = item_features(catalog, vectors, attributes=self.config.attributes)
        if self.config.neighbours > 0:
            neighbour_mean = text_neighbours(vectors, warm, self.config.neighbours) @ counts
            spread = float(neighbour_mean.std()) or 1.0
            features = np.hstack([features, ((neighbour_mean - neighbour_mean.mean()) / spread)[:, None]])
        ridge = fit_ridge(features[warm], counts[warm])
        self.ridge = ridge  # kept: a new item's log count is ridge.predict(its features), no refit
        self.predicted = ridge.predict(features).ravel()
        self.observed = counts
        if self.config.warm == "observed":
            self._scores = np.where(counts > 0, counts, self.predicted)
        else:
            self._scores = self.predicted.copy()
        logger.info(
            "%s: fitted on %d warm items (alpha %.3g, LOO RMSE %.3f of log count)",
            self.name,
            warm.size,
            ridge.alpha,
            float(np.sqrt(ridge.loo_error)),
        )
        return self

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self._scores is None:
            raise not_fitted(self.name)
        return np.broadcast_to(self._scores, (len(queries), self._scores.size)).copy()
