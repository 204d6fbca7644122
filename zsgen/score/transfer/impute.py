"""One scale for items with and without interactions in a fused first stage: impute the log signals' columns.

A log-based signal (popularity, co-occurrence, user filtering ...) gives an item without interactions nothing — a
new item, a catalog item nobody touched yet — so under a fusion it sinks below every warm item whatever it reads
like. :class:`ColdImputer` gives such an item, for every log-based signal and every user, the similarity-weighted
mean of that signal's scores over its most text-similar warm items (the graph of
:func:`~zsgen.score.transfer.features.text_neighbours`): the user's co-occurrence score of "Star Wars: The Special
Edition" is that of the Star Wars films it reads like, on the very scale the warm items are scored on, so the fusion's
weights apply unchanged. An item that reads like nothing popular inherits low scores and stays low. Only the new
item's text vector is needed: nothing is refitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from zsgen.catalog import Catalog
from zsgen.score.base import ScoreMatrix, TrainData
from zsgen.score.transfer.features import new_item_neighbours, resolve_vectors, text_neighbours

if TYPE_CHECKING:
    from zsgen.score.base import Scorer
    from zsgen.score.config import FusionConfig

#: How many warm text neighbours an item without interactions inherits from: few, so that a re-release inherits
#: from the films it reads like rather than from a whole genre (measured on ML-100K, README "Runtime items").
NEIGHBOURS = 3

#: Fusion signal kinds whose cold columns are imputed: the log-based ones that know nothing of a cold item (the
#: transfer signals score cold items themselves; text and LLM signals read every item).
IMPUTED_KINDS: frozenset[str] = frozenset(
    {"popularity", "cooccurrence", "user_filtering", "item_filtering", "group_popularity"}
)


class ColdImputer:
    """Imputes the columns of items without interactions from their warm text neighbours (module docstring)."""

    def __init__(self, cold: npt.NDArray[np.int64], weights: sp.csr_matrix) -> None:
        self.cold = cold
        self.weights = weights  # cold items × all items, rows summing to one over warm items

    @classmethod
    def fit(
        cls, vectors: npt.ArrayLike, train: TrainData, *, neighbours: int = NEIGHBOURS, power: float = 1.0
    ) -> ColdImputer | None:
        """``None`` when every item has an interaction (nothing to impute) or fewer than two have one."""
        counts = np.asarray(train.incidence().sum(axis=0), dtype=np.float64).ravel()
        warm = np.flatnonzero(counts > 0).astype(np.int64)
        cold = np.flatnonzero(counts == 0).astype(np.int64)
        if cold.size == 0 or warm.size < 2:
            return None
        matrix = np.asarray(vectors, dtype=np.float32)
        graph = text_neighbours(matrix, warm, neighbours, power)
        return cls(cold, sp.csr_matrix(graph[cold]))

    @classmethod
    def for_new_items(
        cls,
        previous: ColdImputer | None,
        train: TrainData,
        vectors: npt.ArrayLike,
        new_vectors: npt.ArrayLike,
        *,
        neighbours: int = NEIGHBOURS,
        power: float = 1.0,
    ) -> ColdImputer | None:
        """The imputer after appending items without interactions, without refitting anything: ``previous`` (the
        imputer :meth:`fit` gave for ``train``'s catalog, or ``None``) plus one row per new item, each row its
        nearest warm items by text. ``vectors`` are the item vectors the log was fitted with (``train.n_items``
        rows), ``new_vectors`` the appended items'. The rows equal those :meth:`fit` gives over the extended
        catalog, since a row depends only on its item's vector and the warm items' (the new items are not warm)."""
        old = np.asarray(vectors, dtype=np.float32)
        new = np.asarray(new_vectors, dtype=np.float32)
        counts = np.asarray(train.incidence().sum(axis=0), dtype=np.float64).ravel()
        warm = np.flatnonzero(counts > 0).astype(np.int64)
        if warm.size < 2 or new.shape[0] == 0:
            return previous
        n_old, n_new = old.shape[0], old.shape[0] + new.shape[0]
        added = new_item_neighbours(old[warm], warm, n_old, new, neighbours, power)
        if previous is None:
            return cls(np.arange(n_old, n_new, dtype=np.int64), added)
        kept = previous.weights.tocoo()
        padded = sp.csr_matrix((kept.data, (kept.row, kept.col)), shape=(kept.shape[0], n_new))
        return cls(
            np.concatenate([previous.cold, np.arange(n_old, n_new, dtype=np.int64)]),
            sp.csr_matrix(sp.vstack([padded, added])),
        )

    def apply(self, scores: ScoreMatrix) -> ScoreMatrix:
        """``scores`` with the cold items' columns replaced by their neighbours' weighted mean."""
        out = np.array(scores, dtype=np.float64, copy=True)
        out[:, self.cold] = np.asarray(self.weights @ scores.T).T
        return out

    def apply_all(self, signals: Mapping[str, ScoreMatrix], kinds: Mapping[str, str]) -> dict[str, ScoreMatrix]:
        """Every signal whose kind is in :data:`IMPUTED_KINDS` imputed, the others as they are."""
        return {name: self.apply(m) if kinds[name] in IMPUTED_KINDS else m for name, m in signals.items()}


def cold_imputer(
    catalog: Catalog,
    train: TrainData | None,
    scorers: Mapping[str, Scorer],
    config: FusionConfig,
    resources: Mapping[str, Any],
) -> ColdImputer | None:
    """The imputer of a fitted fusion (:class:`~zsgen.score.fusion.FusedScorer`): ``None`` without a log, without
    an imputed signal, or when every item has an interaction. Item vectors: the fusion's shared ones, else a fitted
    text signal's, else the catalog encoded once."""
    if train is None or not any(config.signals[name].kind in IMPUTED_KINDS for name in scorers):
        return None
    if np.asarray(train.incidence().sum(axis=0)).ravel().all():
        return None
    vectors = resources.get("item_vectors")
    if vectors is None:
        vectors = next(
            (
                getattr(s, "item_vectors", None)
                for s in scorers.values()
                if getattr(s, "item_vectors", None) is not None
            ),
            None,
        )
    matrix = resolve_vectors(catalog, vectors, resources.get("encoder"), "fused scorer (items without interactions)")
    return ColdImputer.fit(matrix, train)
