"""The runtime item store: every item added, updated or retired while serving, replayed when the service starts.

An append-only JSONL log, one edit a line (``{"op": "put", "item": {...}}`` or ``{"op": "retire", "id": "..."}``),
written and flushed to disk before the edit is acknowledged. Append-only because an edit is small and a crash in the
middle of a write can then only damage the last line.

What a failed or interrupted write leaves behind, and what is done about it:

- An edit is acknowledged only after its whole line, newline included, is written and fsynced. So a line without
  its newline at the end of the file was never acknowledged: a write that failed (disk full), or a crash before the
  fsync. :meth:`ItemStore.append` cuts such a tail off before it writes (and cuts its own line back off when its
  write fails), so every edit starts on a line boundary and a good edit is never glued onto a torn one.
  :meth:`ItemStore.replay` drops it with a warning that quotes it.
- Anything else that is wrong (a terminated line that is not UTF-8, not JSON, not an edit, or that retires an id
  nobody put) is damage no write of this service leaves: replay stops with one :class:`~zsgen.errors.DataError`
  naming the file and line, rather than guess which edits the operator wants kept.

Replaying the log over the dataset's catalog gives the catalog the service had when it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from zsgen.configbase import validation_message
from zsgen.errors import DataError
from zsgen.types import Item

__all__ = ["Edit", "ItemStore"]

logger = logging.getLogger(__name__)

#: How much of a dropped torn line the warning quotes.
_QUOTE = 200


@dataclass(frozen=True)
class Edit:
    """One runtime edit: an item put (added or replaced, and un-retired) or an id retired."""

    op: Literal["put", "retire"]
    item: Item | None = None
    id: str | None = None

    @property
    def item_id(self) -> str:
        return self.item.id if self.item is not None else str(self.id)

    def to_json(self) -> str:
        if self.item is not None:
            return json.dumps({"op": self.op, "item": self.item.model_dump(mode="json")}, ensure_ascii=False)
        return json.dumps({"op": self.op, "id": self.id}, ensure_ascii=False)


class ItemStore:
    """The edit log at ``path`` (created with its folder on the first edit)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, edit: Edit) -> None:
        """Write ``edit`` on a line of its own and fsync it: an edit acknowledged after this returns survives a
        crash. Raises :class:`OSError` (disk full, ...) when it could not be written; the file is then left as it
        was, or, if even that fails, with a torn tail that the next append or replay cuts off."""
        line = (edit.to_json() + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                start = self._line_boundary(fd)
                try:
                    written = 0
                    while written < len(line):
                        written += os.write(fd, line[written:])
                    os.fsync(fd)
                except OSError:
                    self._cut(fd, start)
                    raise
            finally:
                os.close(fd)

    def _line_boundary(self, fd: int) -> int:
        """The file's size once a torn (unterminated) tail is cut off: where the next line starts."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        end = size
        while end > 0:  # back to the last newline, a block at a time
            start = max(0, end - 65536)
            block = os.pread(fd, end - start, start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        torn = os.pread(fd, min(size - end, _QUOTE), end)
        logger.warning(
            "%s: cutting off an unterminated last line (%d bytes, never acknowledged) before appending: %r",
            self.path,
            size - end,
            torn,
        )
        os.ftruncate(fd, end)
        os.fsync(fd)
        return end

    def _cut(self, fd: int, size: int) -> None:
        """Undo a failed write; if that fails too, the torn tail stays for the next append or replay to drop."""
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            logger.warning("%s: could not cut off a failed write (%s); it is dropped at the next edit", self.path, exc)

    def replay(self, known: Iterable[str] = ()) -> Iterator[Edit]:
        """The edits in the order they were made. An unterminated last line (never acknowledged) is dropped with a
        warning; any other damaged line, or a retire of an id neither in ``known`` (the dataset's ids) nor put
        before it, is a :class:`~zsgen.errors.DataError` naming the file and line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # after the last newline: b"" in a well-formed file
        ids = set(known)
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                edit = self._parse(raw, number)
                if edit.item is not None:
                    ids.add(edit.item.id)
                elif edit.id not in ids:
                    raise DataError(
                        f"retires {edit.id!r}, which is neither in the dataset nor put on an earlier line",
                        path=str(self.path),
                        line=number,
                    )
                yield edit
        if torn.strip():
            logger.warning(
                "%s:%d: dropping an unterminated last line (%d bytes; a write that never completed, so never "
                "acknowledged): %r",
                self.path,
                len(lines) + 1,
                len(torn),
                torn[:_QUOTE],
            )

    def _parse(self, raw: bytes, number: int) -> Edit:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 (byte {exc.start + 1} of the line)", path=str(self.path), line=number) from None
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(f"not JSON: {exc}", path=str(self.path), line=number) from None
        op = record.get("op") if isinstance(record, dict) else None
        if op == "put":
            try:
                return Edit(op="put", item=Item.model_validate(record.get("item")))
            except ValidationError as exc:
                raise DataError(validation_message(exc), path=str(self.path), line=number, field="item") from None
        if op == "retire" and isinstance(record.get("id"), str):
            return Edit(op="retire", id=record["id"])
        raise DataError(
            'expected {"op": "put", "item": {...}} or {"op": "retire", "id": "..."}', path=str(self.path), line=number
        )
