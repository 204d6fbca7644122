"""The one way zsgen runs a coroutine from synchronous code: a long-lived event loop on a background thread.

Async HTTP clients (``openai.AsyncOpenAI`` over httpx) keep their connection pools bound to the event loop that first
used them. Running each synchronous call on a fresh ``asyncio.run`` loop therefore needs a fresh client per call,
whose connections are never reused and, unless closed on that very loop, never released. Instead every synchronous
entry point (``Reranker.rerank``, ``OpenAIChatBackend.chat``, the evaluation's LLM rankers) hands its coroutine to
this *portal*: one daemon thread running one loop for the life of the process. A backend's client is created on that
loop, serves every call made through it, and is closed on it.

Async callers on their own loop reach the same client through :func:`arun_on_portal`, which awaits the work on the
portal without blocking the caller's loop; code already running on the portal simply awaits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["arun_on_portal", "on_portal", "portal_loop", "run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_owner_pid = 0


def portal_loop() -> asyncio.AbstractEventLoop:
    """The process's portal loop, started on first use (a daemon thread: it never keeps the process alive).

    A forked child inherits the loop object but not the thread that runs it, so it starts its own.
    """
    global _loop, _owner_pid
    with _lock:
        if _loop is None or _loop.is_closed() or _owner_pid != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="zsgen-portal", daemon=True)
            thread.start()
            _loop, _owner_pid = loop, os.getpid()
        return _loop


def on_portal() -> bool:
    """Whether the calling code runs on the portal loop itself."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return running is _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the portal loop and block this thread until it is done.

    Works from plain code and from a thread that runs its own loop (a notebook): that loop is blocked for the call,
    as any synchronous call blocks it, but it is never re-entered. Calling this *from the portal loop* would wait on
    itself forever, so that raises instead. If the waiting thread is interrupted, the coroutine is cancelled.
    """
    if on_portal():
        coro.close()
        raise RuntimeError("run_sync called from the portal loop; await the coroutine instead")
    future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, portal_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


async def arun_on_portal(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the portal loop from any loop (directly when already on it)."""
    if on_portal():
        return await coro
    future = asyncio.run_coroutine_threadsafe(coro, portal_loop())
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise
