"""Any OpenAI-compatible chat server as a reranking backend (OpenAI, vLLM, SGLang, llama.cpp, ``transformers serve``).

There is exactly one retry layer, here: the SDK client is built with ``max_retries=0`` and tenacity retries only
faults that can pass by themselves (connection drops, timeouts, 409, 429, 5xx), waiting as long as the server's
``Retry-After`` asks (capped) or an exponential, jittered backoff otherwise. Requests that are wrong stay wrong, so
400/401/403/404/422 are never retried. Whatever still fails leaves as ``BackendError`` with a ``reason`` the
recommender records when it falls back to cosine order.

The SDK's async client holds connections bound to the event loop that created them, so one client is kept per loop;
the synchronous ``chat`` runs its own short-lived loop (in a worker thread if this thread already runs one).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from zsgen.cache import ResponseCache, request_key
from zsgen.errors import BackendError, ConfigError
from zsgen.llm.base import ChatMessage, Completion, completion_from_cache, store_completion
from zsgen.types import Usage

log = logging.getLogger(__name__)

T = TypeVar("T")

StructuredMode = Literal["json_schema", "json_object", "none"]

#: Sent as the key to servers that need none (a local vLLM or ``transformers serve``); the SDK insists on one.
PLACEHOLDER_API_KEY = "sk-no-key-required"

_TRANSIENT_STATUS = frozenset({408, 409, 429})


def parse_retry_after(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).

    Returns None when there is no usable header, so the caller falls back to its own backoff.
    """
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(value, 0.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        value = when.timestamp() - (time.time() if now is None else now)
    return max(value, 0.0) if math.isfinite(value) else None


def is_transient(exc: BaseException) -> bool:
    """Faults worth another try: the same request may succeed later."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500
    return False


def failure_reason(exc: BaseException) -> str:
    """The ``BackendError.reason`` for an exception the SDK raised."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return "rate_limited"
        if exc.status_code >= 500:
            return "server_error"
        return f"http_{exc.status_code}"
    return "malformed_response"


def response_format_for(mode: StructuredMode, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``response_format`` body for a structured-output mode, or None to send none."""
    if schema is None or mode == "none":
        return None
    if mode == "json_object":
        return {"type": "json_object"}
    title = str(schema.get("title") or "response")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _count(value: Any) -> int:
    """A token count from a usage block; servers that omit or garble it count as 0 rather than failing."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass
class _LoopState:
    """What must not cross event loops: the HTTP client and the concurrency gate."""

    client: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore
    discovery: asyncio.Lock = field(default_factory=asyncio.Lock)


class OpenAIChatBackend:
    """Greedy chat completions from an OpenAI-compatible server, with bounded concurrency, retries and caching.

    The API key comes from ``api_key`` or ``OPENAI_API_KEY``; it is never logged, cached or shown in ``repr``.
    Without ``model`` the first id of ``GET /v1/models`` is used (looked up once). A completion cut off at
    ``max_tokens`` (``finish_reason == "length"``) is returned, not raised: the caller may still parse it.
    """

    name = "openai"

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
        cache: ResponseCache | None = None,
        extra_body: dict[str, Any] | None = None,
        retry_after_cap: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if structured not in ("json_schema", "json_object", "none"):
            raise ConfigError(f"structured must be 'json_schema', 'json_object' or 'none', got {structured!r}")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if base_url is None:
                raise ConfigError(
                    "no API key: pass api_key or set OPENAI_API_KEY (or give the base_url of a local server)"
                )
            key = PLACEHOLDER_API_KEY
        self.base_url = base_url
        self._api_key = key
        self._model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.structured: StructuredMode = structured
        self.cache = cache
        self.extra_body = dict(extra_body) if extra_body else None
        self.retry_after_cap = retry_after_cap
        self._backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial)
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._states_lock = threading.Lock()

    # -- model -----------------------------------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model id; discovered from the server on first use when not given (blocking, once)."""
        if self._model is None:
            return self._run_sync(self.aresolve_model)
        return self._model

    async def aresolve_model(self) -> str:
        """The model id, asking ``GET /v1/models`` once if it was not given."""
        if self._model is not None:
            return self._model
        state = self._state()
        async with state.discovery:
            found = self._model
            if found is None:
                found = await self._with_retries("GET /v1/models", self._discover)
                log.info("using model %r served at %s", found, self.base_url)
                self._model = found
            return found

    async def _discover(self) -> str:
        page = await self._state().client.models.list()
        entries: list[Any] = getattr(page, "data", None) or []
        ids = [i for i in (getattr(entry, "id", None) for entry in entries) if isinstance(i, str) and i]
        if not ids:
            raise BackendError(f"{self.base_url}: /v1/models lists no model; pass model=...", reason="empty")
        return ids[0]

    # -- chat ------------------------------------------------------------------------------------------------------

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be positive, got {max_tokens}")
        model = await self.aresolve_model()
        response_format = response_format_for(self.structured, json_schema)
        key = request_key(
            backend=self.name,
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            response_format=response_format,
            extra_body=self.extra_body,
        )
        hit = completion_from_cache(self.cache, key)
        if hit is not None:
            return hit

        async def attempt() -> bytes:
            return await self._create(model, messages, max_tokens, response_format)

        response = await self._with_retries("chat completion", attempt)
        completion = self._read(response, model)
        store_completion(self.cache, key, completion)
        return completion

    def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        return self._run_sync(lambda: self.achat(messages, max_tokens=max_tokens, json_schema=json_schema))

    async def achat_many(
        self,
        conversations: Sequence[list[ChatMessage]],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Completion | BackendError]:
        """One completion or BackendError per conversation, in order; at most ``concurrency`` requests in flight."""

        async def one(messages: list[ChatMessage]) -> Completion | BackendError:
            try:
                return await self.achat(messages, max_tokens=max_tokens, json_schema=json_schema)
            except BackendError as exc:
                return exc

        return list(await asyncio.gather(*(one(m) for m in conversations)))

    def chat_many(
        self,
        conversations: Sequence[list[ChatMessage]],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Completion | BackendError]:
        return self._run_sync(lambda: self.achat_many(conversations, max_tokens=max_tokens, json_schema=json_schema))

    async def _create(
        self,
        model: str,
        messages: list[ChatMessage],
        max_tokens: int,
        response_format: dict[str, Any] | None,
    ) -> bytes:
        """POST the request and return the raw body.

        The SDK still does transport, auth and status errors; its typed request transform and response models are
        skipped on purpose. They cost ~2 ms of CPU per request, which caps throughput at high concurrency, and
        reading the JSON ourselves lets every malformed answer map to one precise reason.
        """
        state = self._state()
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        if response_format is not None:
            body["response_format"] = response_format
        if self.extra_body:
            body.update(self.extra_body)
        async with state.semaphore:
            raw = await state.client.post("/chat/completions", body=body, cast_to=bytes)
        return raw

    def _read(self, raw: bytes, model: str) -> Completion:
        """Turn a server answer into a Completion, or say precisely why it cannot be used."""
        try:
            data = json.loads(raw)
        except ValueError as exc:  # not JSON at all (an HTML error page, a cut-off body)
            raise BackendError(
                f"{self.base_url}: response is not JSON ({exc}): {raw[:80]!r}", reason="malformed_response"
            ) from exc
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list):
            raise BackendError(f"{self.base_url}: response has no 'choices' list", reason="malformed_response")
        if not choices:
            raise BackendError(f"model {model} returned no choices", reason="empty")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise BackendError(f"{self.base_url}: first choice has no message", reason="malformed_response")
        finish_reason = choice.get("finish_reason")
        content, refusal = message.get("content"), message.get("refusal")
        if finish_reason is not None and not isinstance(finish_reason, str):
            raise BackendError(f"{self.base_url}: finish_reason is not a string", reason="malformed_response")
        if refusal:
            raise BackendError(f"model {model} refused: {str(refusal)[:200]}", reason="refusal")
        if content is not None and not isinstance(content, str):
            raise BackendError(f"model {model} returned non-text content", reason="malformed_response")
        if not content or not content.strip():
            if finish_reason == "content_filter":
                raise BackendError(f"model {model} answer was withheld by a content filter", reason="refusal")
            if finish_reason == "length":
                raise BackendError(f"model {model} hit max_tokens before writing any text", reason="truncated")
            raise BackendError(f"model {model} returned an empty answer", reason="empty")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        served = data.get("model")
        return Completion(
            text=content,
            finish_reason=finish_reason,
            usage=Usage(
                prompt_tokens=_count(usage.get("prompt_tokens")),
                completion_tokens=_count(usage.get("completion_tokens")),
                calls=1,
            ),
            model=served if isinstance(served, str) and served else model,
        )

    # -- retries ---------------------------------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, openai.APIStatusError):
            asked = parse_retry_after(exc.response.headers)
            if asked is not None:
                return min(asked, self.retry_after_cap)
        return float(self._backoff(state))

    async def _with_retries(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        attempts = 0

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s failed on attempt %d (%s); retrying in %.2f s",
                what,
                state.attempt_number,
                failure_reason(exc) if exc is not None else "unknown",
                wait,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception(is_transient),
            wait=self._wait,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return await call()
        except BackendError as exc:
            exc.attempts = attempts
            raise
        except openai.OpenAIError as exc:
            reason = failure_reason(exc)
            raise BackendError(
                f"{what} at {self.base_url or 'api.openai.com'} failed after {attempts} attempt(s): {reason}"
                f" ({type(exc).__name__})",
                reason=reason,
                attempts=attempts,
            ) from exc
        raise AssertionError("tenacity stopped without a result or an error")

    # -- event loops -----------------------------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._states_lock:
            state = self._states.get(loop)
            if state is None:
                client = openai.AsyncOpenAI(
                    base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=self.timeout
                )
                state = _LoopState(client=client, semaphore=asyncio.Semaphore(self.concurrency))
                self._states[loop] = state
        return state

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (call before that loop ends)."""
        with self._states_lock:
            state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.client.close()

    async def __aenter__(self) -> OpenAIChatBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _run_sync(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine to completion from synchronous code, on a private loop that is closed afterwards."""

        async def run() -> T:
            try:
                return await make()
            finally:
                await self.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run())
        # This thread already runs a loop, which must not be blocked re-entrantly: use a worker thread's loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, run()).result()

    def __repr__(self) -> str:
        return (
            f"OpenAIChatBackend(base_url={self.base_url!r}, model={self._model!r}, structured={self.structured!r}, "
            f"concurrency={self.concurrency}, max_retries={self.max_retries})"
        )
