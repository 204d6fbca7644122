"""The runtime item store: every item added, updated or retired while serving, replayed when the service starts.

An append-only JSONL log, one edit a line (``{"op": "put", "item": {...}}`` or ``{"op": "retire", "id": "..."}``),
written and flushed to disk before the edit is acknowledged. Append-only because an edit is small and a crash in the
middle of a write can then only damage the last line, which replay reports with its line number instead of guessing.
Replaying the log over the dataset's catalog gives the catalog the service had when it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from zsgen.configbase import validation_message
from zsgen.errors import DataError
from zsgen.types import Item

__all__ = ["Edit", "ItemStore"]

logger = logging.getLogger(__name__)


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
        """Write ``edit`` and flush it to disk: an acknowledged edit survives a crash."""
        line = edit.to_json() + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())

    def replay(self) -> Iterator[Edit]:
        """The edits in the order they were made; a damaged line is a :class:`~zsgen.errors.DataError` naming it."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield self._parse(line, number)

    def _parse(self, line: str, number: int) -> Edit:
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
