"""The two backend contracts the reranking methods talk to, and the lifecycle every backend shares.

* :class:`ChatBackend` turns chat messages into one :class:`Completion` (OpenAI-compatible server, local generation).
* :class:`ScoringBackend` reads a model's next-token logits instead of generated text: label log-probabilities for
  listwise verbalizer scoring, yes-probabilities for pointwise scoring, and token counts (the local verbalizer).

Backends know nothing about recommendation. Model faults leave them only as :class:`zsgen.errors.BackendError` with a
machine-readable ``reason``, so the reranker can record why it fell back to cosine order without parsing messages;
configuration faults (labels the model cannot produce) are :class:`zsgen.errors.ConfigError`.

Backends own what they open (HTTP clients) and release it in ``close`` / ``aclose``; ``with`` and ``async with`` do
the same (:class:`zsgen.lifecycle.Closing`). Closing twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from zsgen._sync import run_sync
from zsgen.cache import ResponseCache
from zsgen.lifecycle import Closing
from zsgen.types import Usage

#: One chat turn, ``{"role": "system" | "user" | "assistant", "content": "..."}``.
ChatMessage = dict[str, str]

#: Every value :attr:`zsgen.errors.BackendError.reason` can take, in one place for callers that switch on it.
#: ``http_<status>`` stands for any other HTTP error status (``http_400``, ``http_422``...).
BACKEND_ERROR_REASONS = (
    "timeout",
    "rate_limited",
    "server_error",
    "http_<status>",
    "connection",
    "empty",
    "truncated",
    "refusal",
    "malformed_response",
    "schema_rejected",
    "no_logprobs",
)


class Completion(BaseModel):
    """One answer of a chat model.

    ``finish_reason == "length"`` means the answer hit the token cap: it is still returned (the caller may be able to
    salvage a partial ranking); only an answer that is cut off *and* empty raises ``BackendError("truncated")``.
    ``cached`` is true when the answer came from the response cache instead of the model. ``unconstrained`` is true
    when a structured-output constraint was asked for but the server rejected it and the answer was generated
    without one (see ``OpenAIChatBackend(on_schema_rejected="unconstrained")``).
    """

    text: str
    finish_reason: str | None
    usage: Usage
    model: str
    cached: bool = False
    unconstrained: bool = False


@runtime_checkable
class ChatBackend(Protocol):
    """A chat model that answers greedily (temperature 0): reranking must be repeatable.

    ``json_schema`` is the shape the answer must have and ``choices``, when given, the exact strings a one-label answer
    may be. Both are requests a backend honours where its engine can constrain decoding (a structured-output server)
    and may ignore otherwise: callers validate the text either way.
    """

    name: str

    @property
    def model(self) -> str: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion: ...

    def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion: ...


@runtime_checkable
class ScoringBackend(Protocol):
    """A model read through its next-token logits: scores that cannot fail to parse.

    ``check_labels`` raises :class:`zsgen.errors.LabelTokenError` (a ``ConfigError``) when a label is not a single,
    distinct token right after ``messages``: the reranker calls it once when the backend is built, before any user.

    A backend may also offer ``alabel_logprobs`` and ``ayes_probabilities`` coroutines (the HTTP one does); the
    scoring methods await those where present and otherwise run the synchronous methods in a worker thread.
    """

    name: str

    @property
    def model(self) -> str: ...

    def count_tokens(self, messages: list[ChatMessage]) -> int: ...

    def check_labels(self, messages: list[ChatMessage], labels: Sequence[str]) -> None: ...

    def label_logprobs(self, messages: list[ChatMessage], labels: Sequence[str]) -> list[float]: ...

    def yes_probabilities(
        self, conversations: list[list[ChatMessage]], *, yes: str = "Yes", no: str = "No"
    ) -> list[float]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class AsyncChatBackend(Closing):
    """The sync/async pair written once: a chat backend implements :meth:`achat`, and :meth:`chat` runs it on zsgen's
    portal loop (:mod:`zsgen._sync`), so every synchronous call shares the loop, and the HTTP client, the async ones
    use. Like httpx's clients, subclasses differ only in how they send (a server, a local model, a batch file)."""

    name: str

    @property
    def model(self) -> str:
        raise NotImplementedError

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        raise NotImplementedError

    def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        """:meth:`achat`, from synchronous code (blocks this thread; never call it on the portal loop itself)."""
        return run_sync(self.achat(messages, max_tokens=max_tokens, json_schema=json_schema, choices=choices))


#: Any backend a reranking method can be given.
Backend = ChatBackend | ScoringBackend


def completion_from_cache(cache: ResponseCache | None, key: str) -> Completion | None:
    """A cached completion marked ``cached=True``, or None on a miss or an entry that no longer validates."""
    if cache is None:
        return None
    payload = cache.get(key)
    if payload is None:
        return None
    try:
        completion = Completion.model_validate(payload)
    except ValidationError:
        return None
    return completion.model_copy(update={"cached": True})


def store_completion(cache: ResponseCache | None, key: str, completion: Completion) -> None:
    if cache is not None:
        cache.put(key, completion.model_dump(mode="json", exclude={"cached"}))
