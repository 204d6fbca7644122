"""Item matrices larger than memory: ``.npy`` files read and written in row chunks.

A 10M x 384 float32 catalog is 15 GB. Memory-mapping it is the right way to *serve* it (the re-score touches a few
hundred rows per query), but walking a whole mapping to *build* an index keeps every page touched resident in the
process (file-backed RSS that only the kernel's memory pressure takes back). So the build paths read row chunks with
plain file reads (:func:`iter_chunks`) and the writers append chunks to a file (:class:`NpyWriter`); the process holds
one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from zsgen.errors import ConfigError

#: Rows per chunk: 262,144 x 384 float32 is 384 MiB.
DEFAULT_CHUNK_ROWS = 1 << 18

FloatMatrix = npt.NDArray[np.float32]


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype[np.generic], bool, int]:
    """(shape, dtype, fortran_order, data offset in bytes) of an ``.npy`` file; a bad file is a :class:`ConfigError`."""
    try:
        with open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            return tuple(shape), np.dtype(dtype), bool(fortran), fh.tell()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable .npy file ({exc})") from None


def whole_file(vectors: object) -> Path | None:
    """The ``.npy`` file ``vectors`` maps in full (``np.load(path, mmap_mode="r")``), or None.

    A slice of such a mapping is still an ``np.memmap`` with the parent's file and offset, so the shape, dtype and
    layout are checked against the file's header before chunks are read from the file instead of the mapping."""
    if not isinstance(vectors, np.memmap) or vectors.filename is None or not vectors.flags.c_contiguous:
        return None
    path = Path(vectors.filename)
    if path.suffix != ".npy" or not path.is_file():
        return None
    shape, dtype, fortran, offset = npy_header(path)
    if shape != vectors.shape or dtype != vectors.dtype or fortran or offset != vectors.offset:
        return None
    return path


def iter_chunks(vectors: npt.ArrayLike, rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[int, FloatMatrix]]:
    """``(start, float32 C-contiguous block)`` over the rows of ``vectors``, one block in memory at a time.

    A whole-file memory map is read with file reads (its pages never become resident in this process); any other
    array is sliced."""
    if rows < 1:
        raise ConfigError(f"chunk rows must be positive, got {rows}")
    path = whole_file(vectors)
    if path is None:
        matrix = np.asarray(vectors)
        for start in range(0, matrix.shape[0], rows):
            yield start, np.ascontiguousarray(matrix[start : start + rows], dtype=np.float32)
        return
    assert isinstance(vectors, np.memmap)
    n, dim = vectors.shape
    itemsize = vectors.dtype.itemsize
    with open(path, "rb") as fh:
        for start in range(0, n, rows):
            count = min(rows, n - start)
            fh.seek(vectors.offset + start * dim * itemsize)
            block = np.fromfile(fh, dtype=vectors.dtype, count=count * dim)
            if block.size != count * dim:
                raise ConfigError(f"{path}: file ends before row {start + count}")
            yield start, np.ascontiguousarray(block.reshape(count, dim), dtype=np.float32)


def take_rows(vectors: npt.ArrayLike, rows: npt.NDArray[np.int64]) -> FloatMatrix:
    """``vectors[rows]`` for sorted ``rows`` (a training sample), read from the file for a whole-file memory map."""
    path = whole_file(vectors)
    if path is None:
        return np.ascontiguousarray(np.asarray(vectors)[rows], dtype=np.float32)
    assert isinstance(vectors, np.memmap)
    dim = vectors.shape[1]
    row_bytes = dim * vectors.dtype.itemsize
    out = np.empty((rows.size, dim), dtype=vectors.dtype)
    with open(path, "rb") as fh:
        for i, row in enumerate(rows.tolist()):
            fh.seek(vectors.offset + row * row_bytes)
            out[i] = np.fromfile(fh, dtype=vectors.dtype, count=dim)
    return np.ascontiguousarray(out, dtype=np.float32)


class NpyWriter:
    """Write an ``(n, dim)`` float32 ``.npy`` file chunk by chunk, in order (``np.load(..., mmap_mode="r")`` reads it).

    The header is written first, so the file is complete only once ``n`` rows arrived; :meth:`close` checks that."""

    def __init__(self, path: str | Path, n: int, dim: int) -> None:
        self.path = Path(path)
        self.n, self.dim, self.written = n, dim, 0
        self._fh: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": (n, dim),
        }
        np.lib.format.write_array_header_1_0(self._fh, header)

    def write(self, block: npt.ArrayLike) -> None:
        rows = np.ascontiguousarray(block, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim or self.written + rows.shape[0] > self.n:
            raise ConfigError(f"{self.path}: block of shape {rows.shape} does not fit {self.n} x {self.dim}")
        rows.tofile(self._fh)
        self.written += rows.shape[0]

    def close(self) -> None:
        self._fh.close()
        if self.written != self.n:
            raise ConfigError(f"{self.path}: {self.written} of {self.n} rows written")

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()
