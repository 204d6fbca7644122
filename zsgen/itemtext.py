"""The one place an item's text for embedding is built.

Retrieval quality depends on which fields go into the text and in what words, so the text is a user-editable Jinja2
template rather than string concatenation scattered over the code. Its :attr:`ItemTextTemplate.hash` lets embedding
caches tell vectors built from different texts apart.

Templates are user input: they render in the prompt templates' limited sandbox (:mod:`zsgen.templates.sandbox`:
immutable, bounded in CPU time, output and value sizes), and a name the template does not know is an error (with the
template line) instead of silently rendering as nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from zsgen.errors import EmptyTextError, TemplateError, ZsgenError
from zsgen.templates.sandbox import TemplateLimitError, make_environment, render_limited
from zsgen.types import Item

#: The variables an item-text template can use; each is the :class:`~zsgen.types.Item` field of the same name.
ITEM_FIELDS: frozenset[str] = frozenset({"id", "title", "year", "genres", "description", "attributes"})

#: "Toy Story (1995). Genres: Animation, Children's, Comedy. <description>"
DEFAULT_ITEM_TEXT = """\
{%- set head = title | display_title -%}
{%- if year %}{% set head = head ~ " (" ~ year ~ ")" %}{% endif -%}
{{ head | sentence }}
{%- if genres %} Genres: {{ genres | join(", ") }}.{% endif %}
{%- if description %} {{ description | sentence }}{% endif %}
"""

# MovieLens writes "Aristocats, The" and "City of Lost Children, The (Cité des enfants perdus, La)". Only the
# capitalised forms are matched, so a title that really ends in ", a" is left alone.
_TRAILING_ARTICLE = re.compile(
    r"^(?P<rest>.+?),\s*(?P<article>The|A|An|La|Le|Les|L'|Il|Lo|Gli|I|Das|Der|Die|Den|Det|El|Los|Las)"
    r"(?P<tail>\s*\(.*\))?\s*$"
)
_TEMPLATE_FILENAME = "<template>"


def display_title(title: str) -> str:
    """The natural reading order of a title: "Aristocats, The" → "The Aristocats".

    A parenthesised alternative title or year after the article stays where it is:
    "City of Lost Children, The (Cité des enfants perdus, La)" → "The City of Lost Children (Cité des enfants
    perdus, La)".
    """
    title = title.strip()
    match = _TRAILING_ARTICLE.match(title)
    if not match:
        return title
    article = match.group("article")
    joiner = "" if article.endswith("'") else " "
    return f"{article}{joiner}{match.group('rest')}{match.group('tail') or ''}"


def _sentence(text: object) -> str:
    """End a phrase with a full stop unless it already ends with one (so "Help!" does not become "Help!.")."""
    value = str(text).strip()
    if not value or value[-1] in ".!?…":
        return value
    return value + "."


def _make_environment() -> ImmutableSandboxedEnvironment:
    """The prompt templates' limited sandbox (:mod:`zsgen.templates.sandbox`), with Jinja's default whitespace
    handling (the rendered text is embedded, so it must stay as it always was) and the item-text filters."""
    return make_environment(trim_blocks=False, filters={"display_title": display_title, "sentence": _sentence})


def _template_line(tb: TracebackType | None) -> int | None:
    """The template line an exception was raised from (Jinja rewrites tracebacks to show template frames)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class ItemTextTemplate:
    """Renders items to the text that is embedded.

    Variables: ``id``, ``title``, ``year`` (int or none), ``genres`` (list of str), ``description``, ``attributes``
    (dict). Filters besides Jinja's own: ``display_title`` (moves a trailing article to the front) and ``sentence``
    (adds a full stop unless the text already ends a sentence). Runs of whitespace in the output collapse to one
    space, so a template may be laid out over several lines without changing the text.
    """

    def __init__(self, source: str = DEFAULT_ITEM_TEXT, *, name: str = "item text template") -> None:
        self.source = source
        self.name = name
        self._env = _make_environment()
        try:
            ast = self._env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"syntax error: {exc.message}", template=name, line=exc.lineno) from None
        self._check_names(ast)
        self._template = self._env.from_string(source)

    @classmethod
    def from_file(cls, path: str | Path) -> ItemTextTemplate:
        file = Path(path)
        try:
            source = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TemplateError("item text template file not found", template=str(file)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"cannot read item text template: {exc}", template=str(file)) from None
        return cls(source, name=str(file))

    @property
    def hash(self) -> str:
        """Short sha256 of the source: part of every embedding-cache key, so an edited template re-embeds."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()[:16]

    def _check_names(self, ast: nodes.Template) -> None:
        """Reject unknown variables before any item is rendered, pointing at the first line that uses one."""
        known = ITEM_FIELDS | set(self._env.globals)
        unknown = sorted(meta.find_undeclared_variables(ast) - known)
        if not unknown:
            return
        lines = [node.lineno for node in ast.find_all(nodes.Name) if node.name == unknown[0] and node.ctx == "load"]
        raise TemplateError(
            f"undefined variable {unknown[0]!r}; item templates can use {', '.join(sorted(ITEM_FIELDS))}",
            template=self.name,
            line=min(lines) if lines else None,
        )

    def render(self, item: Item) -> str:
        """The item's text; an item whose text comes out blank cannot be embedded, so that is an error."""
        context: dict[str, Any] = {
            "id": item.id,
            "title": item.title,
            "year": item.year,
            "genres": list(item.genres),
            "description": item.description,
            "attributes": dict(item.attributes),
        }
        try:
            text = render_limited(self._template, context)
        except ZsgenError:
            raise
        except TemplateLimitError as exc:
            raise TemplateError(
                f"{exc} (item {item.id!r})",
                template=self.name,
                line=_template_line(exc.__traceback__),
                limit=exc.limit,
            ) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"undefined value while rendering item {item.id!r}: {exc.message}",
                template=self.name,
                line=_template_line(exc.__traceback__),
            ) from None
        except Exception as exc:  # a user template can fail in any way; report it as a template fault with its line
            raise TemplateError(
                f"error while rendering item {item.id!r}: {type(exc).__name__}: {exc}",
                template=self.name,
                line=_template_line(exc.__traceback__),
            ) from None
        text = " ".join(text.split())
        if not text:
            raise EmptyTextError(f"item {item.id!r} has empty text under {self.name}", field="text")
        return text

    def render_all(self, catalog: Iterable[Item]) -> list[str]:
        """Texts in catalog order, so row ``i`` of an embedding matrix is catalog item ``i``."""
        return [self.render(item) for item in catalog]
