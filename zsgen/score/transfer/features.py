"""What the cold-item signals learn from: item features (text vector + catalog attributes) and a ridge map.

Every transfer signal (:mod:`zsgen.score.transfer`) answers the same question — what does the warm log say about an
item it has never seen? — by learning, on the *warm* items only (those with at least one training interaction), a
map from what every item has (its text embedding and attributes) to what only warm items have (an interaction count,
latent factors, collaborative scores). Items without interactions, whether held out by a protocol, loaded without
events or added at run time, are then scored through that map.

The map is a ridge regression whose penalty is chosen by exact leave-one-out error over the warm items (closed form
through one SVD of the feature matrix, as ``sklearn.linear_model.RidgeCV`` does), so no penalty is tuned by hand per
dataset. It is small linear algebra on numpy: the online pipeline fits it, so it must not pull in heavy packages.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.score.transfer.space import fit_attribute_space, fit_feature_space
from zsgen.types import Item

if TYPE_CHECKING:
    from zsgen.embed.base import Encoder

logger = logging.getLogger(__name__)

FloatMatrix = npt.NDArray[np.float64]

#: Penalties the leave-one-out search tries, relative to the largest squared singular value of the features.
RELATIVE_ALPHAS: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)


def check_item_vectors(vectors: npt.ArrayLike, catalog: Catalog, owner: str) -> npt.NDArray[np.float32]:
    """The catalog's text vectors as a float32 matrix; a clear error when they do not fit the catalog or some item
    has no text at all (a zero vector: nothing to transfer from)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(catalog):
        raise DataError(
            f"{owner}: item_vectors has shape {matrix.shape}, expected ({len(catalog)}, dim) for this catalog",
            field="item_vectors",
        )
    empty = np.flatnonzero(~np.isfinite(matrix).all(axis=1) | (np.abs(matrix).sum(axis=1) == 0))
    if empty.size:
        ids = [catalog[int(i)].id for i in empty[:3]]
        raise DataError(
            f"{owner}: {empty.size} item(s) have no usable text vector (e.g. {ids}); cold-item signals score an "
            "item from its text, so every item needs a title or description",
            field="item_vectors",
        )
    return matrix


def check_has_text(catalog: Catalog, owner: str) -> None:
    """Refuse a catalog whose items have no text before anything is encoded (the error names the first items)."""
    blank = [item.id for item in catalog if not (item.title.strip() or item.description.strip())]
    if blank:
        raise DataError(
            f"{owner}: {len(blank)} item(s) have neither title nor description (e.g. {blank[:3]}); cold-item "
            "signals score items from their text",
            field="title",
        )


def attribute_features(catalog: Catalog, *, min_items: int = 2) -> tuple[FloatMatrix, list[str]]:
    """A numeric view of every item's catalog attributes (:func:`~zsgen.score.transfer.space.fit_attribute_space`:
    genre and categorical values one-hot, year and numeric attributes centred with a "missing" flag, each column at
    unit variance so no attribute outweighs another by its units). Returns the matrix and the column names (empty
    when the catalog has no attributes)."""
    space = fit_attribute_space(catalog, min_items=min_items)
    return space.transform(list(catalog)), space.names


def item_features(catalog: Catalog, item_vectors: npt.ArrayLike, *, attributes: bool = True) -> FloatMatrix:
    """Text vector and (optionally) attribute columns side by side, each block scaled to unit mean row norm, so the
    ridge penalty treats the two sources evenly. A signal that must place new items in the same columns later keeps
    the :class:`~zsgen.score.transfer.space.FeatureSpace` instead."""
    return fit_feature_space(catalog, item_vectors, attributes=attributes).transform(list(catalog), item_vectors)


