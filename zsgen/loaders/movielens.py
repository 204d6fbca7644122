"""MovieLens as GroupLens distributes it: the ml-100k layout (``u.data``, ``u.item``, ``u.genre``), the ml-1m
layout (``ratings.dat``, ``movies.dat``), both latin-1, and the CSV layout of ml-latest / ml-latest-small / ml-25m
(``movies.csv``, ``ratings.csv``), UTF-8. Titles carry the year ("Toy Story (1995)"), which is moved into
``Item.year`` so the title embeds and matches cleanly.
"""

from __future__ import annotations

from pathlib import Path

from zsgen.errors import DataError
from zsgen.interactions import Dataset
from zsgen.loaders._common import (
    CatalogBuilder,
    EventColumns,
    build_interactions,
    iter_lines,
    read_text,
    split_title_year,
)
from zsgen.loaders.delimited import iter_rows

#: Genre order of the ml-100k ``u.item`` flag columns, used when ``u.genre`` is missing.
ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
MOVIELENS_ENCODING = "latin-1"


def _read_genres(path: Path, encoding: str) -> tuple[str, ...]:
    if not path.exists():
        return ML100K_GENRES
    by_index: dict[int, str] = {}
    for line, content in iter_lines(read_text(path, encoding)):
        parts = content.split("|")
        if len(parts) != 2:
            raise DataError(f"expected 'name|index', found {len(parts)} field(s)", path=path, line=line)
        try:
            index = int(parts[1])
        except ValueError:
            raise DataError(f"genre index {parts[1]!r} is not a number", path=path, line=line, field="index") from None
        by_index[index] = parts[0].strip()
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError("genre indices must run 0, 1, 2, ... without gaps", path=path)
    return tuple(by_index[i] for i in range(len(by_index)))


def _year_from_date(date: str) -> int | None:
    """ml-100k release dates look like "01-Jan-1995"."""
    tail = date.strip()[-4:]
    return int(tail) if tail.isdigit() else None


def _read_ml100k_items(path: Path, genres: tuple[str, ...], encoding: str) -> CatalogBuilder:
    builder = CatalogBuilder(path)
    width = 5 + len(genres)
    for line, content in iter_lines(read_text(path, encoding)):
        parts = content.split("|")
        if len(parts) != width:
            raise DataError(f"expected {width} '|'-separated fields, found {len(parts)}", path=path, line=line)
        item_id, raw_title, release_date, _video_date, url = parts[:5]
        flags = parts[5:]
        chosen = []
        for name, flag in zip(genres, flags, strict=True):
            if flag not in {"0", "1"}:
                raise DataError(f"genre flag must be 0 or 1, got {flag!r}", path=path, line=line, field=name)
            if flag == "1":
                chosen.append(name)
        title, year = split_title_year(raw_title)
        attributes: dict[str, object] = {}
        if release_date.strip():
            attributes["release_date"] = release_date.strip()
        if url.strip():
            attributes["imdb_url"] = url.strip()
        builder.add(
            line,
            item_id=item_id,
            title=title,
            year=year if year is not None else _year_from_date(release_date),
            genres=chosen,
            attributes=attributes,
            id_field="movie id",
            title_field="movie title",
        )
    return builder


def _read_events(path: Path, *, separator: str, encoding: str) -> EventColumns:
    events = EventColumns(has_timestamp=True, has_rating=True)
    for line, content in iter_lines(read_text(path, encoding)):
        parts = content.split(separator)
        if len(parts) != 4:
            shown = "tab" if separator == "\t" else repr(separator)
            raise DataError(f"expected 4 {shown}-separated fields, found {len(parts)}", path=path, line=line)
        user, item, rating, timestamp = parts
        events.append(line, user.strip(), item.strip(), timestamp.strip(), rating.strip())
    return events


def load_ml100k(path: str | Path, *, encoding: str = MOVIELENS_ENCODING, with_interactions: bool = True) -> Dataset:
    """A GroupLens ml-100k folder: ``u.item`` (catalog), ``u.data`` (ratings), ``u.genre`` (genre names)."""
    folder = Path(path)
    genres = _read_genres(folder / "u.genre", encoding)
    catalog = _read_ml100k_items(folder / "u.item", genres, encoding).build()
    if not with_interactions:
        return Dataset(catalog=catalog)
    events = _read_events(folder / "u.data", separator="\t", encoding=encoding)
    interactions = build_interactions(
        events,
        catalog,
        path=folder / "u.data",
        user_field="user id",
        item_field="item id",
        required_numbers=True,
    )
    return Dataset(catalog=catalog, interactions=interactions)


