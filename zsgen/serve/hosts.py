"""Which names the service answers to: a defence against DNS rebinding.

A service on 127.0.0.1 without a token is reachable from any web page the operator's browser opens: a hostile page
makes its own domain resolve to 127.0.0.1 and then talks to the service as a same-origin peer. What gives it away is
the ``Host`` header (the hostile domain) and, on requests a browser sends, the ``Origin`` header. So every request's
``Host`` must be one of the names the service answers to — the loopback names, the interface it listens on, and the
config's ``allowed_hosts`` — and a browser request's ``Origin`` must name one of them too. ``allowed_hosts = ["*"]``
turns the check off for a service behind a proxy that checks names itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["HostPolicy", "host_name", "is_loopback"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_ANY_INTERFACE = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the service on this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name in a ``Host`` header (``example.org:8080``, ``[::1]:80``), lower-cased, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostPolicy:
    """The names a service listening on ``listen_host`` answers to (module docstring)."""

    def __init__(self, listen_host: str, allowed: Iterable[str] = ()) -> None:
        allowed = [name.strip().lower() for name in allowed]
        self.any = "*" in allowed
        names = {*LOOPBACK_NAMES, *allowed}
        if listen_host.strip("[]") not in _ANY_INTERFACE:
            names.add(listen_host.strip("[]").lower())
        self.names = frozenset(names)

    def allows_host(self, header: str | None) -> bool:
        if self.any:
            return True
        return header is not None and host_name(header) in self.names

    def allows_origin(self, origin: str | None) -> bool:
        """No ``Origin`` (not a browser, or a same-origin GET) passes; ``null`` and foreign origins do not."""
        if self.any or origin is None:
            return True
        parts = urlsplit(origin.strip())
        return parts.scheme in ("http", "https") and (parts.hostname or "") in self.names
