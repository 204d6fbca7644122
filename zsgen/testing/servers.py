"""Real HTTP servers on loopback for backend tests and benchmarks.

The openai SDK ≥ 3 sends through httpx2, which request-mocking libraries do not intercept, so faults are produced by
a real server that answers from a script: each chat request takes the next scripted reply (status, headers, body,
delay, or a dropped connection). Every request is recorded, so a test can count retries and inspect exactly what the
client sent instead of timing sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    """One scripted answer. ``body`` is JSON-encoded unless it is bytes (sent as is, e.g. a malformed body)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"
    drop: bool = False  # close the connection without answering


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float


def completion_body(
    text: str | None = "ok",
    *,
    finish_reason: str | None = "stop",
    model: str = "scripted-model",
    refusal: str | None = None,
    prompt_tokens: int = 11,
    completion_tokens: int = 3,
    choices: bool = True,
) -> dict[str, Any]:
    """A chat.completion body as OpenAI-compatible servers send it."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if refusal is not None:
        message["refusal"] = refusal
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}] if choices else [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def logprobs_body(
    top: list[tuple[str, float]] | None,
    *,
    model: str = "scripted-model",
    prompt_tokens: int = 11,
    content: Any = "unset",
) -> dict[str, Any]:
    """A one-token chat.completion with ``logprobs`` as OpenAI and vLLM send them: the chosen token (the first of
    ``top``) and its ``top_logprobs``. ``top=None`` leaves ``logprobs`` null, as servers that ignore it do;
    ``content`` replaces the ``logprobs.content`` list (malformed shapes)."""
    body = completion_body(top[0][0] if top else "A", model=model, prompt_tokens=prompt_tokens, completion_tokens=1)
    if top is None:
        body["choices"][0]["logprobs"] = None
        return body
    alternatives = [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in top]
    entries = [{**alternatives[0], "top_logprobs": alternatives}] if alternatives else []
    body["choices"][0]["logprobs"] = {"content": entries if content == "unset" else content}
    return body


def embedding_body(vectors: list[list[float]], *, model: str = "scripted-embed") -> dict[str, Any]:
    """An embeddings response as OpenAI-compatible servers send it."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connection attempts when many clients connect at once; the kernel then
    # retries them after a second, which a concurrency test or benchmark would misread as server latency.
    request_queue_size = 256
    daemon_threads = True


class ScriptedServer:
    """An OpenAI-compatible server on 127.0.0.1 (free port) whose chat and embeddings answers come from a queue.

    When the queue is empty the ``default`` reply is used; without one the server answers 418, which the client
    does not retry, so an under-scripted test fails fast and visibly.

    Connections are counted as the server accepts and finishes them, so a test can check that a client reuses its
    connections and releases them on close (:meth:`wait_for_open_connections` blocks on a condition, not a sleep).
    """

    def __init__(
        self,
        *,
        models: tuple[str, ...] = ("scripted-model",),
        default: Reply | None = None,
        models_status: int = 200,
        responder: Callable[[Any], Reply] | None = None,
    ) -> None:
        self.models = models
        # Answers chosen from the request body (taking precedence over the queue): the same question gets the same
        # answer whatever order concurrent requests arrive in (batch-file tests replay these answers from a file).
        self.responder = responder
        self.models_status = models_status  # e.g. 404: a server whose chat works but that has no /v1/models
        self.models_reply: Reply | None = None  # when set, GET /v1/models answers this (a malformed list, a 500)
        self.default = default
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0  # most chat requests being answered at the same moment
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._connections = threading.Condition(self._lock)
        self.connections_accepted = 0
        self.open_connections = 0
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="scripted-server", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/embeddings")]

    def wait_for_open_connections(self, at_most: int, timeout: float = 10.0) -> int:
        """Block until at most ``at_most`` client connections are open (or ``timeout`` passes); return the count."""
        with self._connections:
            self._connections.wait_for(lambda: self.open_connections <= at_most, timeout=timeout)
            return self.open_connections

    def _connection_opened(self) -> None:
        with self._connections:
            self.connections_accepted += 1
            self.open_connections += 1

    def _connection_closed(self) -> None:
        with self._connections:
            self.open_connections -= 1
            self._connections.notify_all()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        self._stopping.set()  # releases handlers that are stalling on a scripted delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- request handling ------------------------------------------------------------------------------------------

    def _next_reply(self) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.default is not None:
            return self.default
        return Reply(status=418, body={"error": {"message": "script exhausted", "type": "test"}})

    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method=handler.command,
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body,
                    received_at=time.monotonic(),
                )
            )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            # Headers and body leave in two writes; with Nagle on, the second waits for the client's delayed ACK
            # (~40 ms per request on Linux), which would swamp latencies measured against this server.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                server._connection_opened()
                super().setup()

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    server._connection_closed()

            def _send(self, reply: Reply) -> None:
                if reply.delay and server._stopping.wait(reply.delay):
                    return
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def do_GET(self) -> None:
                server._record(self, None)
                if self.path.rstrip("/").endswith("/models") and server.models_reply is not None:
                    self._send(server.models_reply)
                elif self.path.rstrip("/").endswith("/models") and server.models_status != 200:
                    self._send(Reply(status=server.models_status, body={"error": {"message": "no model list"}}))
                elif self.path.rstrip("/").endswith("/models"):
                    data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in server.models]
                    self._send(Reply(body={"object": "list", "data": data}))
                elif self.path.rstrip("/") == "/health":
                    self._send(Reply(body={"status": "ok"}))
                else:
                    self._send(Reply(status=404, body={"error": {"message": "not found"}}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                server._record(self, body)
                path = self.path.rstrip("/")
                if path.endswith("/chat/completions") or path.endswith("/embeddings"):
                    with server._lock:
                        server.in_flight += 1
                        server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    try:
                        self._send(server.responder(body) if server.responder else server._next_reply())
                    finally:
                        with server._lock:
                            server.in_flight -= 1
                else:
                    self._send(Reply(status=404, body={"error": {"message": "not found"}}))

        return Handler


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _warm_up(port: int, model: str, deadline: float) -> None:
    """One 1-token chat request, waited for up to the start-up deadline, before any test talks to the server.

    ``/health`` answers before the model is loaded; the first request then pays for loading it. Left to the first
    test, that cost counted against the test's own request timeout, so on a busy machine the outcome depended on load
    (the issue-12 run timed out 4 x 120 s). A failed warm-up is not an error here: the tests report what they see.
    """
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=max(deadline - time.monotonic(), 30.0)) as response:
            response.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        pass


@contextmanager
def transformers_serve(model_dir: Path, *, startup_deadline: float = 300.0) -> Iterator[str]:
    """Run ``transformers serve`` on a free loopback port; yield its OpenAI base URL; stop it afterwards."""
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    command = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with _serve("transformers serve", command, port, startup_deadline):
        _warm_up(port, str(model_dir), time.monotonic() + startup_deadline)
        yield f"http://127.0.0.1:{port}/v1"


#: The model id the vLLM fixture serves the packaged SmolLM2 under.
VLLM_MODEL = "smollm2"


def vllm_command(python: Path | str, model_dir: Path | str, port: int) -> list[str]:
    """vLLM's OpenAI server (CPU build) as zsgen's tests and ``make vllm-serve`` start it.

    ``--enforce-eager`` skips graph capture (start-up ~1 min instead of ~5 here); float32 because the CPU build's bf16
    kernels are slower on this machine; ``--max-logprobs 20`` is the top-logprobs cap the scoring paths rely on.
    """
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        VLLM_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "4096",
        "--max-logprobs",
        "20",
    ]


