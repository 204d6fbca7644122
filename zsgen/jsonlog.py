"""An append-only JSON-lines log, one line per finished unit (a user), durable line by line: the resume point of
``zsgen evaluate`` (``per_user.jsonl``), of bulk recommendation and of both on Ray.

Each append is flushed and ``fsync``-ed before it returns, so a killed process leaves whole lines plus at most one
torn last line, which :func:`read_log` cuts off on the next run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zsgen.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["LogWriter", "read_log"]


def read_log(path: Path, *, repair: bool = False) -> dict[str, dict[str, Any]]:
    """Finished users by id. A trailing line without its newline is a write the process did not finish: with
    ``repair`` it is cut off the file (so appends start on a clean line), without it is ignored. Any other bad line,
    or a user logged twice, is an error: the log would no longer be trustworthy.
    """
    if not path.exists():
        return {}
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        logger.info("%s: dropping an unfinished last line (%d bytes)", path, len(data) - complete)
        if repair:
            with path.open("r+b") as handle:
                handle.truncate(complete)
                handle.flush()
                os.fsync(handle.fileno())
    records: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(data[:complete].split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            user_id = str(record["user_id"])
        except (ValueError, KeyError, TypeError):
            raise DataError("not a per-user result line", path=path, line=number) from None
        if user_id in records:
            raise DataError(f"user {user_id!r} is logged twice", path=path, line=number)
        records[user_id] = record
    return records


class LogWriter:
    """Appends one line per user and makes it durable before returning."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append several lines with one ``fsync`` (bulk recommendation logs a batch of users at a time)."""
        if not records:
            return
        self._handle.write("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
