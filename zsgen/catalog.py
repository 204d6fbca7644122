"""The catalog: items by id, in a fixed order that every item-vector matrix and score array follows."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Iterator

from zsgen.errors import DuplicateItemError, UnknownItemError
from zsgen.types import Item

_ARTICLE_SUFFIX = re.compile(r"^(?P<rest>.*),\s*(?P<article>the|a|an|les|la|le|il|das|der|die|el)$", re.IGNORECASE)
#: Matched on stripped text: a pattern that begins with ``\s*`` retries from every blank of a long run (quadratic).
_YEAR_SUFFIX = re.compile(r"\(\d{4}\)\Z")


def normalise_title(title: str) -> str:
    """A key under which spellings of one title compare equal.

    Folds case and accents, drops a trailing "(1995)", moves a MovieLens trailing article back to the front
    ("Aristocats, The" → "the aristocats") and squeezes punctuation, so users can type titles the natural way.
    """
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    text = _YEAR_SUFFIX.sub("", text.strip()).rstrip()
    match = _ARTICLE_SUFFIX.match(text)
    if match:
        text = f"{match.group('article')} {match.group('rest')}"
    text = re.sub(r"[^0-9a-zA-Z]+", " ", text).strip().lower()
    return text


class Catalog:
    """An ordered, id-unique collection of items.

    The position of an item (``index_of``) is the row of its vector in every matrix built from this catalog, so the
    order never changes after construction; :meth:`with_items` returns a new catalog with items appended.
    """

    def __init__(self, items: Iterable[Item], *, source: str | None = None) -> None:
        self.source = source
        self._items: list[Item] = []
        self._index: dict[str, int] = {}
        for item in items:
            if item.id in self._index:
                raise DuplicateItemError(f"duplicate item id {item.id!r}", path=source, field="id")
            self._index[item.id] = len(self._items)
            self._items.append(item)
        self._titles: dict[str, list[str]] | None = None

    @property
    def items(self) -> list[Item]:
        return list(self._items)

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._index

    def __getitem__(self, position: int) -> Item:
        return self._items[position]

    def get(self, item_id: str) -> Item:
        return self._items[self.index_of(item_id)]

    def index_of(self, item_id: str) -> int:
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise UnknownItemError(str(item_id), suggestions=self._suggest_ids(str(item_id))) from None

    def indices_of(self, item_ids: Iterable[str]) -> list[int]:
        return [self.index_of(item_id) for item_id in item_ids]

    def with_items(self, new_items: Iterable[Item]) -> Catalog:
        """A catalog with ``new_items`` appended (cold-start items); existing positions are unchanged."""
        return Catalog([*self._items, *new_items], source=self.source)

    def _title_index(self) -> dict[str, list[str]]:
        if self._titles is None:
            titles: dict[str, list[str]] = {}
            for item in self._items:
                titles.setdefault(normalise_title(item.title), []).append(item.id)
            self._titles = titles
        return self._titles

    def find_title(self, title: str) -> list[str]:
        """Ids of the items whose normalised title equals ``title``'s (possibly several: remakes share titles)."""
        return list(self._title_index().get(normalise_title(title), []))

    def resolve(self, key: str) -> str:
        """Turn an id or a title typed by a user into an item id.

        An exact id wins; then an exact normalised title. A title shared by several items resolves to the first in
        catalog order only if the caller gave a year that disambiguates; otherwise it is an error listing the ids.
        """
        key = str(key).strip()
        if key in self._index:
            return key
        matches = self.find_title(key)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            year = re.search(r"\((\d{4})\)\s*$", key)
            if year:
                dated = [i for i in matches if self.get(i).year == int(year.group(1))]
                if len(dated) == 1:
                    return dated[0]
            raise UnknownItemError(
                key,
                suggestions=[f"{i} ({self.get(i).title}, {self.get(i).year})" for i in matches],
                kind="unambiguous title",
            )
        raise UnknownItemError(key, suggestions=self._suggest(key))

    def _suggest_ids(self, key: str) -> list[str]:
        return difflib.get_close_matches(key, list(self._index), n=3, cutoff=0.6) or self._suggest(key)

    def _suggest(self, key: str) -> list[str]:
        wanted = normalise_title(key)
        titles = self._title_index()
        close = difflib.get_close_matches(wanted, list(titles), n=3, cutoff=0.6)
        return [self.get(titles[t][0]).title for t in close]
