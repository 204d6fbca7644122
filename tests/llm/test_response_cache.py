"""ResponseCache: stable keys without secrets, JSON round trips, and several processes writing at once."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import sqlite3
import threading
from pathlib import Path

import pytest

import zsgen.cache
from zsgen.cache import ResponseCache, request_key
from zsgen.errors import ConfigError

REQUEST = {
    "backend": "openai",
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 64,
    "temperature": 0.0,
    "schema": None,
    "template_hash": "abc",
}


def test_key_ignores_argument_order_and_tracks_every_field() -> None:
    key = request_key(**REQUEST)
    assert key == request_key(**dict(reversed(list(REQUEST.items()))))
    assert len(key) == 64 and int(key, 16) >= 0
    changed = {
        "model": "other",
        "messages": [{"role": "user", "content": "hi!"}],
        "max_tokens": 65,
        "temperature": 0.5,
        "schema": {"type": "object"},
        "template_hash": "abd",
    }
    for field, value in changed.items():
        assert request_key(**{**REQUEST, field: value}) != key, field


def test_key_changes_with_cache_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = request_key(**REQUEST)
    monkeypatch.setattr(zsgen.cache, "CACHE_VERSION", zsgen.cache.CACHE_VERSION + 1)
    assert request_key(**REQUEST) != before


def test_key_refuses_secrets_and_non_json_values() -> None:
    with pytest.raises(ConfigError):
        request_key(**REQUEST, api_key="sk-secret")
    with pytest.raises(ConfigError):
        request_key(**REQUEST, client=object())


def test_round_trip_overwrite_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.sqlite"
    cache = ResponseCache(path)
    assert cache.get("missing") is None
    cache.put("k", {"text": "héllo", "usage": {"prompt_tokens": 3}})
    assert cache.get("k") == {"text": "héllo", "usage": {"prompt_tokens": 3}}
    cache.put("k", {"text": "replaced"})
    assert cache.get("k") == {"text": "replaced"}
    cache.close()
    reopened = ResponseCache(path)
    assert reopened.get("k") == {"text": "replaced"}
    assert len(reopened) == 1
    journal = reopened.db.connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO responses (key, payload, created) VALUES ('bad', '{not json', 0)")
    assert cache.get("bad") is None


def test_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match=r"cache\.sqlite"):
        ResponseCache(path)


def test_damaged_database_is_a_config_error_on_open(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    for i in range(300):
        cache.put(f"k{i}", {"text": "x" * 500})
    cache.close()  # the last connection checkpoints the WAL into the file
    size = path.stat().st_size
    with path.open("r+b") as f:  # keep the header page, scramble the rest
        f.seek(4096)
        f.write(bytes(range(256)) * ((size - 4096) // 256))
    with pytest.raises(ConfigError, match=r"cache\.sqlite.*response cache"):
        ResponseCache(path)


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")

    def work(worker: int) -> None:
        for i in range(50):
            cache.put(f"t{worker}-{i}", {"worker": worker, "i": i})

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 200
    assert all(cache.get(f"t{w}-{i}") == {"worker": w, "i": i} for w in range(4) for i in range(50))


def _writer(path: str, worker: int, count: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    cache = ResponseCache(path)
    barrier.wait()  # start together so writes really interleave
    for i in range(count):
        cache.put(f"w{worker}-{i}", {"worker": worker, "i": i, "text": "x" * 200})
        cache.put(f"shared-{i}", {"i": i})  # every process writes the same keys too
        assert cache.get(f"w{worker}-{i}") == {"worker": worker, "i": i, "text": "x" * 200}
    cache.close()


def test_several_processes_write_without_loss(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.sqlite")
    ResponseCache(path).close()
    workers, count = 4, 150
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_writer, args=(path, w, count, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers

    cache = ResponseCache(path)
    assert len(cache) == workers * count + count
    for w in range(workers):
        for i in range(count):
            assert cache.get(f"w{w}-{i}") == {"worker": w, "i": i, "text": "x" * 200}
    assert all(cache.get(f"shared-{i}") == {"i": i} for i in range(count))
    assert cache.db.connection().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _forked_writer(cache: ResponseCache, worker: int, count: int) -> None:
    # Runs in a child forked by multiprocessing: ``cache`` (and its open connection) came from the parent.
    for i in range(count):
        cache.put(f"f{worker}-{i}", {"worker": worker, "i": i})
        assert cache.get(f"f{worker}-{i}") == {"worker": worker, "i": i}
    assert cache.get("parent-before") == {"who": "parent"}


def test_forked_children_use_the_parents_cache_object(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    cache.put("parent-before", {"who": "parent"})
    parent_conn = cache.db.connection()
    ctx = multiprocessing.get_context("fork")
    workers, count = 3, 100
    procs = [ctx.Process(target=_forked_writer, args=(cache, w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers
    # The parent goes on with its own connection, and sees every child's writes.
    assert cache.db.connection() is parent_conn
    cache.put("parent-after", {"who": "parent"})
    assert cache.get("parent-after") == {"who": "parent"}
    assert len(cache) == workers * count + 2
    assert all(cache.get(f"f{w}-{i}") == {"worker": w, "i": i} for w in range(workers) for i in range(count))
    assert parent_conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_os_fork_child_opens_its_own_connection(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    cache.put("before", {"v": 1})
    parent_conn = cache.db.connection()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            assert cache.db.connection() is not parent_conn
            cache.put("child", {"v": 2})
            assert cache.get("child") == {"v": 2} and cache.get("before") == {"v": 1}
            cache.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.db.connection() is parent_conn
    assert cache.get("child") == {"v": 2}
    cache.put("after", {"v": 3})
    assert cache.get("after") == {"v": 3} and len(cache) == 3
    assert parent_conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_locked_file_is_not_called_damaged(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    ResponseCache(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")  # another process (here: connection) holds the file past the busy timeout
    try:
        with pytest.raises(ConfigError, match=r"cache\.sqlite: cannot open response cache: database is locked$"):
            ResponseCache(path, busy_timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
