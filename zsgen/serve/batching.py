"""Micro-batching: concurrent requests share one first-stage pass instead of one pass each.

Retrieval is a matrix operation whose cost grows far slower than the number of users in it (on ML-100K the fused first
stage scores 64 users in one call 8.4x faster than in 64 calls, on a shared, loaded 2-core machine:
``python evaluation/perf/bench_serve.py --retrieval``), so requests that arrive together should be scored together.
:class:`MicroBatcher` queues each request; a batch is cut when ``max_batch`` requests wait or ``max_wait_ms`` has
passed since the first of them, and runs as one ``retrieve_batch`` call in a worker thread, so the event loop keeps
accepting requests (and awaiting LLM calls) while it runs. One batch runs at a time: the next one fills meanwhile,
which is what makes batches grow under load.

A request that makes the whole batch fail (the first stage refuses it) must not fail the others: the batch is then
retried one request at a time and each gets its own result or error.

Batches run on a thread of the batcher's own, not on the event loop's default executor, so that nothing else a
service hands to worker threads (item edits refitting the first stage, playground renders) can queue ahead of a
recommendation's retrieval.

:class:`MicroBatched` is the batcher as a first stage wrapping another (the way
:class:`~zsgen.retrieval.retire.RetiredFilter` wraps one): a :class:`~zsgen.recommender.Recommender` over it awaits
its ``aretrieve_batch`` (:func:`zsgen.retrieval.base.aretrieve_batch`), so the service runs the library's own pipeline
and only the first-stage pass is shared between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from zsgen.retrieval.base import FirstStage, Request, check_requests, per_request_k
from zsgen.types import Candidate, History, Profile, Source

__all__ = ["MicroBatched", "MicroBatcher"]

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    stage: FirstStage
    request: Request
    k: int
    future: asyncio.Future[list[Candidate]] = field(repr=False)


class MicroBatcher:
    """Collects ``retrieve`` calls made on one event loop into ``retrieve_batch`` calls (module docstring).

    ``max_batch=1`` turns batching off (every request is its own pass), for comparison."""

    def __init__(self, *, max_batch: int = 32, max_wait_ms: float = 2.0, threshold: float | None = None) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.threshold = threshold
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        #: Batches run and requests answered so far, and the largest batch (for the log and the load benchmark).
        self.batches = 0
        self.batched = 0
        self.largest = 0

    async def retrieve(self, stage: FirstStage, request: Request, k: int) -> list[Candidate]:
        """The ``k`` best candidates for ``request`` from ``stage``, computed in a batch with its neighbours.

        The batcher serves the event loop it was first used on (the service's); a call from another loop (a
        synchronous caller on zsgen's portal loop) gets its own pass in a worker thread."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
            found = await asyncio.to_thread(stage.retrieve_batch, [request], k=[k], threshold=self.threshold)
            return found[0]
        if self._queue is None or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue), name="zsgen-micro-batcher")
        future: asyncio.Future[list[Candidate]] = loop.create_future()
        await self._queue.put(_Pending(stage, request, k, future))
        return await future

    async def aclose(self) -> None:
        """Stop the worker (requests still queued get a cancellation)."""
        if self.batches:
            logger.info(
                "micro-batching: %d requests in %d first-stage passes (mean %.1f, largest %d)",
                self.batched,
                self.batches,
                self.batched / self.batches,
                self.largest,
            )
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._loop = None

    async def _in_thread(self, group: Sequence[_Pending]) -> list[list[Candidate]]:
        """One first-stage pass on the batcher's own thread (module docstring)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zsgen-first-stage")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._retrieve, group)

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            cutoff = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = cutoff - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]  # a caller that went away needs no answer
            if live:
                self.batches += 1
                self.batched += len(live)
                self.largest = max(self.largest, len(live))
                await self._answer(live)

    async def _answer(self, batch: Sequence[_Pending]) -> None:
        groups: dict[int, list[_Pending]] = {}
        for pending in batch:  # an item edit between two requests gives them different stages
            groups.setdefault(id(pending.stage), []).append(pending)
        for group in groups.values():
            try:
                found = await self._in_thread(group)
            except Exception as exc:
                if len(group) == 1:
                    _set_error(group[0], exc)
                    continue
                for pending in group:  # one bad request must not fail its neighbours
                    try:
                        one = await self._in_thread([pending])
                    except Exception as exc:
                        _set_error(pending, exc)
                    else:
                        _set_result(pending, one[0])
                continue
            for pending, candidates in zip(group, found, strict=True):
                _set_result(pending, candidates)

    def _retrieve(self, group: Sequence[_Pending]) -> list[list[Candidate]]:
        stage = group[0].stage
        return stage.retrieve_batch([p.request for p in group], k=[p.k for p in group], threshold=self.threshold)


def _set_result(pending: _Pending, candidates: list[Candidate]) -> None:
    if not pending.future.done():
        pending.future.set_result(candidates)


def _set_error(pending: _Pending, exc: Exception) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)


class MicroBatched:
    """``stage`` whose async retrievals go through ``batcher`` (a :class:`~zsgen.retrieval.base.FirstStage`; module
    docstring). The synchronous methods call ``stage`` directly; ``available`` and ``weights_origin`` are the wrapped
    stage's, so a recommender over this wrapper pools and labels exactly as over ``stage``."""

    def __init__(self, stage: FirstStage, batcher: MicroBatcher) -> None:
        self.stage = stage
        self.batcher = batcher
        self.source: Source = stage.source

    @property
    def weights_origin(self) -> str | None:
        origin = getattr(self.stage, "weights_origin", None)
        return None if origin is None else str(origin)

    def __getattr__(self, name: str) -> Any:
        """``available`` (what a user can still be recommended) is the wrapped stage's, when it has one."""
        if name == "available":
            return getattr(self.stage, "available")  # noqa: B009 (not every FirstStage has it)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def retrieve(
        self,
        history: History | Sequence[str] | None = None,
        profile: Profile | str | None = None,
        *,
        k: int = 20,
        threshold: float | None = None,
    ) -> list[Candidate]:
        return self.stage.retrieve(history, profile, k=k, threshold=threshold)

    def retrieve_batch(
        self, requests: Sequence[Request], *, k: int | Sequence[int] = 20, threshold: float | None = None
    ) -> list[list[Candidate]]:
        return self.stage.retrieve_batch(requests, k=k, threshold=threshold)

    async def aretrieve_batch(
        self, requests: Sequence[Request], *, k: int | Sequence[int] = 20, threshold: float | None = None
    ) -> list[list[Candidate]]:
        """Each request queued to the batcher, so that concurrent callers share one pass of the wrapped stage."""
        batch = check_requests(requests)
        ks = per_request_k(k, len(batch))
        if threshold != self.batcher.threshold:  # a pass serves one threshold; a different one gets its own pass
            return await asyncio.to_thread(self.stage.retrieve_batch, batch, k=ks, threshold=threshold)
        return list(
            await asyncio.gather(*(self.batcher.retrieve(self.stage, r, n) for r, n in zip(batch, ks, strict=True)))
        )
