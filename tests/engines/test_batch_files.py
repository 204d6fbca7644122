"""Batch files end to end: export an evaluation's requests, answer them with a scripted batch server (shuffled lines,
error lines, dropped lines), import, and compare with the online path answering the same questions the same way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.evaluate.test_run import metrics_only, stable, write_log
from zsgen.engines.batch import BatchLimits, RequestId, export_evaluation, import_evaluation
from zsgen.errors import ConfigError, DataError
from zsgen.evaluate import evaluate, load_config
from zsgen.evaluate.runner import read_log
from zsgen.paths import data_dir
from zsgen.testing.batch_server import request_lines, run_batch
from zsgen.testing.servers import Reply, ScriptedServer, completion_body

USERS = 8

CONFIG = """
name = "batchy"
protocol = "llmrank"
history_length = 3
seed = 5
users = {users}
batch_users = 3

[dataset]
path = "{catalog}"
interactions = "{log}"

[candidates]
n = 6

[metrics]
baseline = "cosine"
bootstrap = 100

[[rankers]]
name = "cosine"
kind = "text"

[[rankers]]
name = "popularity"
kind = "popularity"

[[rankers]]
name = "remote"
kind = "llm"

[rankers.rerank]
method = "{method}"
backend = "openai"
base_url = "{base_url}"
model = "scripted-model"
structured = "json_schema"
bootstrap = 2
max_retries = 0
concurrency = 4
"""

#: Answers of every kind the parser meets: clean, partial (repaired), duplicated and out of range, and unusable.
ANSWERS = (
    '{"ranking": ["B", "A", "C", "D", "E", "F"]}',
    '{"ranking": ["C", "A"]}',
    "F, E, E, Z, A",
    "I cannot rank these.",
)


def responder(body: Any) -> Reply:
    """The same answer to the same question, whatever the order questions arrive in."""
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    text = ANSWERS[digest[0] % len(ANSWERS)]
    return Reply(body=completion_body(text, prompt_tokens=50 + digest[1], completion_tokens=7))


def config_file(folder: Path, base_url: str = "http://127.0.0.1:9/v1", method: str = "listwise") -> Path:
    write_log(folder)
    path = folder / "batchy.toml"
    path.write_text(
        CONFIG.format(
            users=USERS,
            catalog=(data_dir() / "demo_catalog.jsonl").as_posix(),
            log=(folder / "log.jsonl").as_posix(),
            base_url=base_url,
            method=method,
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Any]]:
    """The config, the online run's folder, and every request body the online run sent."""
    folder = tmp_path_factory.mktemp("batch")
    with ScriptedServer(responder=responder) as server:
        path = config_file(folder, server.base_url)
        evaluate(path, folder / "online", progress=False)
        bodies = [r.body for r in server.chat_requests]
    return path, folder / "online", bodies


@pytest.fixture(scope="module")
def exported(online: tuple[Path, Path, list[Any]]) -> Path:
    path, run, _ = online
    out = run.parent / "export"
    export_evaluation(load_config(path), out, limits=BatchLimits(max_requests=5), progress=False)
    return out


def canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True)


def request_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("batch-*.jsonl"))


def test_export_writes_the_online_requests_split_at_the_limit(
    online: tuple[Path, Path, list[Any]], exported: Path
) -> None:
    _, _, bodies = online
    manifest = json.loads((exported / "manifest.json").read_text())
    files = request_files(exported)
    assert [f["name"] for f in manifest["files"]] == [f.name for f in files]
    lines = request_lines(files)
    assert len(lines) == USERS * 2 == manifest["requests"]  # two bootstrap rounds per user
    assert [f["requests"] for f in manifest["files"]] == [5, 5, 5, 1]  # split at max_requests = 5
    assert all(f["model"] == "scripted-model" for f in manifest["files"])
    # Exactly the bodies the online backend POSTed: same messages, limits, temperature and schema constraint.
    assert sorted(canonical(line["body"]) for line in lines) == sorted(canonical(b) for b in bodies)
    assert all(line["body"]["response_format"]["type"] == "json_schema" for line in lines)
    ids = [RequestId.parse(line["custom_id"]) for line in lines]
    assert len({i.slot for i in ids}) == len(ids)
    assert {i.run for i in ids} == {"batchy"} and {i.ranker for i in ids} == {"remote"}
    assert {i.round for i in ids} == {0, 1}
    # Exporting again replaces the files with the same bytes.
    before = {f.name: f.read_bytes() for f in files}
    export_evaluation(load_config(online[0]), exported, limits=BatchLimits(max_requests=5), progress=False)
    assert {f.name: f.read_bytes() for f in request_files(exported)} == before


