"""A zsgen service on a real uvicorn server on 127.0.0.1, for tests and benchmarks that need real HTTP.

The listening socket is bound here, before uvicorn starts, and handed to it: its port is known at once, and a client
that connects before uvicorn accepts waits in the socket's backlog instead of being refused, so nothing has to poll
or sleep until the server is up.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port for the ``with`` block; yields its base URL (``http://127.0.0.1:N``)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", backlog=512))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
