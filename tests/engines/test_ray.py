"""Bulk recommendation and evaluation on Ray (``zsgen recommend --users --engine ray``, ``zsgen evaluate --engine
ray``): on a local two-CPU Ray cluster with a loopback server, the lines and per-user rows equal the local engine's,
the server receives the same request bodies, failed requests become fallbacks flagged as the local engine flags them,
and the catalog vectors embedded on Ray equal the local encoder's."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.engines.test_batch_files import config_file, responder
from tests.engines.test_bulk import USERS, lines, options, users_file
from tests.evaluate.test_run import metrics_only, stable
from zsgen.cli import main
from zsgen.embed.cache import EmbeddingCache, text_key
from zsgen.embed.local import TransformersEncoder
from zsgen.evaluate import load_config
from zsgen.evaluate.runner import load_eval_dataset, read_log
from zsgen.itemtext import ItemTextTemplate
from zsgen.loaders import load_demo
from zsgen.testing.servers import Reply, ScriptedServer

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

    Each engine starts from an empty embedding cache: the Ray run embeds the catalog in its ``map_batches`` stage,
    and the vectors it leaves in its cache equal the local encoder's. Vectors and cosine scores agree to float
    rounding only: Ray runs each actor's torch with one thread (OMP_NUM_THREADS=1), the local engine with the
    machine's threads, and the encoder's sums round differently."""
    path = users_file(tmp_path)
    opts = ["--no-progress", "-k", "5"]
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    caches = {engine: tmp_path / f"{engine}-embeddings.sqlite" for engine in ("local", "ray")}
    local_opts = ["--out", str(local), "--embedding-cache", str(caches["local"])]
    assert main(["recommend", "--users", str(path), *local_opts, *opts]) == 0
    ray_opts = ["--out", str(on_ray), "--engine", "ray", "--embedding-cache", str(caches["ray"])]
    assert main(["recommend", "--users", str(path), *ray_opts, *opts]) == 0
    encoder = TransformersEncoder()
    keys = [text_key(text) for text in ItemTextTemplate().render_all(load_demo().catalog)]
    vectors = {engine: EmbeddingCache(cache).get_many(encoder.identity, keys) for engine, cache in caches.items()}
    assert set(vectors["ray"]) == set(vectors["local"]) == set(keys)
    for key in keys:
        np.testing.assert_allclose(vectors["ray"][key], vectors["local"][key], atol=1e-5)
    assert len(lines(on_ray)) == len(lines(local)) == len(USERS)
    for mine, theirs in zip(lines(on_ray), lines(local), strict=True):
        assert [i["id"] for i in mine["items"]] == [i["id"] for i in theirs["items"]]
        assert [i["score"] for i in mine["items"]] == pytest.approx([i["score"] for i in theirs["items"]], abs=1e-5)
        drop = ("items",)
        assert {k: v for k, v in mine.items() if k not in drop} == {k: v for k, v in theirs.items() if k not in drop}