def new_item_neighbours(
    warm_vectors: npt.ArrayLike,
    warm: npt.NDArray[np.int64],
    n_fitted: int,
    new_vectors: npt.ArrayLike,
    k: int,
    power: float = 1.0,
) -> sp.csr_matrix:
    """The rows :func:`text_neighbours` gives items appended to a fitted catalog of ``n_fitted`` items (new items ×
    all items, the new ones included as columns): each new item's ``k`` most text-similar warm items (``warm``, with
    their vectors ``warm_vectors``). A row depends only on its own vector and the warm items', so these rows are the
    ones a refit over the extended catalog would compute."""
    new = np.asarray(new_vectors, dtype=np.float32)
    k = min(k, max(warm.size - 1, 1))  # as text_neighbours bounds it
    top, weights = _top_neighbours(np.asarray(new @ np.asarray(warm_vectors).T, dtype=np.float64), k, power)
    rows = np.repeat(np.arange(new.shape[0], dtype=np.int64), k)
    shape = (new.shape[0], n_fitted + new.shape[0])
    return sp.csr_matrix((weights.ravel(), (rows, warm[top].ravel())), shape=shape)


def _top_neighbours(
    sims: npt.NDArray[np.float64], k: int, power: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each row's ``k`` largest similarities (column positions) and their weights ``max(cos, 0)**power`` summing
    to one (all zero when no similarity is positive)."""
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    weights = np.maximum(np.take_along_axis(sims, top, axis=1), 0.0) ** power
    totals = weights.sum(axis=1, keepdims=True)
    return top, np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)


def appended(catalog: Catalog, n_fitted: int, new_vectors: npt.ArrayLike, owner: str) -> list[Item]:
    """The items ``catalog`` appends to the ``n_fitted`` a signal was fitted on, checked against their vectors (one
    row each, with usable text), for a signal's ``with_items``."""
    new = [catalog[i] for i in range(n_fitted, len(catalog))]
    check_item_vectors(new_vectors, Catalog(new), f"signal {owner!r}")
    return new


def extend_given(given: npt.ArrayLike | None, new_vectors: npt.ArrayLike) -> npt.NDArray[np.float32] | None:
    """A signal's given item vectors with the new items' appended (so that a later refit sees the whole catalog)."""
    if given is None:
        return None
    return np.vstack([np.asarray(given, dtype=np.float32), np.asarray(new_vectors, dtype=np.float32)])


def pad_square(matrix: sp.spmatrix, n: int) -> sp.csr_matrix:
    """An items × items matrix grown to ``n`` items, the new rows and columns empty (items with no interactions).
    The stored entries are shared, not copied: adding one item to a large co-occurrence matrix costs microseconds."""
    return pad_rows(pad_columns(matrix, n), n)


def pad_columns(matrix: sp.spmatrix, n: int) -> sp.csr_matrix:
    """``matrix`` with empty columns appended up to ``n`` (entries shared)."""
    m = sp.csr_matrix(matrix)
    return sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], n))


def pad_rows(matrix: sp.spmatrix, n: int) -> sp.csr_matrix:
    """``matrix`` with empty rows appended up to ``n`` (entries shared)."""
    m = sp.csr_matrix(matrix)
    indptr = np.concatenate([m.indptr, np.full(n - m.shape[0], m.indptr[-1], dtype=m.indptr.dtype)])
    return sp.csr_matrix((m.data, m.indices, indptr), shape=(n, m.shape[1]))


@dataclass(frozen=True)
class RidgeMap:
    """``features → targets``: ``predict(X) = (X - x_mean) @ coef + y_mean``, fitted on the warm rows only."""

    coef: FloatMatrix
    x_mean: FloatMatrix
    y_mean: FloatMatrix
    alpha: float
    loo_error: float

    def predict(self, features: npt.ArrayLike) -> FloatMatrix:
        return np.asarray((np.asarray(features, dtype=np.float64) - self.x_mean) @ self.coef + self.y_mean)


