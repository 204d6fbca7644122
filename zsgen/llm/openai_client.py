"""Everything about talking to an OpenAI-compatible server that the chat and the embeddings clients share.

* **Keys**: ``api_key`` or ``OPENAI_API_KEY``; a local server (a ``base_url`` given) that needs none gets a
  placeholder, since the SDK insists on one. Keys go to the SDK and nowhere else: never logged, cached or shown.
* **Clients**: built with the SDK's own retries off (``max_retries=0``), so that there is exactly one retry layer.
* **The retry layer** (:class:`RetryPolicy`): tenacity retries only faults that can pass by themselves — dropped
  connections, timeouts, 408, 409, 429 and 5xx — waiting as long as the server's ``retry-after-ms`` / ``Retry-After``
  asks (capped) or an exponential, jittered backoff otherwise. Requests that are wrong stay wrong, so 400, 401, 403,
  404 and 422 are never retried. Each caller maps the final fault to its own error type (``BackendError`` for chat,
  ``EncoderError`` for embeddings) through ``on_error``, with the number of attempts made.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from zsgen.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Sent as the key to servers that need none (a local vLLM or ``transformers serve``).
PLACEHOLDER_API_KEY = "sk-no-key-required"

#: Statuses worth another try besides 5xx: request timeout, conflict, rate limit.
TRANSIENT_STATUS = frozenset({408, 409, 429})


def resolve_api_key(api_key: str | None, base_url: str | None) -> str:
    """The key to send: the argument, else ``OPENAI_API_KEY``, else a placeholder when a local server is named."""
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if base_url is None:
        raise ConfigError("no API key: pass api_key or set OPENAI_API_KEY (or give the base_url of a local server)")
    return PLACEHOLDER_API_KEY


def async_client(base_url: str | None, api_key: str, timeout: float) -> openai.AsyncOpenAI:
    """An async SDK client with its retries off (ours are the only ones)."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)


def sync_client(base_url: str | None, api_key: str, timeout: float) -> openai.OpenAI:
    """A synchronous SDK client with its retries off (ours are the only ones)."""
    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)


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
        return exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500
    return False


def failure_reason(exc: BaseException) -> str:
    """A machine-readable reason for an exception the SDK raised (``BackendError.reason`` uses these)."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return status_reason(exc.status_code)
    return "malformed_response"


def status_reason(status: int) -> str:
    """The reason for an HTTP error status: ``rate_limited`` (429), ``server_error`` (5xx), else ``http_<status>``.
    Ray's HTTP stage reports its failures with these too, so both engines flag the same fault the same way."""
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return f"http_{status}"


#: Maps the final SDK fault and the attempts made to the caller's own error, which is raised.
ErrorMapper = Callable[[openai.OpenAIError, int], Exception]


@dataclass(frozen=True)
class RetryPolicy:
    """The one retry policy for OpenAI-compatible servers (see the module docstring)."""

    max_retries: int = 3
    retry_after_cap: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: what the server asked for (capped), else jittered exponential backoff."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, openai.APIStatusError):
            asked = parse_retry_after(exc.response.headers)
            if asked is not None:
                return min(asked, self.retry_after_cap)
        backoff = wait_exponential_jitter(
            multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial
        )
        return float(backoff(state))

    def _settings(self, what: str) -> dict[str, Any]:
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

        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "retry": retry_if_exception(is_transient),
            "wait": self.wait,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    async def acall(self, what: str, call: Callable[[], Awaitable[T]], on_error: ErrorMapper) -> T:
        """Await ``call()`` under this policy; the last SDK fault leaves through ``on_error``."""
        attempts = 0
        try:
            async for attempt in AsyncRetrying(**self._settings(what)):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return await call()
        except openai.OpenAIError as exc:
            raise on_error(exc, attempts) from exc
        _never()

    def call(self, what: str, call: Callable[[], T], on_error: ErrorMapper) -> T:
        """Run ``call()`` under this policy (synchronous clients); the last SDK fault leaves through ``on_error``."""
        attempts = 0
        try:
            for attempt in Retrying(**self._settings(what)):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return call()
        except openai.OpenAIError as exc:
            raise on_error(exc, attempts) from exc
        _never()


def _never() -> NoReturn:
    raise AssertionError("tenacity stopped without a result or an error")
