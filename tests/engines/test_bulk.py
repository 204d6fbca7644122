"""Bulk recommendation from a users file (``zsgen recommend --users``) and its batch-file round trip
(``zsgen batch export/import --users``): equal to per-user ``recommend``, resumable after a kill, and once through a
real ``vllm run-batch``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import find_vllm_python
from tests.engines.test_batch_files import responder
from zsgen.cli import main
from zsgen.engines.bulk import read_users, recommendation_record
from zsgen.loaders import load_demo
from zsgen.testing.batch_server import request_lines, run_batch
from zsgen.testing.servers import VLLM_MODEL, ScriptedServer

USERS = [
    {"user_id": "space", "history": ["m098", "m248", "m030"]},
    {"user_id": "typed", "history": ["Garage Band", "m002"]},
    {"user_id": "cold", "profile": "Westerns about homesteaders and long winters."},
    {"user_id": 7, "history": ["m003"], "profile": "Anything with a prairie in it."},
    {"history": ["m061", "m249", "m001", "m010"]},
    {"user_id": "last", "history": ["m020", "m021"]},
]


def users_file(folder: Path, users: list[dict[str, Any]] = USERS) -> Path:
    path = folder / "users.jsonl"
    path.write_text("".join(json.dumps(u) + "\n" for u in users), encoding="utf-8")
    return path


def options(base_url: str, cache: Path) -> list[str]:
    return [
        "--rerank",
        "listwise",
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--model",
        "scripted-model",
        "--candidates",
        "6",
        "--structured",
        "json_schema",
        "--bootstrap",
        "2",
        "-k",
        "5",
        "--embedding-cache",
        str(cache),
    ]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_bulk_recommend_equals_per_user_recommend_and_resumes_after_a_kill(tmp_path: Path) -> None:
    from zsgen.embed import CachedEncoder, EmbeddingCache, TransformersEncoder
    from zsgen.recommender import Recommender
    from zsgen.rerank import RerankConfig

    path = users_file(tmp_path)
    cache = tmp_path / "embeddings.sqlite"
    with ScriptedServer(responder=responder) as server:
        opts = options(server.base_url, cache)
        full = tmp_path / "recs.jsonl"
        command = ["recommend", "--users", str(path), "--out", str(full), "--batch-size", "4", "--no-progress"]
        assert main([*command, *opts]) == 0
        got = lines(full)
        # One user at a time through the same pipeline gives the same lines.
        catalog = load_demo().catalog
        recommender = Recommender(
            catalog,
            encoder=CachedEncoder(TransformersEncoder(), EmbeddingCache(cache)),
            reranker=RerankConfig(
                method="listwise",
                backend="openai",
                base_url=server.base_url,
                model="scripted-model",
                candidates=6,
                structured="json_schema",
                bootstrap=2,
            ),
        )
        with recommender:
            want = [
                recommendation_record(u.user_id, recommender.recommend(list(u.history) or None, profile=u.profile, k=5))
                for u in read_users(path, catalog.resolve)
            ]
        assert got == want
        assert [g["user_id"] for g in got] == ["space", "typed", "cold", "7", "5", "last"]
        assert all(len(g["items"]) == 5 for g in got)
        assert any(g["repairs"] for g in got) and not all(g["fallback"] for g in got)
        # A kill mid-write leaves three whole lines and half of the fourth; the rerun finishes with the same bytes.
        data = full.read_bytes()
        cut = [i for i, b in enumerate(data) if b == ord("\n")][2] + 40
        partial = tmp_path / "partial.jsonl"
        partial.write_bytes(data[:cut])
        asked = len(server.chat_requests)
        assert main(["recommend", "--users", str(path), "--out", str(partial), "--no-progress", *opts]) == 0
        assert partial.read_bytes() == data
        assert len(server.chat_requests) == asked + 3 * 2  # only the three unfinished users, two rounds each
        # Run again: nothing left to do, nothing asked.
        assert main(["recommend", "--users", str(path), "--out", str(partial), "--no-progress", *opts]) == 0
        assert partial.read_bytes() == data and len(server.chat_requests) == asked + 6
        # Other options must not append to these lines.
        assert main(["recommend", "--users", str(path), "--out", str(partial), "--no-progress", *opts, "-k", "4"]) == 1
        assert partial.read_bytes() == data


def test_bad_users_lines_name_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        ({"user_id": "x", "history": ["m001", "No Such Film"]}, "field 'history[1]'"),
        ({"user_id": "x", "histroy": ["m001"]}, "field 'histroy'"),
        ({"user_id": "x"}, "field 'history': give a history or a profile"),
        ({"user_id": "space", "history": ["m001"]}, "field 'user_id': user 'space' is also on line 1"),
        ({"user_id": "x", "profile": 3}, "field 'profile'"),
    ]
    for bad, said in cases:
        path = users_file(tmp_path, [USERS[0], USERS[1], bad])
        code = main(["recommend", "--users", str(path), "--out", str(tmp_path / "r.jsonl")])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("zsgen: error: ") and f"users.jsonl:3, {said}" in err, err
        assert not (tmp_path / "r.jsonl").exists()  # checked before anything ran
    path = tmp_path / "users.jsonl"
    path.write_text(json.dumps(USERS[0]) + "\n{not json\n")
    assert main(["recommend", "--users", str(path), "--out", str(tmp_path / "r.jsonl")]) == 1
    assert "users.jsonl:2: not a JSON line" in capsys.readouterr().err


@pytest.mark.slow
def test_users_file_batch_round_trip_equals_bulk_recommend(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    cache = tmp_path / "embeddings.sqlite"
    with ScriptedServer(responder=responder) as server:
        opts = options(server.base_url, cache)
        online = tmp_path / "online.jsonl"
        assert main(["recommend", "--users", str(path), "--out", str(online), "--no-progress", *opts]) == 0
    common = ["--users", str(path), "--no-progress", *opts]
    assert main(["batch", "export", *common, "--out", str(tmp_path / "export"), "--max-requests", "5"]) == 0
    files = sorted((tmp_path / "export").glob("batch-*.jsonl"))
    assert [len(request_lines([f])) for f in files] == [5, 5, 2]
    results = run_batch(files, responder, tmp_path / "results", seed=3)
    imported = tmp_path / "imported.jsonl"
    assert main(["batch", "import", *common, "--results", *map(str, results), "--out", str(imported)]) == 0
    assert imported.read_bytes() == online.read_bytes()
    # Importing again (files in another order) writes the same bytes; a lost line is a flagged fallback.
    assert main(["batch", "import", *common, "--results", *map(str, reversed(results)), "--out", str(imported)]) == 0
    assert imported.read_bytes() == online.read_bytes()
    first = [line["custom_id"] for line in request_lines(files) if ":cold:" in line["custom_id"]]
    results = run_batch(files, responder, tmp_path / "dropped", drop=first)
    assert main(["batch", "import", *common, "--results", *map(str, results), "--out", str(imported)]) == 0
    by_user = {line["user_id"]: line for line in lines(imported)}
    assert len(by_user) == len(USERS)
    assert (by_user["cold"]["fallback"], by_user["cold"]["fallback_reason"]) == (True, "batch_missing")


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_run_batch_end_to_end(tmp_path: Path, local_model_dir: Path) -> None:
    """The exported file through the real ``vllm run-batch`` (CPU build, SmolLM2), imported back."""
    python = find_vllm_python()
    path = users_file(tmp_path, USERS[:2])
    common = [
        "--users",
        str(path),
        "--no-progress",
        "--rerank",
        "listwise",
        "--model",
        VLLM_MODEL,
        "--candidates",
        "5",
        "--structured",
        "json_schema",
        "-k",
        "5",
        "--embedding-cache",
        str(tmp_path / "embeddings.sqlite"),
    ]
    assert main(["batch", "export", *common, "--out", str(tmp_path / "export")]) == 0
    (requests,) = sorted((tmp_path / "export").glob("batch-*.jsonl"))
    output = tmp_path / "output.jsonl"
    subprocess.run(
        [
            str(python),
            "-m",
            "vllm.entrypoints.openai.run_batch",
            "-i",
            str(requests),
            "-o",
            str(output),
            "--model",
            str(local_model_dir),
            "--served-model-name",
            VLLM_MODEL,
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            "4096",
        ],
        check=True,
        timeout=1200,
        stdin=subprocess.DEVNULL,
        # 1 GiB of KV cache, as the server fixture (vLLM's CPU default reserves 92% of the machine's memory).
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    results = lines(output)
    assert len(results) == 2 and all(r["response"]["status_code"] == 200 for r in results)
    imported = tmp_path / "recs.jsonl"
    assert main(["batch", "import", *common, "--results", str(output), "--out", str(imported)]) == 0
    recs = lines(imported)
    assert [r["user_id"] for r in recs] == ["space", "typed"]
    for rec in recs:
        assert rec["model"] == VLLM_MODEL and len(rec["items"]) == 5
        # The constrained answer names the shown labels: read as the online path reads it, no fallback.
        assert not rec["fallback"], rec["fallback_reason"]
        assert rec["parse_status"] in ("ok", "repaired") and rec["usage"]["calls"] == 1
