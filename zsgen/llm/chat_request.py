"""The one chat-completions request: its body, its URL and headers, and how its answer is read.

Three senders share it: the online backend (:class:`~zsgen.llm.OpenAIChatBackend`, through the openai SDK), batch
export (:mod:`zsgen.engines.batch`, which writes the body to a file) and Ray's HTTP stage
(:mod:`zsgen.engines.ray.http`, posting through aiohttp). Building the body here, once, is what makes an exported or
Ray-sent request byte-equal to the online one, and reading every answer with :func:`read_completion` is what makes a
bad answer fall back with the same reason whichever engine received it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from zsgen.errors import BackendError
from zsgen.llm.base import ChatMessage, Completion
from zsgen.types import Usage

__all__ = [
    "ChatRequest",
    "StructuredMode",
    "auth_headers",
    "chat_url",
    "read_completion",
    "response_format_for",
]

StructuredMode = Literal["json_schema", "json_object", "none"]

#: Where a chat completion is POSTed, relative to a base URL ending in ``/v1``.
CHAT_PATH = "/chat/completions"


def response_format_for(mode: StructuredMode, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``response_format`` body for a structured-output mode, or None to send none.

    ``json_object`` carries the schema in the form llama.cpp-style servers read (``{"type": "json_object",
    "schema": ...}``); servers that only know plain JSON mode ignore the extra key.
    """
    if schema is None or mode == "none":
        return None
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    title = str(schema.get("title") or "response")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def chat_url(base_url: str) -> str:
    """The chat-completions URL of an OpenAI-compatible ``base_url`` (``http://host:8000/v1``)."""
    return base_url.rstrip("/") + CHAT_PATH


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header the openai SDK sends for ``api_key`` (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True)
class ChatRequest:
    """How one server is asked: the structured-output mode, vLLM's choice constraint, and any extra body fields.

    :meth:`constraint` gives the fields that ask for a constrained answer (empty when nothing is asked);
    :meth:`body` the whole body: model, messages, ``max_tokens``, temperature 0, the extra body, then the constraint.
    """

    structured: StructuredMode = "none"
    structured_choice: bool = False
    extra_body: dict[str, Any] | None = None

    def constraint(self, json_schema: dict[str, Any] | None, choices: Sequence[str] | None = None) -> dict[str, Any]:
        """The request-body fields that ask the server to constrain an answer (empty when nothing is asked)."""
        if choices and self.structured_choice:
            return {"structured_outputs": {"choice": [str(c) for c in choices]}}
        response_format = response_format_for(self.structured, json_schema)
        return {"response_format": response_format} if response_format is not None else {}

    def body(
        self, model: str, messages: list[ChatMessage], max_tokens: int, constraint: dict[str, Any]
    ) -> dict[str, Any]:
        """The JSON body POSTed to ``/chat/completions`` (greedy: temperature 0)."""
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        if self.extra_body:
            body.update(self.extra_body)
        body.update(constraint)
        return body

    def extras(self, constraint: dict[str, Any]) -> dict[str, Any]:
        """What the body carries besides model, messages, limits and ``response_format``: the extra body and a
        ``structured_outputs`` constraint (both decide the answer, so both belong in a response-cache key)."""
        extras = dict(self.extra_body or {})
        if "structured_outputs" in constraint:
            extras["structured_outputs"] = constraint["structured_outputs"]
        return extras


def _count(value: Any) -> int:
    """A token count from a usage block; servers that omit or garble it count as 0 rather than failing."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def read_completion(raw: bytes, model: str, where: str | None) -> Completion:
    """Turn a server answer into a Completion, or say precisely why it cannot be used (``where``: the server as
    messages may show it, credentials masked)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not JSON (an HTML page, a cut-off body), or nested too deep
        raise BackendError(
            f"{where}: response is not JSON ({type(exc).__name__}: {exc}): {raw[:80]!r}",
            reason="malformed_response",
        ) from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        raise BackendError(f"{where}: response has no 'choices' list", reason="malformed_response")
    if not choices:
        raise BackendError(f"model {model} returned no choices", reason="empty")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise BackendError(f"{where}: first choice has no message", reason="malformed_response")
    finish_reason = choice.get("finish_reason")
    content, refusal = message.get("content"), message.get("refusal")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise BackendError(f"{where}: finish_reason is not a string", reason="malformed_response")
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
