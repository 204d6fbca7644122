"""RecBole atomic files: ``<name>.item`` (catalog) and ``<name>.inter`` (events); ``<name>.user`` is not needed.

Each file is tab-separated with a typed header (``item_id:token movie_title:token_seq ...``). Well-known column
names map onto item fields; every other item column is kept as an attribute with its declared type. RecBole's own
datasets mark unknown years with words ("unkonwn" in ml-100k), so a non-numeric ``token`` year is read as unknown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from zsgen.errors import DataError
from zsgen.interactions import Dataset
from zsgen.loaders._common import (
    CatalogBuilder,
    EventColumns,
    build_interactions,
    iter_lines,
    parse_year,
    read_text,
)
from zsgen.loaders.mapping import ColumnMapping, InteractionMapping

logger = logging.getLogger(__name__)

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")

# First name present wins. Names are RecBole's own (ml-*, Amazon, Yelp, book datasets) plus plain ones.
_ITEM_ID = ("item_id",)
_TITLE = ("movie_title", "title", "item_name", "name", "book_title")
_YEAR = ("release_year", "year", "publication_year")
_GENRES = ("class", "genre", "genres", "categories", "category")
_DESCRIPTION = ("description", "overview", "plot", "summary", "desc")


@dataclass(frozen=True)
class _Header:
    names: list[str]
    types: list[str]
    line: int

    def column(self, name: str | None) -> int | None:
        return self.names.index(name) if name in self.names else None

    def first(self, candidates: tuple[str, ...]) -> str | None:
        return next((name for name in candidates if name in self.names), None)


def _parse_header(path: Path, line: int, content: str) -> _Header:
    names: list[str] = []
    types: list[str] = []
    for cell in content.split("\t"):
        name, sep, kind = cell.strip().rpartition(":")
        if not sep or not name:
            raise DataError("header cell must be 'name:type'", path=path, line=line, field=cell.strip())
        if kind not in FIELD_TYPES:
            raise DataError(
                f"unknown field type {kind!r} (expected one of {', '.join(FIELD_TYPES)})",
                path=path,
                line=line,
                field=name,
            )
        if name in names:
            raise DataError("column named twice in the header", path=path, line=line, field=name)
        names.append(name)
        types.append(kind)
    return _Header(names, types, line)


def _rows(path: Path, encoding: str) -> tuple[_Header, list[tuple[int, list[str]]]]:
    lines = iter_lines(read_text(path, encoding))
    try:
        header_line, header_text = next(lines)
    except StopIteration:
        raise DataError("file is empty", path=path) from None
    header = _parse_header(path, header_line, header_text)
    rows: list[tuple[int, list[str]]] = []
    width = len(header.names)
    for line, content in lines:
        cells = content.split("\t")
        if len(cells) != width:
            raise DataError(f"expected {width} tab-separated fields, found {len(cells)}", path=path, line=line)
        rows.append((line, cells))
    return header, rows


def _typed(value: str, kind: str, separator: str) -> str | float | list[str] | None:
    """A cell as its declared type; None when empty. float_seq stays as its tokens (attributes hold strings)."""
    text = value.strip()
    if not text:
        return None
    if kind == "token":
        return text
    if kind == "float":
        return float(text)
    tokens = [t for t in text.split(separator) if t]
    if kind == "float_seq":
        for token in tokens:
            float(token)
    return tokens


def _resolve(
    path: Path, explicit: ColumnMapping | None, field: str, candidates: tuple[str, ...], header: _Header
) -> str | None:
    """The column for an item field: the caller's choice if they made one (it must exist), else the first guess."""
    if explicit is not None and field in explicit.model_fields_set:
        name = getattr(explicit, field)
        if name is not None and name not in header.names:
            raise DataError("column not in header", path=path, line=header.line, field=name)
        return name if isinstance(name, str) else None
    return header.first(candidates)


