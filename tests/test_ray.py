"""Bulk recommendation on Ray (``zsgen recommend --users --engine ray``): on a local two-CPU Ray cluster with a
loopback server, the lines equal the local engine's, the server receives the same request bodies, and failed requests
become flagged fallbacks without losing a user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Reply, ScriptedServer
from test_batch import responder
from test_bulk import USERS, lines, options, users_file

from zsgen.cli import main

ray = pytest.importorskip("ray", reason="the Ray engine needs the optional extra: pip install 'zsgen[ray]'")
pytest.importorskip("ray.data.llm")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    """One local Ray cluster for the module (the CLI joins it rather than starting its own)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def plain_options(base_url: str, cache: Path) -> list[str]:
    """The bulk test's options with free-text answers (parsed and repaired by zsgen)."""
    opts = options(base_url, cache)
    at = opts.index("--structured")
    opts[at + 1] = "none"
    return opts


def chat_bodies(server: ScriptedServer) -> list[str]:
    return sorted(json.dumps(r.body, sort_keys=True) for r in server.requests if r.path.endswith("/chat/completions"))


@pytest.mark.parametrize("structured", ["none", "json_schema"])
def test_ray_lines_equal_the_local_engine(tmp_path: Path, structured: str) -> None:
    path = users_file(tmp_path)
    cache = tmp_path / "embeddings.sqlite"
    opts = options("", cache)
    with ScriptedServer(responder=responder) as server:
        opts = plain_options(server.base_url, cache) if structured == "none" else options(server.base_url, cache)
        local = tmp_path / "local.jsonl"
        opts += ["--batch-size", "2"]  # three chunks, ranked as the local engine ranks them
        assert main(["recommend", "--users", str(path), "--out", str(local), "--no-progress", *opts]) == 0
        sent_locally = chat_bodies(server)
        server.requests.clear()
        on_ray = tmp_path / "ray.jsonl"
        command = ["recommend", "--users", str(path), "--out", str(on_ray), "--no-progress", "--engine", "ray"]
        assert main([*command, "--ray-workers", "2", *opts]) == 0
        assert chat_bodies(server) == sent_locally  # exactly the bodies the online backend sends
        assert on_ray.read_bytes() == local.read_bytes()
        assert not any(line["fallback"] for line in lines(on_ray))
        # A rerun finds every user written and sends nothing.
        server.requests.clear()
        assert main([*command, *opts]) == 0
        assert chat_bodies(server) == []
        assert on_ray.read_bytes() == local.read_bytes()


def test_failed_requests_become_flagged_fallbacks(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    cache = tmp_path / "embeddings.sqlite"

    def failing(body: Any) -> Reply:
        if "homesteaders" in json.dumps(body["messages"]):  # the "cold" user's profile
            return Reply(status=500, body={"error": {"message": "engine crashed", "type": "server_error"}})
        return responder(body)

    with ScriptedServer(responder=failing) as server:
        opts = plain_options(server.base_url, cache)
        out = tmp_path / "ray.jsonl"
        command = ["recommend", "--users", str(path), "--out", str(out), "--no-progress", "--engine", "ray"]
        assert main([*command, *opts]) == 0
    by_user = {line["user_id"]: line for line in lines(out)}
    assert len(by_user) == len(USERS)
    assert (by_user["cold"]["fallback"], by_user["cold"]["fallback_reason"]) == (True, "server_error")
    assert len(by_user["cold"]["items"]) == 5  # the first-stage order, not a lost user
    assert not any(line["fallback"] for user, line in by_user.items() if user != "cold")


def test_first_stage_only_equals_the_local_engine(tmp_path: Path) -> None:
    """Without --rerank only the answer stage runs (no HTTP processor): the local engine's items, in its order.

    Cosine scores agree to float rounding only: Ray runs each actor's torch with one thread (OMP_NUM_THREADS=1), the
    local engine with the machine's threads, and the encoder's sums round differently."""
    path = users_file(tmp_path)
    opts = ["--no-progress", "-k", "5", "--embedding-cache", str(tmp_path / "embeddings.sqlite")]
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main(["recommend", "--users", str(path), "--out", str(local), *opts]) == 0
    assert main(["recommend", "--users", str(path), "--out", str(on_ray), "--engine", "ray", *opts]) == 0
    assert len(lines(on_ray)) == len(lines(local)) == len(USERS)
    for mine, theirs in zip(lines(on_ray), lines(local), strict=True):
        assert [i["id"] for i in mine["items"]] == [i["id"] for i in theirs["items"]]
        assert [i["score"] for i in mine["items"]] == pytest.approx([i["score"] for i in theirs["items"]], abs=1e-5)
        drop = ("items",)
        assert {k: v for k, v in mine.items() if k not in drop} == {k: v for k, v in theirs.items() if k not in drop}
