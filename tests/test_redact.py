"""Issue 12 item 9: a password in a base URL (``http://user:PASS@host/v1``) never reaches a file, an error line or a
log. Each test puts a recognisable secret in the URL and then searches everything zsgen wrote or printed for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zsgen.paths import data_dir
from zsgen.redact import redact, redact_url
from zsgen.testing.servers import Reply, ScriptedServer, completion_body

SECRET = "S3cretPassw0rd"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://user:{SECRET}@127.0.0.1:8000/v1", "http://user:***@127.0.0.1:8000/v1"),
        (f"https://:{SECRET}@host/v1", "https://:***@host/v1"),
        ("http://user@host/v1", "http://user@host/v1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        (f"https://host/v1?api_key={SECRET}&x=1", "https://host/v1?api_key=%2A%2A%2A&x=1"),
        (None, None),
    ],
)
def test_redact_url(url: str | None, shown: str | None) -> None:
    assert redact_url(url) == shown


def test_redact_finds_urls_inside_any_text() -> None:
    text = f'HTTP Request: POST http://me:{SECRET}@10.0.0.1:9/v1/chat/completions?token={SECRET} "HTTP/1.1 200 OK"'
    out = redact(text)
    assert SECRET not in out
    assert "http://me:***@10.0.0.1:9/v1/chat/completions?token=***" in out


def _zsgen(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OPENAI_API_KEY": "test-key"}
    return subprocess.run(
        [sys.executable, "-m", "zsgen", *argv], capture_output=True, text=True, timeout=600, env=env, check=False
    )


@pytest.mark.slow
def test_recommend_error_lines_and_verbose_logs_hide_the_password(tmp_path: Path) -> None:
    """A server whose /v1/models lists nothing: the run ends in an error line or a fallback; neither, nor the HTTP
    client's -v request log, may show the password."""
    with ScriptedServer(models=()) as server:
        url = server.base_url.replace("http://", f"http://user:{SECRET}@")
        proc = _zsgen(
            "-vv", "recommend", "--demo", "--k", "3", "--rerank", "listwise", "--backend", "openai",
            "--base-url", url, "--candidates", "4", "--embedding-cache", str(tmp_path / "emb.sqlite"),
        )  # fmt: skip
        assert server.requests, proc.stderr  # the client did talk to it (so its URL was in play)
    assert SECRET not in proc.stdout and SECRET not in proc.stderr, proc.stderr
    assert "user:***@" in proc.stderr  # what was hidden is visibly so, the rest of the URL kept for debugging
    if proc.returncode == 1:
        assert proc.stderr.rstrip().splitlines()[-1].startswith("zsgen: error:")


REMOTE = """
name = "remote"
protocol = "llmrank"
history_length = 3
seed = 3
users = 4
batch_users = 4

[dataset]
path = "{catalog}"
interactions = "{log}"

[candidates]
n = 5
generator = "random"

[[rankers]]
name = "generator"
kind = "generator"

[[rankers]]
name = "remote"
kind = "llm"

[rankers.rerank]
method = "listwise"
backend = "openai"
base_url = "{base_url}"
model = "scripted-model"
max_retries = 0
"""


@pytest.mark.slow
def test_evaluation_files_and_logs_hide_the_password(tmp_path: Path) -> None:
    """config.toml, summary.json, report.md, the log, and the -v output of ``zsgen evaluate``."""
    answer = Reply(body=completion_body('{"ranking": ["B", "A"]}'))
    with ScriptedServer(default=answer) as server:
        url = server.base_url.replace("http://", f"http://user:{SECRET}@")
        config = tmp_path / "remote.toml"
        catalog = (data_dir() / "demo_catalog.jsonl").as_posix()
        text = REMOTE.format(catalog=catalog, log=_write_log(tmp_path).as_posix(), base_url=url)
        config.write_text(text, encoding="utf-8")
        out = tmp_path / "run"
        proc = _zsgen("-v", "evaluate", "--config", str(config), "--out", str(out), "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert server.chat_requests
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    written = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"config.toml", "summary.json", "report.md", "per_user.jsonl"} <= set(written)
    for name, data in written.items():
        assert SECRET.encode() not in data, name
    assert b"user:***@" in written["config.toml"]


def _write_log(folder: Path) -> Path:
    """A small interaction log over the packaged demo catalog: 8 users with 8 events each."""
    catalog = [json.loads(line) for line in (data_dir() / "demo_catalog.jsonl").read_text().splitlines() if line]
    lines = []
    for u in range(8):
        for t in range(8):
            item = catalog[(u * 5 + t * 3) % len(catalog)]["id"]
            lines.append(json.dumps({"user_id": f"u{u}", "item_id": item, "timestamp": t, "rating": 4}))
    path = folder / "log.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_redacting_filter_keeps_the_handlers_format_and_covers_tracebacks() -> None:
    import io
    import logging

    from zsgen.redact import RedactingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("custom|%(name)s|%(message)s"))
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("zsgen.test_redact")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)  # not the root's level, which an earlier `zsgen -q` in this process may have raised
    try:
        log.warning("calling %s", f"http://u:{SECRET}@h/v1")
        try:
            raise RuntimeError(f"failed at http://u:{SECRET}@h/v1")
        except RuntimeError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
        log.propagate = True
        log.setLevel(logging.NOTSET)
    text = stream.getvalue()
    assert SECRET not in text
    assert text.startswith("custom|zsgen.test_redact|calling http://u:***@h/v1")
    assert "RuntimeError: failed at http://u:***@h/v1" in text
