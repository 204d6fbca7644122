"""Turning one mapped record (a JSON object or a CSV row) into an item or an event; shared by JSONL and CSV."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from zsgen.errors import DataError
from zsgen.loaders._common import CatalogBuilder, EventColumns, attribute_value, parse_year, split_genres
from zsgen.loaders.mapping import ColumnMapping, InteractionMapping


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def add_item_record(
    builder: CatalogBuilder, record: Mapping[str, object], mapping: ColumnMapping, *, line: int | None
) -> None:
    path = builder.path
    year_column = mapping.year
    try:
        year = parse_year(record.get(year_column)) if year_column else None
    except ValueError as exc:
        raise DataError(str(exc), path=path, line=line, field=year_column) from None
    genres = split_genres(record.get(mapping.genres), mapping.genre_separator) if mapping.genres else ()
    attributes: dict[str, object] = {}
    # A nested "attributes" object is what Item.model_dump writes; honour it so dumped catalogs load back.
    nested = record.get("attributes")
    if isinstance(nested, Mapping) and "attributes" not in mapping.attributes:
        for key, value in nested.items():
            try:
                kept = attribute_value(value)
            except ValueError as exc:
                raise DataError(str(exc), path=path, line=line, field=f"attributes.{key}") from None
            if kept is not None:
                attributes[str(key)] = kept
    for column in mapping.attributes:
        try:
            kept = attribute_value(record.get(column))
        except ValueError as exc:
            raise DataError(str(exc), path=path, line=line, field=column) from None
        if kept is not None:
            attributes[column] = kept
    raw_id = record.get(mapping.id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int | float | type(None)):
        raise DataError(f"item id must be a string or a number, got {raw_id!r}", path=path, line=line, field=mapping.id)
    builder.add(
        line,
        item_id=raw_id,
        title=_text(record.get(mapping.title)),
        description=_text(record.get(mapping.description)) if mapping.description else "",
        year=year,
        genres=genres,
        attributes=attributes,
        id_field=mapping.id,
        title_field=mapping.title,
    )


def add_event_record(
    columns: EventColumns, record: Mapping[str, object], mapping: InteractionMapping, *, line: int, path: Path
) -> None:
    for column in (mapping.user, mapping.item):
        value = record.get(column)
        if value is None or isinstance(value, bool | dict | list):
            problem = "missing" if value is None else f"must be a string or a number, got {value!r}"
            raise DataError(f"{column} {problem}", path=path, line=line, field=column)
    columns.append(
        line,
        _text(record.get(mapping.user)),
        _text(record.get(mapping.item)),
        _text(record.get(mapping.timestamp)) if mapping.timestamp else "",
        _text(record.get(mapping.rating)) if mapping.rating else "",
    )