def _load_items(path: Path, mapping: ColumnMapping | None, encoding: str, separator: str) -> CatalogBuilder:
    header, rows = _rows(path, encoding)
    id_name = _resolve(path, mapping, "id", _ITEM_ID, header)
    title_name = _resolve(path, mapping, "title", _TITLE, header)
    year_name = _resolve(path, mapping, "year", _YEAR, header)
    genres_name = _resolve(path, mapping, "genres", _GENRES, header)
    description_name = _resolve(path, mapping, "description", _DESCRIPTION, header)
    if id_name is None:
        raise DataError("no item id column (expected 'item_id:token')", path=path, line=header.line, field="item_id")
    wanted: set[str] | None = None
    if mapping is not None and mapping.attributes:
        wanted = set(mapping.attributes)
        for name in mapping.attributes:
            if name not in header.names:
                raise DataError("column not in header", path=path, line=header.line, field=name)
    genres_split = genres_name is not None and header.types[header.names.index(genres_name)] != "token"
    known = {id_name, title_name, year_name, genres_name, description_name}
    builder = CatalogBuilder(path)
    unknown_years = 0
    for line, cells in rows:
        record = dict(zip(header.names, cells, strict=True))
        year: int | None = None
        if year_name is not None:
            try:
                year = parse_year(record[year_name])
            except ValueError as exc:
                if header.types[header.names.index(year_name)] != "token":
                    raise DataError(str(exc), path=path, line=line, field=year_name) from None
                unknown_years += 1
        attributes: dict[str, object] = {}
        for name, kind in zip(header.names, header.types, strict=True):
            if name in known or (wanted is not None and name not in wanted):
                continue
            try:
                value = _typed(record[name], kind, separator)
            except ValueError:
                raise DataError(f"not a valid {kind}: {record[name]!r}", path=path, line=line, field=name) from None
            if value is not None:
                attributes[name] = value
        genres: list[str] = []
        if genres_name is not None:
            genres = record[genres_name].split(separator) if genres_split else [record[genres_name]]
        builder.add(
            line,
            item_id=record[id_name],
            title=record[title_name] if title_name else "",
            description=record[description_name] if description_name else "",
            year=year,
            genres=[g.strip() for g in genres if g.strip()],
            attributes=attributes,
            id_field=id_name,
            title_field=title_name or "title",
        )
    if unknown_years:
        logger.info("%s: %d item(s) have a non-numeric %s; their year is unknown", path, unknown_years, year_name)
    return builder


def _load_events(path: Path, mapping: InteractionMapping, encoding: str) -> EventColumns:
    header, rows = _rows(path, encoding)
    for name in mapping.required():
        if name not in header.names:
            raise DataError("column not in header", path=path, line=header.line, field=name)
    user = header.names.index(mapping.user)
    item = header.names.index(mapping.item)
    timestamp = header.column(mapping.timestamp)
    rating = header.column(mapping.rating)
    events = EventColumns(has_timestamp=timestamp is not None, has_rating=rating is not None)
    for line, cells in rows:
        events.append(
            line,
            cells[user].strip(),
            cells[item].strip(),
            cells[timestamp].strip() if timestamp is not None else "",
            cells[rating].strip() if rating is not None else "",
        )
    return events


def recbole_files(path: str | Path) -> tuple[Path, Path | None]:
    """(the ``.item`` file, the ``.inter`` file or None) for a folder or for either file of a dataset."""
    location = Path(path)
    if location.is_file() or location.suffix in {".item", ".inter", ".user"}:
        stem = location.with_suffix("")
    elif location.is_dir():
        stems = sorted({p.with_suffix("") for p in location.iterdir() if p.suffix in {".item", ".inter"}})
        if not stems:
            raise DataError("no RecBole .item or .inter file in this folder", path=location)
        if len(stems) > 1:
            named = [s for s in stems if s.name == location.name]
            if len(named) != 1:
                listed = ", ".join(s.name for s in stems)
                raise DataError(f"several RecBole datasets here ({listed}); pass one file", path=location)
            stems = named
        stem = stems[0]
    else:
        raise DataError("file not found", path=location)
    item_file = stem.with_name(stem.name + ".item")
    inter_file = stem.with_name(stem.name + ".inter")
    if not item_file.exists():
        raise DataError("the .item file is missing: items need text to be recommended", path=item_file)
    return item_file, inter_file if inter_file.exists() else None


def load_recbole(
    path: str | Path,
    *,
    mapping: ColumnMapping | None = None,
    interaction_mapping: InteractionMapping | None = None,
    encoding: str = "utf-8",
    seq_separator: str = " ",
    with_interactions: bool = True,
) -> Dataset:
    """A RecBole dataset from its folder or one of its files. ``mapping`` overrides the column-name guesses."""
    item_file, inter_file = recbole_files(path)
    catalog = _load_items(item_file, mapping, encoding, seq_separator).build()
    if inter_file is None or not with_interactions:
        return Dataset(catalog=catalog)
    columns = interaction_mapping or InteractionMapping()
    events = _load_events(inter_file, columns, encoding)
    interactions = build_interactions(
        events,
        catalog,
        path=inter_file,
        user_field=columns.user,
        item_field=columns.item,
        timestamp_field=columns.timestamp or "timestamp",
        rating_field=columns.rating or "rating",
    )
    return Dataset(catalog=catalog, interactions=interactions)
