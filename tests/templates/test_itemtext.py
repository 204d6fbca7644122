"""Item text for embedding: the default wording, custom templates, and every way a template can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsgen.errors import EmptyTextError, TemplateError
from zsgen.itemtext import DEFAULT_ITEM_TEXT, ItemTextTemplate, display_title
from zsgen.types import Item


@pytest.fixture(scope="module")
def default() -> ItemTextTemplate:
    return ItemTextTemplate()


@pytest.mark.parametrize(
    ("raw", "natural"),
    [
        ("Aristocats, The", "The Aristocats"),
        ("Good, the Bad and the Ugly, The", "The Good, the Bad and the Ugly"),
        (
            "City of Lost Children, The (Cité des enfants perdus, La)",
            "The City of Lost Children (Cité des enfants perdus, La)",
        ),
        ("Appartement, L'", "L'Appartement"),
        ("Room with a View, A", "A Room with a View"),
        ("Toy Story", "Toy Story"),
        ("  Heat  ", "Heat"),
        # A lower-case trailing word is part of the title, not a moved article.
        ("Plan, a", "Plan, a"),
    ],
)
def test_display_title_moves_trailing_article(raw: str, natural: str) -> None:
    assert display_title(raw) == natural


def test_default_text_reads_like_a_sentence(default: ItemTextTemplate) -> None:
    item = Item(
        id="1",
        title="Toy Story",
        year=1995,
        genres=("Animation", "Children's", "Comedy"),
        description="Toys come alive when nobody is looking",
    )
    assert default.render(item) == (
        "Toy Story (1995). Genres: Animation, Children's, Comedy. Toys come alive when nobody is looking."
    )


def test_default_text_uses_natural_title_and_skips_missing_parts(default: ItemTextTemplate) -> None:
    assert default.render(Item(id="102", title="Aristocats, The", year=1970)) == "The Aristocats (1970)."
    assert default.render(Item(id="h", title="Help!")) == "Help!"
    only_text = default.render(Item(id="x", title="", description="A film about rain."))
    assert only_text == "A film about rain."
    assert "Genres" not in default.render(Item(id="y", title="Heat", year=1995))


def test_custom_template_sees_every_item_field() -> None:
    template = ItemTextTemplate(
        "{{ id }}|{{ title }}|{{ year }}|{{ genres | join('/') }}|{{ description }}|{{ attributes.runtime_min }}"
    )
    item = Item(id="m7", title="Rocket", year=2001, genres=("A", "B"), description="d", attributes={"runtime_min": 90})
    assert template.render(item) == "m7|Rocket|2001|A/B|d|90"


def test_layout_whitespace_collapses() -> None:
    template = ItemTextTemplate("{{ title }}\n\n   {% if year %}\n({{ year }})\n{% endif %}")
    assert template.render(Item(id="1", title="Heat", year=1995)) == "Heat (1995)"


def test_optional_attribute_can_be_tested_for() -> None:
    template = ItemTextTemplate(
        "{{ title }}{% if attributes.director is defined %} by {{ attributes.director }}{% endif %}"
    )
    assert template.render(Item(id="1", title="A", attributes={"director": "Kim"})) == "A by Kim"
    assert template.render(Item(id="2", title="B")) == "B"


def test_render_all_keeps_catalog_order(default: ItemTextTemplate) -> None:
    items = [Item(id=str(i), title=f"Film {i}") for i in (3, 1, 2)]
    assert default.render_all(items) == ["Film 3.", "Film 1.", "Film 2."]


def test_unknown_variable_is_reported_with_its_line_before_rendering() -> None:
    with pytest.raises(TemplateError) as caught:
        ItemTextTemplate("{{ title }}\n{{ year }}\n{{ plot }}")
    assert caught.value.line == 3
    assert "plot" in str(caught.value)


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateError) as caught:
        ItemTextTemplate("{{ title }}\n{% if year %}\n{{ year }")
    assert caught.value.line == 3
    assert "syntax error" in str(caught.value)


def test_missing_attribute_is_an_error_at_render_with_its_line() -> None:
    template = ItemTextTemplate("{{ title }}\n{{ attributes.runtime_min }}")
    assert template.render(Item(id="ok", title="A", attributes={"runtime_min": 1})) == "A 1"
    with pytest.raises(TemplateError) as caught:
        template.render(Item(id="m9", title="B"))
    assert caught.value.line == 2
    assert "m9" in str(caught.value)


def test_sandbox_blocks_unsafe_attribute_access() -> None:
    template = ItemTextTemplate("{{ title.__class__.__mro__ }}")
    with pytest.raises(TemplateError):
        template.render(Item(id="1", title="x"))


@pytest.mark.parametrize(
    ("source", "limit"),
    [
        # Nested loops: 1,000 x 1,000 iterations, far past the loop budget.
        ("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}{{ title }}", "loop iterations"),
        # A padding that would allocate gigabytes is refused before it runs.
        ("{{ title * 100000000 }}", "value size"),
        ("{{ 10 ** 100000 }}", "integer size"),
    ],
)
def test_item_text_renders_in_the_limited_sandbox(source: str, limit: str) -> None:
    """Item-text templates are user input like prompt templates, so they get the same render budget."""
    template = ItemTextTemplate(source)
    with pytest.raises(TemplateError) as caught:
        template.render(Item(id="m7", title="x"))
    assert caught.value.limit == limit
    assert "m7" in str(caught.value)
    assert "template limit exceeded" in str(caught.value)


def test_item_text_sandbox_is_immutable() -> None:
    """The immutable sandbox, as for prompt templates: a template cannot change the values it is given."""
    template = ItemTextTemplate("{{ genres.append('Horror') }}{{ genres | join(' ') }}")
    with pytest.raises(TemplateError):
        template.render(Item(id="1", title="x", genres=("Drama",)))


def test_item_text_keeps_its_whitespace_rules() -> None:
    """Block tags do not trim the newline after them in item text (unlike prompt templates): the embedded text of
    existing templates stays exactly what it was."""
    template = ItemTextTemplate("{{ title }}{% if year %}\n({{ year }}){% endif %}")
    assert template.render(Item(id="1", title="Heat", year=1995)) == "Heat (1995)"


def test_blank_text_names_the_item() -> None:
    template = ItemTextTemplate("{{ description }}")
    with pytest.raises(EmptyTextError) as caught:
        template.render(Item(id="m042", title="Has a title but the template ignores it"))
    assert "m042" in str(caught.value)


def test_hash_follows_the_source() -> None:
    assert ItemTextTemplate().hash == ItemTextTemplate(DEFAULT_ITEM_TEXT).hash
    assert ItemTextTemplate("{{ title }}").hash != ItemTextTemplate("{{ title }} ").hash
    assert len(ItemTextTemplate().hash) == 16


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "item.j2"
    path.write_text("{{ title | upper }}", encoding="utf-8")
    template = ItemTextTemplate.from_file(path)
    assert template.render(Item(id="1", title="heat")) == "HEAT"
    assert template.name == str(path)
    with pytest.raises(TemplateError) as caught:
        ItemTextTemplate.from_file(tmp_path / "absent.j2")
    assert "absent.j2" in str(caught.value)