def test_export_splits_files_by_size(online: tuple[Path, Path, list[Any]], tmp_path: Path) -> None:
    one = max(len(line) for f in request_files(online[1].parent / "export") for line in f.read_bytes().splitlines())
    export_evaluation(load_config(online[0]), tmp_path, limits=BatchLimits(max_bytes=2 * one + 2), progress=False)
    sizes = [f.stat().st_size for f in request_files(tmp_path)]
    assert len(sizes) >= USERS and max(sizes) <= 2 * one + 2
    assert len(request_lines(request_files(tmp_path))) == USERS * 2


def test_import_of_shuffled_answers_equals_the_online_run(
    online: tuple[Path, Path, list[Any]], exported: Path, tmp_path: Path
) -> None:
    path, run, _ = online
    results = run_batch(request_files(exported), responder, tmp_path / "results", seed=7)
    out = run.parent / "imported"  # beside the online run: the summary names the data files relative to its folder
    import_evaluation(load_config(path), results, out, progress=False)
    got, want = read_log(out / "per_user.jsonl"), read_log(run / "per_user.jsonl")
    assert list(got) == list(want)
    assert [stable(r) for r in got.values()] == [stable(r) for r in want.values()]
    assert {r["rankers"]["remote"]["latency_s"] for r in got.values()} == {0.0}
    assert any(r["rankers"]["remote"]["fallback"] for r in got.values())  # "I cannot rank these" in both rounds
    summary = json.loads((out / "summary.json").read_text())
    assert metrics_only(summary) == metrics_only(json.loads((run / "summary.json").read_text()))
    assert (out / "report.md").is_file()
    # Importing again writes the same bytes.
    first = {name: (out / name).read_bytes() for name in ("per_user.jsonl", "summary.json", "report.md", "config.toml")}
    import_evaluation(load_config(path), list(reversed(results)), out, progress=False)
    assert {name: (out / name).read_bytes() for name in first} == first


def test_missing_and_failed_lines_become_flagged_fallbacks(
    online: tuple[Path, Path, list[Any]], exported: Path, tmp_path: Path
) -> None:
    path, run, _ = online
    ids = {
        (RequestId.parse(line["custom_id"]).user, RequestId.parse(line["custom_id"]).round): line["custom_id"]
        for line in request_lines(request_files(exported))
    }
    users = sorted({user for user, _ in ids})
    lost, http_500, errored, half = users[:4]
    results = run_batch(
        request_files(exported),
        responder,
        tmp_path / "results",
        drop=[ids[lost, 0], ids[lost, 1], ids[half, 1]],
        fail={
            ids[http_500, 0]: {"response": {"status_code": 500, "body": {"error": {"message": "engine died"}}}},
            ids[http_500, 1]: {"response": {"status_code": 500, "body": {"error": {"message": "engine died"}}}},
            ids[errored, 0]: {"error": {"code": "batch_expired", "message": "the batch expired"}},
            ids[errored, 1]: {"error": {"code": "batch_expired", "message": "the batch expired"}},
        },
    )
    assert len(results) == 2  # an output file and an error file
    out = tmp_path / "imported"
    import_evaluation(load_config(path), results, out, progress=False)
    got, want = read_log(out / "per_user.jsonl"), read_log(run / "per_user.jsonl")
    assert list(got) == list(want)  # nobody lost
    remote = {user: record["rankers"]["remote"] for user, record in got.items()}
    assert (remote[lost]["fallback"], remote[lost]["fallback_reason"]) == (True, "batch_missing")
    assert (remote[http_500]["fallback"], remote[http_500]["fallback_reason"]) == (True, "batch_http_500")
    assert (remote[errored]["fallback"], remote[errored]["fallback_reason"]) == (True, "batch_error")
    assert remote[half]["repairs"] >= 1 or remote[half]["fallback"]  # one round of two answered
    for user in set(users) - {lost, http_500, errored, half}:
        assert stable(got[user]) == stable(want[user])
    summary = json.loads((out / "summary.json").read_text())
    reasons = next(r for r in summary["rankers"] if r["name"] == "remote")["llm"]["fallback_reasons"]
    assert {"batch_missing", "batch_http_500", "batch_error"} <= set(reasons)


