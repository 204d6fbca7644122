"""The table view of ``zsgen recommend``: the ranking, and below it everything the LLM stage did to it.

A table that only shows ``source llm`` hides the three things a reader needs to trust it: whether the answer was
parsed as given or repaired (and how), whether the LLM failed and the order is the first stage's, and whether the
LLM changed anything at all (a weak model often answers the labels in the order they were shown). Each of those gets
a ``note:`` line on stderr, as the fallback always had, so stdout stays the table alone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from zsgen.cli.common import printable

if TYPE_CHECKING:
    from zsgen.catalog import Catalog
    from zsgen.types import Ranking

#: Repairs listed on a note line before the rest are counted ("... and 3 more").
MAX_REPAIRS_SHOWN = 3


def print_table(
    ranking: Ranking,
    catalog: Catalog,
    *,
    history: Sequence[str] = (),
    profile: str | None = None,
    first_stage_ids: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> None:
    """Print ``ranking`` as a table on ``out`` (stdout) and its notes on ``err`` (stderr).

    ``first_stage_ids`` is the first stage's own top of the same length, when a reranker ran: with it the notes say
    whether the LLM's order is that order unchanged."""
    out = out or sys.stdout
    err = err or sys.stderr
    if history:
        print(printable("history: " + "; ".join(catalog.get(h).title for h in history)), file=out)
    if profile:
        print(printable(f"profile: {profile}"), file=out)
    if ranking.first_stage == "fusion":
        from zsgen.retrieval.fused import PACKAGED

        weights = "the packaged defaults" if ranking.fusion_weights == PACKAGED else ranking.fusion_weights
        print(printable(f"first stage: fusion with {weights} (--first-stage cosine: text similarity alone)"), file=out)
    print(f"{'rank':>4}  {'score':>7}  {'source':<7}  {'id':<8}  title", file=out)
    for rank, item in enumerate(ranking.items, start=1):
        print(printable(f"{rank:>4}  {item.score:>7.4f}  {item.source:<7}  {item.id:<8}  {item.title}"), file=out)
    for note in notes(ranking, first_stage_ids=first_stage_ids):
        print(printable(f"note: {note}"), file=err)


def notes(ranking: Ranking, *, first_stage_ids: Sequence[str] | None = None) -> list[str]:
    """What the LLM stage did, one line each: how it was asked, the parse status and repairs (or the fallback and its
    reason), whether its order equals the first stage's, and the time each stage took. Empty without a reranker."""
    order = "first-stage" if ranking.first_stage == "fusion" else "cosine"
    lines: list[str] = []
    if ranking.method is not None:
        model = f", model {ranking.model}" if ranking.model else ""
        lines.append(f"LLM rerank: method {ranking.method}, backend {ranking.backend}{model}")
    if ranking.fallback:
        lines.append(f"the LLM stage failed ({ranking.fallback_reason}); shown in {order} order")
    elif ranking.parse_status == "repaired":
        shown = "; ".join(ranking.repairs[:MAX_REPAIRS_SHOWN])
        more = len(ranking.repairs) - MAX_REPAIRS_SHOWN
        rest = f"; and {more} more" if more > 0 else ""
        lines.append(f"parse_status repaired: the LLM's answer was fixed up ({shown}{rest}); --json shows all")
    elif ranking.parse_status == "ok":
        lines.append("parse_status ok: the LLM's answer was used as given")
    elif ranking.method is not None:
        lines.append("parse_status none: the LLM was not asked (fewer than two candidates to order)")
    if (
        not ranking.fallback
        and ranking.parse_status in ("ok", "repaired")
        and first_stage_ids is not None
        and list(first_stage_ids) == ranking.item_ids
    ):
        lines.append(
            f"the LLM's order is the {order} order unchanged: it moved nothing in the top {len(ranking.items)}"
        )
    if ranking.method is not None and ranking.timings:
        spent = ", ".join(f"{name.removesuffix('_s')} {seconds:.2f} s" for name, seconds in ranking.timings.items())
        lines.append(f"timings: {spent}")
    return lines
