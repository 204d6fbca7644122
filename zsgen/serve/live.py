"""The catalog the service answers from, editable while it serves: items put (added or updated) and retired.

Every edit builds a new :class:`Snapshot` (catalog, first stage, recommender) beside the one in use and then swaps
the reference, so a request in flight finishes on the snapshot it started with and never sees a half-applied edit.
Rebuilding the first stage is cheap enough for that: item texts come from the embedding cache, so only the edited
item is encoded, and refitting the fused stage on ML-100K takes about 0.36 s on a shared 2-core machine
(``python evaluation/perf/bench_serve.py --retrieval``; a numpy cosine index is a few times cheaper). Retired
items stay in the catalog (histories keep naming them) and are excluded by a
:class:`~zsgen.retrieval.retire.RetiredFilter`, without a rebuild.

Edits are serialised (one at a time); each is built first, then written to the :class:`~zsgen.serve.items.ItemStore`
when there is one, then swapped in, so an edit that fails (an item whose text is empty) changes nothing.

From async code, edits go through :meth:`LiveCatalog.aput` / :meth:`LiveCatalog.aretire`, which queue them on one
thread of the catalog's own. Handing each edit to the event loop's default executor instead let 16 concurrent PUTs
take every worker thread there, all but one waiting for the edit lock, and recommendations, whose work also needs a
thread, waited behind them (7.3 s instead of 11 ms). Queued edits now wait in that queue, holding no thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from zsgen.catalog import Catalog
from zsgen.errors import UnknownItemError
from zsgen.recommender import Recommender
from zsgen.retrieval.base import FirstStage
from zsgen.retrieval.retire import RetiredFilter
from zsgen.serve.items import Edit, ItemStore
from zsgen.types import Item

__all__ = ["LiveCatalog", "Snapshot", "apply_edits"]

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

#: Builds a first stage over a catalog (the config's choice, encoder and index); called once per item edit.
StageBuilder = Callable[[Catalog], FirstStage]
#: Wraps a snapshot's (retired-filtered) first stage for its recommender: the service's micro-batching.
StageWrapper = Callable[[FirstStage], FirstStage]


@dataclass(frozen=True)
class Snapshot:
    """One consistent state: the catalog, its first stage (retired items filtered), and the recommender over them
    that answers requests (its first stage is ``stage``, wrapped as the service wraps it: micro-batched).

    ``version`` counts edits; rerankers built for a catalog are cached per version."""

    catalog: Catalog
    stage: RetiredFilter
    recommender: Recommender
    version: int

    @property
    def retired(self) -> frozenset[str]:
        return self.stage.retired


def apply_edits(items: list[Item], retired: set[str], edits: Iterable[Edit]) -> None:
    """Apply ``edits`` in order to ``items`` (catalog order; a put replaces in place or appends) and ``retired``."""
    position = {item.id: number for number, item in enumerate(items)}
    for edit in edits:
        if edit.op == "put" and edit.item is not None:
            where = position.get(edit.item.id)
            if where is None:
                position[edit.item.id] = len(items)
                items.append(edit.item)
            else:
                items[where] = edit.item
            retired.discard(edit.item.id)
        elif edit.id is not None:
            if edit.id not in position:
                raise UnknownItemError(edit.id)
            retired.add(edit.id)


class LiveCatalog:
    """The base catalog plus the store's edits; :attr:`snapshot` is the state requests use (module docstring)."""

    def __init__(
        self,
        base: Catalog,
        build_stage: StageBuilder,
        store: ItemStore | None = None,
        *,
        wrap: StageWrapper | None = None,
    ) -> None:
        self._build_stage = build_stage
        self._wrap = wrap
        self.store = store
        self._lock = threading.Lock()
        # The one thread async edits run on (module docstring); it starts with the first edit.
        self._edits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zsgen-item-edits")
        items, retired = list(base), set[str]()
        if store is not None:
            edits = list(store.replay(known=base.ids))
            apply_edits(items, retired, edits)
            if edits:
                logger.info("replayed %d item edits from %s", len(edits), store.path)
        self._source = base.source
        self.snapshot = self._build(items, retired, version=0, stage=None)

    def _build(self, items: list[Item], retired: set[str], *, version: int, stage: FirstStage | None) -> Snapshot:
        catalog = Catalog(items, source=self._source)
        if stage is None:
            stage = self._build_stage(catalog)
        filtered = RetiredFilter(stage, catalog, retired)
        served = self._wrap(filtered) if self._wrap is not None else filtered
        return Snapshot(catalog, filtered, Recommender(catalog, retriever=served), version)

    async def aput(self, item: Item) -> bool:
        """:meth:`put` for async code, queued on the catalog's edit thread (module docstring)."""
        return await self._run_edit(self.put, item)

    async def aretire(self, item_id: str) -> bool:
        """:meth:`retire` for async code, queued on the catalog's edit thread (module docstring)."""
        return await self._run_edit(self.retire, item_id)

    async def _run_edit(self, edit: Callable[[_T], bool], arg: _T) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._edits, edit, arg)

    def close(self) -> None:
        """Stop the edit thread once the edits queued on it are done (the service calls it on shutdown)."""
        self._edits.shutdown(wait=True)

    def put(self, item: Item) -> bool:
        """Add ``item``, or replace the item with its id (and put it back if it was retired); True if it is new.

        Blocking: a new item joins a stage that can take items without refitting (``with_items``: the fused
        stage, its log-signal scores imputed from the item's text neighbours), else the first stage is rebuilt;
        call it from a worker thread in async code."""
        with self._lock:
            current = self.snapshot
            created = item.id not in current.catalog
            items, retired = current.catalog.items, set(current.retired)
            apply_edits(items, retired, [Edit(op="put", item=item)])
            stage: FirstStage | None = None
            with_items = getattr(current.stage.stage, "with_items", None)
            if created and callable(with_items):
                stage = with_items([item])  # a new stage object: readers of the current snapshot keep theirs
            new = self._build(items, retired, version=current.version + 1, stage=stage)
            if self.store is not None:
                self.store.append(Edit(op="put", item=item))
            self.snapshot = new
            return created

    def retire(self, item_id: str) -> bool:
        """Never recommend ``item_id`` again (until it is put back); False if it was retired already.

        Raises :class:`~zsgen.errors.UnknownItemError` (with suggestions) for an id the catalog does not have."""
        with self._lock:
            current = self.snapshot
            current.catalog.index_of(item_id)
            if item_id in current.retired:
                return False
            retired = {*current.retired, item_id}
            new = self._build(current.catalog.items, retired, version=current.version + 1, stage=current.stage.stage)
            if self.store is not None:
                self.store.append(Edit(op="retire", id=item_id))
            self.snapshot = new
            return True
