"""One SQLite file shared by threads and processes: the plumbing under zsgen's on-disk caches.

Both caches (LLM responses in :mod:`zsgen.cache`, embeddings in :mod:`zsgen.embed.cache`) are a single SQLite file
that several evaluation workers may read and write at once. What that takes is the same for both, so it lives here:

- WAL mode, so readers never wait for the one writer, and a busy timeout, so writers wait for the lock instead of
  failing with "database is locked";
- one connection per thread, because a :class:`sqlite3.Connection` must not be shared between threads;
- one connection per *process*: SQLite forbids using a connection in a child that inherited it through ``fork``
  (its locks belong to the parent), so a child opens its own the first time it touches the file. The inherited
  connection is never used nor closed in the child — closing it there could disturb the parent's WAL — it is parked
  until the child exits;
- a file that is not an SQLite database, or a damaged one, is reported when it is opened, naming the file, instead
  of failing later in the middle of a run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from zsgen.errors import ConfigError, ZsgenError

__all__ = ["SqliteFile"]

log = logging.getLogger(__name__)

#: Connections a forked child inherited from its parent. Kept referenced so that garbage collection in the child
#: never closes them (``sqlite3.Connection`` closes itself when collected); the child's exit releases them.
_INHERITED: list[sqlite3.Connection] = []


class _Handle:
    """A connection and the process that opened it; closes the connection only in that process."""

    __slots__ = ("conn", "pid", "released")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.released = False

    def close(self) -> None:
        if self.released:
            return
        self.released = True
        if self.pid == os.getpid():
            self.conn.close()
        else:
            _INHERITED.append(self.conn)

    def __del__(self) -> None:
        # Runs when a thread's locals are dropped: when the thread ends, or in a forked child for the parent's other
        # threads. Only the first case may close.
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn sqlite3 down already
            self.close()


class SqliteFile:
    """An SQLite file opened once per process and thread, with ``schema`` created on first open.

    ``what`` names the file in messages ("response cache"), and ``error`` is the :class:`ZsgenError` subclass raised
    when the file cannot be opened or is not a healthy database. Statements go through :meth:`connection` (reads,
    in autocommit mode) or :meth:`transaction` (one short ``BEGIN IMMEDIATE`` write transaction).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        schema: str | Sequence[str],
        what: str,
        timeout: float = 30.0,
        error: type[ZsgenError] = ConfigError,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.timeout = timeout
        self.error = error
        self._schema = [schema] if isinstance(schema, str) else list(schema)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error(f"{self.path}: cannot open {what}: {exc}") from exc
        conn = self.connection()
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc
        if problems != ["ok"]:
            raise error(
                f"{self.path}: the {what} is damaged ({'; '.join(map(str, problems[:3]))}); "
                "delete the file to start a fresh one"
            )
        try:
            with self.transaction() as conn:
                for statement in self._schema:
                    conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc

    def _damaged(self, exc: sqlite3.Error) -> ZsgenError:
        # OperationalError is the circumstances (locked past the timeout, no permission, disk full), not the file:
        # only the other errors (SQLITE_NOTADB, SQLITE_CORRUPT) mean the file itself is unusable.
        if isinstance(exc, sqlite3.OperationalError):
            return self.error(f"{self.path}: cannot open {self.what}: {exc}")
        return self.error(
            f"{self.path}: cannot open {self.what}: {exc} (not a healthy SQLite file; delete it to start a fresh one)"
        )

    def connection(self) -> sqlite3.Connection:
        """This thread's connection in this process, opened (WAL, busy timeout) on first use."""
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is not None and handle.pid == os.getpid():
            return handle.conn
        if handle is not None:  # inherited through fork: park it, never use it
            handle.close()
            self._local.handle = None
            log.debug("%s: process %d opens its own connection after fork", self.path, os.getpid())
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._damaged(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            raise self._damaged(exc) from exc
        self._local.handle = _Handle(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with ``BEGIN IMMEDIATE`` so that the write lock is held from the start
        (a deferred transaction upgrading to a write can fail with "database is locked" despite the busy timeout)."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (other threads' close when those threads end)."""
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is not None:
            handle.close()
            self._local.handle = None

    def __repr__(self) -> str:
        return f"SqliteFile({str(self.path)!r})"
