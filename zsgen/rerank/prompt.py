"""What a reranking prompt is made of: the template's variables, built from the catalog and one user's request.

:func:`build_messages` is the one place that turns (template, catalog, history, profile, candidates, shown order)
into chat messages. The reranker calls it for every round and ``zsgen prompts render`` calls it too, so what the CLI
prints is exactly what a run sends. It is pure: same inputs, same messages, nothing read or written elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zsgen.catalog import Catalog
from zsgen.itemtext import display_title
from zsgen.llm.base import ChatMessage
from zsgen.rerank.labels import LabelStyle, make_labels
from zsgen.templates import PromptTemplate
from zsgen.types import History, Item, Profile

__all__ = ["build_messages", "item_view", "prompt_variables"]


def item_view(item: Item) -> dict[str, Any]:
    """The fields a template sees for one item (titles in natural form: "The Aristocats", not "Aristocats, The")."""
    return {
        "id": item.id,
        "title": display_title(item.title),
        "year": item.year,
        "genres": list(item.genres),
        "description": item.description,
    }


def prompt_variables(
    catalog: Catalog,
    history: History,
    profile: Profile | None,
    candidate_ids: Sequence[str],
    shown: Sequence[int] | None = None,
    *,
    history_length: int | None = None,
    label_style: LabelStyle = "letters",
    n: int | None = None,
    chain: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every variable a template may declare (see :data:`zsgen.templates.KNOWN_VARIABLES`).

    ``shown`` lists positions into ``candidate_ids`` in the order the model sees them (default: as given); the
    labels A, B, ... follow that order. ``candidate`` (pointwise templates) is the first shown candidate. ``n``, the
    number of labels asked for, defaults to all shown. ``chain`` holds earlier chain steps' answers (NIR's
    ``preferences`` and ``representative``). Only the last ``history_length`` history items are shown (all if None).
    """
    order = list(range(len(candidate_ids))) if shown is None else list(shown)
    recent = history if history_length is None else history.last(history_length)
    candidates: list[dict[str, Any]] = []
    for label, index in zip(make_labels(len(order), label_style), order, strict=True):
        view = item_view(catalog.get(candidate_ids[index]))
        view["label"] = label
        candidates.append(view)
    variables: dict[str, Any] = {
        "history": [item_view(catalog.get(i)) for i in recent.item_ids],
        "profile": profile.text if profile is not None else None,
        "candidates": candidates,
        "candidate": candidates[0] if candidates else None,
        "n": len(candidates) if n is None else n,
    }
    variables.update(chain or {})
    return variables


def build_messages(
    template: PromptTemplate,
    catalog: Catalog,
    history: History,
    profile: Profile | None,
    candidate_ids: Sequence[str],
    shown: Sequence[int] | None = None,
    *,
    history_length: int | None = None,
    label_style: LabelStyle = "letters",
    n: int | None = None,
    chain: Mapping[str, str] | None = None,
) -> list[ChatMessage]:
    """The chat messages ``template`` renders for one user and one shown order (arguments: :func:`prompt_variables`).

    Raises :class:`~zsgen.errors.TemplateError` if the template fails or declares a variable not supplied (a chain
    step's answer, say), and :class:`~zsgen.errors.UnknownItemError` for an id the catalog lacks.
    """
    variables = prompt_variables(
        catalog,
        history,
        profile,
        candidate_ids,
        shown,
        history_length=history_length,
        label_style=label_style,
        n=n,
        chain=chain,
    )
    return template.render(**variables)
