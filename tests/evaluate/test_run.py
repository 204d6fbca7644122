"""End to end: ``zsgen evaluate`` on a tiny dataset through the packaged local model, resume after SIGKILL, and
clear errors for runs that cannot start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zsgen.errors import ConfigError, DataError, TemplateError
from zsgen.evaluate import evaluate, load_config
from zsgen.evaluate.runner import read_log
from zsgen.metrics.metrics import rank_metrics
from zsgen.paths import data_dir

USERS = 6

CONFIG = """
name = "tiny"
protocol = "llmrank"
history_length = 3
seed = 3
users = {users}
batch_users = 2

[dataset]
path = "{catalog}"
interactions = "log.jsonl"

[candidates]
n = 6

[metrics]
baseline = "cosine"
bootstrap = 200

[[rankers]]
name = "random"
kind = "random"

[[rankers]]
name = "popularity"
kind = "popularity"

[[rankers]]
name = "generator"
kind = "generator"

[[rankers]]
name = "cosine"
kind = "text"
user_vector = "mean"
history_length = 5

[[rankers]]
name = "verbalizer"
kind = "llm"

[rankers.rerank]
method = "verbalizer"
backend = "verbalizer"
"""


def write_log(folder: Path) -> None:
    """Users who mostly watch one genre of the packaged demo catalog, in time order."""
    catalog = [json.loads(line) for line in (data_dir() / "demo_catalog.jsonl").read_text().splitlines() if line]
    by_genre: dict[str, list[str]] = {}
    for item in catalog:
        by_genre.setdefault(item["genres"][0], []).append(item["id"])
    genres = sorted(g for g, ids in by_genre.items() if len(ids) >= 8)
    rng = np.random.default_rng(0)
    lines = []
    for u in range(24):
        liked = by_genre[genres[u % len(genres)]]
        picks = rng.choice(liked, size=6, replace=False).tolist()
        picks += rng.choice([i["id"] for i in catalog if i["id"] not in picks], size=2, replace=False).tolist()
        for t, item in enumerate(rng.permutation(picks).tolist()):
            lines.append(json.dumps({"user_id": f"u{u}", "item_id": item, "timestamp": 1000 * u + t, "rating": 4}))
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    write_log(folder)
    text = CONFIG.format(users=USERS, catalog=(data_dir() / "demo_catalog.jsonl").as_posix())
    (folder / "tiny.toml").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def finished(tiny: Path) -> Path:
    """One uninterrupted run through the CLI entry point."""
    from zsgen.cli import main

    out = tiny / "run"
    assert main(["evaluate", "--config", str(tiny / "tiny.toml"), "--out", str(out), "--no-progress"]) == 0
    return out


def stable(record: dict[str, Any]) -> dict[str, Any]:
    """A log line without wall-clock fields."""
    copy = json.loads(json.dumps(record))
    for entry in copy["rankers"].values():
        entry.pop("latency_s", None)
    return copy


def metrics_only(summary: dict[str, Any]) -> dict[str, Any]:
    for ranker in summary["rankers"]:
        if ranker.get("llm"):
            for key in ("latency_mean_s", "latency_p50_s", "latency_p95_s"):
                ranker["llm"].pop(key)
    return summary


@pytest.mark.slow
def test_cli_run_writes_every_artefact(finished: Path) -> None:
    for name in ("summary.json", "per_user.jsonl", "config.toml", "report.md", "metrics.png", "position.png"):
        assert (finished / name).is_file(), name
    for plot in ("metrics.png", "position.png"):
        assert (finished / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((finished / "summary.json").read_text())
    records = list(read_log(finished / "per_user.jsonl").values())
    assert summary["users"] == len(records) == USERS
    assert summary["candidate_recall"] == 1.0  # LLMRank's list always holds the target
    assert [r["name"] for r in summary["rankers"]] == ["random", "popularity", "generator", "cosine", "verbalizer"]
    for ranker in summary["rankers"]:
        ranks = [r["rankers"][ranker["name"]]["rank"] for r in records]
        expected = rank_metrics(ranks, summary["ks"])
        for metric in ("HR@10", "NDCG@5", "MRR"):
            assert ranker["all_users"][metric]["mean"] == pytest.approx(float(expected[metric].mean()))
            assert ranker["all_users"][metric]["low"] <= ranker["all_users"][metric]["mean"]
        assert (ranker["vs_baseline"] is None) == (ranker["name"] == "cosine")
    llm = summary["rankers"][-1]["llm"]
    assert llm["users"] == USERS and llm["calls"] >= USERS
    assert 0.0 <= llm["fallback_rate"] <= 1.0
    for record in records:
        assert record["n_candidates"] == 6 and record["target_position"] is not None
        verbalizer = record["rankers"]["verbalizer"]
        assert {"calls", "fallback", "parse_status", "prompt_tokens", "rank"} <= set(verbalizer)
    report = (finished / "report.md").read_text()
    for text in ("Paired comparison against `cosine`", "LLM rankers", "verbalizer", "metrics.png"):
        assert text in report
    resolved = load_config(finished / "config.toml")
    assert resolved.fingerprint() == load_config(finished.parent / "tiny.toml").fingerprint()
    provenance = (finished / "config.toml").read_text()
    assert "template_hash" in provenance and "transformers =" in provenance and "SmolLM2" in provenance


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_duplicating_rows(tiny: Path, finished: Path) -> None:
    out = tiny / "killed"
    log = out / "per_user.jsonl"
    command = [sys.executable, "-m", "zsgen", "evaluate", "--config", str(tiny / "tiny.toml"), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and log.read_bytes().count(b"\n") >= 2):  # poll: kill once 2 users are logged
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the run wrote no rows"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    done_before = log.read_bytes().count(b"\n")
    assert 2 <= done_before < USERS
    with log.open("ab") as handle:  # as if the process had died in the middle of writing the next line
        handle.write(b'{"user_id": "u99", "rankers": {"half')
    summary = evaluate(tiny / "tiny.toml", out, progress=False)
    assert summary.users == USERS
    resumed = read_log(log)
    uninterrupted = read_log(finished / "per_user.jsonl")
    assert len(log.read_bytes().splitlines()) == USERS  # no partial line left, nothing written twice
    assert {u: stable(r) for u, r in resumed.items()} == {u: stable(r) for u, r in uninterrupted.items()}
    assert metrics_only(json.loads((out / "summary.json").read_text())) == metrics_only(
        json.loads((finished / "summary.json").read_text())
    )


@pytest.mark.slow
def test_rerunning_a_finished_run_adds_nothing(tiny: Path, finished: Path) -> None:
    before = (finished / "per_user.jsonl").read_bytes()
    summary = evaluate(tiny / "tiny.toml", finished, progress=False)
    assert (finished / "per_user.jsonl").read_bytes() == before
    assert summary.users == USERS


@pytest.mark.slow
def test_a_different_config_does_not_resume_into_old_results(tiny: Path, finished: Path) -> None:
    other = load_config(tiny / "tiny.toml", {"seed": 4})
    with pytest.raises(ConfigError, match="different config"):
        evaluate(other, finished, progress=False)


def test_unknown_dataset_and_missing_files(tiny: Path, tmp_path: Path) -> None:
    config = load_config(tiny / "tiny.toml")
    missing = config.model_copy(deep=True)
    missing.dataset.path = str(tmp_path / "no-such-dataset")
    with pytest.raises(DataError, match="unknown dataset") as caught:
        evaluate(missing, tmp_path / "a", progress=False)
    assert "no-such-dataset" in str(caught.value)
    no_log = config.model_copy(deep=True)
    no_log.dataset.interactions = str(tmp_path / "gone.jsonl")
    with pytest.raises(DataError, match="interaction log not found"):
        evaluate(no_log, tmp_path / "b", progress=False)
    catalog_only = config.model_copy(deep=True)
    catalog_only.dataset.interactions = None
    with pytest.raises(DataError, match="no interaction log"):
        evaluate(catalog_only, tmp_path / "c", progress=False)


def test_unknown_template_is_reported_before_any_user_runs(tiny: Path, tmp_path: Path) -> None:
    text = (
        (tiny / "tiny.toml").read_text().replace('backend = "verbalizer"', 'backend = "verbalizer"\ntemplate = "nope"')
    )
    path = tiny / "bad-template.toml"
    path.write_text(text)
    with pytest.raises(TemplateError, match="nope"):
        evaluate(path, tmp_path / "t", progress=False)
    assert not (tmp_path / "t" / "per_user.jsonl").exists()


def test_cli_reports_bad_configs_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zsgen.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nprotocol = "nope"\n[dataset]\npath = "."\n[[rankers]]\nname = "r"\nkind = "random"\n')
    assert main(["evaluate", "--config", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "unknown protocol 'nope'" in err and str(bad) in err
    assert main(["evaluate", "--config", str(tmp_path / "absent.toml"), "--out", str(tmp_path / "o")]) == 1
    assert "evaluation config not found" in capsys.readouterr().err


def test_log_reader_drops_a_torn_last_line_and_rejects_corruption(tmp_path: Path) -> None:
    log = tmp_path / "per_user.jsonl"
    log.write_bytes(b'{"user_id": "a", "rankers": {}}\n{"user_id": "b", "rankers": {}}\n{"user_id": "c", "ran')
    assert list(read_log(log)) == ["a", "b"]
    assert log.read_bytes().endswith(b'"ran')  # reading alone leaves the file as it is
    assert list(read_log(log, repair=True)) == ["a", "b"]
    assert log.read_bytes().endswith(b"}}\n")
    log.write_bytes(b'{"user_id": "a"}\n{"user_id": "a"}\n')
    with pytest.raises(DataError, match="logged twice"):
        read_log(log)
    log.write_bytes(b'{"user_id": "a"}\nnot json\n')
    with pytest.raises(DataError) as caught:
        read_log(log)
    assert caught.value.line == 2


REMOTE = """
name = "remote"
protocol = "llmrank"
history_length = 3
seed = 3
users = {users}
batch_users = 4

