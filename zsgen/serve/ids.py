"""What a runtime item id may be, and what a request's strings may hold.

An id is the key of ``PUT``/``DELETE /v1/items/{id}``, of the journal and of every history that names the item, so
one that two spellings could reach, that prints as something else, or that a history would take for another item is
refused before anything is changed:

- 1 to 512 characters, with no white space at either end (``" 50"`` is not a second item ``50``);
- no control, format, private-use, unassigned or surrogate characters (``50\\n``, a zero-width space), and no U+FFFD,
  which is what an invalid ``%``-escape in the URL decodes to;
- a new id may not equal the title of another item (histories name items by id *or* title, and the id would win:
  ``PUT /v1/items/Toy Story (1995)`` would take over every history naming that film).

``/`` is allowed: the route takes the rest of the path (``PUT /v1/items/a/b`` and ``/v1/items/a%2Fb`` both name
``a/b``).
"""

from __future__ import annotations

import unicodedata

from zsgen.catalog import Catalog
from zsgen.serve.errors import ApiError

__all__ = ["MAX_ID", "check_item_id", "check_new_item_id"]

MAX_ID = 512


def check_item_id(item_id: str) -> None:
    """422 ``invalid_item_id`` unless ``item_id`` is an id as the module docstring defines it."""
    problem = _id_problem(item_id)
    if problem is not None:
        raise ApiError(422, "invalid_item_id", f"item id {item_id!r}: {problem} (see README, Serving: item ids)")


def check_new_item_id(item_id: str, catalog: Catalog) -> None:
    """:func:`check_item_id`, and 409 ``item_id_conflict`` when a new id would shadow another item's title."""
    check_item_id(item_id)
    if item_id in catalog:
        return  # a replacement of the item itself
    titled = [other for other in catalog.find_title(item_id) if other != item_id]
    if titled:
        title = catalog.get(titled[0]).title
        raise ApiError(
            409,
            "item_id_conflict",
            f"item id {item_id!r} is the title of item {titled[0]!r} ({title!r}): histories naming that title would "
            "reach the new item instead; choose another id",
        )


def _id_problem(item_id: str) -> str | None:
    if not 1 <= len(item_id) <= MAX_ID:
        return f"must have 1 to {MAX_ID} characters"
    if item_id != item_id.strip():
        return "white space at either end"
    for ch in item_id:
        if ch == "\ufffd":
            return "holds U+FFFD (an invalid %-escape in the URL?)"
        if unicodedata.category(ch).startswith("C"):
            return f"holds the character U+{ord(ch):04X} (control, format or unassigned characters are not allowed)"
    return None
