"""What the service does for a request, apart from HTTP: the loaded pipeline (:class:`ServiceState`), and a request
checked and handed to the library's own pipeline, :meth:`zsgen.recommender.Recommender.arecommend`.

1. Read the user (:meth:`ServiceState.prepare`): ids or titles resolved, k checked against the config's bounds and
   what this user can still be shown, the request's rerank options turned into a reranker from the
   :class:`~zsgen.serve.rerankers.RerankerPool`; every mistake is a 422 raised before any work.
2. Await the snapshot's recommender (with that reranker, :meth:`~zsgen.recommender.Recommender.with_reranker`) under
   the request's deadline (``timeout``): its first stage is the snapshot's wrapped in
   :class:`~zsgen.serve.batching.MicroBatched`, so concurrent requests share one first-stage pass; past the deadline
   the rerank is cancelled and the first-stage order returned flagged ``fallback`` with reason ``deadline``.

So the JSON equals ``zsgen recommend --json``'s: both are the same code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsgen.catalog import Catalog
from zsgen.errors import InvalidKError, ZsgenError
from zsgen.serve.auth import Token
from zsgen.serve.batching import MicroBatched, MicroBatcher
from zsgen.serve.config import ServeConfig
from zsgen.serve.errors import ApiError, from_zsgen
from zsgen.serve.live import LiveCatalog, Snapshot
from zsgen.serve.rerankers import RerankerPool
from zsgen.serve.schemas import RecommendRequest
from zsgen.types import History, Item, Profile, Ranking

if TYPE_CHECKING:
    from zsgen.interactions import Interactions
    from zsgen.recommender import Recommender
    from zsgen.rerank import Reranker

__all__ = ["Prepared", "ServiceState", "build_state"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A checked request, bound to the snapshot it was read against."""

    snapshot: Snapshot
    recommender: Recommender
    history: History
    profile: Profile | None
    k: int


