"""The cosine first stage: a user's query (:mod:`zsgen.user_vectors`) against the catalog's item vectors,
exact top-k through an index (:mod:`zsgen.retrieval.index`), the user's seen items left out.

How a history becomes a query (``user_vector``, ``history_length``, ``half_life``, ``profile_weight``) and whether
seen items are left out (``exclude_seen``) are fixed when the retriever is built, so every call scores users the same
way and the retriever answers the one :class:`~zsgen.retrieval.base.FirstStage` call shape. To compare user vectors
on one catalog, build one retriever per option set with ``item_vectors=other.item_vectors`` (nothing is re-encoded).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.embed.base import Encoder
from zsgen.errors import ConfigError, DataError, EmptyHistoryError, EmptyTextError, InvalidKError
from zsgen.itemtext import ItemTextTemplate
from zsgen.retrieval.base import Request, check_requests, per_request_k
from zsgen.retrieval.index import FloatMatrix, IndexBackend, SearchIndex, make_index
from zsgen.types import Candidate, History, Item, Profile, Source
from zsgen.user_vectors import (
    DEFAULT_HALF_LIFE,
    DEFAULT_PROFILE_WEIGHT,
    UserVector,
    check_options,
    maxsim_queries,
    maxsim_scores,
    single_query,
)

logger = logging.getLogger(__name__)


@dataclass
class _User:
    """A validated request: catalog positions of the history used for the query, and of everything seen."""

    recent: npt.NDArray[np.int64]
    seen: npt.NDArray[np.int64]
    profile: str | None
    k: int


class Retriever:
    """Cosine top-k over a catalog's item vectors (a :class:`~zsgen.retrieval.base.FirstStage`).

    Item vectors are built once from the item texts (:class:`~zsgen.itemtext.ItemTextTemplate`) with ``encoder``
    (wrap it in a :class:`~zsgen.embed.CachedEncoder` to make rebuilding free), or taken from ``item_vectors``.
    ``user_vector`` and the options after it say how a user becomes a query (:mod:`zsgen.user_vectors`);
    ``history_length`` limits the query to the most recent items, while ``exclude_seen`` always covers the whole
    history.
    """

    #: How the recommender labels this first stage's items.
    source: Source = "cosine"

    def __init__(
        self,
        catalog: Catalog,
        encoder: Encoder,
        *,
        text_template: ItemTextTemplate | None = None,
        item_vectors: npt.ArrayLike | None = None,
        index_backend: IndexBackend | str = "numpy",
        ann_dir: str | Path | None = None,
        user_vector: UserVector = "mean",
        history_length: int | None = None,
        half_life: float = DEFAULT_HALF_LIFE,
        profile_weight: float = DEFAULT_PROFILE_WEIGHT,
        exclude_seen: bool = True,
    ) -> None:
        check_options(
            user_vector=user_vector,
            history_length=history_length,
            half_life=half_life,
            profile_weight=profile_weight,
            owner="Retriever",
        )
        self.catalog = catalog
        self.encoder = encoder
        self.text_template = text_template if text_template is not None else ItemTextTemplate()
        self.user_vector: UserVector = user_vector
        self.history_length = history_length
        self.half_life = half_life
        self.profile_weight = profile_weight
        self.exclude_seen = exclude_seen
        if item_vectors is None:
            vectors = self._encode_items(catalog)
        else:
            vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(catalog):
                raise DataError(
                    f"item_vectors has shape {vectors.shape}, expected ({len(catalog)}, dim)", field="item_vectors"
                )
        self._index = self._make_index(vectors, index_backend, ann_dir)

    def _make_index(self, vectors: FloatMatrix, backend: IndexBackend | str, ann_dir: str | Path | None) -> SearchIndex:
        if backend == "ann" or backend.startswith("ann:"):
            from zsgen.retrieval.ann import ann_key, cached_ann, default_factory

            factory = backend[4:] or default_factory(len(vectors))
            texts = [self.text_template.render(item) for item in self.catalog]
            key = ann_key(self.encoder.identity, texts, factory)
            if ann_dir is None:  # next to the embedding cache this encoder uses, if it uses one
                cache_path = getattr(getattr(self.encoder, "cache", None), "path", None)
                ann_dir = Path(cache_path).parent / "ann" if cache_path is not None else None
            return cached_ann(vectors, key, factory, folder=ann_dir)
        if backend in ("numpy", "faiss"):
            return make_index(vectors, backend)  # type: ignore[arg-type]
        raise ConfigError(f"unknown index {backend!r}; use 'numpy', 'faiss', 'ann' or 'ann:FACTORY'")

    @property
    def item_vectors(self) -> FloatMatrix:
        """Unit rows in catalog order (row ``i`` is ``catalog[i]``), cold-start items included."""
        return self._index.vectors

    def _encode_items(self, items: Iterable[Item]) -> FloatMatrix:
        texts = [self.text_template.render(item) for item in items]
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32)
        if vectors.shape != (len(texts), vectors.shape[1] if vectors.ndim == 2 else -1):
            raise DataError(f"encoder returned shape {vectors.shape} for {len(texts)} items", field="item_vectors")
        return vectors

    def add_items(self, items: Iterable[Item]) -> None:
        """Add cold-start items: their text is encoded now and they are retrievable at once."""
        new = list(items)
        catalog = self.catalog.with_items(new)  # raises DuplicateItemError before anything is encoded
        vectors = self._encode_items(new)
        if vectors.shape[0]:
            self._index.add(vectors)
        self.catalog = catalog
        logger.debug("added %d cold-start items (catalog now %d)", len(new), len(catalog))

    # ----------------------------------------------------------------------------------------------- retrieval

    def retrieve(
        self,
        history: History | Sequence[str] | None = None,
        profile: Profile | str | None = None,
        *,
        k: int = 20,
        threshold: float | None = None,
    ) -> list[Candidate]:
        """The ``k`` best items for one user, best first (ties: earlier catalog item first).

        With ``threshold``, only items scoring at least that are returned, so there may be fewer than ``k``.
        """
        return self.retrieve_batch([Request(history, profile)], k=k, threshold=threshold)[0]

    def retrieve_batch(
        self,
        requests: Sequence[Request],
        *,
        k: int | Sequence[int] = 20,
        threshold: float | None = None,
    ) -> list[list[Candidate]]:
        """:meth:`retrieve` for many users, in a few matrix operations. ``k`` may be given per request."""
        users = self._prepare(check_requests(requests), k, threshold, self.exclude_seen)
        if not users:
            return []
        profiles = self._profile_vectors(users)
        if self.user_vector == "maxsim":
            found = self._search_maxsim(users, profiles, threshold)
        else:
            queries = np.stack([self._single_query(u, profiles) for u in users])
            scores, indices = self._index.search(
                queries,
                max(u.k for u in users),
                exclude=[u.seen for u in users] if self.exclude_seen else None,
                threshold=threshold,
            )
            found = [(s[: u.k], i[: u.k]) for s, i, u in zip(scores, indices, users, strict=True)]
        ids = self.catalog.ids
        return [
            [Candidate(id=ids[int(i)], score=float(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
            for row_s, row_i in found
        ]

    def scores(
        self, history: History | Sequence[str] | None = None, profile: Profile | str | None = None
    ) -> npt.NDArray[np.float32]:
        """The retrieval score of every catalog item for one user (seen items included), in catalog order."""
        (user,) = self._prepare([Request(history, profile)], 1, None, False)
        profiles = self._profile_vectors([user])
        vectors = self.item_vectors
        if self.user_vector == "maxsim" and user.recent.size:
            return maxsim_scores(self._maxsim_queries(user, profiles), vectors)
        return np.asarray(vectors @ self._single_query(user, profiles), dtype=np.float32)

    # --------------------------------------------------------------------------------------------- internals

    def _prepare(
        self, requests: Sequence[Request], k: int | Sequence[int], threshold: float | None, exclude_seen: bool
    ) -> list[_User]:
        if threshold is not None and not np.isfinite(threshold):
            raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
        ks = per_request_k(k, len(requests))
        n = len(self.catalog)
        users: list[_User] = []
        for number, request in enumerate(requests):
            where = f"request {number}: " if len(requests) > 1 else ""
            positions = np.asarray(self.catalog.indices_of(request.item_keys), dtype=np.int64)
            text = request.profile_text
            if text is not None and not text.strip():
                raise EmptyTextError(f"{where}the profile text is blank", field="profile")
            if positions.size == 0 and text is None:
                raise EmptyHistoryError(f"{where}give a history or a profile text")
            seen = np.unique(positions) if exclude_seen else np.zeros(0, dtype=np.int64)
            want = ks[number]
            rankable = n - seen.size
            if isinstance(want, bool) or not isinstance(want, int | np.integer) or want < 1 or want > rankable:
                raise InvalidKError(
                    f"{where}k must be between 1 and the {rankable} items that can be ranked"
                    f"{' (catalog minus seen items)' if exclude_seen else ''}, got {want!r}"
                )
            recent = positions[-self.history_length :] if self.history_length is not None else positions
            users.append(_User(recent=recent, seen=seen, profile=text, k=int(want)))
        return users

    def _profile_vectors(self, users: Sequence[_User]) -> dict[str, FloatMatrix]:
        texts = list(dict.fromkeys(u.profile for u in users if u.profile is not None))
        if not texts:
            return {}
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32)
        return dict(zip(texts, vectors, strict=True))

    def _single_query(self, user: _User, profiles: dict[str, FloatMatrix]) -> FloatMatrix:
        return single_query(
            self.item_vectors[user.recent],
            profiles[user.profile] if user.profile is not None else None,
            self.user_vector,
            half_life=self.half_life,
            profile_weight=self.profile_weight,
        )

    def _maxsim_queries(self, user: _User, profiles: dict[str, FloatMatrix]) -> FloatMatrix:
        return maxsim_queries(
            self.item_vectors[user.recent],
            profiles[user.profile] if user.profile is not None else None,
            profile_weight=self.profile_weight,
        )

    def _search_maxsim(
        self, users: Sequence[_User], profiles: dict[str, FloatMatrix], threshold: float | None
    ) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
        """Exact max-over-history top-k via the index.

        An item in a user's top-k by max score is in the top-k of the history item that gives it that max (any
        item beating it there also beats it overall), so searching each history item and re-scoring the union of
        their results is exact.
        """
        blocks = [self._maxsim_queries(u, profiles) for u in users]
        owners = np.repeat(np.arange(len(users)), [b.shape[0] for b in blocks])
        queries = np.concatenate(blocks, axis=0)
        _, indices = self._index.search(
            queries,
            max(u.k for u in users),
            exclude=[users[int(o)].seen for o in owners] if self.exclude_seen else None,
            threshold=threshold,
        )
        bounds = np.concatenate([[0], np.cumsum([b.shape[0] for b in blocks])])
        vectors = self.item_vectors
        out: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]] = []
        for number, user in enumerate(users):
            rows = indices[bounds[number] : bounds[number + 1]]
            pool = np.unique(rows[rows >= 0])
            if pool.size == 0:
                out.append((np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)))
                continue
            best = (blocks[number] @ vectors[pool].T).max(axis=0)
            order = np.lexsort((pool, -best))[: user.k]
            out.append((best[order].astype(np.float32), pool[order]))
        return out
