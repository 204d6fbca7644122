"""Catalog behaviour users rely on: unique ids, stable order, and resolving what people type into ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsgen.catalog import Catalog, normalise_title
from zsgen.errors import DuplicateItemError, UnknownItemError
from zsgen.loaders import load_jsonl_catalog
from zsgen.types import Item


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(
        [
            Item(id="1", title="Toy Story", year=1995),
            Item(id="102", title="Aristocats, The", year=1970),
            Item(id="7", title="Sabrina", year=1954),
            Item(id="8", title="Sabrina", year=1995),
            Item(id="9", title="Amélie", year=2001),
        ],
        source="test",
    )


def test_duplicate_id_is_rejected() -> None:
    with pytest.raises(DuplicateItemError):
        Catalog([Item(id="1", title="A"), Item(id="1", title="B")])


def test_duplicate_from_a_file_names_path_and_second_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(
        '{"id": "a", "title": "One"}\n{"id": "b", "title": "Two"}\n\n{"id": "a", "title": "Three"}\n',
        encoding="utf-8",
    )
    with pytest.raises(DuplicateItemError) as caught:
        load_jsonl_catalog(path)
    assert caught.value.path == str(path)
    assert caught.value.line == 4
    assert "line 1" in str(caught.value)


def test_order_and_lookup(catalog: Catalog) -> None:
    assert catalog.ids == ["1", "102", "7", "8", "9"]
    assert catalog.index_of("7") == 2
    assert catalog.indices_of(["9", "1"]) == [4, 0]
    assert "102" in catalog and "103" not in catalog
    assert catalog.get("102").year == 1970


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("1", "1"),
        ("Toy Story", "1"),
        ("toy story", "1"),
        ("Toy Story (1995)", "1"),
        ("The Aristocats", "102"),
        ("Aristocats, The", "102"),
        ("the aristocats (1970)", "102"),
        ("Amelie", "9"),
        ("Sabrina (1954)", "7"),
        ("Sabrina (1995)", "8"),
    ],
)
def test_resolve(catalog: Catalog, typed: str, expected: str) -> None:
    assert catalog.resolve(typed) == expected


def test_ambiguous_title_lists_the_candidates(catalog: Catalog) -> None:
    with pytest.raises(UnknownItemError) as caught:
        catalog.resolve("Sabrina")
    assert len(caught.value.suggestions) == 2
    assert any("1954" in s for s in caught.value.suggestions)


def test_typo_suggests_close_titles(catalog: Catalog) -> None:
    with pytest.raises(UnknownItemError) as caught:
        catalog.resolve("Toy Stroy")
    assert caught.value.suggestions[0] == "Toy Story"
    assert "did you mean" in str(caught.value)


def test_unknown_id_suggests_close_ids(catalog: Catalog) -> None:
    with pytest.raises(UnknownItemError) as caught:
        catalog.index_of("103")
    assert "102" in caught.value.suggestions


def test_with_items_appends_and_leaves_original_alone(catalog: Catalog) -> None:
    grown = catalog.with_items([Item(id="new", title="Brand New Film")])
    assert grown.ids == [*catalog.ids, "new"]
    assert all(grown.index_of(i) == catalog.index_of(i) for i in catalog.ids)
    assert "new" not in catalog
    assert grown.resolve("Brand New Film") == "new"
    with pytest.raises(DuplicateItemError):
        catalog.with_items([Item(id="7", title="Clash")])


def test_normalise_title() -> None:
    assert normalise_title("Aristocats, The (1970)") == normalise_title("the  ARISTOCATS")
    assert normalise_title("Amélie") == "amelie"


def test_normalise_title_strips_the_year_however_the_blanks_fall() -> None:
    assert normalise_title("  Heat   (1995)  ") == "heat"
    assert normalise_title("Aristocats, The (1970)") == "the aristocats"
    assert normalise_title("Foo (1995) bar") == "foo 1995 bar"  # only a trailing year is dropped
    assert normalise_title("a" + " " * 100_000 + "b (1995)") == "a b"  # a long blank run (was quadratic)
