"""Text encoders behind one protocol, and the cache that makes re-encoding a catalog free.

``Encoder`` is the contract (unit-length float32 rows, an ``identity`` naming everything that changes the vectors);
``TransformersEncoder`` runs a local model, ``OpenAIEmbeddingEncoder`` calls an OpenAI-compatible server, and
``CachedEncoder`` wraps either with an on-disk :class:`EmbeddingCache`. The heavy imports (torch, openai) happen
only when the corresponding encoder is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsgen.embed.base import Encoder, FloatMatrix, l2_normalise
from zsgen.embed.cache import CachedEncoder, CacheStats, EmbeddingCache, default_cache_path

if TYPE_CHECKING:
    from zsgen.embed.local import TransformersEncoder
    from zsgen.embed.openai_compat import OpenAIEmbeddingEncoder

__all__ = [
    "CacheStats",
    "CachedEncoder",
    "EmbeddingCache",
    "Encoder",
    "FloatMatrix",
    "OpenAIEmbeddingEncoder",
    "TransformersEncoder",
    "build_encoder",
    "default_cache_path",
    "default_encoder",
    "l2_normalise",
]


def __getattr__(name: str) -> Any:
    if name == "TransformersEncoder":
        from zsgen.embed.local import TransformersEncoder

        return TransformersEncoder
    if name == "OpenAIEmbeddingEncoder":
        from zsgen.embed.openai_compat import OpenAIEmbeddingEncoder

        return OpenAIEmbeddingEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_encoder(model: str | Path | None = None, *, cache: bool | str | Path | None = True) -> Encoder:
    """The one way zsgen builds its local text encoder (library, CLI and service alike).

    ``model`` is a sentence-transformers folder (default: the packaged all-MiniLM-L6-v2). The encoder sits behind the
    on-disk :class:`EmbeddingCache` unless ``cache=False``; a path picks the cache file, ``True`` or ``None`` the
    default one (:func:`zsgen.paths.embedding_cache_path`)."""
    from zsgen.embed.local import TransformersEncoder
    from zsgen.paths import embedding_cache_path

    encoder = TransformersEncoder(model) if model else TransformersEncoder()
    if cache is False:
        return encoder
    path = embedding_cache_path(None if cache is True else cache)
    return CachedEncoder(encoder, EmbeddingCache(path))


def default_encoder(*, cache: bool | str | Path = True) -> Encoder:
    """The packaged all-MiniLM-L6-v2, cached on disk unless ``cache=False`` (a path picks the cache file)."""
    return build_encoder(cache=cache)