@dataclass
class ServiceState:
    """Everything loaded once per process, kept on ``app.state.zsgen``.

    ``live.snapshot`` is the current catalog / first stage / recommender (swapped whole on each item edit);
    ``rerankers`` is ``None`` without a ``[rerank]`` table; ``token`` is the bearer token (hidden in ``repr``).
    """

    config: ServeConfig
    live: LiveCatalog
    rerankers: RerankerPool | None
    batcher: MicroBatcher
    token: Token
    interactions: Interactions | None = None
    started: float = field(default_factory=time.time)
    #: Item edits run here, one at a time (they are serialised by the catalog's lock anyway): queued edits wait in
    #: this executor's queue, not in threads of the loop's default executor, which first-stage retrieval needs.
    #: Made on the first edit (and again after :meth:`aclose`: a state may serve several app lifespans).
    _editor: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def catalog(self) -> Catalog:
        """The catalog requests are answered from now (runtime items included, retired ones still listed)."""
        return self.live.snapshot.catalog

    def prepare(self, body: RecommendRequest, *, where: str = "") -> Prepared:
        """Step 1 of the module docstring; ``where`` prefixes messages (``users[3]: `` in a batch)."""
        config = self.config
        snapshot = self.live.snapshot
        k = body.k if body.k is not None else config.k_default
        try:
            if not 1 <= k <= config.k_max:
                raise InvalidKError(f"k must be between 1 and {config.k_max}, got {k}")
            if len(body.history) > config.max_history:
                raise ApiError(
                    422, "history_too_long", f"history has {len(body.history)} items; at most {config.max_history}"
                )
            history, profile = snapshot.recommender.prepare(body.keys or None, body.profile, k)
            reranker = self._reranker(snapshot, body)
        except ZsgenError as exc:
            raise from_zsgen(exc, where=where) from None
        except ApiError as exc:
            exc.message = f"{where}{exc.message}"
            raise
        candidates = reranker.config.candidates if reranker is not None else k
        if reranker is not None and candidates > config.max_candidates:
            raise ApiError(
                422,
                "invalid_rerank_option",
                f"{where}candidates={candidates} is more than this service reranks ({config.max_candidates})",
            )
        return Prepared(snapshot, snapshot.recommender.with_reranker(reranker), history, profile, k)

    def _reranker(self, snapshot: Snapshot, body: RecommendRequest) -> Reranker | None:
        options = body.rerank.given() if body.rerank is not None else {}
        if self.rerankers is None or not body.use_llm:
            if options:
                why = "no reranker is configured" if self.rerankers is None else "use_llm is false"
                raise ApiError(422, "rerank_option_not_allowed", f"rerank options given, but {why}")
            return None
        return self.rerankers.get(snapshot.catalog, snapshot.version, options)

    async def recommend(self, prepared: Prepared, deadline: float) -> Ranking:
        """Step 2 of the module docstring for one prepared request; ``deadline`` is on the running loop's clock."""
        timeout = max(deadline - asyncio.get_running_loop().time(), 0.0)
        try:
            return await prepared.recommender.arecommend(
                prepared.history, profile=prepared.profile, k=prepared.k, timeout=timeout
            )
        except ZsgenError as exc:  # a template the reranker cannot render, say: the caller's mistake
            raise from_zsgen(exc) from None

    def editor(self) -> ThreadPoolExecutor:
        if self._editor is None:
            self._editor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zsgen-edit")
        return self._editor

    async def put_item(self, item: Item) -> bool:
        """:meth:`LiveCatalog.put` off the event loop, without starving requests of worker threads (``editor``)."""
        return await asyncio.get_running_loop().run_in_executor(self.editor(), self.live.put, item)

    async def retire_item(self, item_id: str) -> bool:
        """:meth:`LiveCatalog.retire`, as :meth:`put_item` runs it."""
        return await asyncio.get_running_loop().run_in_executor(self.editor(), self.live.retire, item_id)

    async def aclose(self) -> None:
        if self._editor is not None:
            self._editor.shutdown(wait=False, cancel_futures=True)
            self._editor = None
        await asyncio.to_thread(self.live.close)  # edits already queued finish first
        await self.batcher.aclose()
        if self.rerankers is not None:
            await self.rerankers.aclose()


def build_state(config: ServeConfig) -> ServiceState:
    """Load the dataset, the encoder, the first stage (with the store's edits replayed) and the reranker's backend.

    Blocking (models load): run it in a worker thread from async code."""
    from zsgen.embed import build_encoder
    from zsgen.loaders import load_dataset
    from zsgen.retrieval.choice import build_first_stage
    from zsgen.serve.items import ItemStore

    dataset = load_dataset(config.dataset.path, format=config.dataset.format, interactions=config.dataset.interactions)
    # Always cached: an item edit rebuilds the first stage, and only the edited item's text is then encoded.
    encoder = build_encoder(config.encoder, cache=config.embedding_cache)
    batcher = MicroBatcher(max_batch=config.max_batch, max_wait_ms=config.max_wait_ms)

    def build_stage(catalog: Any) -> Any:
        return build_first_stage(
            catalog,
            first_stage=config.first_stage,
            interactions=dataset.interactions,
            fusion=config.fusion,
            encoder=encoder,
            index=config.index,
        )

    if config.playground is not None and config.playground.enabled and config.playground.template_dir is not None:
        Path(config.playground.template_dir).mkdir(parents=True, exist_ok=True)  # where the playground saves
    store = ItemStore(config.store) if config.store else None
    live = LiveCatalog(dataset.catalog, build_stage, store, wrap=lambda stage: MicroBatched(stage, batcher))
    rerankers = (
        RerankerPool(config.rerank, live.snapshot.catalog, allowed=config.per_request)
        if config.rerank is not None
        else None
    )
    return ServiceState(
        config=config,
        live=live,
        rerankers=rerankers,
        batcher=batcher,
        token=Token.from_env(config.token_env),
        interactions=dataset.interactions,
    )
