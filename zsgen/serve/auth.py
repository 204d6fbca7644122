"""The optional bearer token: read from an environment variable at start, compared in constant time, never logged.

When the variable (``token_env`` in ``serve.toml``, default ``ZSGEN_SERVE_TOKEN``) is set, every route
that depends on :func:`require_token` answers 401 without ``Authorization: Bearer <token>``; ``/healthz`` and the
OpenAPI schema and docs stay open, so a load balancer and a client generator need no secret. The token lives only in
:class:`Token` (whose ``repr`` hides it) and is compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import os
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from zsgen.errors import ConfigError
from zsgen.serve.errors import ApiError

__all__ = ["Token", "require_token"]

_bearer = HTTPBearer(auto_error=False, description="the token in the service's token_env variable, if set")


class Token:
    """The expected token, or none (an open service)."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value.encode() if value else None

    @classmethod
    def from_env(cls, name: str) -> Token:
        """The token in ``$name``; unset means an open service. Set but blank is a
        :class:`~zsgen.errors.ConfigError`: an operator who exported the variable meant to require a token, and
        silently serving without one would be the worst reading of the mistake."""
        value = os.environ.get(name)
        if value is not None and not value.strip():
            raise ConfigError(f"${name} is set but empty: give it the bearer token, or unset it for no token")
        return cls(value)

    @property
    def required(self) -> bool:
        return self._value is not None

    def accepts(self, given: str | None) -> bool:
        if self._value is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self._value)

    def __repr__(self) -> str:
        return f"Token(required={self.required})"


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """FastAPI dependency: 401 unless the request carries the service's token (or the service has none).

    Mount other routers behind it with ``app.include_router(router, dependencies=[Depends(require_token)])``."""
    token: Token = request.app.state.zsgen.token
    given = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else None
    if not token.accepts(given):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