[dataset]
path = "{catalog}"
interactions = "{log}"

[candidates]
n = 5

[[rankers]]
name = "generator"
kind = "generator"

[[rankers]]
name = "remote"
kind = "llm"
cost_per_million_prompt_tokens = 2.0
cost_per_million_completion_tokens = 8.0

[rankers.rerank]
method = "listwise"
backend = "openai"
base_url = "{base_url}"
model = "scripted-model"
max_retries = 0
concurrency = 4
"""


def test_remote_backend_runs_users_concurrently_and_reruns_from_the_cache(tiny: Path, tmp_path: Path) -> None:
    from zsgen.testing.servers import Reply, ScriptedServer, completion_body

    users = 8
    answer = Reply(body=completion_body('{"ranking": ["B", "A"]}', prompt_tokens=100, completion_tokens=10))
    with ScriptedServer(default=answer) as server:
        server.script(Reply(status=400, body={"error": {"message": "bad request"}}))  # one user's call fails
        path = tmp_path / "remote.toml"
        path.write_text(
            REMOTE.format(
                users=users,
                catalog=(data_dir() / "demo_catalog.jsonl").as_posix(),
                log=(tiny / "log.jsonl").as_posix(),
                base_url=server.base_url,
            )
        )
        summary = evaluate(path, tmp_path / "first", progress=False)
        asked = len(server.chat_requests)
        llm = summary.ranker("remote").llm
        assert llm is not None and asked == users
        assert llm.fallback_rate == pytest.approx(1 / users)  # the 400: never retried, a flagged fallback
        assert llm.fallback_reasons == {"http_400": 1}
        assert llm.repair_rate == pytest.approx((users - 1) / users)  # "B, A" then the missing labels appended
        assert llm.prompt_tokens == 100 * (users - 1) and llm.completion_tokens == 10 * (users - 1)
        assert llm.cost == pytest.approx((100 * 2.0 + 10 * 8.0) * (users - 1) / 1e6)
        records = read_log(tmp_path / "first" / "per_user.jsonl")
        for record in records.values():
            entry = record["rankers"]["remote"]
            if not entry["fallback"]:
                # B then A lead the order; the rest keep the shown (generator) order.
                assert entry["top"][:2] == [record["rankers"]["generator"]["top"][i] for i in (1, 0)]
        # The same run again (a fresh folder sharing the response cache) asks the server only for the failed user.
        config = load_config(path)
        config.rankers[1].rerank = {
            **(config.rankers[1].rerank or {}),
            "cache": str(tmp_path / "first" / "llm_cache.sqlite"),
        }
        again = evaluate(config, tmp_path / "second", progress=False)
        assert len(server.chat_requests) == asked + 1
        assert again.ranker("remote").llm.fallback_rate == 0.0  # type: ignore[union-attr]


NO_LLM_CONFIG = CONFIG.split('[[rankers]]\nname = "verbalizer"')[0]

_WITHOUT_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None  # as if the eval extra were not installed: every import of it fails
from zsgen.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_evaluate_without_matplotlib_writes_the_report_without_plots(no_llm_config: Path, tmp_path: Path) -> None:
    """Issue 12 item 13: without the eval extra the run died at the plots (or refused to start); now it completes."""
    config = no_llm_config
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_MATPLOTLIB, "evaluate", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "matplotlib" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING"), proc.stderr
    for name in ("summary.json", "per_user.jsonl", "config.toml", "report.md"):
        assert (out / name).is_file(), name
    assert not (out / "metrics.png").exists() and not (out / "position.png").exists()
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "matplotlib is not installed" in report and "metrics.png" not in report
    assert json.loads((out / "summary.json").read_text())["users"] == USERS


@pytest.fixture
def no_llm_config(tiny: Path, tmp_path: Path) -> Path:
    config = tmp_path / "no-llm.toml"
    text = NO_LLM_CONFIG.format(users=USERS, catalog=(data_dir() / "demo_catalog.jsonl").as_posix())
    config.write_text(text.replace('"log.jsonl"', json.dumps((tiny / "log.jsonl").as_posix())), encoding="utf-8")
    return config


@pytest.mark.parametrize("damage", ["torn", "not-toml", "no-provenance"])
def test_a_torn_config_toml_from_an_old_crash_does_not_block_resume(
    no_llm_config: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12 item 10: a run killed while (non-atomically) writing config.toml could not resume ("fingerprint
    None"). config.toml is now written atomically; a torn one left by an older version resumes on the log's evidence.
    """
    out = tmp_path / "run"
    config = load_config(no_llm_config)
    evaluate(config, out, progress=False)
    rows = (out / "per_user.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    summary = metrics_only(json.loads((out / "summary.json").read_text()))
    resolved = (out / "config.toml").read_bytes()
    (out / "per_user.jsonl").write_text("".join(rows[:2]), encoding="utf-8")  # killed after two users ...
    torn = {  # ... while config.toml was being written
        "torn": resolved[: len(resolved) // 3].rsplit(b"\n", 1)[0] + b"\nname = ",
        "not-toml": b"\x00\xff" + resolved[:50],
        "no-provenance": resolved[: resolved.index(b"[provenance")],
    }[damage]
    (out / "config.toml").write_bytes(torn)
    with caplog.at_level("WARNING", logger="zsgen"):
        evaluate(config, out, progress=False)
    assert any("unreadable or incomplete" in r.getMessage() for r in caplog.records)
    assert (out / "per_user.jsonl").read_text(encoding="utf-8").splitlines(keepends=True) == rows
    assert metrics_only(json.loads((out / "summary.json").read_text())) == summary
    assert load_config(out / "config.toml").fingerprint() == config.fingerprint()  # written whole again
    evaluate(config, out, progress=False)  # and it resumes the ordinary way from now on


def test_a_torn_config_toml_with_another_runs_log_still_refuses(no_llm_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = load_config(no_llm_config)
    evaluate(config, out, progress=False)
    (out / "config.toml").write_text("name = ", encoding="utf-8")
    other = load_config(
        no_llm_config, {"rankers": [{"name": "random", "kind": "random"}], "metrics": {"baseline": "random"}}
    )
    with pytest.raises(ConfigError, match="unreadable or incomplete"):
        evaluate(other, out, progress=False)


def test_resolved_config_is_replaced_atomically(
    no_llm_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash in the middle of writing config.toml leaves the previous file whole (write_resolved uses tomlio)."""
    from zsgen.evaluate.config import write_resolved

    config = load_config(no_llm_config)
    path = tmp_path / "out" / "config.toml"
    path.parent.mkdir()
    write_resolved(config, path, {"fingerprint": "first"})
    before = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_resolved(config, path, {"fingerprint": "second"})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary file left behind
