"""The `zsgen` command as a user runs it: output shape, one-line errors with non-zero exit, help on every option,
global flags before and after the subcommand, `--version`, and `zsgen tune`."""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import zsgen
from zsgen.cli import build_parser, main
from zsgen.cli.common import verbosity
from zsgen.recommender import Request
from zsgen.testing.servers import Reply, ScriptedServer, completion_body, logprobs_body


@pytest.fixture(autouse=True)
def restore_log_level() -> Iterator[None]:
    """main() sets the root logger's level from -v/-q; keep one test's flags from leaking into the next."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


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


@pytest.mark.slow
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
        (SMALL, ["--history", "a", "-k", "9"], "k=9"),
        (SMALL, ["--history", "a", "--k", "0"], "k must be"),
        ([*SMALL, {"id": "a", "title": "Again"}], ["--history", "b"], "c.jsonl:6"),
        ([*SMALL, {"id": "f", "title": "", "description": ""}], ["--history", "b"], "c.jsonl:6"),
        (b'{"id": "a", "title": "ok"}\n{"id": "b", "title": \n', ["--history", "a"], "c.jsonl:2"),
        ('{"id": "a", "title": "Caf\u00e9"}\n'.encode("latin-1"), ["--history", "a"], "c.jsonl:1"),
    ],
    ids=[
        "typo",
        "unknown-id",
        "no-history",
        "k-too-big",
        "short-k-too-big",
        "k-zero",
        "duplicate",
        "empty-text",
        "bad-json",
        "latin1",
    ],
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


def walk(parser: argparse.ArgumentParser, path: str = "zsgen") -> Iterator[tuple[str, argparse.Action]]:
    """Every action of every parser in the tree, with the command path that reaches it."""
    for action in parser._actions:
        yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the one-line help of each subcommand in the parent's --help
                yield path, choice
            for name, child in action.choices.items():
                yield from walk(child, f"{path} {name}")


def test_every_option_and_positional_has_help() -> None:
    actions = list(walk(build_parser()))
    commands = {path for path, _ in actions}
    assert {"zsgen recommend", "zsgen encode", "zsgen prompts render", "zsgen evaluate", "zsgen tune"} <= commands
    missing = [f"{path}: {action.option_strings or action.dest}" for path, action in actions if not action.help]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["recommend", "--demo"], 0),
        (["-v", "recommend", "--demo"], 1),
        (["recommend", "--demo", "-v"], 1),
        (["-v", "recommend", "--demo", "--verbose"], 2),
        (["recommend", "-vv", "--demo"], 2),
        (["-q", "prompts", "list"], -1),
        (["prompts", "list", "--quiet"], -1),
        (["prompts", "-v", "list"], 1),
        (["-v", "tune", "--catalog", "d", "--config", "c.toml", "--out", "o.toml", "-q"], -1),
    ],
)
def test_global_flags_before_and_after_the_subcommand(argv: list[str], expected: int) -> None:
    assert verbosity(build_parser().parse_args(argv)) == expected


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_turns_on_library_info_logs(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The demo user is announced at INFO before any model loads; the missing encoder folder then stops the run."""
    argv = ["recommend", "--demo", "-k", "2", "--encoder", str(tmp_path / "no-model")]
    code, _, err = run(capsys, *(["-v", *argv] if where == "before" else [*argv, "-v"]))
    assert code == 1 and err.startswith("zsgen: error:") and "no-model" in err
    assert any(r.levelno == logging.INFO and "demo user" in r.getMessage() for r in caplog.records)


def test_without_verbose_the_library_logs_at_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    code, _, _ = run(capsys, "recommend", "--demo", "--encoder", str(tmp_path / "no-model"))
    assert code == 1
    assert logging.getLogger("zsgen").getEffectiveLevel() == logging.WARNING
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]


def test_short_k_is_k() -> None:
    assert build_parser().parse_args(["recommend", "-k", "3"]).k == 3


def test_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "zsgen", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"zsgen {zsgen.__version__}"


def test_usage_errors_stay_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--k", "many"])
    assert exit_info.value.code == 2 and "invalid int value" in capsys.readouterr().err