@contextmanager
def vllm_serve(python: Path | str, model_dir: Path, *, startup_deadline: float = 900.0) -> Iterator[str]:
    """Run vLLM's OpenAI server (the CPU build in its own environment) on a free loopback port; yield its base URL."""
    port = free_port()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB of KV cache: plenty for a 135M model and short prompts
    with _serve("vLLM", vllm_command(python, model_dir, port), port, startup_deadline, env=env):
        _warm_up(port, VLLM_MODEL, time.monotonic() + startup_deadline)
        yield f"http://127.0.0.1:{port}/v1"


@contextmanager
def vllm_process(
    python: Path | str, model_dir: Path, *, startup_deadline: float = 900.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`vllm_serve` for a test that kills the server itself: yields the base URL and the process, which leads
    its own process group, so that ``kill_group`` also ends vLLM's engine-core child (a killed parent leaves it)."""
    port = free_port()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    command = vllm_command(python, model_dir, port)
    with _serve("vLLM", command, port, startup_deadline, env=env, own_group=True) as proc:
        _warm_up(port, VLLM_MODEL, time.monotonic() + startup_deadline)
        yield f"http://127.0.0.1:{port}/v1", proc


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a server started with ``own_group`` and every process in its group; wait until the leader is gone."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def vllm_requests(base_url: str) -> float:
    """Requests a vLLM server has finished, from its Prometheus ``/metrics`` (every finish reason)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total{")
    )


@contextmanager
def _serve(
    name: str,
    command: list[str],
    port: int,
    startup_deadline: float,
    *,
    env: dict[str, str] | None = None,
    own_group: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process and wait until ``/health`` answers 200; stop it afterwards.

    Readiness is detected by polling ``/health`` until a deadline: that is the synchronisation, not a guess of
    how long start-up takes. The server log goes to a file and is shown if start-up fails.
    """
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    with tempfile.TemporaryFile(mode="w+") as log_file:
        proc = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, start_new_session=own_group
        )
        try:
            deadline = time.monotonic() + startup_deadline
            while True:
                if proc.poll() is not None:
                    log_file.seek(0)
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_file.read()[-4000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    log_file.seek(0)
                    raise RuntimeError(f"{name} not healthy after {startup_deadline} s:\n{log_file.read()[-4000:]}")
                time.sleep(0.25)  # poll interval of the health check
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
            if own_group:  # children the leader left behind (after a SIGKILL it could not stop them)
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
