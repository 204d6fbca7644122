"""Text cosine: how close each item's text embedding is to the user's recent items (or profile).

The only signal that works on a catalog with no interaction log, and the one that covers brand-new items. Item
vectors are unit rows (the :class:`~zsgen.embed.base.Encoder` contract), so dot products are cosines.

User-vector strategies over the last ``history_length`` items:

- ``mean``: the average of their vectors;
- ``recency``: a weighted average, the k-th newest weighted ``recency_decay**k``;
- ``last``: the newest item alone (LLMSeqSim's strong baseline);
- ``maxsim``: no single vector — an item scores its best cosine to any of the items (keeps distinct tastes apart).

A user with no history but a profile text is scored by the profile's vector under every strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError, EmptyHistoryError
from zsgen.score.base import ScoreMatrix, TrainData, UserQuery, not_fitted

if TYPE_CHECKING:  # the encoder package is only needed when vectors are not given
    from zsgen.embed.base import Encoder

Strategy = Literal["mean", "recency", "last", "maxsim"]
STRATEGIES: tuple[Strategy, ...] = ("mean", "recency", "last", "maxsim")


class TextCosineScorer:
    """Cosine between item text vectors and a user vector built by ``strategy``.

    Give ``item_vectors`` (rows in catalog order, unit length) to skip encoding, e.g. from an embedding cache or in
    tests; otherwise ``fit`` renders item text with :class:`~zsgen.itemtext.ItemTextTemplate` and encodes it with
    ``encoder`` (the packaged default encoder when ``None``).
    """

    needs_logs = False

    def __init__(
        self,
        strategy: Strategy = "mean",
        history_length: int = 5,
        encoder: Encoder | None = None,
        item_vectors: npt.ArrayLike | None = None,
        *,
        recency_decay: float = 0.7,
        name: str = "text",
    ) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"text strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        if history_length < 1:
            raise ConfigError(f"text history_length must be >= 1, got {history_length}")
        if not 0.0 < recency_decay <= 1.0:
            raise ConfigError(f"text recency_decay must be within (0, 1], got {recency_decay}")
        self.strategy: Strategy = strategy
        self.history_length = history_length
        self.encoder = encoder
        self.recency_decay = recency_decay
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

    def user_vectors(self, queries: Sequence[UserQuery]) -> npt.NDArray[np.float32]:
        """One vector per query for the single-vector strategies (``maxsim`` has none)."""
        if self.item_vectors is None:
            raise not_fitted(self.name)
        if self.strategy == "maxsim":
            raise ConfigError("the maxsim strategy compares items one by one and has no single user vector")
        vectors = self.item_vectors
        out = np.zeros((len(queries), vectors.shape[1]), dtype=np.float32)
        profiles: dict[int, str] = {}
        for row, query in enumerate(queries):
            recent = self._recent(query, row)
            if recent is None:
                profiles[row] = query.profile or ""
                continue
            if self.strategy == "last":
                out[row] = vectors[recent[-1]]
            else:
                weights = (
                    np.ones(recent.size)
                    if self.strategy == "mean"
                    else self.recency_decay ** np.arange(recent.size - 1, -1, -1, dtype=np.float64)
                )
                out[row] = (weights / weights.sum()) @ vectors[recent]
        if profiles:
            out[list(profiles)] = self._encoder().encode(list(profiles.values()))
        return out

    def _recent(self, query: UserQuery, row: int) -> npt.NDArray[np.int64] | None:
        """The last ``history_length`` items, or ``None`` when only a profile is available."""
        history = np.asarray(query.history, dtype=np.int64)
        assert self.item_vectors is not None
        if history.size:
            if int(history.min()) < 0 or int(history.max()) >= self.item_vectors.shape[0]:
                raise DataError(f"query {row}: history has item indices outside the catalog", field="history")
            return history[-self.history_length :]
        if query.profile and query.profile.strip():
            return None
        raise EmptyHistoryError(f"query {row} has neither history nor profile text")

    def score(self, queries: Sequence[UserQuery]) -> ScoreMatrix:
        if self.item_vectors is None:
            raise not_fitted(self.name)
        vectors = self.item_vectors
        if self.strategy != "maxsim":
            return np.asarray(self.user_vectors(queries) @ vectors.T, dtype=np.float64)
        out = np.empty((len(queries), vectors.shape[0]), dtype=np.float64)
        for row, query in enumerate(queries):
            recent = self._recent(query, row)
            if recent is None:
                profile = self._encoder().encode([query.profile or ""])
                out[row] = (profile @ vectors.T)[0]
            else:
                out[row] = (vectors[recent] @ vectors.T).max(axis=0)
        return out
