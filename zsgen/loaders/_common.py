"""Parsing helpers every loader shares: reading text with line-exact decode errors, titles, years, items, events.

Everything here reports problems as :class:`~zsgen.errors.DataError` with the file, the 1-based line and the field,
because a user fixing a 100,000-line file needs to know exactly where to look.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from zsgen.catalog import Catalog
from zsgen.configbase import error_message
from zsgen.errors import DataError, DuplicateItemError, EmptyTextError
from zsgen.interactions import Interactions
from zsgen.types import AttributeValue, Item

_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
_UTF8_NAMES = {"utf-8", "utf8", "utf_8", "u8"}


def read_text(path: Path, encoding: str) -> str:
    """The whole file as text; a byte that does not decode is reported with its line and an encoding hint."""
    if not path.exists():
        raise DataError("file not found", path=path)
    if path.is_dir():
        raise DataError("is a directory, expected a file", path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=path) from None
    if not data.strip():
        raise DataError("file is empty", path=path)
    # utf-8-sig drops a byte-order mark, which spreadsheet exports like to add and which would corrupt the first key.
    codec = "utf-8-sig" if encoding.lower() in _UTF8_NAMES else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise DataError(
            f"byte 0x{bad} cannot be decoded as {encoding}; if the file uses another encoding pass it, "
            f"e.g. encoding='latin-1'",
            path=path,
            line=line,
        ) from None
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", path=path) from None


def iter_lines(text: str, start: int = 1) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers.

    Splits on newline only: ``str.splitlines`` would also split on characters such as U+0085, which latin-1 files
    can contain inside a title, and the line numbers would then drift from what an editor shows.
    """
    for number, raw in enumerate(text.split("\n"), start=1):
        if number < start:
            continue
        line = raw.rstrip("\r")
        if line.strip():
            yield number, line


def split_title_year(title: str) -> tuple[str, int | None]:
    """ "Toy Story (1995)" → ("Toy Story", 1995); a title without a trailing year is returned unchanged."""
    match = _TITLE_YEAR.match(title.strip())
    if not match or not match.group("title"):
        return title.strip(), None
    return match.group("title"), int(match.group("year"))


def parse_year(value: object) -> int | None:
    """A year from a JSON number, a CSV cell or a string such as "1995.0"; empty means unknown.

    Raises ValueError (the caller adds the location) for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a year, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"expected a whole year, got {value!r}")
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"expected a year, got {text!r}") from None
    if not number.is_integer():
        raise ValueError(f"expected a whole year, got {text!r}")
    return int(number)


def split_genres(value: object, separator: str) -> tuple[str, ...]:
    """Genres from a JSON list or a separated string, blanks dropped, order kept."""
    if value is None:
        return ()
    parts = [str(v) for v in value] if isinstance(value, list | tuple) else str(value).split(separator)
    return tuple(p.strip() for p in parts if p.strip())


class CatalogBuilder:
    """Collects items line by line and turns every record-level problem into an error naming the line.

    Duplicates are caught here rather than left to :class:`Catalog`, because only the loader knows where the first
    and the second occurrence are.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[Item] = []
        self._first_line: dict[str, int] = {}

    def add(
        self,
        line: int | None,
        *,
        item_id: object,
        title: object = "",
        description: object = "",
        year: int | None = None,
        genres: Sequence[str] = (),
        attributes: Mapping[str, object] | None = None,
        id_field: str = "id",
        title_field: str = "title",
    ) -> None:
        key = "" if item_id is None else str(item_id).strip()
        if isinstance(item_id, float) and item_id.is_integer():
            key = str(int(item_id))
        if not key:
            raise DataError("missing item id", path=self.path, line=line, field=id_field)
        title_text = "" if title is None else str(title).strip()
        description_text = "" if description is None else str(description).strip()
        if not title_text and not description_text:
            raise EmptyTextError(
                f"item {key!r} has neither a title nor a description, so it has no text to embed",
                path=self.path,
                line=line,
                field=title_field,
            )
        if key in self._first_line:
            first = self._first_line[key]
            where = f" (first on line {first})" if first > 0 else ""
            raise DuplicateItemError(f"duplicate item id {key!r}{where}", path=self.path, line=line, field=id_field)
        try:
            item = Item(
                id=key,
                title=title_text,
                description=description_text,
                year=year,
                genres=tuple(genres),
                attributes=dict(attributes or {}),
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"][:2])  # the column (and attribute), not deeper
            message = error_message(error)
            raise DataError(f"invalid value: {message}", path=self.path, line=line, field=field) from None
        self._first_line[key] = line or 0
        self.items.append(item)

    def build(self) -> Catalog:
        if not self.items:
            raise DataError("no items found", path=self.path)
        return Catalog(self.items, source=str(self.path))


def attribute_value(value: object) -> AttributeValue | None:
    """A value usable as an item attribute, or None to leave it out (empty cells and JSON nulls)."""
    if value is None or value == "":
        return None
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"unsupported attribute value {value!r} (use a string, number, boolean or list of strings)")


