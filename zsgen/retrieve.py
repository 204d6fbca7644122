"""First stage: turn a user into a query over item vectors and take the top-k items by cosine.

A user is known by their history (catalog items, oldest first), by a profile text (a cold-start user), or both.
History becomes a query in one of four ways (``UserVector``):

- ``mean``: the normalised average of the history vectors;
- ``recency``: a weighted average, the newest item weighted 1 and each older one halved every ``half_life`` items;
- ``last``: the newest item alone (a strong zero-shot baseline, LLMSeqSim);
- ``maxsim``: no single vector; an item scores its best cosine to any history item, so distinct tastes are not
  averaged into a point between them.

With both history and profile, the query is ``(1 - w) * history + w * profile`` of the two unit vectors, normalised
(``w = profile_weight``); under ``maxsim`` the same blend is applied to each history item, so the score is
``(1 - w) * max_j cos(h_j, item) + w * cos(profile, item)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from zsgen.catalog import Catalog
from zsgen.embed.base import Encoder
from zsgen.errors import ConfigError, DataError, EmptyHistoryError, EmptyTextError, InvalidKError
from zsgen.index import FloatMatrix, IndexBackend, make_index
from zsgen.itemtext import ItemTextTemplate
from zsgen.types import Candidate, History, Item, Profile, Source

logger = logging.getLogger(__name__)

UserVector = Literal["mean", "recency", "last", "maxsim"]
USER_VECTORS: tuple[UserVector, ...] = get_args(UserVector)
DEFAULT_HALF_LIFE = 3.0
DEFAULT_PROFILE_WEIGHT = 0.5


def recency_weights(n: int, half_life: float = DEFAULT_HALF_LIFE) -> npt.NDArray[np.float64]:
    """Weights for ``n`` items oldest first: the newest gets 1, an item ``half_life`` steps older gets 0.5."""
    if half_life <= 0:
        raise ConfigError(f"half_life must be positive, got {half_life}")
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    return np.asarray(0.5 ** (age / half_life), dtype=np.float64)


def _unit(vector: npt.NDArray[np.floating]) -> FloatMatrix:
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not np.isfinite(norm):
        # Opposite vectors can cancel exactly; there is then no direction to search in.
        raise DataError("the user vector is zero (history and profile vectors cancel out)", field="history")
    return np.asarray(vector / norm, dtype=np.float32)


def history_vector(
    vectors: npt.ArrayLike, user_vector: UserVector, *, half_life: float = DEFAULT_HALF_LIFE
) -> FloatMatrix:
    """One unit query vector from history item vectors (oldest first); ``maxsim`` has none and is refused."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise EmptyHistoryError("a history vector needs at least one item")
    if user_vector == "last":
        return _unit(matrix[-1])
    if user_vector == "mean":
        return _unit(matrix.astype(np.float64).mean(axis=0))
    if user_vector == "recency":
        weights = recency_weights(matrix.shape[0], half_life)
        return _unit(weights @ matrix.astype(np.float64))
    raise ConfigError(f"user_vector {user_vector!r} has no single user vector (maxsim is computed in scoring)")


def blend(history: npt.ArrayLike, profile: npt.ArrayLike, profile_weight: float) -> FloatMatrix:
    """The normalised mix of two unit vectors: ``(1 - w) * history + w * profile``."""
    h = np.asarray(history, dtype=np.float64)
    p = np.asarray(profile, dtype=np.float64)
    return _unit((1.0 - profile_weight) * h + profile_weight * p)


@dataclass(frozen=True)
class RetrievalRequest:
    """One user of a batch: a history, a profile, or both."""

    history: History | None = None
    profile: Profile | str | None = None


RequestLike = RetrievalRequest | tuple[History | None, Profile | str | None] | History | Profile


@dataclass
class _User:
    """A validated request: catalog positions of the history used for the query, and of everything seen."""

    recent: npt.NDArray[np.int64]
    seen: npt.NDArray[np.int64]
    profile: str | None
    k: int