def test_prompts_errors_follow_the_same_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "prompts", "show", "no-such-template")
    assert code == 1 and out == "" and err.startswith("zsgen: error: no template named 'no-such-template'")
    assert len(err.strip().splitlines()) == 1


def write_ratings(folder: Path) -> Path:
    """A RecBole-layout dataset with an interaction log: 6 users, 5 items, 4 timed events each."""
    folder.mkdir()
    (folder / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\n" + "".join(f"{i}\tItem {i}\n" for i in range(5))
    )
    rows = [f"u{u}\t{(u + j) % 5}\t{10 * u + j}\n" for u in range(6) for j in range(4)]
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(rows))
    return folder


POPULARITY_ONLY = """\
[signals.popularity]
kind = "popularity"

[signals.cooccurrence]
kind = "cooccurrence"

[search]
max_trials = 8
"""


def test_tune_writes_a_tuned_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zsgen.score.config import FusionConfig

    data = write_ratings(tmp_path / "toy")
    config = tmp_path / "fusion.toml"
    config.write_text(POPULARITY_ONLY)
    out = tmp_path / "tuned.toml"
    code, stdout, err = run(capsys, "tune", "--catalog", str(data), "--config", str(config), "--out", str(out))
    assert code == 0, err
    assert stdout.startswith("validation ndcg@10 = ") and f"wrote {out}" in stdout
    tuned = FusionConfig.load(out)
    assert tuned.tuned is not None and set(tuned.weights) == {"popularity", "cooccurrence"}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no-log", "needs an interaction log"),
        ("no-config", "fusion.toml"),
        ("no-out-folder", "does not exist"),
        ("bad-config", "search.colour"),
    ],
)
def test_tune_errors_are_one_line(setup: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_ratings(tmp_path / "toy")
    config = tmp_path / "fusion.toml"
    out = tmp_path / "tuned.toml"
    if setup == "no-log":
        data = write_catalog(tmp_path / "c.jsonl", SMALL)
    if setup != "no-config":
        config.write_text(POPULARITY_ONLY + ("colour = 'blue'\n" if setup == "bad-config" else ""))
    if setup == "no-out-folder":
        out = tmp_path / "missing" / "tuned.toml"
    code, stdout, err = run(capsys, "tune", "--catalog", str(data), "--config", str(config), "--out", str(out))
    assert code == 1 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zsgen: error:") and message in lines[0], err
    assert not out.exists()


# -- issue 12: hostile answers and odd input ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_profile_is_one_line_error(capsys: pytest.CaptureFixture[str], embedding_cache: Path, blank: str) -> None:
    """Issue 12 item 7: ``--profile ""`` printed pydantic's ValidationError traceback."""
    code, out, err = run(capsys, "recommend", "--demo", "--profile", blank, "--embedding-cache", str(embedding_cache))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zsgen: error:") and "profile" in lines[0], err


def test_blank_profile_render_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "prompts", "render", "listwise", "--demo", "--candidates", "1", "--profile", "  ")
    assert code == 1 and out == "", out
    assert err.startswith("zsgen: error:") and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_json_output_survives_a_lone_surrogate_in_the_answer(
    capsys: pytest.CaptureFixture[str],
    embedding_cache: Path,
    scripted_server: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12 item 6: an answer holding a lone surrogate made ``recommend --json`` die with UnicodeEncodeError.

    The server sends ``"\\ud800"`` as a JSON escape (valid JSON); the SDK decodes it to a lone surrogate, which no
    UTF-8 stream can write. The CLI now writes it as the JSON escape it came as, so the output reads back exactly.
    """
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    scripted_server.default = Reply(body=completion_body('{"ranking": ["B", "A"]} \ud800 tail'))
    code, out, err = run(
        capsys, "recommend", "--demo", "--k", "3", "--json", "--rerank", "listwise", "--backend", "openai",
        "--base-url", scripted_server.base_url, "--model", "scripted-model", "--candidates", "4",
        "--embedding-cache", str(embedding_cache),
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert "\ud800" in result["raw_text"]
    assert len(result["items"]) == 3
    assert scripted_server.chat_requests


@pytest.mark.slow
def test_table_output_survives_surrogates_in_the_profile(
    capsys: pytest.CaptureFixture[str], embedding_cache: Path
) -> None:
    """Undecodable argv bytes arrive as lone surrogates (surrogateescape); they become U+FFFD, not a crash."""
    code, out, err = run(
        capsys, "recommend", "--demo", "--k", "2", "--profile", "space \udcff opera",
        "--embedding-cache", str(embedding_cache),
    )  # fmt: skip
    assert code == 0, err
    assert "profile: space \ufffd opera" in out


@pytest.mark.parametrize("blank", ["", "  \n"])
def test_blank_profile_through_the_python_api_is_a_zsgen_error(blank: str) -> None:
    """Issue 12 item 7, library side: EmptyHistoryError (a ZsgenError), not pydantic's ValidationError."""
    from zsgen.errors import EmptyHistoryError
    from zsgen.loaders import load_demo
    from zsgen.recommender import Recommender

    recommender = Recommender(load_demo().catalog)
    with pytest.raises(EmptyHistoryError, match="blank"):
        recommender.recommend(profile=blank)
    with pytest.raises(EmptyHistoryError, match="blank"):
        recommender.recommend_batch([Request(profile=blank)])


def test_print_json_round_trips_lone_surrogates(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON printer on a Ranking whose raw_text holds a lone surrogate: valid JSON, read back exactly."""
    from zsgen.cli.common import print_json
    from zsgen.types import RankedItem, Ranking

    ranking = Ranking(items=[RankedItem(id="a", title="Café", score=0.5, source="llm")], raw_text="x\ud800y\udfff")
    print_json(ranking.model_dump(mode="json"))
    out = capsys.readouterr().out
    assert "Café" in out  # non-ASCII text stays readable
    assert json.loads(out)["raw_text"] == "x\ud800y\udfff"


@pytest.mark.slow
def test_recommend_sends_the_candidates_schema_and_picks(
    capsys: pytest.CaptureFixture[str],
    embedding_cache: Path,
    scripted_server: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    scripted_server.default = Reply(body=completion_body('{"ranking": ["C", "A"]}'))
    code, out, err = run(
        capsys, "recommend", "--demo", "--k", "4", "--json", "--rerank", "listwise", "--backend", "openai",
        "--base-url", scripted_server.base_url, "--model", "scripted-model", "--candidates", "6",
        "--structured", "json_schema", "--picks", "2", "--embedding-cache", str(embedding_cache),
    )  # fmt: skip
    assert code == 0, err
    ranking = scripted_server.chat_requests[0].body["response_format"]["json_schema"]["schema"]["properties"]["ranking"]
    assert (ranking["items"]["enum"], ranking["minItems"], ranking["maxItems"]) == (list("ABCDEF"), 2, 2)
    result = json.loads(out)
    assert [item["source"] for item in result["items"]] == ["llm", "llm", "cosine", "cosine"]
    assert result["parse_status"] == "ok" and not result["fallback"]


@pytest.mark.slow
def test_recommend_reranks_with_the_verbalizer_over_http(
    capsys: pytest.CaptureFixture[str],
    embedding_cache: Path,
    scripted_server: ScriptedServer,
) -> None:
    top = [(label, -0.5 - n) for n, label in enumerate("FEDCBA")]  # the server likes the last shown candidate best
    scripted_server.default = Reply(body=logprobs_body(top))
    code, out, err = run(
        capsys, "recommend", "--demo", "--k", "6", "--json", "--rerank", "verbalizer", "--backend", "openai",
        "--base-url", scripted_server.base_url, "--model", "scripted-model", "--candidates", "6",
        "--no-restrict-labels", "--embedding-cache", str(embedding_cache),
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["backend"] == "openai" and result["method"] == "verbalizer" and not result["fallback"]
    bodies = [r.body for r in scripted_server.chat_requests]
    assert len(bodies) == 2  # the build-time probe, then the user's one request
    assert all(b["logprobs"] is True and b["max_tokens"] == 1 and "structured_outputs" not in b for b in bodies)
    scores = [item["score"] for item in result["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(-0.5 - math.log(sum(
        math.exp(-0.5 - n) for n in range(6))))  # fmt: skip