class EventColumns:
    """Raw interaction columns as strings, appended per line; converted to arrays once at the end.

    Per-row pydantic models would be ~50x slower on ML-1M's million ratings; plain lists plus one numpy conversion
    keep loading to seconds.
    """

    def __init__(self, *, has_timestamp: bool, has_rating: bool) -> None:
        self.lines: list[int] = []
        self.users: list[str] = []
        self.items: list[str] = []
        self.timestamps: list[str] | None = [] if has_timestamp else None
        self.ratings: list[str] | None = [] if has_rating else None

    def append(self, line: int, user: str, item: str, timestamp: str = "", rating: str = "") -> None:
        self.lines.append(line)
        self.users.append(user)
        self.items.append(item)
        if self.timestamps is not None:
            self.timestamps.append(timestamp)
        if self.ratings is not None:
            self.ratings.append(rating)


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected a number or an ISO 8601 time, got {text!r}") from None
    # A time without a zone is read as UTC, so the same file gives the same order on every machine.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _parse_rating(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _to_floats(
    values: list[str] | None,
    *,
    path: Path,
    lines: list[int],
    field: str,
    required: bool,
    is_time: bool,
) -> npt.NDArray[np.float64]:
    """One vectorised conversion; only when it fails, a Python loop finds the offending line."""
    if values is None:
        return np.full(len(lines), np.nan)
    try:
        array = np.asarray(["nan" if v == "" else v for v in values], dtype=np.float64)
        bad = ~np.isfinite(array) if required else np.isinf(array)
        if not bad.any():
            return array
    except ValueError:
        pass
    parse = _parse_time if is_time else _parse_rating
    out = np.empty(len(values), dtype=np.float64)
    for position, text in enumerate(values):
        line = lines[position]
        if text.strip() == "":
            if required:
                raise DataError("missing value", path=path, line=line, field=field)
            out[position] = np.nan
            continue
        try:
            value = parse(text.strip())
        except ValueError as exc:
            raise DataError(str(exc), path=path, line=line, field=field) from None
        if np.isinf(value) or (required and np.isnan(value)):
            raise DataError(f"expected a finite number, got {text!r}", path=path, line=line, field=field)
        out[position] = value
    return out


def build_interactions(
    columns: EventColumns,
    catalog: Catalog,
    *,
    path: Path,
    user_field: str,
    item_field: str,
    timestamp_field: str = "timestamp",
    rating_field: str = "rating",
    required_numbers: bool = False,
) -> Interactions:
    """Arrays aligned to ``catalog``; users numbered in order of first appearance in the file."""
    if not columns.lines:
        raise DataError("no interactions found", path=path)
    for position, user in enumerate(columns.users):
        if not user:
            raise DataError("missing user id", path=path, line=columns.lines[position], field=user_field)
    positions = {item_id: index for index, item_id in enumerate(catalog.ids)}
    item_index = np.fromiter((positions.get(i, -1) for i in columns.items), dtype=np.int64, count=len(columns.items))
    missing = np.flatnonzero(item_index < 0)
    if missing.size:
        first = int(missing[0])
        raise DataError(
            f"item id {columns.items[first]!r} is not in the catalog ({missing.size} such event(s) in this file)",
            path=path,
            line=columns.lines[first],
            field=item_field,
        )
    user_positions: dict[str, int] = {}
    for user in columns.users:
        if user not in user_positions:
            user_positions[user] = len(user_positions)
    user_index = np.fromiter((user_positions[u] for u in columns.users), dtype=np.int64, count=len(columns.users))
    timestamp = _to_floats(
        columns.timestamps,
        path=path,
        lines=columns.lines,
        field=timestamp_field,
        required=required_numbers,
        is_time=True,
    )
    rating = _to_floats(
        columns.ratings,
        path=path,
        lines=columns.lines,
        field=rating_field,
        required=required_numbers,
        is_time=False,
    )
    return Interactions(
        user_ids=list(user_positions),
        user_index=user_index,
        item_index=item_index,
        timestamp=timestamp,
        rating=rating,
        source=str(path),
    )