class Retriever:
    """Cosine top-k over a catalog's item vectors.

    Item vectors are built once from the item texts (:class:`~zsgen.itemtext.ItemTextTemplate`) with ``encoder``
    (wrap it in a :class:`~zsgen.embed.CachedEncoder` to make rebuilding free), or taken from ``item_vectors``.
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
        index_backend: IndexBackend = "numpy",
        half_life: float = DEFAULT_HALF_LIFE,
        profile_weight: float = DEFAULT_PROFILE_WEIGHT,
    ) -> None:
        if half_life <= 0:
            raise ConfigError(f"half_life must be positive, got {half_life}")
        if not 0.0 <= profile_weight <= 1.0:
            raise ConfigError(f"profile_weight must be within [0, 1], got {profile_weight}")
        self.catalog = catalog
        self.encoder = encoder
        self.text_template = text_template if text_template is not None else ItemTextTemplate()
        self.half_life = half_life
        self.profile_weight = profile_weight
        if item_vectors is None:
            vectors = self._encode_items(catalog)
        else:
            vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(catalog):
                raise DataError(
                    f"item_vectors has shape {vectors.shape}, expected ({len(catalog)}, dim)", field="item_vectors"
                )
        self._index = make_index(vectors, index_backend)

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
        history: History | None = None,
        profile: Profile | str | None = None,
        *,
        k: int = 20,
        user_vector: UserVector = "mean",
        threshold: float | None = None,
        exclude_seen: bool = True,
        history_length: int | None = None,
    ) -> list[Candidate]:
        """The ``k`` best items for one user, best first (ties: earlier catalog item first).

        With ``threshold``, only items scoring at least that are returned, so there may be fewer than ``k``.
        ``history_length`` limits the query to the most recent items; ``exclude_seen`` always covers the whole
        history.
        """
        return self.retrieve_batch(
            [RetrievalRequest(history, profile)],
            k=k,
            user_vector=user_vector,
            threshold=threshold,
            exclude_seen=exclude_seen,
            history_length=history_length,
        )[0]

    def retrieve_batch(
        self,
        requests: Sequence[RequestLike],
        *,
        k: int | Sequence[int] = 20,
        user_vector: UserVector = "mean",
        threshold: float | None = None,
        exclude_seen: bool = True,
        history_length: int | None = None,
    ) -> list[list[Candidate]]:
        """:meth:`retrieve` for many users, in a few matrix operations. ``k`` may be given per request."""
        users = self._prepare(requests, k, user_vector, threshold, exclude_seen, history_length)
        if not users:
            return []
        profiles = self._profile_vectors(users)
        if user_vector == "maxsim":
            found = self._search_maxsim(users, profiles, threshold, exclude_seen)
        else:
            queries = np.stack([self._user_vector(u, profiles, user_vector) for u in users])
            scores, indices = self._index.search(
                queries,
                max(u.k for u in users),
                exclude=[u.seen for u in users] if exclude_seen else None,
                threshold=threshold,
            )
            found = [(s[: u.k], i[: u.k]) for s, i, u in zip(scores, indices, users, strict=True)]
        ids = self.catalog.ids
        return [
            [Candidate(id=ids[int(i)], score=float(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
            for row_s, row_i in found
        ]

    def scores(
        self,
        history: History | None = None,
        profile: Profile | str | None = None,
        *,
        user_vector: UserVector = "mean",
        history_length: int | None = None,
    ) -> npt.NDArray[np.float32]:
        """The retrieval score of every catalog item for one user (seen items included), in catalog order."""
        (user,) = self._prepare([RetrievalRequest(history, profile)], 1, user_vector, None, False, history_length)
        profiles = self._profile_vectors([user])
        vectors = self.item_vectors
        if user_vector == "maxsim" and user.recent.size:
            queries = self._maxsim_queries(user, profiles)
            return np.asarray((queries @ vectors.T).max(axis=0), dtype=np.float32)
        return np.asarray(vectors @ self._user_vector(user, profiles, user_vector), dtype=np.float32)

    # --------------------------------------------------------------------------------------------- internals

    def _prepare(
        self,
        requests: Sequence[RequestLike],
        k: int | Sequence[int],
        user_vector: str,
        threshold: float | None,
        exclude_seen: bool,
        history_length: int | None,
    ) -> list[_User]:
        if user_vector not in USER_VECTORS:
            raise ConfigError(f"unknown user_vector {user_vector!r}; use one of {', '.join(USER_VECTORS)}")
        if history_length is not None and (isinstance(history_length, bool) or history_length < 1):
            raise ConfigError(f"history_length must be a positive integer or None, got {history_length!r}")
        if threshold is not None and not np.isfinite(threshold):
            raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
        ks = [k] * len(requests) if isinstance(k, int) else list(k)
        if len(ks) != len(requests):
            raise InvalidKError(f"{len(ks)} values of k for {len(requests)} requests")
        n = len(self.catalog)
        users: list[_User] = []
        for number, raw in enumerate(requests):
            history, profile = _unpack(raw)
            where = f"request {number}: " if len(requests) > 1 else ""
            positions = np.asarray(
                self.catalog.indices_of(history.item_ids) if history is not None else [], dtype=np.int64
            )
            text = profile.text if isinstance(profile, Profile) else profile
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
            recent = positions[-history_length:] if history_length is not None else positions
            users.append(_User(recent=recent, seen=seen, profile=text, k=int(want)))
        return users

    def _profile_vectors(self, users: Sequence[_User]) -> dict[str, FloatMatrix]:
        texts = list(dict.fromkeys(u.profile for u in users if u.profile is not None))
        if not texts:
            return {}
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32)
        return dict(zip(texts, vectors, strict=True))

    def _user_vector(self, user: _User, profiles: dict[str, FloatMatrix], user_vector: UserVector) -> FloatMatrix:
        profile = profiles[user.profile] if user.profile is not None else None
        if user.recent.size == 0:
            assert profile is not None
            return profile
        single: UserVector = "mean" if user_vector == "maxsim" else user_vector
        vector = history_vector(self.item_vectors[user.recent], single, half_life=self.half_life)
        return vector if profile is None else blend(vector, profile, self.profile_weight)

    def _maxsim_queries(self, user: _User, profiles: dict[str, FloatMatrix]) -> FloatMatrix:
        """One query per history item (blended with the profile when there is one; left unnormalised on purpose
        so that the score is the weighted sum of the two cosines)."""
        queries = self.item_vectors[user.recent]
        if user.profile is None:
            return queries
        w = self.profile_weight
        return np.asarray((1.0 - w) * queries + w * profiles[user.profile][None, :], dtype=np.float32)

    def _search_maxsim(
        self,
        users: Sequence[_User],
        profiles: dict[str, FloatMatrix],
        threshold: float | None,
        exclude_seen: bool,
    ) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
        """Exact max-over-history top-k via the index.

        An item in a user's top-k by max score is in the top-k of the history item that gives it that max (any
        item beating it there also beats it overall), so searching each history item and re-scoring the union of
        their results is exact.
        """
        blocks = [
            self._maxsim_queries(u, profiles) if u.recent.size else profiles[u.profile][None, :]  # type: ignore[index]
            for u in users
        ]
        owners = np.repeat(np.arange(len(users)), [b.shape[0] for b in blocks])
        queries = np.concatenate(blocks, axis=0)
        _, indices = self._index.search(
            queries,
            max(u.k for u in users),
            exclude=[users[int(o)].seen for o in owners] if exclude_seen else None,
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


def _unpack(raw: RequestLike) -> tuple[History | None, Profile | str | None]:
    if isinstance(raw, RetrievalRequest):
        history, profile = raw.history, raw.profile
    elif isinstance(raw, History):
        history, profile = raw, None
    elif isinstance(raw, Profile):
        history, profile = None, raw
    elif isinstance(raw, tuple) and len(raw) == 2:
        history, profile = raw
    else:
        raise ConfigError(
            f"a retrieval request is a RetrievalRequest, History, Profile or (history, profile); got {raw!r}"
        )
    if history is not None and not isinstance(history, History):
        raise ConfigError(f"history must be a zsgen.types.History, got {type(history).__name__}")
    return history, profile