def fit_ridge(features: npt.ArrayLike, targets: npt.ArrayLike, alphas: Sequence[float] | None = None) -> RidgeMap:
    """Ridge regression with an intercept; the penalty minimising the exact leave-one-out squared error (summed over
    target columns) among ``alphas`` (default: :data:`RELATIVE_ALPHAS` times the largest squared singular value)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.shape[0] != y.shape[0]:
        raise DataError(f"ridge: {x.shape[0]} feature rows for {y.shape[0]} targets")
    if x.shape[0] < 3:
        raise ConfigError(f"ridge: need at least 3 warm items to learn from, got {x.shape[0]}")
    x_mean = x.mean(axis=0, keepdims=True)
    y_mean = y.mean(axis=0, keepdims=True)
    xc, yc = x - x_mean, y - y_mean
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    scale = float(s[0] ** 2) if s.size else 1.0
    grid = [a * scale for a in (alphas if alphas is not None else RELATIVE_ALPHAS)]
    best: tuple[float, float] = (math.inf, grid[0])
    n = x.shape[0]
    for alpha in grid:
        shrink = s**2 / (s**2 + alpha)
        fitted = u @ (shrink[:, None] * uty)
        hat = (u**2) @ shrink + 1.0 / n  # leverage, the intercept included
        residual = (yc - fitted) / np.maximum(1.0 - hat, 1e-9)[:, None]
        error = float((residual**2).sum() / n)
        if error < best[0]:
            best = (error, alpha)
    error, alpha = best
    coef = vt.T @ ((s / (s**2 + alpha))[:, None] * uty)
    logger.debug("ridge: %d rows, %d features, alpha %.3g, LOO error %.4g", n, x.shape[1], alpha, error)
    return RidgeMap(coef=coef, x_mean=x_mean, y_mean=y_mean, alpha=alpha, loo_error=error)


def resolve_vectors(
    catalog: Catalog, item_vectors: npt.ArrayLike | None, encoder: Encoder | None, owner: str
) -> npt.NDArray[np.float32]:
    """The catalog's unit text vectors: the given ones, else the item texts encoded (default encoder if none)."""
    if item_vectors is None:
        check_has_text(catalog, owner)
        from zsgen.itemtext import ItemTextTemplate

        if encoder is None:
            from zsgen.embed import default_encoder

            encoder = default_encoder()
        item_vectors = encoder.encode(ItemTextTemplate().render_all(catalog))
    return check_item_vectors(item_vectors, catalog, owner)


def warm_items(counts: npt.NDArray[np.float64], owner: str, minimum: int = 3) -> npt.NDArray[np.int64]:
    """Items with at least one training interaction: the only rows any transfer map is fitted on."""
    warm = np.flatnonzero(counts > 0).astype(np.int64)
    if warm.size < minimum:
        raise ConfigError(f"signal {owner!r}: only {warm.size} items have interactions; nothing to transfer from")
    return warm


def text_neighbours(
    vectors: npt.NDArray[np.float32], warm: npt.NDArray[np.int64], k: int, power: float = 1.0
) -> sp.csr_matrix:
    """Items × items: each item's ``k`` most text-similar *warm* items (never itself), weights ``max(cos, 0)**power``
    normalised to sum to one per row. Excluding the item itself puts warm and cold items on one footing: a warm
    item is scored from its neighbours exactly as a cold one is. Computed in blocks of rows to bound memory."""
    n = vectors.shape[0]
    k = min(k, max(warm.size - 1, 1))
    warm_vectors = vectors[warm]
    rows: list[npt.NDArray[np.int64]] = []
    cols: list[npt.NDArray[np.int64]] = []
    vals: list[npt.NDArray[np.float64]] = []
    block = 1024
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = np.asarray(vectors[start:stop] @ warm_vectors.T, dtype=np.float64)
        own = np.searchsorted(warm, np.arange(start, stop))
        is_warm = (own < warm.size) & (warm[np.minimum(own, warm.size - 1)] == np.arange(start, stop))
        sims[np.flatnonzero(is_warm), own[is_warm]] = -np.inf
        top, weights = _top_neighbours(sims, k, power)
        rows.append(np.repeat(np.arange(start, stop, dtype=np.int64), k))
        cols.append(warm[top].ravel())
        vals.append(weights.ravel())
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
