"""Exact top-k inner-product search over unit item vectors, in bounded memory.

A score matrix for every user and every item would not fit for large catalogs (1,000 users x 1M items is 4 GB), so
:class:`ItemIndex` walks the catalog in chunks and the users in blocks, one BLAS matrix product per pair, and keeps
a running top-k per user. Within a chunk only the entries that can still enter the top-k are looked at: those at
or above the user's current k-th best score (or, while fewer than k are known, the chunk's own k-th best).

Results are exact and deterministic: sorted by score descending, ties broken by the lower item index. Missing
results (``k`` larger than the items left after exclusions, or a ``threshold`` that few items reach) are padded
with index ``-1`` and score ``-inf``; :func:`trim` turns a padded row into plain lists.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from zsgen.errors import ConfigError, DataError, InvalidKError

logger = logging.getLogger(__name__)

FloatMatrix = npt.NDArray[np.float32]
IndexMatrix = npt.NDArray[np.int64]

#: Items scored per matrix product; 65,536 x 384 float32 is 96 MiB of item vectors touched per product.
DEFAULT_CHUNK = 65_536
#: Score-matrix elements per product (users x items), i.e. 64 MiB of float32 scores at a time.
DEFAULT_BLOCK_ELEMENTS = 1 << 24
#: Columns whose k-th best score gives a row's first cut (see ``_search_block``).
_SAMPLE_COLUMNS = 16384


class SearchIndex(Protocol):
    """What the retriever needs from an index: exact (or faiss) top-k with exclusions and a score floor."""

    @property
    def vectors(self) -> FloatMatrix: ...

    def add(self, vectors: npt.ArrayLike) -> None: ...

    def scores(self, queries: npt.ArrayLike) -> FloatMatrix: ...

    def search(
        self,
        queries: npt.ArrayLike,
        k: int,
        *,
        exclude: Sequence[Collection[int]] | None = None,
        threshold: float | None = None,
    ) -> tuple[FloatMatrix, IndexMatrix]: ...


def _as_matrix(values: npt.ArrayLike, *, dim: int | None, what: str) -> FloatMatrix:
    matrix = np.ascontiguousarray(values, dtype=np.float32)
    if matrix.ndim != 2:
        raise ConfigError(f"{what} must be a 2-d array (rows x dim), got shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise ConfigError(f"{what} have dimension {matrix.shape[1]}, the index has {dim}")
    return matrix


def _exclusion_pairs(exclude: Sequence[Collection[int]] | None, m: int, n: int) -> tuple[IndexMatrix, IndexMatrix]:
    """(query row, item index) pairs to skip, sorted by item so each chunk takes one contiguous slice."""
    if exclude is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if len(exclude) != m:
        raise DataError(f"exclude has {len(exclude)} entries for {m} queries", field="exclude")
    parts = [np.fromiter((int(i) for i in items), dtype=np.int64, count=len(items)) for items in exclude]
    rows = np.repeat(np.arange(m, dtype=np.int64), [p.size for p in parts])
    cols = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if cols.size and (int(cols.min()) < 0 or int(cols.max()) >= n):
        raise DataError(f"exclude holds item indices outside 0..{n - 1}", field="exclude")
    order = np.argsort(cols, kind="stable")
    return rows[order], cols[order]


def _check_k(k: int) -> None:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise InvalidKError(f"k must be a positive integer, got {k!r}")


def _empty_results(m: int, k: int) -> tuple[FloatMatrix, IndexMatrix]:
    """Search output before anything is found: ``-inf`` scores and ``-1`` indices, the padding every index returns."""
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


def _kth_largest(scores: FloatMatrix, rows: IndexMatrix, k: int, *, slab: int = 32) -> FloatMatrix:
    """The k-th largest score of each given row, partitioning a few rows at a time so the copy stays small."""
    width = scores.shape[1]
    out = np.empty(rows.size, dtype=np.float32)
    for start in range(0, rows.size, slab):
        part = scores[rows[start : start + slab]]  # a copy, partitioned in place
        part.partition(width - k, axis=1)
        out[start : start + slab] = part[:, width - k]
    return out


def _nonzero_2d(mask: npt.NDArray[np.bool_], width: int) -> tuple[IndexMatrix, IndexMatrix]:
    """``np.nonzero`` of a C-contiguous 2-d boolean mask that is almost all False, several times faster: the mask is
    scanned 8 bytes at a time and only the non-zero words are decoded."""
    flat = mask.reshape(-1)
    size = flat.size
    whole = size - size % 8
    words = flat[:whole].view(np.uint64)
    hits = np.flatnonzero(words)
    positions = (hits[:, None] * 8 + np.arange(8, dtype=np.int64)).reshape(-1)
    positions = positions[flat[positions]]
    if whole < size:
        tail = np.flatnonzero(flat[whole:]) + whole
        positions = np.concatenate([positions, tail])
    return positions // width, positions % width


def trim(scores: npt.NDArray[Any], indices: IndexMatrix) -> tuple[list[list[float]], list[list[int]]]:
    """Padded ``search`` output as ragged lists (padding dropped)."""
    out_s: list[list[float]] = []
    out_i: list[list[int]] = []
    for row_s, row_i in zip(scores, indices, strict=True):
        valid = row_i >= 0
        out_s.append(row_s[valid].tolist())
        out_i.append(row_i[valid].tolist())
    return out_s, out_i


class ItemIndex:
    """Exact search over an L2-normalised float32 item matrix (rows are catalog positions).

    ``chunk_size`` and ``block_elements`` bound the memory of one step; results do not depend on them.
    """

    def __init__(
        self,
        vectors: npt.ArrayLike,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    ) -> None:
        if chunk_size < 1 or block_elements < 1:
            raise ConfigError("chunk_size and block_elements must be positive")
        self._vectors = _as_matrix(vectors, dim=None, what="item vectors")
        self.chunk_size = chunk_size
        self.block_elements = block_elements

    @property
    def vectors(self) -> FloatMatrix:
        return self._vectors

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    def add(self, vectors: npt.ArrayLike) -> None:
        """Append items (cold-start items); they get the next positions."""
        new = _as_matrix(vectors, dim=self.dim, what="new item vectors")
        self._vectors = np.ascontiguousarray(np.concatenate([self._vectors, new], axis=0))

    def scores(self, queries: npt.ArrayLike) -> FloatMatrix:
        """All scores at once, ``(m, n)``: for small catalogs, or scoring given candidates."""
        q = _as_matrix(queries, dim=self.dim, what="queries")
        return q @ self._vectors.T

    def search(
        self,
        queries: npt.ArrayLike,
        k: int,
        *,
        exclude: Sequence[Collection[int]] | None = None,
        threshold: float | None = None,
    ) -> tuple[FloatMatrix, IndexMatrix]:
        """Top ``k`` items per query row: ``(scores, indices)``, each ``(m, k)``, padded with ``-inf`` / ``-1``.

        ``exclude[i]`` lists item indices query ``i`` must not get (e.g. items already seen); with ``threshold``
        only items scoring ``>= threshold`` are returned.
        """
        _check_k(k)
        q = _as_matrix(queries, dim=self.dim, what="queries")
        m, n = q.shape[0], len(self)
        ex_rows, ex_cols = _exclusion_pairs(exclude, m, n)
        out_s, out_i = _empty_results(m, k)
        if m == 0 or n == 0:
            return out_s, out_i
        chunk = max(1, min(self.chunk_size, n))
        block = max(1, min(m, self.block_elements // chunk))
        floor = -np.inf if threshold is None else float(threshold)
        if ex_rows.size:
            by_row = np.argsort(ex_rows, kind="stable")
            row_bounds = np.searchsorted(ex_rows[by_row], np.arange(m + 1))
        for q0 in range(0, m, block):
            q1 = min(m, q0 + block)
            if ex_rows.size:
                sel = by_row[row_bounds[q0] : row_bounds[q1]]
                sel = sel[np.argsort(ex_cols[sel], kind="stable")]
                b_rows, b_cols = ex_rows[sel] - q0, ex_cols[sel]
            else:
                b_rows, b_cols = ex_rows, ex_cols
            self._search_block(q[q0:q1], k, floor, b_rows, b_cols, chunk, out_s[q0:q1], out_i[q0:q1])
        return out_s, out_i

    def _search_block(
        self,
        q: FloatMatrix,
        k: int,
        floor: float,
        ex_rows: IndexMatrix,
        ex_cols: IndexMatrix,
        chunk: int,
        best_s: FloatMatrix,
        best_i: IndexMatrix,
    ) -> None:
        """Fill ``best_s`` / ``best_i`` (views into the output) for one block of queries."""
        n = len(self)
        bm = q.shape[0]
        buffer: FloatMatrix | None = None
        above: npt.NDArray[np.bool_] | None = None
        ex_bounds = np.searchsorted(ex_cols, np.arange(0, n + chunk, chunk)) if ex_cols.size else None
        for number, c0 in enumerate(range(0, n, chunk)):
            c1 = min(n, c0 + chunk)
            width = c1 - c0
            if buffer is None or buffer.shape[1] != width:  # reused: a fresh 64 MiB array per chunk page-faults
                buffer = np.empty((bm, width), dtype=np.float32)
                above = np.empty((bm, width), dtype=bool)
            assert above is not None
            scores = np.matmul(q, self._vectors[c0:c1].T, out=buffer)
            if ex_bounds is not None:
                lo, hi = ex_bounds[number], ex_bounds[number + 1]
                scores[ex_rows[lo:hi], ex_cols[lo:hi] - c0] = -np.inf
            # Lowest score that can still enter each row's top-k. Ties with the current k-th are useless (they
            # come later in index order) but harmless; ">=" keeps one comparison for every case.
            cut = np.maximum(best_s[:, k - 1], np.float32(floor))
            unfilled = np.flatnonzero(best_i[:, k - 1] < 0)
            limit = np.full(bm, 4 * k, dtype=np.int64)
            if unfilled.size and width > k:
                # The k-th largest of a sample of the chunk's columns is at most the chunk's own k-th largest, so it
                # is a safe cut, and partitioning the sample is several times cheaper than the whole chunk.
                sample = min(width, max(_SAMPLE_COLUMNS, 8 * k))
                cut[unfilled] = np.maximum(cut[unfilled], _kth_largest(scores[:, :sample], unfilled, k))
                limit[unfilled] *= -(-width // sample)
            rows, cols = _nonzero_2d(np.greater_equal(scores, cut[:, None], out=above), width)
            if rows.size == 0:
                continue
            vals = scores[rows, cols]
            counts = np.bincount(rows, minlength=bm)
            if bool((counts > limit).any()) and width > k:
                # Rare (e.g. items stored in ascending score order): tighten the busiest rows to their chunk k-th.
                busy = np.flatnonzero(counts > limit)
                tight = np.full(bm, -np.inf, dtype=np.float32)
                tight[busy] = _kth_largest(scores, busy, k)
                keep = vals >= tight[rows]
                rows, cols, vals = rows[keep], cols[keep], vals[keep]
            keep = vals > -np.inf
            if not keep.all():
                rows, cols, vals = rows[keep], cols[keep], vals[keep]
                if rows.size == 0:
                    continue
            self._merge(rows, cols + c0, vals, k, best_s, best_i)

    @staticmethod
    def _merge(
        rows: IndexMatrix, items: IndexMatrix, vals: FloatMatrix, k: int, best_s: FloatMatrix, best_i: IndexMatrix
    ) -> None:
        """Merge new candidates into the running top-k of the rows they belong to (score desc, index asc)."""
        touched = np.unique(rows)
        old_i = best_i[touched]
        old_valid = old_i >= 0
        all_rows = np.concatenate([rows, np.repeat(touched, k)[old_valid.ravel()]])
        all_items = np.concatenate([items, old_i[old_valid]])
        all_vals = np.concatenate([vals, best_s[touched][old_valid]])
        order = np.lexsort((all_items, -all_vals, all_rows))
        s_rows = all_rows[order]
        starts = np.searchsorted(s_rows, touched)
        rank = np.arange(s_rows.size) - np.repeat(starts, np.diff(np.append(starts, s_rows.size)))
        take = rank < k
        dest_rows, dest_cols = s_rows[take], rank[take]
        best_s[touched] = -np.inf
        best_i[touched] = -1
        best_s[dest_rows, dest_cols] = all_vals[order][take]
        best_i[dest_rows, dest_cols] = all_items[order][take]


class FaissIndex:
    """The same interface over ``faiss.IndexFlatIP`` (``pip install zsgen[faiss]``).

    Exclusions are applied by asking faiss for ``k`` plus the largest exclusion count and filtering; the results
    are then re-sorted by (score desc, index asc). Scores are faiss's own, so near-equal scores may order
    differently from :class:`ItemIndex`.
    """

    def __init__(self, vectors: npt.ArrayLike) -> None:
        try:
            import faiss
        except ImportError as exc:
            raise ConfigError(f"faiss is not installed: pip install zsgen[faiss] ({exc})") from None
        self._faiss: Any = faiss
        matrix = _as_matrix(vectors, dim=None, what="item vectors")
        self._index: Any = faiss.IndexFlatIP(matrix.shape[1])
        self._index.add(matrix)
        self._vectors = matrix

    @property
    def vectors(self) -> FloatMatrix:
        return self._vectors

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    def add(self, vectors: npt.ArrayLike) -> None:
        new = _as_matrix(vectors, dim=self.dim, what="new item vectors")
        self._index.add(new)
        self._vectors = np.ascontiguousarray(np.concatenate([self._vectors, new], axis=0))

    def scores(self, queries: npt.ArrayLike) -> FloatMatrix:
        q = _as_matrix(queries, dim=self.dim, what="queries")
        return q @ self._vectors.T

    def search(
        self,
        queries: npt.ArrayLike,
        k: int,
        *,
        exclude: Sequence[Collection[int]] | None = None,
        threshold: float | None = None,
    ) -> tuple[FloatMatrix, IndexMatrix]:
        _check_k(k)
        q = _as_matrix(queries, dim=self.dim, what="queries")
        m, n = q.shape[0], len(self)
        out_s, out_i = _empty_results(m, k)
        if m == 0 or n == 0:
            return out_s, out_i
        _exclusion_pairs(exclude, m, n)  # validates
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        ask = min(n, k + extra)
        scores, indices = self._index.search(q, ask)
        for row in range(m):
            banned = set(exclude[row]) if exclude is not None else set()
            picked = [
                (float(s), int(i))
                for s, i in zip(scores[row], indices[row], strict=True)
                if i >= 0 and int(i) not in banned and (threshold is None or s >= threshold)
            ]
            picked.sort(key=lambda pair: (-pair[0], pair[1]))
            for col, (s, i) in enumerate(picked[:k]):
                out_s[row, col] = s
                out_i[row, col] = i
        return out_s, out_i


IndexBackend = Literal["numpy", "faiss"]


def make_index(vectors: npt.ArrayLike, backend: IndexBackend = "numpy") -> ItemIndex | FaissIndex:
    """``numpy`` (exact, deterministic ties, no extra dependency) or ``faiss``."""
    if backend == "numpy":
        return ItemIndex(vectors)
    if backend == "faiss":
        return FaissIndex(vectors)
    raise ConfigError(f"unknown index backend {backend!r}; use 'numpy' or 'faiss'")