def test_import_refuses_changed_requests_and_foreign_folders(
    online: tuple[Path, Path, list[Any]], exported: Path, tmp_path: Path
) -> None:
    path, run, _ = online
    results = run_batch(request_files(exported), responder, tmp_path / "results")
    with pytest.raises(ConfigError, match="no batch import wrote"):
        import_evaluation(load_config(path), results, run, progress=False)  # the online run's folder
    changed = load_config(path)
    changed.rankers[2].rerank = {**(changed.rankers[2].rerank or {}), "max_tokens": 99}
    with pytest.raises(ConfigError, match="changed since the export"):
        import_evaluation(changed, results, tmp_path / "changed", progress=False)
    renamed = load_config(path).model_copy(update={"name": "other"})
    with pytest.raises(ConfigError, match="not 'other'"):
        import_evaluation(renamed, results, tmp_path / "renamed", progress=False)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"custom_id": "batchy:remote:1:0:h:d"}\nnot json\n')
    with pytest.raises(DataError, match=r"broken\.jsonl:2"):
        import_evaluation(load_config(path), [broken], tmp_path / "broken", progress=False)


def test_multi_step_methods_are_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path, method="nir")
    with pytest.raises(ConfigError, match="listwise, recency and in_context"):
        export_evaluation(load_config(path), tmp_path / "export", progress=False)


def test_cli_export_and_import_of_a_config(
    online: tuple[Path, Path, list[Any]], exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zsgen.cli import main

    path, run, _ = online
    out = tmp_path / "export"
    assert main(["batch", "export", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    assert f"run batchy: {USERS * 2} requests for {USERS} users in 1 file(s)" in capsys.readouterr().out
    assert request_lines(request_files(out)) == request_lines(request_files(exported))  # same lines, same order
    results = run_batch(request_files(out), responder, tmp_path / "results")
    imported = run.parent / "cli-imported"
    command = ["batch", "import", "--config", str(path), "--results", *map(str, results), "--out", str(imported)]
    assert main([*command, "--no-progress"]) == 0
    assert "remote" in capsys.readouterr().out
    got, want = read_log(imported / "per_user.jsonl"), read_log(run / "per_user.jsonl")
    assert [stable(r) for r in got.values()] == [stable(r) for r in want.values()]
    assert main(["batch", "export", "--config", str(path), "--model", "m", "-k", "3", "--out", str(out)]) == 1
    assert "--k, --model: with --config the config says this" in capsys.readouterr().err
    # Something that is no batch export in the folder: refused, nothing overwritten.
    (out / "notes.txt").write_text("mine")
    assert main(["batch", "export", "--config", str(path), "--out", str(out), "--no-progress"]) == 1
    assert "export into an empty folder" in capsys.readouterr().err


def test_two_spellings_of_one_request_are_one_request(
    online: tuple[Path, Path, list[Any]], exported: Path, tmp_path: Path
) -> None:
    """``u0`` and ``u%30`` name one request: lines are compared after decoding, a success is kept over a later
    failure, two different answers are an error naming both lines, and a non-ASCII digit is one clear error."""
    path, run, _ = online
    results = run_batch(request_files(exported), responder, tmp_path / "results")
    lines = request_lines(results)
    first = lines[0]
    rid = RequestId.parse(first["custom_id"])
    # The same custom_id with its user's first character percent-encoded (as "u0" / "u%30" spell one user).
    respelled = first["custom_id"].split(":")
    respelled[2] = "".join(f"%{b:02X}" for b in rid.user.encode())
    other = ":".join(respelled)
    assert other != first["custom_id"] and RequestId.parse(other) == rid
    failed = {**first, "custom_id": other, "response": {"status_code": 500, "body": {"error": {"message": "died"}}}}
    extra = tmp_path / "late-failure.jsonl"
    extra.write_text(json.dumps(failed) + "\n", encoding="utf-8")
    out = tmp_path / "imported"
    import_evaluation(load_config(path), [*results, extra], out, progress=False)
    got, want = read_log(out / "per_user.jsonl"), read_log(run / "per_user.jsonl")
    assert [stable(r) for r in got.values()] == [stable(r) for r in want.values()]  # the success was kept
    # Two different answers to one request under two spellings: an error naming both lines.
    answer = {**first, "custom_id": other}
    answer["response"] = {**first["response"], "body": completion_body("Z, Y, X")}
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps(answer) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"two different answers.*output\.jsonl:\d+") as caught:
        import_evaluation(load_config(path), [*results, clash], tmp_path / "clash", progress=False)
    assert "clash.jsonl:1" in str(caught.value)
    # A round written with a superscript digit is no zsgen custom_id: one DataError, no traceback.
    parts = first["custom_id"].split(":")
    parts[3] = "\u00b2"
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({**first, "custom_id": ":".join(parts)}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"odd\.jsonl:1.*not written by zsgen batch export"):
        import_evaluation(load_config(path), [odd], tmp_path / "odd", progress=False)