def _read_ml1m_items(path: Path, encoding: str) -> CatalogBuilder:
    builder = CatalogBuilder(path)
    for line, content in iter_lines(read_text(path, encoding)):
        parts = content.split("::")
        if len(parts) != 3:
            raise DataError(f"expected 3 '::'-separated fields, found {len(parts)}", path=path, line=line)
        item_id, raw_title, raw_genres = parts
        title, year = split_title_year(raw_title)
        genres = _split_genres(raw_genres)
        builder.add(
            line, item_id=item_id, title=title, year=year, genres=genres, id_field="MovieID", title_field="Title"
        )
    return builder


def load_ml1m(path: str | Path, *, encoding: str = MOVIELENS_ENCODING, with_interactions: bool = True) -> Dataset:
    """A GroupLens ml-1m folder: ``movies.dat`` (catalog) and ``ratings.dat`` (ratings); ``users.dat`` is unused."""
    folder = Path(path)
    catalog = _read_ml1m_items(folder / "movies.dat", encoding).build()
    if not with_interactions:
        return Dataset(catalog=catalog)
    events = _read_events(folder / "ratings.dat", separator="::", encoding=encoding)
    interactions = build_interactions(
        events,
        catalog,
        path=folder / "ratings.dat",
        user_field="UserID",
        item_field="MovieID",
        timestamp_field="Timestamp",
        rating_field="Rating",
        required_numbers=True,
    )
    return Dataset(catalog=catalog, interactions=interactions)


#: The CSV releases (ml-latest-small, ml-latest, ml-25m...) are UTF-8, unlike the older latin-1 ones.
MOVIELENS_CSV_ENCODING = "utf-8"


def _split_genres(raw: str) -> list[str]:
    return [g.strip() for g in raw.split("|") if g.strip() and g.strip() != "(no genres listed)"]


def load_ml_latest(
    path: str | Path, *, encoding: str = MOVIELENS_CSV_ENCODING, with_interactions: bool = True
) -> Dataset:
    """A GroupLens CSV folder (ml-latest-small and later): ``movies.csv`` (``movieId,title,genres``) and
    ``ratings.csv`` (``userId,movieId,rating,timestamp``); ``tags.csv`` and ``links.csv`` are unused."""
    folder = Path(path)
    movies = folder / "movies.csv"
    builder = CatalogBuilder(movies)
    for line, row in iter_rows(movies, required=["movieId", "title", "genres"], delimiter=",", encoding=encoding):
        title, year = split_title_year(row["title"])
        builder.add(
            line,
            item_id=row["movieId"],
            title=title,
            year=year,
            genres=_split_genres(row["genres"]),
            id_field="movieId",
            title_field="title",
        )
    catalog = builder.build()
    if not with_interactions:
        return Dataset(catalog=catalog)
    ratings = folder / "ratings.csv"
    events = EventColumns(has_timestamp=True, has_rating=True)
    columns = ["userId", "movieId", "rating", "timestamp"]
    for line, row in iter_rows(ratings, required=columns, delimiter=",", encoding=encoding):
        events.append(line, row["userId"], row["movieId"], row["timestamp"], row["rating"])
    interactions = build_interactions(
        events,
        catalog,
        path=ratings,
        user_field="userId",
        item_field="movieId",
        timestamp_field="timestamp",
        rating_field="rating",
        required_numbers=True,
    )
    return Dataset(catalog=catalog, interactions=interactions)


def load_movielens(path: str | Path, *, encoding: str | None = None, with_interactions: bool = True) -> Dataset:
    """Any GroupLens layout, told apart by its files; ``encoding`` defaults to the layout's own."""
    folder = Path(path)
    if (folder / "ratings.csv").exists() or (folder / "movies.csv").exists():
        return load_ml_latest(folder, encoding=encoding or MOVIELENS_CSV_ENCODING, with_interactions=with_interactions)
    encoding = encoding or MOVIELENS_ENCODING
    if (folder / "u.data").exists() or (folder / "u.item").exists():
        return load_ml100k(folder, encoding=encoding, with_interactions=with_interactions)
    if (folder / "ratings.dat").exists() or (folder / "movies.dat").exists():
        return load_ml1m(folder, encoding=encoding, with_interactions=with_interactions)
    raise DataError(
        "not a MovieLens folder: expected u.data/u.item (ml-100k), ratings.dat/movies.dat (ml-1m) or "
        "ratings.csv/movies.csv (ml-latest)",
        path=folder,
    )
