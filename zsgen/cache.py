"""A response cache for LLM calls, shared safely by several processes.

Evaluation runs repeat the same prompts (reruns, parameter sweeps, several workers): answering them from disk makes
reruns cheap and repeatable. Payloads are JSON in stdlib sqlite3 — never pickle, whose loading can execute code from
a tampered cache file. The key is a hash of everything that determines the answer and nothing secret: the server's
base URL is part of it (two servers may serve different weights under one model id) but without credentials, and
API keys are never part of a key or a payload.

A file that is not a healthy SQLite database is a :class:`~zsgen.errors.ConfigError` when the cache is opened, i.e.
when the backend using it is built. Once open, the cache is an optimisation: an entry that cannot be read or written
later (disk full, a lock held past the timeout) is logged and treated as a miss rather than failing the request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zsgen.errors import ConfigError
from zsgen.sqlitedb import SqliteFile

log = logging.getLogger(__name__)

#: Bump when the payload layout or the meaning of a key changes, so stale entries are simply never hit again.
CACHE_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(**canonical: Any) -> str:
    """A stable hash of the request fields that decide the answer.

    Callers pass backend, model, messages, sampling settings, schema and template hash; the cache version is added
    here. Keys are sorted so that argument order never changes the hash. Values must be JSON-serialisable, which
    keeps accidental objects (clients, keys wrapped in objects) out of keys.
    """
    if any("api_key" in name.lower() for name in canonical):
        raise ConfigError("API keys must never be part of a cache key")
    base_url = canonical.get("base_url")
    if isinstance(base_url, str) and "@" in urlsplit(base_url).netloc:
        raise ConfigError("a base URL in a cache key must not carry credentials (user:password@)")
    body = {"cache_version": CACHE_VERSION, **canonical}
    try:
        text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cache key fields must be plain JSON values: {exc}") from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Key → JSON payload, in one sqlite file that several processes and threads may use at once.

    The file plumbing (WAL, busy timeout, a connection per thread and per forked process, a damaged file reported
    on open) is :class:`~zsgen.sqlitedb.SqliteFile`'s. Every write is one short transaction and ``INSERT OR
    REPLACE`` makes concurrent writers of the same key harmless (same request, same answer).
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.db = SqliteFile(path, schema=_SCHEMA, what="response cache", timeout=busy_timeout, error=ConfigError)
        self.path = self.db.path

    def get(self, key: str) -> dict[str, Any] | None:
        """The payload stored under ``key``, or None. A corrupt entry or a failed read counts as a miss (logged)."""
        try:
            row = self.db.connection().execute("SELECT payload FROM responses WHERE key = ?", (key,)).fetchone()
        except (sqlite3.Error, ConfigError) as exc:
            log.warning("response cache %s: cannot read entry %s (%s); asking the model", self.path, key[:12], exc)
            return None
        if row is None:
            return None
        try:
            payload = json.loads(row[0])
        except json.JSONDecodeError:
            log.warning("response cache %s: entry %s is not valid JSON; ignoring it", self.path, key[:12])
            return None
        return payload if isinstance(payload, dict) else None

    def put(self, key: str, payload: dict[str, Any]) -> None:
        """Store ``payload``; a failed write is logged and dropped (the answer itself is still good)."""
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO responses (key, payload, created) VALUES (?, ?, ?)",
                    (key, text, time.time()),
                )
        except (sqlite3.Error, ConfigError) as exc:
            log.warning("response cache %s: cannot store entry %s (%s)", self.path, key[:12], exc)

    def __len__(self) -> int:
        row = self.db.connection().execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self.db.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
