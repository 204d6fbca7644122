"""Text-to-factor mapping (Gantner et al., ICDM 2010): latent item factors of the warm log, predicted from text.

Fit: the truncated SVD of the warm training incidence matrix (users × items; ``scipy.sparse.linalg.svds``, the
PureSVD model of Cremonesi et al. 2010) gives every warm item a factor row; a ridge map
(:func:`~zsgen.score.transfer.features.fit_ridge`) from item features (text embedding and attributes) to those rows
is learnt on the warm items only. Score: the user's factor is folded in from their history (the sum of their
items' factor rows, PureSVD's projection ``x V``, so a user needs no row in the fitted model), and an item scores
``user factor · item factor`` — its learnt factor when it has interactions (``warm = "observed"``), its mapped
factor otherwise. Both live in one factor space, so warm and cold items are ranked on one scale; a mapped factor is
shrunk towards the mean (it is a ridge prediction), which keeps an item that reads like nothing popular low.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from pydantic import Field
from scipy.sparse.linalg import svds

from zsgen.catalog import Catalog
from zsgen.configbase import StrictConfig
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, history_matrix, not_fitted, require_logs
from zsgen.score.transfer.features import RidgeMap, appended, extend_given, fit_ridge, resolve_vectors, warm_items
from zsgen.score.transfer.space import FeatureSpace, fit_feature_space

if TYPE_CHECKING:
    from zsgen.embed.base import Encoder

logger = logging.getLogger(__name__)


class TextFactorConfig(StrictConfig):
    """Options of the ``text_factors`` signal."""

    kind: Literal["text_factors"] = "text_factors"
    factors: int = Field(default=64, ge=1, description="rank of the truncated SVD")
    attributes: bool = Field(default=True, description="use catalog attributes (genres, year, ...) besides text")
    recent: int | None = Field(default=None, ge=1, description="history items folded into the user factor; all: None")
    decay: float = Field(default=1.0, gt=0, le=1, description="weight decay per step back in the history")
    warm: Literal["observed", "predicted"] = Field(default="observed", description="factor of items with events")


class TextFactorScorer:
    """A :class:`~zsgen.score.base.Scorer` (module docstring)."""

    needs_logs = True

    def __init__(
        self,
        config: TextFactorConfig | None = None,
        *,
        encoder: Encoder | None = None,
        item_vectors: npt.ArrayLike | None = None,
        name: str = "text_factors",
    ) -> None:
        self.config = config or TextFactorConfig()
        self.encoder = encoder
        self.name = name
        self._given = item_vectors
        self.ridge: RidgeMap | None = None
        self.item_factors: npt.NDArray[np.float64] | None = None
        self.space: FeatureSpace | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> TextFactorScorer:
        train = require_logs(self.name, train, catalog)
        vectors = resolve_vectors(catalog, self._given, self.encoder, f"signal {self.name!r}")
        incidence = train.incidence()
        counts = np.asarray(incidence.sum(axis=0), dtype=np.float64).ravel()
        warm = warm_items(counts, self.name)
        rank = min(self.config.factors, min(incidence.shape) - 1, warm.size - 1)
        matrix = sp.csr_matrix(incidence[:, warm], dtype=np.float64)
        start = np.full(min(matrix.shape), 1.0 / np.sqrt(min(matrix.shape)))  # deterministic ARPACK start
        _, _, vt = svds(matrix, k=rank, v0=start)
        learnt = np.asarray(vt.T, dtype=np.float64)  # warm items × rank, orthonormal columns
        self.space = fit_feature_space(catalog, vectors, attributes=self.config.attributes)
        features = self.space.transform(list(catalog), vectors)
        ridge = fit_ridge(features[warm], learnt)
        self.ridge = ridge  # kept: a new item's factor is ridge.predict(its features), no refit
        factors = ridge.predict(features)
        if self.config.warm == "observed":
            factors[warm] = learnt
        self.item_factors = factors
        logger.info(
            "%s: rank %d factors of %d warm items mapped from %d features (alpha %.3g)",
            self.name,
            rank,
            warm.size,
            features.shape[1],
            ridge.alpha,
        )
        return self

    def with_items(self, catalog: Catalog, new_vectors: npt.ArrayLike) -> TextFactorScorer:
        """This fitted signal over ``catalog``, which appends items without interactions to the fitted one: each new
        item's factor is the learnt map applied to its features in the fitted feature space, nothing refitted."""
        if self.item_factors is None or self.ridge is None or self.space is None:
            raise not_fitted(self.name)
        new = appended(catalog, self.item_factors.shape[0], new_vectors, self.name)
        out = copy.copy(self)
        out.item_factors = np.vstack([self.item_factors, self.ridge.predict(self.space.transform(new, new_vectors))])
        out._given = extend_given(self._given, new_vectors)
        return out

    def user_factors(self, queries: Sequence[UserQuery]) -> npt.NDArray[np.float64]:
        """Each query's factor: its recency-weighted history summed over item factor rows (PureSVD's ``x V``)."""
        if self.item_factors is None:
            raise not_fitted(self.name)
        weights = history_matrix(
            queries, self.item_factors.shape[0], recent=self.config.recent, decay=self.config.decay
        )
        return np.asarray(weights @ self.item_factors, dtype=np.float64)

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self.item_factors is None:
            raise not_fitted(self.name)
        return np.asarray(self.user_factors(queries) @ self.item_factors.T, dtype=np.float64)
