"""An on-disk embedding cache, so a catalog is encoded once and an edited item is re-encoded alone.

Entries are keyed by (encoder identity, sha256 of the text): a different model, pooling or truncation never returns
another's vectors, and a changed text is simply a new key. Values are raw little-endian float32 bytes in SQLite —
no pickle, so a cache file from elsewhere cannot run code. WAL mode and a busy timeout let several processes (e.g.
evaluation workers) read and write one file at once.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsgen.embed.base import Encoder, FloatMatrix, empty_matrix
from zsgen.errors import EncoderError
from zsgen.paths import embedding_cache_path
from zsgen.sqlitedb import SqliteFile

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    encoder TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (encoder, text_sha256)
) WITHOUT ROWID
"""
_LOOKUP_CHUNK = 500  # stays under SQLite's bound-parameter limit on old builds (999)


def default_cache_path() -> Path:
    """The default embedding cache file (:func:`zsgen.paths.embedding_cache_path`)."""
    return embedding_cache_path()


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Vectors by (encoder identity, text hash) in one SQLite file.

    The file plumbing (WAL, busy timeout, a connection per thread and per forked process, a damaged file reported
    on open) is :class:`~zsgen.sqlitedb.SqliteFile`'s.
    """

    def __init__(self, path: str | Path | None = None, *, timeout: float = 30.0) -> None:
        self.db = SqliteFile(
            path if path is not None else default_cache_path(),
            schema=_SCHEMA,
            what="embedding cache",
            timeout=timeout,
            error=EncoderError,
        )
        self.path = self.db.path
        self.timeout = timeout

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self.db.close()

    def get_many(self, identity: str, keys: Iterable[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys``; a stored vector of the wrong size (another model) is a miss."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        conn = self.db.connection()
        try:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT text_sha256, dim, vector FROM embeddings WHERE encoder = ? AND text_sha256 IN ({marks})",
                    (identity, *chunk),
                )
                for key, stored_dim, blob in rows:
                    if (dim is None or stored_dim == dim) and len(blob) == 4 * stored_dim:
                        found[key] = np.frombuffer(blob, dtype="<f4")
        except sqlite3.Error as exc:
            raise EncoderError(f"{self.path}: embedding cache read failed: {exc}") from exc
        return found

    def put_many(self, identity: str, vectors: Mapping[str, np.ndarray]) -> None:
        rows = [
            (identity, key, int(vec.shape[0]), np.ascontiguousarray(vec, dtype="<f4").tobytes())
            for key, vec in vectors.items()
        ]
        if not rows:
            return
        try:
            with self.db.transaction() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO embeddings (encoder, text_sha256, dim, vector) VALUES (?, ?, ?, ?)", rows
                )
        except sqlite3.Error as exc:
            raise EncoderError(f"{self.path}: embedding cache write failed: {exc}") from exc

    def count(self, identity: str | None = None) -> int:
        conn = self.db.connection()
        if identity is None:
            row = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()
        else:
            row = conn.execute("SELECT COUNT(*) FROM embeddings WHERE encoder = ?", (identity,)).fetchone()
        return int(row[0])

    def clear(self, identity: str | None = None) -> None:
        with self.db.transaction() as conn:
            if identity is None:
                conn.execute("DELETE FROM embeddings")
            else:
                conn.execute("DELETE FROM embeddings WHERE encoder = ?", (identity,))


@dataclass(frozen=True)
class CacheStats:
    """What the last ``encode`` call took from the cache and what it had to compute."""

    texts: int = 0
    hits: int = 0
    encoded: int = 0

    def __str__(self) -> str:
        return f"{self.hits} from cache, {self.encoded} encoded"


class CachedEncoder:
    """An :class:`Encoder` that answers from an :class:`EmbeddingCache` and encodes only what it misses.

    Identical texts within one call are encoded once. ``last_stats`` tells how the last call was served.
    """

    def __init__(self, encoder: Encoder, cache: EmbeddingCache | None = None) -> None:
        self.encoder = encoder
        self.cache = cache if cache is not None else EmbeddingCache()
        self.last_stats = CacheStats()

    @property
    def identity(self) -> str:
        return self.encoder.identity

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, cache={str(self.cache.path)!r})"

    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> FloatMatrix:
        texts = list(texts)
        if not texts:
            self.last_stats = CacheStats()
            return empty_matrix(self.dim)
        identity = self.encoder.identity
        keys = [text_key(text) for text in texts]
        cached = self.cache.get_many(identity, keys)
        hits = sum(key in cached for key in keys)
        first_text: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in cached:
                first_text.setdefault(key, text)
        if first_text:
            missing = list(first_text)
            fresh = self.encoder.encode([first_text[k] for k in missing], progress=progress)
            if fresh.shape[0] != len(missing):
                raise EncoderError(f"{identity}: encoder returned {fresh.shape[0]} vectors for {len(missing)} texts")
            computed = dict(zip(missing, fresh, strict=True))
            self.cache.put_many(identity, computed)
            cached.update(computed)
        dims = {vec.shape[0] for vec in cached.values()}
        if len(dims) != 1:
            raise EncoderError(f"{identity}: cached vectors have mixed sizes {sorted(dims)}; clear the cache")
        out = np.stack([cached[key] for key in keys]).astype(np.float32, copy=False)
        self.last_stats = CacheStats(texts=len(texts), hits=hits, encoded=len(first_text))
        logger.debug("%s: %s", identity, self.last_stats)
        return out
