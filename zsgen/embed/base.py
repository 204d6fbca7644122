"""The one interface every embedding model is used through, and the normalisation they all share.

Retrieval scores are dot products, so every encoder returns unit-length float32 rows: the dot product is then the
cosine, and vectors from different encoders can be cached and compared the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from zsgen.errors import EncoderError

FloatMatrix = npt.NDArray[np.float32]


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors.

    ``identity`` names everything that changes the vectors (model weights, pooling, truncation), so two encoders
    with equal identities may share cached vectors and two with different identities never do.
    """

    @property
    def identity(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> FloatMatrix:
        """Return an ``(len(texts), dim)`` float32 array of unit rows, in the order of ``texts``."""
        ...


def l2_normalise(vectors: npt.ArrayLike, *, what: str = "encoder") -> FloatMatrix:
    """Scale each row to unit length; a zero (or non-finite) row has no direction, so it is an error, not NaNs."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise EncoderError(f"{what} returned an array of shape {matrix.shape}, expected (n, dim)")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0.0)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise EncoderError(f"{what} returned zero or non-finite vectors (rows {rows})")
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def empty_matrix(dim: int) -> FloatMatrix:
    """What encoding no texts gives: zero rows, so callers can stack results without a special case."""
    return np.zeros((0, dim), dtype=np.float32)
