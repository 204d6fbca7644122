"""Around every request: a request id, the Host check, the bearer token, and a body size limit, all before the body
is parsed.

Pure ASGI (no ``BaseHTTPMiddleware``), so a streamed body is counted as it arrives: a body announced or found larger
than ``max_body_bytes`` is answered 413 at once, and never parsed. Bodies the service takes are small JSON objects,
so the accepted body is held whole and handed on. The request id (``X-Request-ID`` on every response, and in every
JSON body) is generated here, so even a refused request has one to quote in a log search.

The token (:class:`~zsgen.serve.auth.Token` on ``app.state.zsgen``) is checked here, first, for the service's own
API (:data:`GUARDED`: ``/v1/...``, ``/readyz`` and the playground's JSON API): a stranger's request is refused
before its body is read, and refused the same way whatever the body holds (FastAPI parses and validates a body
before running a route's dependencies, so it would answer 422 to a request that has no token).
:func:`~zsgen.serve.auth.require_token` checks it again per route, which documents the scheme in the OpenAPI schema;
routers mounted beside the API (the prompt playground) declare that dependency themselves.

Before even the token, every request's ``Host`` (and a browser's ``Origin``) must name the service
(:class:`~zsgen.serve.hosts.HostPolicy`): a token-less service on loopback is otherwise open to DNS rebinding.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zsgen.serve.hosts import HostPolicy

__all__ = ["GUARDED", "Envelope", "guarded"]

#: Path prefixes whose requests need the token before anything else; ``/healthz``, ``/openapi.json`` and ``/docs``
#: stay open (liveness probes and client generators need no secret).
GUARDED = ("/v1/", "/readyz", "/playground/api/")


def guarded(path: str) -> bool:
    """Whether the envelope checks the token for ``path``."""
    return path.startswith(GUARDED)


class Envelope:
    """ASGI middleware: request id in ``scope["state"]["request_id"]`` and the response header, body limit (413)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, hosts: HostPolicy | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.hosts = hosts or HostPolicy("127.0.0.1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        refusal = self._foreign(scope)
        if refusal is not None:
            status, kind, why = refusal
            await _refuse(send_with_id, status, {"type": kind, "message": why}, request_id)
            return
        if guarded(str(scope.get("path", ""))) and not _authorised(scope):
            await _refuse(
                send_with_id,
                401,
                {"type": "unauthorized", "message": "missing or wrong bearer token"},
                request_id,
                [(b"www-authenticate", b"Bearer")],
            )
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send_with_id, request_id)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send_with_id, request_id)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if body and guarded(str(scope.get("path", ""))) and not _json_content(scope):
            given = _header(scope, b"content-type") or "none"
            why = f"the body must be JSON: send Content-Type: application/json (got {given})"
            await _refuse(send_with_id, 415, {"type": "unsupported_media_type", "message": why}, request_id)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as the server would report it

        await self.app(scope, replay, send_with_id)

    def _foreign(self, scope: Scope) -> tuple[int, str, str] | None:
        """Why a request does not name this service (DNS rebinding), or None."""
        host = _header(scope, b"host")
        if not self.hosts.allows_host(host):
            return 400, "invalid_host", f"Host {host!r} is not a name this service answers to (allowed_hosts)"
        origin = _header(scope, b"origin")
        if not self.hosts.allows_origin(origin):
            return 403, "forbidden_origin", f"Origin {origin!r} is not this service (allowed_hosts)"
        return None

    async def _too_large(self, send: Send, request_id: str) -> None:
        message = f"request body larger than {self.max_body_bytes} bytes"
        await _refuse(send, 413, {"type": "body_too_large", "message": message}, request_id)


async def _refuse(
    send: Send,
    status: int,
    error: dict[str, str],
    request_id: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps({"error": error, "request_id": request_id}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _authorised(scope: Scope) -> bool:
    """Whether the request carries the service's token (always, for a service without one)."""
    state = getattr(getattr(scope.get("app"), "state", None), "zsgen", None)
    token = getattr(state, "token", None)
    if token is None or not token.required:
        return True
    given = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            given = credentials.strip() if scheme.lower() == "bearer" else None
    return bool(token.accepts(given))


def _json_content(scope: Scope) -> bool:
    kind = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
