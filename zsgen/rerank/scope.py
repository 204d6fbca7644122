"""Which user an LLM call is made for: a context variable the reranker sets around each user's rounds.

Backends know nothing of recommendation (one request in, one answer out). A batch file, though, must name every
request by user and round so that answers coming back in any order can be joined to the call that asked for them
(:mod:`zsgen.engines.batch`). The reranker therefore marks the task ranking a user with a :class:`CallScope`; a
backend that cares (the batch recorder and replayer) reads it, every other backend ignores it. A context variable,
not an argument, keeps the :class:`~zsgen.llm.ChatBackend` protocol unchanged for every third-party backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["CallScope", "call_scope", "current_scope"]


@dataclass
class CallScope:
    """One user's reranking: ``key`` names the user; :meth:`next_call` numbers the calls made for it, in order.

    A user's rounds run one after another (see :meth:`zsgen.rerank.Reranker.arerank`), so the call number is the same
    every time the same user is ranked with the same settings: it is the round of a single-call method.
    """

    key: str
    calls: int = field(default=0)

    def next_call(self) -> int:
        number = self.calls
        self.calls += 1
        return number


_SCOPE: ContextVar[CallScope | None] = ContextVar("zsgen_call_scope", default=None)


def current_scope() -> CallScope | None:
    """The scope of the user being ranked in this task, or None outside one."""
    return _SCOPE.get()


@contextmanager
def call_scope(key: str | None) -> Iterator[CallScope | None]:
    """Mark the calls made inside as made for user ``key`` (no scope when ``key`` is None)."""
    if key is None:
        yield None
        return
    scope = CallScope(key)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
