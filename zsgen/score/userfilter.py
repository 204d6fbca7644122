"""NIR user filtering: score items by how many of the most similar users consumed them.

Exactly as NIR describes it (DESIGN.md §2): users are multi-hot item vectors, similarity is the dot product (number
of shared items), the ``neighbours`` most similar users *including the user* are kept, their similarities are
normalised to sum to one, and an item's score is the summed weight of the neighbours who consumed it.

The query's own vector is its visible history, so the same code serves known and new users; a known user's training
row is left out of the neighbour search (it is the user), and ``include_self`` adds the user back as one neighbour
with self-similarity ``|history|`` — NIR's definition, and the only way the user's own row could enter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, history_matrix, not_fitted, require_logs, top_k


class UserFilteringScorer:
    """User-kNN with NIR's choices. Ties among equally similar users go to the user (self) first, then lower rows."""

    needs_logs = True

    def __init__(self, neighbours: int = 12, include_self: bool = True, *, name: str = "user_filtering") -> None:
        if neighbours < 1:
            raise ConfigError(f"user filtering neighbours must be >= 1, got {neighbours}")
        self.neighbours = neighbours
        self.include_self = include_self
        self.name = name
        self._users: sp.csr_matrix | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> UserFilteringScorer:
        self._users = require_logs(self.name, train, catalog).incidence()
        return self

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self._users is None:
            raise not_fitted(self.name)
        users = self._users
        n_users, n_items = users.shape
        query_vectors = history_matrix(queries, n_items, decay=1.0)  # multi-hot: repeats keep weight 1
        similarity = np.asarray((query_vectors @ users.T).toarray(), dtype=np.float64)
        own = np.array([-1 if q.user is None else q.user for q in queries], dtype=np.int64)
        if (own >= n_users).any():
            raise ConfigError(f"a query names user row {int(own.max())}, but training data has {n_users} users")
        known = np.flatnonzero(own >= 0)
        similarity[known, own[known]] = -np.inf
        # Column 0 is the user themself, so on a tie the stable top-k picks the user before any other neighbour.
        self_similarity = np.asarray(query_vectors.getnnz(axis=1), dtype=np.float64)
        if not self.include_self:
            self_similarity[:] = -np.inf
        extended = np.concatenate([self_similarity[:, None], similarity], axis=1)
        chosen = top_k(extended, self.neighbours)
        weights = np.take_along_axis(extended, chosen, axis=1)
        weights = np.where(np.isfinite(weights) & (weights > 0), weights, 0.0)
        totals = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
        rows = np.repeat(np.arange(len(queries)), chosen.shape[1])
        mixing = sp.csr_matrix(
            (weights.ravel(), (rows, chosen.ravel())), shape=(len(queries), n_users + 1)
        )  # column 0 = self, column r+1 = training row r
        scores = (mixing[:, 1:] @ users).toarray() + mixing[:, :1].toarray() * query_vectors.toarray()
        return np.asarray(scores, dtype=np.float64)
