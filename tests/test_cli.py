"""`zsgen recommend` / `zsgen encode` as a user runs them: output shape, and one-line errors with non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zsgen.cli import main


@pytest.fixture
def embedding_cache(tmp_path: Path) -> Path:
    return tmp_path / "emb.sqlite"


def write_catalog(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


SMALL = [
    {"id": "a", "title": "Rocket Dawn", "genres": ["Science Fiction"], "description": "A crew crosses the galaxy."},
    {"id": "b", "title": "Moon Harbour", "genres": ["Science Fiction"], "description": "Life on a lunar station."},
    {"id": "c", "title": "Bread and Salt", "genres": ["Food"], "description": "A baker's year of sourdough."},
    {"id": "d", "title": "Pasta Nights", "genres": ["Food"], "description": "An Italian grandmother's kitchen."},
    {"id": "e", "title": "Orbit of Ash", "genres": ["Science Fiction"], "description": "Stranded near a dying star."},
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_json_output(capsys: pytest.CaptureFixture[str], embedding_cache: Path) -> None:
    code, out, _ = run(capsys, "recommend", "--demo", "--k", "4", "--json", "--embedding-cache", str(embedding_cache))
    assert code == 0
    result = json.loads(out)
    assert len(result["items"]) == 4
    assert set(result["items"][0]) == {"id", "title", "score", "source"}
    assert result["fallback"] is False and result["fallback_reason"] is None
    scores = [i["score"] for i in result["items"]]
    assert scores == sorted(scores, reverse=True)


def test_table_output_with_titles(capsys: pytest.CaptureFixture[str], tmp_path: Path, embedding_cache: Path) -> None:
    catalog = write_catalog(tmp_path / "c.jsonl", SMALL)
    code, out, _ = run(
        capsys, "recommend", "--catalog", str(catalog), "--history", "Rocket Dawn", "--k", "2",
        "--embedding-cache", str(embedding_cache),
    )  # fmt: skip
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert sorted(r[3] for r in rows) == ["b", "e"]  # the two other sci-fi items, the seen one excluded


def test_encode_then_cache_hit(capsys: pytest.CaptureFixture[str], tmp_path: Path, embedding_cache: Path) -> None:
    catalog = write_catalog(tmp_path / "c.jsonl", SMALL)
    code, out, _ = run(capsys, "encode", "--catalog", str(catalog), "--embedding-cache", str(embedding_cache))
    assert code == 0 and "encoded 5 items, 384 dimensions" in out and "0 from cache, 5 newly encoded" in out
    assert embedding_cache.exists()
    rows = [*SMALL[:4], {**SMALL[4], "description": "Stranded near a dying star, now with pirates."}]
    write_catalog(catalog, rows)  # one item's text changed: only it is encoded again
    code, out2, _ = run(capsys, "encode", "--catalog", str(catalog), "--embedding-cache", str(embedding_cache))
    assert code == 0 and "4 from cache, 1 newly encoded" in out2, out2


@pytest.mark.parametrize(
    ("rows_or_bytes", "argv", "message"),
    [
        (SMALL, ["--history", "Rocket Dwan"], "did you mean 'Rocket Dawn'"),
        (SMALL, ["--history", "zz"], "unknown item 'zz'"),
        (SMALL, [], "history"),
        (SMALL, ["--history", "a", "--k", "9"], "k=9"),
        (SMALL, ["--history", "a", "--k", "0"], "k must be"),
        ([*SMALL, {"id": "a", "title": "Again"}], ["--history", "b"], "c.jsonl:6"),
        ([*SMALL, {"id": "f", "title": "", "description": ""}], ["--history", "b"], "c.jsonl:6"),
        (b'{"id": "a", "title": "ok"}\n{"id": "b", "title": \n', ["--history", "a"], "c.jsonl:2"),
        ('{"id": "a", "title": "Caf\u00e9"}\n'.encode("latin-1"), ["--history", "a"], "c.jsonl:1"),
    ],
    ids=["typo", "unknown-id", "no-history", "k-too-big", "k-zero", "duplicate", "empty-text", "bad-json", "latin1"],
)
def test_bad_input_is_one_line_and_non_zero(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    embedding_cache: Path,
    rows_or_bytes: object,
    argv: list[str],
    message: str,
) -> None:
    path = tmp_path / "c.jsonl"
    if isinstance(rows_or_bytes, bytes):
        path.write_bytes(rows_or_bytes)
    else:
        write_catalog(path, rows_or_bytes)  # type: ignore[arg-type]
    code, out, err = run(capsys, "recommend", "--catalog", str(path), *argv, "--embedding-cache", str(embedding_cache))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zsgen: error:"), err
    assert message in lines[0]


def test_missing_file_and_bad_option_values(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "recommend", "--catalog", str(tmp_path / "nope.jsonl"), "--history", "a")
    assert code == 1 and "nope.jsonl" in err
    code, _, err = run(capsys, "recommend", "--demo", "--rerank", "listwise", "--backend", "verbalizer")
    assert code == 1 and "verbalizer" in err and len(err.strip().splitlines()) == 1


def test_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zsgen", "recommend", "--catalog", str(tmp_path / "missing.csv"), "--history", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("zsgen: error:")
