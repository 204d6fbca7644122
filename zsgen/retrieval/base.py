"""The first-stage interface: one request type and one protocol (see :mod:`zsgen.retrieval` for the design)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from zsgen.errors import ConfigError, InvalidKError
from zsgen.types import Candidate, History, Profile, Source


@dataclass(frozen=True)
class Request:
    """One user: a history (oldest first), a profile text, or both.

    ``history`` is a :class:`~zsgen.types.History` or a sequence of item keys. First stages read the keys as
    catalog ids; :class:`~zsgen.recommender.Recommender` also accepts titles and resolves them to ids before its
    first stage sees the request.
    """

    history: History | Sequence[str] | None = None
    profile: Profile | str | None = None

    def __post_init__(self) -> None:
        history, profile = self.history, self.profile
        if isinstance(history, str | bytes):
            raise ConfigError(f"history is a sequence of item ids or titles, not one string: use [{history!r}]")
        if history is not None and not isinstance(history, History | Sequence):
            raise ConfigError(
                f"history must be a zsgen.types.History or a list of item ids, got {type(history).__name__}"
            )
        if profile is not None and not isinstance(profile, Profile | str):
            raise ConfigError(f"profile must be a zsgen.types.Profile or a string, got {type(profile).__name__}")

    @property
    def item_keys(self) -> list[str]:
        """The history's item keys as given, oldest first (empty without a history)."""
        if self.history is None:
            return []
        if isinstance(self.history, History):
            return self.history.item_ids
        return [str(key) for key in self.history]

    @property
    def profile_text(self) -> str | None:
        """The profile as plain text (``None`` without one)."""
        return self.profile.text if isinstance(self.profile, Profile) else self.profile


@runtime_checkable
class FirstStage(Protocol):
    """What the recommender needs from a first stage: :class:`~zsgen.retrieval.cosine.Retriever` (cosine) or
    :class:`~zsgen.retrieval.fused.FusedRetriever` (tuned multi-signal fusion).

    Both return :class:`~zsgen.types.Candidate` lists, best first, the user's seen items left out; ``k`` may be given
    per request in a batch, and ``threshold`` keeps only candidates whose score (in the stage's own scale) reaches it.
    Everything else about how a stage scores is fixed when the stage is built. ``source`` labels its items in a
    :class:`~zsgen.types.Ranking` when nothing reranks them.
    """

    source: Source

    def retrieve(
        self,
        history: History | Sequence[str] | None = None,
        profile: Profile | str | None = None,
        *,
        k: int = 20,
        threshold: float | None = None,
    ) -> list[Candidate]: ...

    def retrieve_batch(
        self,
        requests: Sequence[Request],
        *,
        k: int | Sequence[int] = 20,
        threshold: float | None = None,
    ) -> list[list[Candidate]]: ...


async def aretrieve_batch(
    stage: FirstStage,
    requests: Sequence[Request],
    *,
    k: int | Sequence[int] = 20,
    threshold: float | None = None,
) -> list[list[Candidate]]:
    """``stage.retrieve_batch`` for async code, without blocking the event loop.

    A stage that has its own ``aretrieve_batch`` (the service's micro-batching wrapper,
    :class:`~zsgen.serve.batching.MicroBatched`) is awaited; any other runs in a worker thread, since scoring is a
    matrix operation (and may encode text) that would hold the loop for milliseconds. ``aretrieve_batch`` is not part
    of :class:`FirstStage`, so a third-party stage needs only the two synchronous methods."""
    native = getattr(stage, "aretrieve_batch", None)
    if native is not None:
        found: list[list[Candidate]] = await native(requests, k=k, threshold=threshold)
        return found
    return await asyncio.to_thread(stage.retrieve_batch, requests, k=k, threshold=threshold)


def available(stage: FirstStage, catalog_size: int, seen: Sequence[str]) -> int:
    """How many items a user who has seen ``seen`` can be recommended by ``stage``: the catalog less the items seen,
    and less those the stage never returns when it says so (``available``, as a
    :class:`~zsgen.retrieval.retire.RetiredFilter` does for retired items)."""
    own = getattr(stage, "available", None)
    if own is not None:
        return int(own(seen))
    return catalog_size - len(set(seen))


def check_requests(requests: Sequence[Request]) -> list[Request]:
    """The batch as a list, refusing anything that is not a :class:`Request` (one request type, no guessing)."""
    out = list(requests)
    for number, request in enumerate(out):
        if not isinstance(request, Request):
            raise ConfigError(
                f"request {number} is a {type(request).__name__}; a first stage takes "
                "zsgen.retrieval.Request(history=..., profile=...)"
            )
    return out


def per_request_k(k: int | Sequence[int], count: int) -> list[int]:
    """``k`` for each of ``count`` requests: one value for all, or one each (a length mismatch is an error)."""
    ks = [k] * count if isinstance(k, int) else list(k)
    if len(ks) != count:
        raise InvalidKError(f"{len(ks)} values of k for {count} requests")
    return ks
