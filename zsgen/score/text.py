"""Text cosine: how close each item's text embedding is to the user's recent items (or profile).

The only signal that works on a catalog with no interaction log, and the one that covers brand-new items. Item
vectors are unit rows (the :class:`~zsgen.embed.base.Encoder` contract), so dot products are cosines.

The queries are built by the same code as first-stage retrieval's (:mod:`zsgen.user_vectors`: user vectors
``mean`` / ``recency`` / ``last`` / ``maxsim`` over the last ``history_length`` items, the same blend with a
profile), so "text cosine" means one thing whether it retrieves candidates or is one signal in a fusion. This scorer
adds batch scoring of many users over precomputed item vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError, EmptyHistoryError
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, not_fitted
from zsgen.user_vectors import (
    DEFAULT_HALF_LIFE,
    DEFAULT_PROFILE_WEIGHT,
    UserVector,
    check_options,
    maxsim_queries,
    maxsim_scores,
    single_query,
)

if TYPE_CHECKING:  # the encoder package is only needed when vectors are not given
    from zsgen.embed.base import Encoder


class TextCosineScorer:
    """Cosine between item text vectors and a user vector built by ``user_vector`` (see the module docstring).

    Give ``item_vectors`` (rows in catalog order, unit length) to skip encoding, e.g. from an embedding cache or in
    tests; otherwise ``fit`` renders item text with :class:`~zsgen.itemtext.ItemTextTemplate` and encodes it with
    ``encoder`` (the packaged default encoder when ``None``).
    """

    needs_logs = False

    def __init__(
        self,
        user_vector: UserVector = "mean",
        history_length: int = 5,
        encoder: Encoder | None = None,
        item_vectors: npt.ArrayLike | None = None,
        *,
        half_life: float = DEFAULT_HALF_LIFE,
        profile_weight: float = DEFAULT_PROFILE_WEIGHT,
        name: str = "text",
    ) -> None:
        check_options(
            user_vector=user_vector,
            history_length=history_length,
            half_life=half_life,
            profile_weight=profile_weight,
            owner=f"text signal {name!r}",
        )
        self.user_vector: UserVector = user_vector
        self.history_length = history_length
        self.encoder = encoder
        self.half_life = half_life
        self.profile_weight = profile_weight
        self.name = name
        self._given = None if item_vectors is None else np.asarray(item_vectors, dtype=np.float32)
        self.item_vectors: npt.NDArray[np.float32] | None = None

    def fit(self, catalog: Catalog, train: TrainData | None) -> TextCosineScorer:
        """Text needs no logs; ``train`` is accepted and ignored so every scorer fits the same way."""
        if self._given is not None:
            vectors = self._given
            if vectors.ndim != 2 or vectors.shape[0] != len(catalog):
                raise DataError(
                    f"item_vectors has shape {vectors.shape}, expected ({len(catalog)}, dim) for this catalog",
                    field="item_vectors",
                )
        else:
            from zsgen.itemtext import ItemTextTemplate

            vectors = self._encoder().encode(ItemTextTemplate().render_all(catalog))
        self.item_vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return self

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            from zsgen.embed import default_encoder

            self.encoder = default_encoder()
        return self.encoder

    def _profiles(self, queries: Sequence[UserQuery]) -> dict[int, npt.NDArray[np.float32]]:
        """Profile vectors of the queries that have profile text, encoded in one batch."""
        rows = [row for row, q in enumerate(queries) if q.profile and q.profile.strip()]
        if not rows:
            return {}
        vectors = self._encoder().encode([queries[row].profile or "" for row in rows])
        return {row: vectors[i] for i, row in enumerate(rows)}

    def _recent(self, query: UserQuery, row: int, has_profile: bool) -> npt.NDArray[np.int64]:
        """The last ``history_length`` items (possibly none when a profile is given)."""
        history = np.asarray(query.history, dtype=np.int64)
        assert self.item_vectors is not None
        if history.size and (int(history.min()) < 0 or int(history.max()) >= self.item_vectors.shape[0]):
            raise DataError(f"query {row}: history has item indices outside the catalog", field="history")
        if not history.size and not has_profile:
            raise EmptyHistoryError(f"query {row} has neither history nor profile text")
        return history[-self.history_length :]

    def user_vectors(self, queries: Sequence[UserQuery]) -> npt.NDArray[np.float32]:
        """One unit vector per query for the single-vector user vectors (``maxsim`` has none)."""
        if self.item_vectors is None:
            raise not_fitted(self.name)
        if self.user_vector == "maxsim":
            raise ConfigError("the maxsim user_vector compares items one by one and has no single user vector")
        profiles = self._profiles(queries)
        out = np.zeros((len(queries), self.item_vectors.shape[1]), dtype=np.float32)
        for row, query in enumerate(queries):
            recent = self._recent(query, row, row in profiles)
            out[row] = single_query(
                self.item_vectors[recent],
                profiles.get(row),
                self.user_vector,
                half_life=self.half_life,
                profile_weight=self.profile_weight,
            )
        return out

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self.item_vectors is None:
            raise not_fitted(self.name)
        vectors = self.item_vectors
        if self.user_vector != "maxsim":
            return np.asarray(self.user_vectors(queries) @ vectors.T, dtype=np.float64)
        profiles = self._profiles(queries)
        out = np.empty((len(queries), vectors.shape[0]), dtype=np.float64)
        for row, query in enumerate(queries):
            recent = self._recent(query, row, row in profiles)
            rows = maxsim_queries(vectors[recent], profiles.get(row), profile_weight=self.profile_weight)
            out[row] = maxsim_scores(rows, vectors)
        return out
