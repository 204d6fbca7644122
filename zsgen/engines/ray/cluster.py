"""Joining a Ray cluster for one run, and leaving it as found: the one place the engines start or stop Ray."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from zsgen.errors import ConfigError

__all__ = ["connected"]


@contextmanager
def connected(address: str | None = None, *, log_to_driver: bool = False) -> Iterator[None]:
    """Inside, a Ray cluster is connected: the one already connected, else ``address``'s (``"auto"``: the cluster this
    machine belongs to; None: a local one started for the run). A cluster started here is shut down on the way out.
    Raises :class:`ConfigError` when Ray Data is not installed."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray engine needs Ray Data: pip install 'zsgen[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=log_to_driver)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
