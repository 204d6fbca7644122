"""Any OpenAI-compatible chat server as a reranking backend (OpenAI, vLLM, SGLang, llama.cpp, ``transformers serve``).

Keys, client construction and the one retry layer are shared with the embeddings client and live in
:mod:`zsgen.llm.openai_client`; whatever still fails after retries leaves as ``BackendError`` with a ``reason`` the
reranker records when it falls back to cosine order.

The backend owns one ``AsyncOpenAI`` client. Its connections are bound to the event loop that uses them, so the
client lives on zsgen's portal loop (:mod:`zsgen._sync`): the synchronous ``chat`` submits to that loop, and
``achat`` awaited on any other loop hops to it. Every call, sync or async, from any thread, thus shares one
connection pool, and ``close`` / ``aclose`` (or ``with`` / ``async with``) release it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import openai

from zsgen._sync import arun_on_portal, run_sync
from zsgen.cache import ResponseCache, request_key
from zsgen.errors import BackendError, ConfigError
from zsgen.llm.base import AsyncChatBackend, ChatMessage, Completion, completion_from_cache, store_completion
from zsgen.llm.chat_request import ChatRequest, StructuredMode, read_completion, response_format_for
from zsgen.llm.openai_client import (
    PLACEHOLDER_API_KEY,
    RetryPolicy,
    async_client,
    failure_reason,
    is_transient,
    parse_retry_after,
    resolve_api_key,
)
from zsgen.redact import redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What the backend does once a server rejected a structured-output constraint (see ``OpenAIChatBackend``).
RejectedSchemaPolicy = Literal["fallback", "unconstrained"]

__all__ = [
    "PLACEHOLDER_API_KEY",
    "OpenAIChatBackend",
    "RejectedSchemaPolicy",
    "StructuredMode",
    "failure_reason",
    "is_transient",
    "parse_retry_after",
    "response_format_for",
]


#: Where the SDK sends requests when no ``base_url`` is given.
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def cache_base_url(base_url: str | None) -> str:
    """The server part of a response-cache key: scheme, host, port and path, without credentials or query.

    Two servers may serve different weights under one model id (two vLLMs both answering for "qwen"), so the server
    belongs in the key; a password in ``http://user:pass@host/v1`` must not, since keys identify entries on disk.
    """
    parts = urlsplit(base_url or DEFAULT_BASE_URL)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


#: Words by which an HTTP 400 answer to a constrained request says the constraint, not the request, was the problem
#: (vLLM: "Unimplemented keys", "grammar"; OpenAI: "Invalid schema for response_format"; others: "json_schema").
_SCHEMA_COMPLAINT = re.compile(
    r"schema|response_format|structured|grammar|unimplemented|guided|choice|enum|minitems|maxitems", re.IGNORECASE
)


def constraint_shape(fields: dict[str, Any]) -> str:
    """A constraint with its label values left out: the candidate labels change per user, the kind of schema a server
    cannot handle does not, so a rejection is remembered for the shape."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (len(v) if k in ("enum", "choice") and isinstance(v, list) else strip(v)) for k, v in value.items()
            }
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(fields), sort_keys=True)


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own explanation of an error status, on one line and short enough for a log."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        said = inner.get("message", inner) if isinstance(inner, dict) else inner
    else:
        said = body if body is not None else exc.message
    return " ".join(str(said).split())[:300]


