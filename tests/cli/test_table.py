"""The table view's note lines say what the LLM stage did: parse status and repairs, fallback, an unchanged order."""

from __future__ import annotations

import io

from zsgen.cli.table import notes, print_table
from zsgen.loaders import load_demo
from zsgen.types import RankedItem, Ranking


def ranking(**fields: object) -> Ranking:
    items = [RankedItem(id=i, title=i, score=1.0 - n / 10, source="llm") for n, i in enumerate(["m001", "m002"])]
    base: dict[str, object] = {"items": items, "method": "listwise", "backend": "local", "first_stage": "cosine"}
    return Ranking(**{**base, **fields})  # type: ignore[arg-type]


def test_repairs_are_shown_and_an_unchanged_order_is_flagged() -> None:
    repairs = [f"dropped unknown label {c}" for c in "UVWXYZ"]
    lines = notes(ranking(parse_status="repaired", repairs=repairs), first_stage_ids=["m001", "m002"])
    assert "parse_status repaired" in lines[1] and "dropped unknown label U" in lines[1] and "3 more" in lines[1]
    assert any("cosine order unchanged" in line for line in lines)


def test_a_reordering_answer_is_not_flagged_and_ok_is_said() -> None:
    lines = notes(
        ranking(parse_status="ok", timings={"retrieve_s": 0.01, "rerank_s": 3.2}), first_stage_ids=["m002", "m001"]
    )
    assert lines[1] == "parse_status ok: the LLM's answer was used as given"
    assert not any("unchanged" in line for line in lines)
    assert lines[-1] == "timings: retrieve 0.01 s, rerank 3.20 s"


def test_fallback_and_none_and_no_reranker() -> None:
    fell = notes(
        ranking(fallback=True, fallback_reason="truncated", parse_status="fallback"), first_stage_ids=["m001", "m002"]
    )
    assert "the LLM stage failed (truncated); shown in cosine order" in fell
    assert not any("unchanged" in line for line in fell)  # a fallback is the first-stage order by definition
    assert any("parse_status none" in line for line in notes(ranking(parse_status="none")))
    assert notes(ranking(method=None, backend=None)) == []


def test_table_on_stdout_notes_on_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    print_table(ranking(parse_status="ok"), load_demo().catalog, first_stage_ids=["m001", "m002"], out=out, err=err)
    assert out.getvalue().splitlines()[0].split() == ["rank", "score", "source", "id", "title"]
    assert "note:" not in out.getvalue()
    assert err.getvalue().startswith("note: LLM rerank: method listwise, backend local")
