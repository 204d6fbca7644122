"""One entry point for every supported layout, chosen from the path unless the caller names a format."""

from __future__ import annotations

from pathlib import Path

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.interactions import Dataset, Interactions
from zsgen.loaders.delimited import load_csv_catalog, load_csv_interactions
from zsgen.loaders.jsonl import load_jsonl_catalog, load_jsonl_interactions
from zsgen.loaders.mapping import ColumnMapping, InteractionMapping
from zsgen.loaders.movielens import (
    MOVIELENS_CSV_ENCODING,
    MOVIELENS_ENCODING,
    load_ml1m,
    load_ml100k,
    load_ml_latest,
    load_movielens,
)
from zsgen.loaders.recbole import load_recbole

FORMATS = ("ml-100k", "ml-1m", "ml-latest", "recbole", "jsonl", "csv", "tsv")
_JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_CSV_SUFFIXES = {".csv", ".tsv", ".tab"}
_RECBOLE_SUFFIXES = {".item", ".inter", ".user"}


def detect_format(path: str | Path) -> str:
    """The layout of ``path``: a folder by the files in it, a file by its name."""
    location = Path(path)
    if not location.exists():
        raise DataError("file not found", path=location)
    if location.is_dir():
        if (location / "u.data").exists() or (location / "u.item").exists():
            return "ml-100k"
        if (location / "ratings.dat").exists() or (location / "movies.dat").exists():
            return "ml-1m"
        if (location / "ratings.csv").exists() and (location / "movies.csv").exists():
            return "ml-latest"
        if any(p.suffix in {".item", ".inter"} for p in location.iterdir()):
            return "recbole"
        raise DataError(
            "cannot tell the dataset layout of this folder: expected u.data (ml-100k), ratings.dat (ml-1m), "
            "ratings.csv + movies.csv (ml-latest) or RecBole .item/.inter files",
            path=location,
        )
    name = location.name.lower()
    if name in {"u.data", "u.item", "u.genre"}:
        return "ml-100k"
    if name in {"ratings.dat", "movies.dat"}:
        return "ml-1m"
    suffix = location.suffix.lower()
    if suffix in _RECBOLE_SUFFIXES:
        return "recbole"
    if suffix in _JSON_SUFFIXES:
        return "jsonl"
    if suffix in _CSV_SUFFIXES:
        return "tsv" if suffix in {".tsv", ".tab"} else "csv"
    raise DataError(f"cannot tell the format from the name; pass format= (one of {', '.join(FORMATS)})", path=location)


def _normalise_format(fmt: str) -> str:
    key = fmt.strip().lower().replace("_", "-")
    aliases = {
        "ml100k": "ml-100k",
        "ml1m": "ml-1m",
        "ml-latest-small": "ml-latest",
        "mllatest": "ml-latest",
        "json": "jsonl",
        "ndjson": "jsonl",
        "atomic": "recbole",
    }
    key = aliases.get(key, key)
    if key == "movielens":
        return key
    if key not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return key


def load_interactions(
    path: str | Path,
    catalog: Catalog,
    *,
    mapping: InteractionMapping | None = None,
    format: str | None = None,
    encoding: str = "utf-8",
) -> Interactions:
    """An interaction log in JSONL or CSV/TSV, checked against ``catalog`` (an unknown item id is an error)."""
    location = Path(path)
    fmt = _normalise_format(format) if format else detect_format(location)
    if fmt == "jsonl":
        return load_jsonl_interactions(location, catalog, mapping=mapping, encoding=encoding)
    if fmt in {"csv", "tsv"}:
        delimiter = "\t" if fmt == "tsv" else ","
        return load_csv_interactions(location, catalog, mapping=mapping, delimiter=delimiter, encoding=encoding)
    raise ConfigError(f"interaction logs are read from JSONL or CSV/TSV files, not {fmt}")


def _load(
    location: Path,
    fmt: str,
    *,
    mapping: ColumnMapping | None,
    interaction_mapping: InteractionMapping | None,
    encoding: str | None,
    with_interactions: bool,
) -> Dataset:
    if fmt in {"ml-100k", "ml-1m", "ml-latest", "movielens"}:
        folder = location if location.is_dir() else location.parent
        if fmt == "movielens":
            return load_movielens(folder, encoding=encoding, with_interactions=with_interactions)
        if fmt == "ml-latest":
            encoding = encoding or MOVIELENS_CSV_ENCODING
            return load_ml_latest(folder, encoding=encoding, with_interactions=with_interactions)
        loader = load_ml100k if fmt == "ml-100k" else load_ml1m
        return loader(folder, encoding=encoding or MOVIELENS_ENCODING, with_interactions=with_interactions)
    if fmt == "recbole":
        return load_recbole(
            location,
            mapping=mapping,
            interaction_mapping=interaction_mapping,
            encoding=encoding or "utf-8",
            with_interactions=with_interactions,
        )
    if fmt == "jsonl":
        return Dataset(catalog=load_jsonl_catalog(location, mapping=mapping, encoding=encoding or "utf-8"))
    delimiter = "\t" if fmt == "tsv" else ","
    catalog = load_csv_catalog(location, mapping=mapping, delimiter=delimiter, encoding=encoding or "utf-8")
    return Dataset(catalog=catalog)


def load_dataset(
    path: str | Path,
    *,
    format: str | None = None,
    mapping: ColumnMapping | None = None,
    interactions: str | Path | None = None,
    interaction_mapping: InteractionMapping | None = None,
    encoding: str | None = None,
) -> Dataset:
    """A catalog and, where the layout has one, its interaction log.

    ``format`` overrides detection (``ml-100k``, ``ml-1m``, ``ml-latest``, ``movielens``, ``recbole``, ``jsonl``,
    ``csv``, ``tsv``). ``mapping`` names catalog columns for JSONL/CSV (and overrides RecBole's guesses);
    ``interactions`` adds a JSONL/CSV log to a JSONL/CSV catalog. ``encoding`` defaults to latin-1 for the older
    GroupLens files (ml-100k, ml-1m, as distributed) and UTF-8 for everything else.
    """
    location = Path(path)
    fmt = _normalise_format(format) if format else detect_format(location)
    if interactions is not None and fmt not in {"jsonl", "csv", "tsv"}:
        raise ConfigError(f"{fmt} datasets carry their own interactions; 'interactions' is only for JSONL/CSV")
    if mapping is not None and fmt in {"ml-100k", "ml-1m", "ml-latest", "movielens"}:
        raise ConfigError("GroupLens MovieLens files have fixed columns; a column mapping does not apply to them")
    dataset = _load(
        location,
        fmt,
        mapping=mapping,
        interaction_mapping=interaction_mapping,
        encoding=encoding,
        with_interactions=True,
    )
    if interactions is None:
        return dataset
    log = load_interactions(interactions, dataset.catalog, mapping=interaction_mapping, encoding=encoding or "utf-8")
    return Dataset(catalog=dataset.catalog, interactions=log)


def load_catalog(
    path: str | Path,
    *,
    format: str | None = None,
    mapping: ColumnMapping | None = None,
    encoding: str | None = None,
) -> Catalog:
    """Only the catalog of :func:`load_dataset`; an interaction log beside it is not read."""
    location = Path(path)
    fmt = _normalise_format(format) if format else detect_format(location)
    return _load(
        location, fmt, mapping=mapping, interaction_mapping=None, encoding=encoding, with_interactions=False
    ).catalog
