"""Every supported layout on small hand-made fixtures, the shared ml-100k, and every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from zsgen.errors import ConfigError, DataError, DuplicateItemError, EmptyTextError
from zsgen.interactions import Dataset
from zsgen.itemtext import ItemTextTemplate
from zsgen.loaders import (
    ColumnMapping,
    InteractionMapping,
    detect_format,
    load_catalog,
    load_csv_catalog,
    load_dataset,
    load_demo,
    load_demo_user,
    load_interactions,
    load_jsonl_catalog,
    load_recbole,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "loaders"


def copy_fixture(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def replace_line(path: Path, number: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = new
    path.write_bytes(b"\n".join(lines))


def user_history(dataset: Dataset, user: str) -> list[str]:
    log = dataset.interactions
    assert log is not None
    return log.history(log.user_ids.index(user), dataset.catalog).item_ids


# ---------------------------------------------------------------- layouts


def test_ml100k_layout() -> None:
    dataset = load_dataset(FIXTURES / "ml-100k")
    catalog, log = dataset.catalog, dataset.interactions
    assert log is not None
    assert len(catalog) == 5 and len(log) == 8 and log.user_ids == ["7", "3", "12"]
    first = catalog.get("1")
    assert (first.title, first.year) == ("Paper Moons", 1994)
    assert first.genres == ("Animation", "Children's", "Comedy")
    assert first.attributes["imdb_url"] == "http://example.org/1"
    assert catalog.get("3").title == "Café Lumière"  # latin-1 decoded
    assert catalog.get("4").year == 1988  # no year in the title: taken from the release date
    assert catalog.get("5").year is None
    assert catalog.resolve("The Orchard") == "2"
    # user 7's events are out of time order in the file; histories are oldest first
    assert user_history(dataset, "7") == ["1", "4", "3"]
    # a timestamp tie (user 3: items 1 and 4) keeps file order
    assert user_history(dataset, "3") == ["2", "1", "4"]
    assert log.rating[0] == 4.0 and log.timestamp[0] == 880000300.0


def test_ml100k_genre_names_come_from_u_genre(tmp_path: Path) -> None:
    folder = copy_fixture("ml-100k", tmp_path)
    genre_file = folder / "u.genre"
    genre_file.write_text(genre_file.read_text(encoding="latin-1").replace("Sci-Fi|", "Science Fiction|"), "latin-1")
    assert load_catalog(folder).get("4").genres == ("Adventure", "Science Fiction")
    genre_file.unlink()
    assert load_catalog(folder).get("4").genres == ("Adventure", "Sci-Fi")


def test_ml1m_layout() -> None:
    dataset = load_dataset(FIXTURES / "ml-1m")
    assert dataset.interactions is not None
    assert len(dataset.catalog) == 4 and len(dataset.interactions) == 5
    assert dataset.catalog.get("11").title == "Señor Hollow"
    assert dataset.catalog.get("12").genres == ("Sci-Fi",)
    assert dataset.catalog.get("13").year is None
    assert user_history(dataset, "1") == ["10", "12", "13"]  # file order is 12, 10, 13


def test_ml_latest_small_layout() -> None:
    """The CSV releases (ml-latest-small): UTF-8, quoted titles with commas, half-star ratings, no genres listed."""
    dataset = load_dataset(FIXTURES / "ml-latest-small")
    assert dataset.interactions is not None
    assert len(dataset.catalog) == 4 and len(dataset.interactions) == 4
    assert dataset.catalog.source is not None and dataset.catalog.source.endswith("movies.csv")
    president = dataset.catalog.get("2")
    assert (president.title, president.year) == ("American President, The", 1995)
    assert dataset.catalog.get("3").title == "Señor Hollow"  # UTF-8, unlike ml-100k / ml-1m
    assert dataset.catalog.get("1").genres == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert (dataset.catalog.get("4").year, dataset.catalog.get("4").genres) == (None, ())
    assert user_history(dataset, "1") == ["1", "3", "2"]  # by timestamp, not file order
    assert dataset.interactions.rating.tolist()[2] == 0.5
    assert load_dataset(FIXTURES / "ml-latest-small", format="ml-latest-small").catalog.ids == ["1", "2", "3", "4"]


def test_ml_latest_bad_rows_are_located(tmp_path: Path) -> None:
    folder = copy_fixture("ml-latest-small", tmp_path)
    ratings = folder / "ratings.csv"
    ratings.write_text(ratings.read_text(encoding="utf-8") + "3,99,4.0,1445714835\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_dataset(folder)
    assert (caught.value.line, caught.value.field) == (6, "movieId")


def test_recbole_layout_from_folder_or_file() -> None:
    dataset = load_dataset(FIXTURES / "recbole")
    catalog = dataset.catalog
    assert dataset.interactions is not None and len(dataset.interactions) == 5
    assert catalog.ids == ["a1", "a2", "a3", "a4"]
    first = catalog.get("a1")
    assert (first.title, first.year, first.genres) == ("Starlit Harbour", 1999, ("Drama", "Romance"))
    assert first.attributes == {"popularity": 3.5, "tags": ["sea", "night"]}
    assert catalog.get("a2").attributes == {}  # empty cells are left out
    assert catalog.get("a3").year is None  # RecBole's "unkonwn" year token
    assert user_history(dataset, "u1") == ["a1", "a2", "a3"]
    same = load_dataset(FIXTURES / "recbole" / "tiny.inter")
    assert same.catalog.ids == catalog.ids


def test_recbole_mapping_overrides_guesses() -> None:
    dataset = load_recbole(FIXTURES / "recbole", mapping=ColumnMapping(genres="tags", attributes=["popularity"]))
    item = dataset.catalog.get("a1")
    assert item.genres == ("sea", "night")
    assert item.attributes == {"popularity": 3.5}


def test_jsonl_catalog_and_interactions() -> None:
    catalog = load_jsonl_catalog(FIXTURES / "jsonl" / "catalog.jsonl")
    assert catalog.ids == ["b1", "2", "b3", "b4"]
    assert catalog.get("b1").attributes == {"runtime_min": 88, "language": "English"}
    assert catalog.get("2").genres == ("Thriller", "Mystery") and catalog.get("2").year == 1999
    assert catalog.get("b3").title == ""
    log = load_interactions(FIXTURES / "jsonl" / "interactions.jsonl", catalog)
    assert log.user_ids == ["ann", "bob"]
    ann = log.history(0, catalog)
    assert ann.item_ids == ["b1", "2", "b4"]
    assert [e.rating for e in ann.interactions] == [3.0, None, 4.5]
    bob = log.history(1, catalog).interactions[0]
    assert bob.timestamp == pytest.approx(1709287200.0)  # ISO 8601 time read as given (UTC)


def test_jsonl_round_trips_items(tmp_path: Path) -> None:
    items = load_demo().catalog.items[:20]
    path = tmp_path / "dump.jsonl"
    path.write_text("".join(item.model_dump_json() + "\n" for item in items), encoding="utf-8")
    assert load_catalog(path).items == items


def test_csv_catalog_with_quoted_fields_and_attributes() -> None:
    catalog = load_csv_catalog(FIXTURES / "csv" / "catalog.csv", mapping=ColumnMapping(attributes=["director"]))
    assert catalog.ids == ["c1", "c2", "c3"]
    assert catalog.get("c1").description == "A quiet film, set in one evening."
    assert catalog.get("c2").description.endswith("Second line of the description.")
    assert catalog.get("c1").attributes == {"director": "R. Okafor"}
    assert catalog.get("c2").attributes == {}
    assert catalog.get("c3").genres == ("Documentary", "Food")


def test_tsv_with_column_mapping() -> None:
    mapping = ColumnMapping(
        id="movieId", title="name", year="released", genres="tags", genre_separator=";", description="overview"
    )
    catalog = load_dataset(FIXTURES / "csv" / "catalog.tsv", mapping=mapping).catalog
    assert catalog.get("t1").genres == ("Western", "Drama")
    assert catalog.get("t1").description == "A drover crosses the plains."
    assert catalog.get("t2").year is None


def test_csv_catalog_with_interactions_through_load_dataset() -> None:
    dataset = load_dataset(
        FIXTURES / "csv" / "catalog.csv",
        interactions=FIXTURES / "csv" / "interactions.csv",
        interaction_mapping=InteractionMapping(user="user", item="movie", timestamp="when", rating="stars"),
    )
    log = dataset.interactions
    assert log is not None and log.user_ids == ["u9", "u8"]
    assert user_history(dataset, "u9") == ["c1", "c3", "c2"]  # ts 20, 20 (file order), 50
    assert np.isnan(log.rating[2])  # blank cell = unknown rating


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ml-100k", "ml-100k"),
        ("ml-100k/u.item", "ml-100k"),
        ("ml-1m", "ml-1m"),
        ("ml-1m/ratings.dat", "ml-1m"),
        ("ml-latest-small", "ml-latest"),
        ("recbole", "recbole"),
        ("recbole/tiny.item", "recbole"),
        ("jsonl/catalog.jsonl", "jsonl"),
        ("csv/catalog.csv", "csv"),
        ("csv/catalog.tsv", "tsv"),
    ],
)
def test_detect_format(name: str, expected: str) -> None:
    assert detect_format(FIXTURES / name) == expected


def test_format_override_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "items.txt"
    path.write_text('{"id": "x", "title": "Only One"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="format"):
        load_dataset(path)
    assert load_dataset(path, format="jsonl").catalog.ids == ["x"]
    with pytest.raises(ConfigError):
        load_dataset(path, format="parquet")
    with pytest.raises(ConfigError):
        load_dataset(FIXTURES / "ml-1m", interactions=FIXTURES / "jsonl" / "interactions.jsonl")
    with pytest.raises(ConfigError):
        load_dataset(FIXTURES / "ml-100k", mapping=ColumnMapping(title="name"))


def test_load_catalog_does_not_read_the_ratings(tmp_path: Path) -> None:
    folder = copy_fixture("ml-100k", tmp_path)
    replace_line(folder / "u.data", 2, b"broken")
    assert len(load_catalog(folder)) == 5
    with pytest.raises(DataError):
        load_dataset(folder)


def test_demo_catalog_and_user() -> None:
    catalog = load_demo().catalog
    assert 250 <= len(catalog) <= 350
    assert all(item.title and item.description and item.year and item.genres for item in catalog)
    assert sum("Science Fiction" in item.genres for item in catalog) >= 30
    assert sum("Food" in item.genres for item in catalog) >= 30
    assert len({item.title for item in catalog}) == len(catalog)
    texts = ItemTextTemplate().render_all(catalog)
    assert len(set(texts)) == len(catalog)
    user = load_demo_user()
    assert 3 <= len(user.history) <= 8
    assert all("Science Fiction" in catalog.get(i).genres for i in user.history)
    assert "space" in user.profile


# ---------------------------------------------------------------- bad input


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path / "nope.jsonl")
    assert caught.value.path == str(tmp_path / "nope.jsonl")
    folder = copy_fixture("ml-1m", tmp_path)
    (folder / "ratings.dat").unlink()
    with pytest.raises(DataError) as caught:
        load_dataset(folder)
    assert caught.value.path == str(folder / "ratings.dat")
    assert "not found" in str(caught.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty") as caught:
        load_dataset(path)
    assert caught.value.path == str(path)
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,title\n", encoding="utf-8")
    with pytest.raises(DataError, match="no items"):
        load_dataset(header_only)


@pytest.mark.parametrize(
    ("fixture", "file", "line", "content", "field", "message"),
    [
        ("ml-100k", "u.data", 3, b"3\t2\t3", None, "expected 4"),
        ("ml-100k", "u.data", 5, b"3\t1\tfour\t879000050", "rating", "four"),
        ("ml-100k", "u.data", 2, b"7\t1\t5\tyesterday", "timestamp", "yesterday"),
        ("ml-100k", "u.data", 6, b"12\t99\t1\t881000000", "item id", "'99'"),
        ("ml-100k", "u.item", 2, b"2|Orchard, The (1971)|01-Jan-1971||", None, "expected 24"),
        ("ml-100k", "u.item", 4, b"4|Rocket Nine|05-May-1988|||0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|yes|0|0|0", "Sci-Fi", ""),
        ("ml-1m", "ratings.dat", 4, b"2::13::2", None, "expected 4"),
        ("ml-1m", "movies.dat", 2, b"11::Se\xf1or Hollow (2001)", None, "expected 3"),
        ("recbole", "tiny.inter", 3, b"u2\ta1\t5", None, "expected 4"),
        ("recbole", "tiny.inter", 5, b"u2\ta4\tgood\t950", "rating", "good"),
        ("recbole", "tiny.inter", 6, b"u1\ta9\t5\t1200", "item_id", "'a9'"),
        (
            "recbole",
            "tiny.item",
            1,
            b"item_id:token\tmovie_title:text\trelease_year:token\tclass:token_seq",
            "movie_title",
            "type",
        ),
        ("recbole", "tiny.item", 3, b"a2\tIron Valley, The\t1955\tWestern\tlots\t", "popularity", "float"),
    ],
)
def test_malformed_line_names_file_line_and_field(
    tmp_path: Path, fixture: str, file: str, line: int, content: bytes, field: str | None, message: str
) -> None:
    folder = copy_fixture(fixture, tmp_path)
    replace_line(folder / file, line, content)
    with pytest.raises(DataError) as caught:
        load_dataset(folder)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(folder / file), line, field)
    assert message in str(error)
    assert f"{folder / file}:{line}" in str(error)


def test_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "cat.jsonl"
    path.write_text('{"id": "a", "title": "Fine"}\n\n{"id": "b", "title": "Broken",\n', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON") as caught:
        load_dataset(path)
    assert caught.value.line == 3
    path.write_text('{"id": "a", "title": "Fine"}\n["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="JSON object") as caught:
        load_dataset(path)
    assert caught.value.line == 2
    path.write_text('[{"id": "a", "title": "Fine"}]\n', encoding="utf-8")
    with pytest.raises(DataError, match="JSON Lines"):
        load_dataset(path)


def test_invalid_utf8_names_the_line_and_the_encoding_option(tmp_path: Path) -> None:
    path = tmp_path / "cat.jsonl"
    path.write_bytes(
        b'{"id": "a", "title": "One"}\n{"id": "b", "title": "Two"}\n{"id": "c", "title": "Caf\xe9 Noir"}\n'
    )
    with pytest.raises(DataError) as caught:
        load_dataset(path)
    assert caught.value.line == 3
    assert "encoding" in str(caught.value)
    assert load_dataset(path, encoding="latin-1").catalog.get("c").title == "Café Noir"
    with pytest.raises(DataError, match="unknown encoding"):
        load_dataset(path, encoding="no-such-codec")


def test_duplicate_id_in_each_layout(tmp_path: Path) -> None:
    folder = copy_fixture("ml-1m", tmp_path)
    replace_line(folder / "movies.dat", 3, b"10::Harbour Lights Again (1963)::Drama")
    with pytest.raises(DuplicateItemError) as caught:
        load_dataset(folder)
    assert (caught.value.path, caught.value.line) == (str(folder / "movies.dat"), 3)
    csv_path = tmp_path / "dup.csv"
    csv_path.write_text('id,title,description\nx,One,"multi\nline"\ny,Two,\nx,Three,\n', encoding="utf-8")
    with pytest.raises(DuplicateItemError) as caught:
        load_dataset(csv_path)
    assert caught.value.line == 5  # the quoted newline in record 1 counts as a line
    assert "first on line 2" in str(caught.value)


def test_item_without_title_or_description(tmp_path: Path) -> None:
    path = tmp_path / "cat.jsonl"
    path.write_text('{"id": "a", "title": "One"}\n{"id": "b", "title": "  ", "description": ""}\n', encoding="utf-8")
    with pytest.raises(EmptyTextError) as caught:
        load_dataset(path)
    assert (caught.value.path, caught.value.line) == (str(path), 2)
    assert "'b'" in str(caught.value)


def test_csv_structure_errors(tmp_path: Path) -> None:
    path = tmp_path / "cat.csv"
    path.write_text("id,title,year\na,One,1999\nb,Two\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected 3 columns, found 2") as caught:
        load_dataset(path)
    assert caught.value.line == 3
    path.write_text("id,title,year\na,One,nineteen\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_dataset(path)
    assert (caught.value.line, caught.value.field) == (2, "year")
    path.write_text("id,title\na,One\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_dataset(path, mapping=ColumnMapping(description="plot"))
    assert (caught.value.line, caught.value.field) == (1, "plot")
    path.write_text("id,title\n,One\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing item id") as caught:
        load_dataset(path)
    assert (caught.value.line, caught.value.field) == (2, "id")


def test_interaction_log_errors(tmp_path: Path) -> None:
    catalog = load_jsonl_catalog(FIXTURES / "jsonl" / "catalog.jsonl")
    path = tmp_path / "log.jsonl"
    path.write_text('{"user_id": "u", "item_id": "b1"}\n{"user_id": "u", "item_id": "zz"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="'zz'") as caught:
        load_interactions(path, catalog)
    assert (caught.value.line, caught.value.field) == (2, "item_id")
    path.write_text('{"user_id": "u", "item_id": "b1"}\n{"item_id": "b4"}\n', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_interactions(path, catalog)
    assert (caught.value.line, caught.value.field) == (2, "user_id")
    path.write_text('{"user_id": "u", "item_id": "b1", "timestamp": "soon"}\n', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_interactions(path, catalog)
    assert (caught.value.line, caught.value.field) == (1, "timestamp")


# ---------------------------------------------------------------- shared MovieLens 100K (RecBole files)


@pytest.fixture(scope="module")
def ml100k(shared_data: Path) -> Dataset:
    return load_dataset(shared_data / "ml-100k")


@pytest.mark.data
def test_shared_ml100k_counts(ml100k: Dataset) -> None:
    log = ml100k.interactions
    assert log is not None
    assert len(ml100k.catalog) == 1682
    assert log.n_users == 943
    assert len(log) == 100_000
    assert np.all((log.rating >= 1) & (log.rating <= 5))
    assert not np.isnan(log.timestamp).any()


@pytest.mark.data
def test_shared_ml100k_known_titles(ml100k: Dataset) -> None:
    catalog = ml100k.catalog
    toy = catalog.get(catalog.resolve("Toy Story"))
    assert toy.year == 1995 and "Animation" in toy.genres
    assert catalog.resolve("The Aristocats (1970)") == "102"
    text = ItemTextTemplate().render(catalog.get("102"))
    assert text.startswith("The Aristocats (1970). Genres: Animation")


@pytest.mark.data
def test_shared_ml100k_histories_are_in_time_order(ml100k: Dataset) -> None:
    log = ml100k.interactions
    assert log is not None
    sequences = log.event_order_by_user()
    assert sum(len(s) for s in sequences) == 100_000
    for positions in sequences:
        assert np.all(np.diff(log.timestamp[positions]) >= 0)
    history = log.history(log.user_ids.index("1"), ml100k.catalog)
    assert len(history) == 272
    assert all(isinstance(catalog_id, str) for catalog_id in history.item_ids)


def test_mappings_are_strict_frozen_configs() -> None:
    with pytest.raises(ConfigError, match=r"^invalid ColumnMapping: colour: unknown key$"):
        ColumnMapping(colour="x")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"^invalid ColumnMapping: id: column name must not be empty$"):
        ColumnMapping(id=" ")
    with pytest.raises(ConfigError, match=r"InteractionMapping: user: "):
        InteractionMapping(user=3)  # type: ignore[arg-type]
    mapping = InteractionMapping(user="u")
    with pytest.raises(ValueError, match="frozen"):
        mapping.user = "v"  # type: ignore[misc]


def test_invalid_item_value_names_line_and_field(tmp_path: Path) -> None:
    # The loaders check years and attributes themselves; the builder's own check is the last line of defence.
    from zsgen.loaders._common import CatalogBuilder

    builder = CatalogBuilder(tmp_path / "items.jsonl")
    builder.add(1, item_id="a", title="A")
    with pytest.raises(DataError) as caught:
        builder.add(2, item_id="b", title="B", year="soon")  # type: ignore[arg-type]
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(tmp_path / "items.jsonl"), 2, "year")
    assert str(caught.value).endswith(
        "field 'year': invalid value: Input should be a valid integer, unable to parse string as an integer"
    )
