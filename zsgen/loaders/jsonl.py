"""JSON Lines catalogs and interaction logs: one JSON object per line, so every error can name its line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zsgen.catalog import Catalog
from zsgen.errors import DataError
from zsgen.interactions import Interactions
from zsgen.loaders._common import CatalogBuilder, EventColumns, build_interactions, iter_lines, read_text
from zsgen.loaders._records import add_event_record, add_item_record
from zsgen.loaders.mapping import ColumnMapping, InteractionMapping


def iter_json_records(path: Path, *, encoding: str = "utf-8") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) pairs, one object per non-blank line."""
    text = read_text(path, encoding)
    if text.lstrip().startswith("["):
        # One array spans the whole file, so per-record line numbers would be meaningless.
        raise DataError("a JSON array is not supported; write one JSON object per line (JSON Lines)", path=path, line=1)
    for line, content in iter_lines(text):
        try:
            record = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=line) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, got {type(record).__name__}", path=path, line=line)
        yield line, record


def load_jsonl_catalog(path: str | Path, *, mapping: ColumnMapping | None = None, encoding: str = "utf-8") -> Catalog:
    file = Path(path)
    columns = mapping or ColumnMapping()
    builder = CatalogBuilder(file)
    for line, record in iter_json_records(file, encoding=encoding):
        for column in columns.required():
            if column not in record:
                raise DataError("missing field", path=file, line=line, field=column)
        add_item_record(builder, record, columns, line=line)
    return builder.build()


def load_jsonl_interactions(
    path: str | Path,
    catalog: Catalog,
    *,
    mapping: InteractionMapping | None = None,
    encoding: str = "utf-8",
) -> Interactions:
    file = Path(path)
    columns = mapping or InteractionMapping()
    # A record without a timestamp or rating gets NaN there (unknown), not an error: logs are often sparse.
    events = EventColumns(has_timestamp=columns.timestamp is not None, has_rating=columns.rating is not None)
    for line, record in iter_json_records(file, encoding=encoding):
        for column in columns.required():
            if column not in record:
                raise DataError("missing field", path=file, line=line, field=column)
        add_event_record(events, record, columns, line=line, path=file)
    return build_interactions(
        events,
        catalog,
        path=file,
        user_field=columns.user,
        item_field=columns.item,
        timestamp_field=columns.timestamp or "timestamp",
        rating_field=columns.rating or "rating",
    )
