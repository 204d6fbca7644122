"""One way to release what an object opened: ``close`` / ``aclose``, ``with`` and ``async with``.

Backends, the reranker, the recommender and the remote encoder hold HTTP clients. Giving them all the same four
context-manager methods here, in terms of ``close`` and ``aclose``, keeps the contract (closing twice is harmless;
an object used again after ``close`` reopens what it needs, unless it says otherwise) written once.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """``with`` / ``async with`` support in terms of :meth:`close` and :meth:`aclose`.

    Subclasses that hold nothing to release (a local model lives as long as the object) inherit no-op closes; those
    that hold something override :meth:`close`, and :meth:`aclose` too when releasing needs the event loop.
    """

    def close(self) -> None:
        """Release what this object opened."""

    async def aclose(self) -> None:
        """:meth:`close` for async code."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
