"""CSV / TSV catalogs and interaction logs with a header row.

The stdlib ``csv`` module handles quoting (commas and newlines inside a description); the row's starting line is
tracked so errors point where the record begins even when a quoted field spans lines.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from zsgen.catalog import Catalog
from zsgen.errors import DataError
from zsgen.interactions import Interactions
from zsgen.loaders._common import CatalogBuilder, EventColumns, build_interactions, read_text
from zsgen.loaders._records import add_event_record, add_item_record
from zsgen.loaders.mapping import ColumnMapping, InteractionMapping


def default_delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","


def iter_rows(
    path: Path, *, required: list[str], delimiter: str | None = None, encoding: str = "utf-8"
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column: cell}) for every data row; the header must name every ``required`` column."""
    text = read_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter or default_delimiter(path), strict=True)
    try:
        header = next(reader)
        while not any(cell.strip() for cell in header):
            header = next(reader)
    except StopIteration:
        raise DataError("file is empty", path=path) from None
    except csv.Error as exc:
        raise DataError(f"malformed header: {exc}", path=path, line=reader.line_num) from None
    header_line = reader.line_num
    names = [cell.strip() for cell in header]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataError("column named twice in the header", path=path, line=header_line, field=duplicated[0])
    for column in required:
        if column not in names:
            raise DataError(
                f"column not in header (columns: {', '.join(names)})", path=path, line=header_line, field=column
            )
    previous_end = header_line
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"malformed row: {exc}", path=path, line=previous_end + 1) from None
        line = previous_end + 1
        previous_end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            raise DataError(f"expected {len(names)} columns, found {len(row)}", path=path, line=line)
        yield line, {name: cell.strip() for name, cell in zip(names, row, strict=True)}


def load_csv_catalog(
    path: str | Path,
    *,
    mapping: ColumnMapping | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> Catalog:
    file = Path(path)
    columns = mapping or ColumnMapping()
    builder = CatalogBuilder(file)
    for line, row in iter_rows(file, required=columns.required(), delimiter=delimiter, encoding=encoding):
        add_item_record(builder, row, columns, line=line)
    return builder.build()


def load_csv_interactions(
    path: str | Path,
    catalog: Catalog,
    *,
    mapping: InteractionMapping | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> Interactions:
    file = Path(path)
    columns = mapping or InteractionMapping()
    rows = iter_rows(file, required=columns.required(), delimiter=delimiter, encoding=encoding)
    # Without a timestamp or rating column those values are unknown (NaN); a blank cell is unknown too.
    events = EventColumns(has_timestamp=columns.timestamp is not None, has_rating=columns.rating is not None)
    for line, row in rows:
        add_event_record(events, row, columns, line=line, path=file)
    return build_interactions(
        events,
        catalog,
        path=file,
        user_field=columns.user,
        item_field=columns.item,
        timestamp_field=columns.timestamp or "timestamp",
        rating_field=columns.rating or "rating",
    )