def test_evaluation_on_ray_equals_the_local_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``zsgen evaluate --engine ray`` against the local run of the same config and seed: the same request bodies,
    the same per-user rows (LLM latency aside: Ray records 0 s), the same metrics; a server error for some users is
    a ``server_error`` fallback on both engines. The catalog, embedded on Ray into an empty cache, gets the local
    encoder's vectors; a rerun into the finished folder sends nothing."""

    def failing(body: Any) -> Reply:
        digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
        if digest[2] % 5 == 0:
            return Reply(status=500, body={"error": {"message": "engine crashed", "type": "server_error"}})
        return responder(body)

    with ScriptedServer(responder=failing) as server:
        config = config_file(tmp_path, server.base_url)
        command = ["evaluate", "--config", str(config), "--no-progress"]
        monkeypatch.setenv("ZSGEN_CACHE_DIR", str(tmp_path / "local-cache"))
        assert main([*command, "--out", str(tmp_path / "local")]) == 0
        sent_locally = chat_bodies(server)
        server.requests.clear()
        monkeypatch.setenv("ZSGEN_CACHE_DIR", str(tmp_path / "ray-cache"))
        on_ray = [*command, "--out", str(tmp_path / "ray"), "--engine", "ray", "--ray-workers", "2"]
        assert main(on_ray) == 0
        assert chat_bodies(server) == sent_locally
        server.requests.clear()
        first = (tmp_path / "ray" / "per_user.jsonl").read_bytes()
        assert main(on_ray) == 0  # finished: resumes with nothing to do
        assert chat_bodies(server) == []
        assert (tmp_path / "ray" / "per_user.jsonl").read_bytes() == first
        # A local run killed after three users, finished on Ray: only the other users' requests are sent.
        mixed = tmp_path / "mixed"
        mixed.mkdir()
        (mixed / "config.toml").write_bytes((tmp_path / "local" / "config.toml").read_bytes())
        done = (tmp_path / "local" / "per_user.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:3]
        (mixed / "per_user.jsonl").write_text("".join(done), encoding="utf-8")
        server.requests.clear()
        assert main([*command, "--out", str(mixed), "--engine", "ray"]) == 0
        resumed = chat_bodies(server)
        assert 0 < len(resumed) < len(sent_locally) and set(resumed) <= set(sent_locally)

    got, want = read_log(tmp_path / "ray" / "per_user.jsonl"), read_log(tmp_path / "local" / "per_user.jsonl")
    assert list(got) == list(want)
    for user in want:
        assert stable(got[user]) == stable(want[user]), user
    finished = read_log(tmp_path / "mixed" / "per_user.jsonl")
    assert [stable(r) for r in finished.values()] == [stable(r) for r in want.values()]
    assert {r["rankers"]["remote"]["latency_s"] for r in got.values()} == {0.0}
    failed = [u for u, r in want.items() if r["rankers"]["remote"]["fallback_reason"] == "server_error"]
    assert failed == [u for u, r in got.items() if r["rankers"]["remote"]["fallback_reason"] == "server_error"]
    assert failed and all(got[u]["rankers"]["remote"]["fallback"] for u in failed)
    assert len(failed) < len(want)
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("ray", "local")]
    assert metrics_only(summaries[0]) == metrics_only(summaries[1])
    assert (tmp_path / "ray" / "report.md").is_file()

    # The vectors the Ray actors embedded, as the local encoder computed them (to float rounding: one torch thread).
    encoder = TransformersEncoder()
    catalog, _ = load_eval_dataset(load_config(config))
    keys = [text_key(text) for text in ItemTextTemplate().render_all(catalog)]
    local = EmbeddingCache(tmp_path / "local-cache" / "embeddings.sqlite").get_many(encoder.identity, keys)
    ray_made = EmbeddingCache(tmp_path / "ray-cache" / "embeddings.sqlite").get_many(encoder.identity, keys)
    assert set(ray_made) == set(local) == set(keys)
    for key in keys:
        np.testing.assert_allclose(ray_made[key], local[key], atol=1e-5)


def test_evaluation_on_ray_refuses_multi_call_methods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NIR's chained calls cannot be sent as independent requests: refused, naming the ranker, before any work."""
    config = config_file(tmp_path, method="nir")
    out = tmp_path / "ray"
    assert main(["evaluate", "--config", str(config), "--out", str(out), "--engine", "ray", "--no-progress"]) != 0
    error = capsys.readouterr().err
    assert "ranker 'remote'" in error and "single-call chat methods" in error
    assert not out.exists()


def test_a_server_that_goes_down_loses_nothing_and_a_rerun_asks_only_what_is_missing(tmp_path: Path) -> None:
    """Issue 24.9: a request that never gets an answer (the connection drops, every retry) is that user's fallback
    flagged ``connection`` as on the local engine, not an aborted run; answers are kept as they arrive, so a rerun
    asks the server only for what it lacks."""
    path = users_file(tmp_path)
    cache = tmp_path / "embeddings.sqlite"

    def down_for_cold(body: Any) -> Reply:
        if "homesteaders" in json.dumps(body["messages"]):  # the "cold" user's profile
            return Reply(drop=True)
        return responder(body)

    out = tmp_path / "ray.jsonl"
    command = ["recommend", "--users", str(path), "--out", str(out), "--no-progress", "--engine", "ray"]
    with ScriptedServer(responder=down_for_cold) as server:
        assert main([*command, *plain_options(server.base_url, cache)]) == 0
        asked = len(server.chat_requests)
    by_user = {line["user_id"]: line for line in lines(out)}
    assert len(by_user) == len(USERS)
    assert (by_user["cold"]["fallback"], by_user["cold"]["fallback_reason"]) == (True, "connection")
    assert not any(line["fallback"] for user, line in by_user.items() if user != "cold")
    answers = tmp_path / ".ray.jsonl.answers.jsonl"
    kept = [json.loads(line)["custom_id"].split(":")[2] for line in answers.read_text().splitlines()]
    assert set(kept) == {u for u in by_user if u != "cold"}  # every answer kept, the failure not
    rounds = len(kept) // (len(USERS) - 1)
    assert asked > len(kept) + rounds  # the dropped requests were retried before giving up
    # A run killed after the LLM stage, before its lines were written: the rerun asks only the unanswered requests.
    out.unlink()
    with ScriptedServer(responder=responder) as server:
        assert main([*command, *plain_options(server.base_url, cache)]) == 0
        assert len(server.chat_requests) == rounds
        assert all("homesteaders" in json.dumps(r.body) for r in server.chat_requests)
    again = {line["user_id"]: line for line in lines(out)}
    assert not again["cold"]["fallback"]
    assert {u: v for u, v in again.items() if u != "cold"} == {u: v for u, v in by_user.items() if u != "cold"}