class OpenAIChatBackend(AsyncChatBackend):
    """Greedy chat completions from an OpenAI-compatible server, with bounded concurrency, retries and caching.

    The API key comes from ``api_key`` or ``OPENAI_API_KEY``; it is never logged, cached or shown in ``repr``.
    Without ``model`` the first id of ``GET /v1/models`` is used (looked up once). A completion cut off at
    ``max_tokens`` (``finish_reason == "length"``) is returned, not raised: the caller may still parse it.

    Constraints: with ``structured`` set, a ``json_schema`` passed to a call is sent as ``response_format``; with
    ``structured_choice``, a call's ``choices`` are sent as vLLM's ``structured_outputs: {"choice": [...]}`` instead
    (the tighter form for one-label answers). Both are part of the response-cache key. A server that answers HTTP 400
    about the constraint has rejected its *shape*, not this one request: the backend logs that once, remembers the
    shape and does not send it again. ``on_schema_rejected="fallback"`` then fails each such call at once with reason
    ``schema_rejected`` (the reranker's flagged fallback); ``"unconstrained"`` sends the request without the constraint
    and marks the completion ``unconstrained``.
    """

    name = "openai"
    #: Seconds after a failed model lookup during which new requests fail with it instead of asking again.
    discovery_retry_after = 5.0

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 8,
        structured: StructuredMode = "none",
        structured_choice: bool = False,
        on_schema_rejected: RejectedSchemaPolicy = "fallback",
        cache: ResponseCache | None = None,
        extra_body: dict[str, Any] | None = None,
        retry_after_cap: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if structured not in ("json_schema", "json_object", "none"):
            raise ConfigError(f"structured must be 'json_schema', 'json_object' or 'none', got {structured!r}")
        if on_schema_rejected not in ("fallback", "unconstrained"):
            raise ConfigError(f"on_schema_rejected must be 'fallback' or 'unconstrained', got {on_schema_rejected!r}")
        self.retry = RetryPolicy(
            max_retries=max_retries,
            retry_after_cap=retry_after_cap,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self.base_url = base_url
        self._cache_base_url = cache_base_url(base_url)
        self._api_key = resolve_api_key(api_key, base_url)
        self._model = model
        self.timeout = timeout
        self.concurrency = concurrency
        self.structured: StructuredMode = structured
        self.structured_choice = structured_choice
        self.on_schema_rejected: RejectedSchemaPolicy = on_schema_rejected
        # Constraint shapes this server rejected, with its message: asked again, it would reject them again.
        self._rejected: dict[str, str] = {}
        self._accepted: set[str] = set()  # shapes the server answered: no need to probe them one at a time
        self._probes: dict[str, asyncio.Lock] = {}  # portal loop only
        self.cache = cache
        self.extra_body = dict(extra_body) if extra_body else None
        # Created on the portal loop on first use, closed there by aclose; only touched from that loop.
        self._client: openai.AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._discovery: asyncio.Lock | None = None
        # The last failed model lookup, when it ended and how many have failed: requests that waited for a lookup,
        # or come within discovery_retry_after seconds of its failure, share it rather than look again (portal loop).
        self._discovery_failure: BackendError | None = None
        self._discovery_failed_at = 0.0
        self._discovery_failures = 0
        self._closing = threading.Lock()

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    # -- the client, on the portal loop ----------------------------------------------------------------------------

    def _open(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        """The client and concurrency gate (portal loop only), created on first use and again after a close."""
        if self._client is None or self._semaphore is None:
            self._client = async_client(self.base_url, self._api_key, self.timeout)
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._discovery = asyncio.Lock()
        return self._client, self._semaphore

    async def _close_on_portal(self) -> None:
        client, self._client, self._semaphore = self._client, None, None
        if client is not None:
            await client.close()

    def close(self) -> None:
        """Close the HTTP client and its connections; a later call opens a new one."""
        with self._closing:
            if self._client is not None:
                run_sync(self._close_on_portal())

    async def aclose(self) -> None:
        await arun_on_portal(self._close_on_portal())

    def _sync(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return run_sync(make())

    async def _portal(self, coro: Coroutine[Any, Any, T]) -> T:
        return await arun_on_portal(coro)

    # -- model ---------------------------------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model id; discovered from the server on first use when not given (blocking, once)."""
        if self._model is None:
            return self._sync(self.aresolve_model)
        return self._model

    async def aresolve_model(self) -> str:
        """The model id, asking ``GET /v1/models`` once if it was not given."""
        if self._model is not None:
            return self._model
        return await self._portal(self._resolve_on_portal())

    async def _resolve_on_portal(self) -> str:
        """Look the model up once; a failed lookup is shared by the requests that waited for it or come just after.

        Lookups are serialised (one ``GET /v1/models``, not one per concurrent request). Without sharing the failure,
        every waiting request would run its own lookup, with all its retries, one after another: a batch of 10,000
        users against a server whose model list is down took hours to fall back instead of one lookup's time. The
        users of a batch enter a few at a time (``Reranker.rerank_many``), so requests arriving within
        :attr:`discovery_retry_after` seconds of the failure share it too; after that a request asks again, so a
        server that recovers is used.
        """
        self._open()
        assert self._discovery is not None
        failures_seen = self._discovery_failures
        async with self._discovery:
            found = self._model
            if found is not None:
                return found
            failed = self._discovery_failure
            if failed is not None and (
                self._discovery_failures != failures_seen
                or time.monotonic() - self._discovery_failed_at < self.discovery_retry_after
            ):
                raise BackendError(str(failed), reason=failed.reason, attempts=failed.attempts)
            try:
                found = await self.retry.acall("GET /v1/models", self._discover, self._error("GET /v1/models"))
            except BackendError as exc:
                self._discovery_failure = exc
                self._discovery_failed_at = time.monotonic()
                self._discovery_failures += 1
                raise
            log.info("using model %r served at %s", found, self._shown_url)
            self._model = found
            return found

    async def _discover(self) -> str:
        """The first model id ``GET /v1/models`` lists.

        The body is read as bytes and checked here, as chat answers are: the SDK's page model let a malformed list
        escape as JSONDecodeError, AttributeError or RecursionError rather than a BackendError with a reason.
        """
        client, _ = self._open()
        raw = await client.get("/models", cast_to=bytes)
        try:
            page = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the decoder's stack
            raise BackendError(
                f"{self._shown_url}: /v1/models answer is not JSON ({type(exc).__name__}): {raw[:80]!r}",
                reason="malformed_response",
            ) from exc
        entries = page.get("data") if isinstance(page, dict) else None
        if not isinstance(entries, list):
            raise BackendError(f"{self._shown_url}: /v1/models answer has no 'data' list", reason="malformed_response")
        ids = [i for i in (e.get("id") for e in entries if isinstance(e, dict)) if isinstance(i, str) and i]
        if not ids:
            raise BackendError(f"{self._shown_url}: /v1/models lists no model; pass model=...", reason="empty")
        return ids[0]

    # -- chat ------------------------------------------------------------------------------------------------------

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be positive, got {max_tokens}")
        return await self._portal(self._chat_on_portal(messages, max_tokens, json_schema, choices))

    @property
    def chat_request(self) -> ChatRequest:
        """How this server is asked (:class:`~zsgen.llm.chat_request.ChatRequest`): the one body builder that batch
        export and Ray's HTTP stage use too."""
        return ChatRequest(self.structured, self.structured_choice, self.extra_body)

    def constraint_fields(
        self, json_schema: dict[str, Any] | None, choices: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The request-body fields that ask this server to constrain an answer (empty when nothing is asked)."""
        return self.chat_request.constraint(json_schema, choices)

    async def _chat_on_portal(
        self,
        messages: list[ChatMessage],
        max_tokens: int,
        json_schema: dict[str, Any] | None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        model = await self.aresolve_model()
        constraint = self.constraint_fields(json_schema, choices)
        if not constraint:
            return await self._complete(model, messages, max_tokens, {})
        shape = constraint_shape(constraint)
        if shape not in self._accepted and shape not in self._rejected:
            # The first call of a new shape goes alone: if the server rejects it, the calls waiting here learn that
            # instead of each sending the same doomed request.
            async with self._probes.setdefault(shape, asyncio.Lock()):
                if shape not in self._accepted and shape not in self._rejected:
                    return await self._try_constrained(model, messages, max_tokens, constraint, shape)
        if shape not in self._rejected:
            return await self._try_constrained(model, messages, max_tokens, constraint, shape)
        return await self._after_rejection(model, messages, max_tokens, shape)

    async def _try_constrained(
        self, model: str, messages: list[ChatMessage], max_tokens: int, constraint: dict[str, Any], shape: str
    ) -> Completion:
        try:
            completion = await self._complete(model, messages, max_tokens, constraint)
        except BackendError as exc:
            if exc.reason != "schema_rejected":
                raise
            self._note_rejection(shape, str(exc))
            return await self._after_rejection(model, messages, max_tokens, shape)
        self._accepted.add(shape)
        return completion

    async def _after_rejection(
        self, model: str, messages: list[ChatMessage], max_tokens: int, shape: str
    ) -> Completion:
        if self.on_schema_rejected == "fallback":
            raise BackendError(
                f"this structured-output constraint was rejected earlier: {self._rejected[shape]}",
                reason="schema_rejected",
            )
        completion = await self._complete(model, messages, max_tokens, {})
        return completion.model_copy(update={"unconstrained": True})

    def _note_rejection(self, shape: str, message: str) -> None:
        """Remember a rejected constraint shape, and say so once (concurrent calls may all meet the first rejection)."""
        if shape in self._rejected:
            return
        self._rejected[shape] = message
        then = (
            "every call that would send it now falls back (reason schema_rejected)"
            if self.on_schema_rejected == "fallback"
            else "calls that would send it are now made without a constraint and their answers marked unconstrained"
        )
        log.error("%s; it will not be sent again to this server: %s", message, then)

    async def _complete(
        self, model: str, messages: list[ChatMessage], max_tokens: int, constraint: dict[str, Any]
    ) -> Completion:
        """One completion through the response cache and the retry layer, with ``constraint`` in the body."""
        key = request_key(
            backend=self.name,
            base_url=self._cache_base_url,
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            response_format=constraint.get("response_format"),
            extra_body=self._body_extras(constraint) or None,
        )
        hit = completion_from_cache(self.cache, key)
        if hit is not None:
            return hit

        async def attempt() -> bytes:
            return await self._create(model, messages, max_tokens, constraint)

        errors = self._error("chat completion", constrained=bool(constraint))
        response = await self.retry.acall("chat completion", attempt, errors)
        completion = self._read(response, model)
        store_completion(self.cache, key, completion)
        return completion

    def _body_extras(self, constraint: dict[str, Any]) -> dict[str, Any]:
        return self.chat_request.extras(constraint)

    async def achat_many(
        self,
        conversations: Sequence[list[ChatMessage]],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Completion | BackendError]:
        """One completion or BackendError per conversation, in order; at most ``concurrency`` requests in flight."""

        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be positive, got {max_tokens}")

        async def one(messages: list[ChatMessage]) -> Completion | BackendError:
            try:
                return await self._chat_on_portal(messages, max_tokens, json_schema)
            except BackendError as exc:
                return exc

        async def all_on_portal() -> list[Completion | BackendError]:
            return list(await asyncio.gather(*(one(m) for m in conversations)))

        return await self._portal(all_on_portal())  # one hop to the portal loop for the whole batch

    def chat_many(
        self,
        conversations: Sequence[list[ChatMessage]],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Completion | BackendError]:
        return self._sync(lambda: self.achat_many(conversations, max_tokens=max_tokens, json_schema=json_schema))

    async def _create(
        self,
        model: str,
        messages: list[ChatMessage],
        max_tokens: int,
        constraint: dict[str, Any],
    ) -> bytes:
        """POST the request and return the raw body.

        The SDK still does transport, auth and status errors; its typed request transform and response models are
        skipped on purpose. They cost ~2 ms of CPU per request, which caps throughput at high concurrency, and
        reading the JSON ourselves lets every malformed answer map to one precise reason.
        """
        client, semaphore = self._open()
        body = self.chat_request.body(model, messages, max_tokens, constraint)
        async with semaphore:
            raw = await client.post("/chat/completions", body=body, cast_to=bytes)
        return raw

    def _read(self, raw: bytes, model: str) -> Completion:
        """Turn a server answer into a Completion, or say precisely why it cannot be used."""
        return read_completion(raw, model, self._shown_url)

    def _error(self, what: str, *, constrained: bool = False) -> Callable[[openai.OpenAIError, int], BackendError]:
        """How a fault that outlived the retries is reported (the key never appears: the SDK omits it).

        For a ``constrained`` request, an HTTP 400 whose message is about the constraint becomes ``schema_rejected``
        with the server's words, so the caller can stop sending that constraint."""

        def to_backend_error(exc: openai.OpenAIError, attempts: int) -> BackendError:
            where = self._shown_url or "api.openai.com"
            if constrained and isinstance(exc, openai.APIStatusError) and exc.status_code == 400:
                said = _server_message(exc)
                if _SCHEMA_COMPLAINT.search(said):
                    return BackendError(
                        f"{where} rejected the structured-output constraint (HTTP 400: {said})",
                        reason="schema_rejected",
                        attempts=attempts,
                    )
            reason = failure_reason(exc)
            return BackendError(
                f"{what} at {where} failed after {attempts} attempt(s): {reason} ({type(exc).__name__})",
                reason=reason,
                attempts=attempts,
            )

        return to_backend_error

    @property
    def _shown_url(self) -> str | None:
        """The base URL as messages and logs show it: a password or key in it masked (zsgen.redact)."""
        return redact_url(self.base_url)

    def __repr__(self) -> str:
        return (
            f"OpenAIChatBackend(base_url={self._shown_url!r}, model={self._model!r}, structured={self.structured!r}, "
            f"concurrency={self.concurrency}, max_retries={self.max_retries})"
        )
