"""Text-neighbour transfer: an item inherits the user's collaborative scores of its nearest warm items by text.

Collaborative score: item-to-item co-occurrence over the warm log (:func:`~zsgen.score.cooccurrence.pair_counts`,
normalised by :func:`~zsgen.score.cooccurrence.normalise_pairs`), summed over the user's history — how much the
warm items go with what the user consumed. Transfer: every item, warm or cold, gets the similarity-weighted mean of
that score over its ``neighbours`` most text-similar warm items, never itself
(:func:`~zsgen.score.transfer.features.text_neighbours`). Because no item reads its own interactions, a warm item
and an item added a second ago are scored by exactly the same rule and on one scale; the item's own collaborative
evidence stays with the other fused signals (co-occurrence, filtering).

Scoring is two sparse products per batch: ``history (queries × items) @ co-occurrence (items × items)`` then
``@ neighboursᵀ``.
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

from zsgen.catalog import Catalog
from zsgen.configbase import StrictConfig
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, history_matrix, not_fitted, require_logs
from zsgen.score.cooccurrence import normalise_pairs, pair_counts
from zsgen.score.transfer.features import (
    appended,
    extend_given,
    new_item_neighbours,
    pad_columns,
    pad_square,
    resolve_vectors,
    text_neighbours,
    warm_items,
)

if TYPE_CHECKING:
    from zsgen.embed.base import Encoder

logger = logging.getLogger(__name__)


class NeighbourTransferConfig(StrictConfig):
    """Options of the ``neighbour_transfer`` signal."""

    kind: Literal["neighbour_transfer"] = "neighbour_transfer"
    neighbours: int = Field(default=20, ge=1, description="warm text neighbours each item inherits from")
    power: float = Field(default=1.0, gt=0, description="neighbour weight: cosine ** power")
    normalise: Literal["none", "cosine", "conditional", "asymmetric"] = "asymmetric"
    alpha: float = Field(default=0.5, ge=0, le=1, description="asymmetric normalisation's exponent")
    recent: int | None = Field(default=None, ge=1, description="history items used; all: None")
    decay: float = Field(default=1.0, gt=0, le=1, description="weight decay per step back in the history")


class NeighbourTransferScorer:
    """A :class:`~zsgen.score.base.Scorer` (module docstring)."""

    needs_logs = True

    def __init__(
        self,
        config: NeighbourTransferConfig | None = None,
        *,
        encoder: Encoder | None = None,
        item_vectors: npt.ArrayLike | None = None,
        name: str = "neighbour_transfer",
    ) -> None:
        self.config = config or NeighbourTransferConfig()
        self.encoder = encoder
        self.name = name
        self._given = item_vectors
        self.similarity: sp.csr_matrix | None = None
        self.neighbours: sp.csr_matrix | None = None
        self._warm: npt.NDArray[np.int64] | None = None
        self._warm_vectors: npt.NDArray[np.float32] | None = None  # new items are never warm: fixed

    def fit(self, catalog: Catalog, train: TrainData | None) -> NeighbourTransferScorer:
        train = require_logs(self.name, train, catalog)
        vectors = resolve_vectors(catalog, self._given, self.encoder, f"signal {self.name!r}")
        support = np.asarray(train.incidence().sum(axis=0), dtype=np.float64).ravel()
        warm = warm_items(support, self.name)
        counts = pair_counts(train, window=None)
        self.similarity = normalise_pairs(counts, support, self.config.normalise, self.config.alpha)
        self.neighbours = text_neighbours(vectors, warm, self.config.neighbours, self.config.power)
        self._warm, self._warm_vectors = warm, vectors[warm]
        logger.info("%s: %d warm items, %d neighbours each", self.name, warm.size, self.config.neighbours)
        return self

    def with_items(self, catalog: Catalog, new_vectors: npt.ArrayLike) -> NeighbourTransferScorer:
        """This fitted signal over ``catalog``, which appends items without interactions to the fitted one: each new
        item inherits from its warm text neighbours, found as :meth:`fit` finds them (the rows a refit would give),
        and the co-occurrence grows empty rows and columns; nothing refitted."""
        if self.similarity is None or self.neighbours is None or self._warm is None or self._warm_vectors is None:
            raise not_fitted(self.name)
        n_old = self.similarity.shape[0]
        new = appended(catalog, n_old, new_vectors, self.name)
        rows = new_item_neighbours(
            self._warm_vectors, self._warm, n_old, new_vectors, self.config.neighbours, self.config.power
        )
        out = copy.copy(self)
        out.similarity = pad_square(self.similarity, n_old + len(new))
        out.neighbours = sp.csr_matrix(sp.vstack([pad_columns(self.neighbours, n_old + len(new)), rows]))
        out._given = extend_given(self._given, new_vectors)
        return out

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self.similarity is None or self.neighbours is None:
            raise not_fitted(self.name)
        weights = history_matrix(queries, self.similarity.shape[0], recent=self.config.recent, decay=self.config.decay)
        collaborative = weights @ self.similarity
        return np.asarray((collaborative @ self.neighbours.T).toarray(), dtype=np.float64)
