"""Catalog embedding on a Ray cluster: item texts through a Ray Data ``map_batches`` stage whose actors each load the
encoder once, the vectors gathered on the driver in catalog order.

The result is what :class:`~zsgen.embed.cache.CachedEncoder` would return on the driver: texts already in the
embedding cache are read from it (the cluster embeds only the rest), and what the cluster computed is written to the
cache under the encoder's identity, so a later local run, or the next Ray run, finds every vector there. Vectors
agree with the local encoder's to float rounding only: Ray runs each actor's torch with one thread
(``OMP_NUM_THREADS=1``), and the encoder's sums round differently with another thread count.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsgen.catalog import Catalog
from zsgen.embed.base import Encoder, FloatMatrix, empty_matrix
from zsgen.embed.cache import EmbeddingCache, text_key
from zsgen.errors import DataError, EncoderError

logger = logging.getLogger(__name__)

__all__ = ["embed_catalog_ray", "embed_texts_ray"]

#: Builds the encoder on a Ray worker; pickled to every actor, so a class or a module-level function (or a
#: ``functools.partial`` of one), never a lambda.
MakeEncoder = Callable[[], Encoder]


class _EmbedStage:
    """Ray actor: loads the encoder once, then turns batches of ``(row, text)`` into ``(row, vector)``."""

    def __init__(self, make_encoder: MakeEncoder) -> None:
        self.encoder = make_encoder()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        vectors = self.encoder.encode([str(text) for text in batch["text"]], progress=False)
        return {"row": np.asarray(batch["row"], dtype=np.int64), "vector": np.asarray(vectors, dtype=np.float32)}


def _embed_on_ray(texts: Sequence[str], make_encoder: MakeEncoder, workers: int, batch_size: int) -> FloatMatrix:
    import ray

    rows = [{"row": row, "text": text} for row, text in enumerate(texts)]
    blocks = max(workers, -(-len(rows) // batch_size))
    embedded = ray.data.from_items(rows, override_num_blocks=min(blocks, len(rows))).map_batches(
        _EmbedStage,
        fn_constructor_kwargs={"make_encoder": make_encoder},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
    )
    out: FloatMatrix | None = None
    seen = 0
    for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
        vectors = np.asarray(batch["vector"], dtype=np.float32)
        if out is None:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        out[np.asarray(batch["row"], dtype=np.int64)] = vectors
        seen += len(vectors)
    if out is None or seen != len(texts):
        raise EncoderError(f"the Ray embedding stage returned {seen} vectors for {len(texts)} texts")
    return out


def embed_texts_ray(
    texts: Sequence[str],
    make_encoder: MakeEncoder,
    *,
    identity: str,
    dim: int,
    cache: EmbeddingCache | None = None,
    workers: int = 2,
    batch_size: int = 256,
) -> FloatMatrix:
    """Unit vectors of ``texts`` (one row each, in order), the missing ones embedded by ``workers`` Ray actors that
    each build ``make_encoder()`` once; ``identity`` and ``dim`` are that encoder's (the cache key). Needs a
    connected Ray cluster (``ray.init``)."""
    if workers < 1 or batch_size < 1:
        raise DataError(f"workers and batch size must be positive, got {workers} and {batch_size}")
    if not texts:
        return empty_matrix(dim)
    keys = [text_key(text) for text in texts]
    found = cache.get_many(identity, keys, dim) if cache is not None else {}
    first: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in found:
            first.setdefault(key, text)
    if first:
        missing = list(first)
        vectors = _embed_on_ray([first[key] for key in missing], make_encoder, workers, batch_size)
        if vectors.shape[1] != dim:
            raise EncoderError(f"{identity}: the Ray actors' encoder makes {vectors.shape[1]}-d vectors, not {dim}")
        computed = dict(zip(missing, vectors, strict=True))
        if cache is not None:
            cache.put_many(identity, computed)
        found.update(computed)
    logger.info(
        "ray: %d texts, %d from the cache, %d embedded on the cluster", len(texts), len(texts) - len(first), len(first)
    )
    return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)


def embed_catalog_ray(
    catalog: Catalog,
    *,
    model_path: str | Path | None = None,
    cache: EmbeddingCache | None = None,
    workers: int = 2,
    batch_size: int = 256,
) -> FloatMatrix:
    """The catalog's unit text vectors as retrieval computes them (the local encoder of ``model_path``, default
    all-MiniLM-L6-v2, over :class:`~zsgen.itemtext.ItemTextTemplate` texts, through ``cache``), embedded on Ray."""
    from zsgen.embed.local import TransformersEncoder
    from zsgen.itemtext import ItemTextTemplate

    here = TransformersEncoder(model_path)  # the cache key (identity, size); the actors load their own copies
    return embed_texts_ray(
        ItemTextTemplate().render_all(catalog),
        functools.partial(TransformersEncoder, model_path),
        identity=here.identity,
        dim=here.dim,
        cache=cache,
        workers=workers,
        batch_size=batch_size,
    )
