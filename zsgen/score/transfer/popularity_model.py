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

import copy
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
    appended,
    extend_given,
    fit_ridge,
    new_item_neighbours,
    resolve_vectors,
    text_neighbours,
    warm_items,
)
from zsgen.score.transfer.space import FeatureSpace, fit_feature_space

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
        self.space: FeatureSpace | None = None
        self._warm: npt.NDArray[np.int64] | None = None
        self._warm_vectors: npt.NDArray[np.float32] | None = None  # new items are never warm: fixed
        self._neighbour_scale: tuple[float, float] = (0.0, 1.0)  # the neighbour feature's mean and spread

    def fit(self, catalog: Catalog, train: TrainData | None) -> PredictedPopularityScorer:
        train = require_logs(self.name, train, catalog)
        vectors = resolve_vectors(catalog, self._given, self.encoder, f"signal {self.name!r}")
        counts = np.log1p(np.asarray(train.incidence().sum(axis=0), dtype=np.float64).ravel())
        warm = warm_items(counts, self.name)
        self.space = fit_feature_space(catalog, vectors, attributes=self.config.attributes)
        features = self.space.transform(list(catalog), vectors)
        if self.config.neighbours > 0:
            neighbour_mean = text_neighbours(vectors, warm, self.config.neighbours) @ counts
            self._neighbour_scale = (float(neighbour_mean.mean()), float(neighbour_mean.std()) or 1.0)
            features = np.hstack([features, self._neighbour_feature(neighbour_mean)])
        self._warm, self._warm_vectors = warm, vectors[warm]
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

    def _neighbour_feature(self, neighbour_mean: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        mean, spread = self._neighbour_scale
        return ((neighbour_mean - mean) / spread)[:, None]

    def with_items(self, catalog: Catalog, new_vectors: npt.ArrayLike) -> PredictedPopularityScorer:
        """This fitted signal over ``catalog``, which appends items without interactions to the fitted one: each new
        item scores its predicted log count (features in the fitted space, its warm text neighbours' mean count
        scaled as at fit time), nothing refitted."""
        if self._scores is None or self.ridge is None or self.space is None or self.observed is None:
            raise not_fitted(self.name)
        assert self.predicted is not None and self._warm is not None and self._warm_vectors is not None
        new = appended(catalog, self._scores.size, new_vectors, self.name)
        features = self.space.transform(new, new_vectors)
        if self.config.neighbours > 0:
            neighbours = new_item_neighbours(
                self._warm_vectors, self._warm, self._scores.size, new_vectors, self.config.neighbours
            )
            neighbour_mean = neighbours @ np.concatenate([self.observed, np.zeros(len(new))])
            features = np.hstack([features, self._neighbour_feature(neighbour_mean)])
        predicted = self.ridge.predict(features).ravel()
        out = copy.copy(self)
        out.predicted = np.concatenate([self.predicted, predicted])
        out.observed = np.concatenate([self.observed, np.zeros(len(new))])
        out._scores = np.concatenate([self._scores, predicted])  # no count: predicted, whatever ``warm`` says
        out._given = extend_given(self._given, new_vectors)
        return out

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self._scores is None:
            raise not_fitted(self.name)
        return np.broadcast_to(self._scores, (len(queries), self._scores.size)).copy()
