"""Load benchmark of ``zsgen serve``: many concurrent users on ML-100K, reranked through a loopback LLM server that
faults or stalls on 20% of its calls, with and without micro-batching.

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_serve.py [--requests 1000] [--concurrency 64] [--fault-rate 0.2]
        [--deadline 5] [--stall 8] [--out evaluation/perf/bench_serve.txt]

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_serve.py --requests 100 --concurrency 16    # smoke run

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_serve.py --retrieval   # what micro-batching saves, in-process

What runs, each in its own process: the **LLM server** (an OpenAI-compatible chat endpoint on 127.0.0.1, port 0),
**``zsgen serve``** (the real CLI, uvicorn, ML-100K with the fused first stage and a listwise rerank of 20 candidates
through that server, ``max_retries = 0`` so each user costs exactly one LLM call), and here the **client**: an
asyncio httpx2 client firing ``--requests`` requests from ``--concurrency`` workers.

Each request is one ML-100K user (their last 20 rated items, ids) with the profile ``viewer #N``; the LLM server reads
N from the prompt and decides from a seeded hash of N alone, so the benchmark knows every answer in advance:

* ``--fault-rate`` of the users (a third each): HTTP 500 (fallback, reason ``server_error``), a stall of ``--stall``
  seconds, longer than the service's ``--deadline`` (fallback, reason ``deadline``; the LLM call is cancelled), or an
  answer that is not a ranking (fallback, reason ``unparseable``);
* every other user: the candidates' labels in reverse order, which must come back as exactly that order.

``k`` is the candidate count, so a response shows the whole reranked list: before the timed run each user's
first-stage list is fetched once (``use_llm: false``), and every timed response must be a permutation of it, in
reverse for a good answer and unchanged for a fallback, with the expected ``fallback`` flag and reason. The run fails
(exit status 1) on any HTTP error, lost request, wrong permutation, flag or reason.

Reported per mode (``max_batch = 32``, ``max_wait_ms = 2``, versus ``max_batch = 1``): requests/s over the whole
run, latency p50/p95/p99 over all requests and over the requests whose LLM call did not stall (a stall costs the
deadline by design), and the mean first-stage batch size the service logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "ml-100k"
LABEL = re.compile(r"^\[([A-Z]+)\] ", re.MULTILINE)
VIEWER = re.compile(r"viewer #(\d+)")
CANDIDATES = 20


def fate(viewer: int, fault_rate: float, seed: int) -> str:
    """What the LLM server does for this user: ``ok``, ``server_error``, ``deadline`` (a stall) or ``unparseable``."""
    digest = hashlib.sha256(f"{seed}:{viewer}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    if draw >= fault_rate:
        return "ok"
    return ("server_error", "deadline", "unparseable")[int(draw / fault_rate * 3)]


# --- the LLM server (its own process) -------------------------------------------------------------------------------


def _completion(text: str) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }
    return json.dumps(body).encode()


def llm_server(conn: multiprocessing.connection.Connection, fault_rate: float, seed: int, stall: float) -> None:
    """Serve chat completions on a free loopback port (sent back over ``conn``) until ``conn`` closes."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the service's deadline)

        def do_GET(self) -> None:
            models = {"object": "list", "data": [{"id": "bench-model", "object": "model", "owned_by": "bench"}]}
            self._send(200, json.dumps(models).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            prompt = "\n".join(str(m.get("content")) for m in body["messages"])
            viewer = VIEWER.search(prompt)
            kind = fate(int(viewer.group(1)), fault_rate, seed) if viewer else "ok"
            if kind == "server_error":
                self._send(500, b'{"error": {"message": "injected fault", "type": "server_error"}}')
            elif kind == "deadline":
                time.sleep(stall)
                self._send(200, _completion('{"ranking": []}'))
            elif kind == "unparseable":
                self._send(200, _completion("I would rather talk about the weather."))
            else:
                self._send(200, _completion(json.dumps({"ranking": LABEL.findall(prompt)[::-1]})))

    class Server(ThreadingHTTPServer):
        request_queue_size = 512
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    conn.send(server.server_address[1])
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    with contextlib.suppress(EOFError):
        conn.recv()  # until the parent closes its end
    server.shutdown()


# --- the service (its own process) ----------------------------------------------------------------------------------


def write_config(folder: Path, llm_port: int, *, max_batch: int, deadline: float) -> Path:
    path = folder / f"serve-batch{max_batch}.toml"
    path.write_text(
        f"""dataset = {{ path = {json.dumps(str(DATA))} }}
first_stage = "fused"
deadline_s = {deadline}
max_batch = {max_batch}
max_wait_ms = 2.0
k_max = {CANDIDATES}

[rerank]
method = "listwise"
backend = "openai"
base_url = "http://127.0.0.1:{llm_port}/v1"
model = "bench-model"
candidates = {CANDIDATES}
max_retries = 0
timeout = 60.0
concurrency = 128
""",
        encoding="utf-8",
    )
    return path


def start_service(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``zsgen serve`` on a free port; returns the process and its base URL once it answers /readyz."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "zsgen", "serve", "-v", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    import httpx2

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # the models load before the port opens: wait for it, then for /readyz
        if proc.poll() is not None:
            raise SystemExit(f"zsgen serve exited with {proc.returncode}; see {log}")
        try:
            if httpx2.get(f"{url}/readyz", timeout=5).status_code == 200:
                return proc, url
        except httpx2.TransportError:
            time.sleep(0.5)
    raise SystemExit("zsgen serve did not become ready in 10 minutes")


def stop_service(proc: subprocess.Popen[bytes], log: Path) -> float | None:
    """Stop the service (SIGINT: uvicorn shuts down and the service logs its batching); the mean batch size."""
    proc.send_signal(2)
    proc.wait(timeout=60)
    match = re.search(r"\(mean ([0-9.]+), largest (\d+)\)", log.read_text(encoding="utf-8", errors="replace"))
    return float(match.group(1)) if match else None


# --- the client -----------------------------------------------------------------------------------------------------


def users(count: int) -> list[dict[str, Any]]:
    """``count`` requests: ML-100K users in turn (their last 20 rated items), each with its own viewer number."""
    from zsgen.loaders import load_dataset

    dataset = load_dataset(DATA)
    log = dataset.interactions
    assert log is not None
    ids = dataset.catalog.ids
    histories: dict[int, list[tuple[float, str]]] = {}
    for user, item, stamp in zip(log.user_index, log.item_index, log.timestamp, strict=True):
        histories.setdefault(int(user), []).append((float(stamp), ids[int(item)]))
    ordered = [[item for _, item in sorted(events)][-20:] for _, events in sorted(histories.items())]
    return [{"history": ordered[n % len(ordered)], "profile": f"viewer #{n}", "k": CANDIDATES} for n in range(count)]


async def fire(url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[list[Any], list[float], float]:
    """Every body POSTed by ``concurrency`` workers; the responses (or exceptions), latencies and wall time."""
    import httpx2

    results: list[Any] = [None] * len(bodies)
    latencies: list[float] = [0.0] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(len(bodies)):
        queue.put_nowait(number)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                number = queue.get_nowait()
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/recommendations", json=bodies[number])
                    results[number] = (response.status_code, response.json())
                except Exception as exc:
                    results[number] = exc
                latencies[number] = time.perf_counter() - start

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return results, latencies, wall


def check(first: list[list[str]], results: list[Any], args: argparse.Namespace) -> list[str]:
    problems = []
    for number, (expected, result) in enumerate(zip(first, results, strict=True)):
        if result is None:
            problems.append(f"request {number}: lost")
            continue
        if isinstance(result, Exception):
            problems.append(f"request {number}: {type(result).__name__}: {result}")
            continue
        status, payload = result
        if status != 200:
            problems.append(f"request {number}: HTTP {status}: {payload}")
            continue
        got = [item["id"] for item in payload["items"]]
        kind = fate(number, args.fault_rate, args.seed)
        if sorted(got) != sorted(expected):
            problems.append(f"request {number}: not a permutation of its candidates")
        elif kind == "ok" and (payload["fallback"] or got != expected[::-1]):
            problems.append(f"request {number}: expected the LLM's order, got fallback={payload['fallback_reason']}")
        elif kind != "ok" and (not payload["fallback"] or payload["fallback_reason"] != kind or got != expected):
            problems.append(f"request {number}: expected fallback {kind}, got {payload['fallback_reason']}")
    return problems


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run_mode(
    args: argparse.Namespace, folder: Path, llm_port: int, bodies: list[dict[str, Any]], max_batch: int
) -> dict[str, Any]:
    config = write_config(folder, llm_port, max_batch=max_batch, deadline=args.deadline)
    log = folder / f"serve-batch{max_batch}.log"
    proc, url = start_service(config, log)
    try:
        plain = [{**body, "use_llm": False} for body in bodies]
        first_results, _, _ = asyncio.run(fire(url, plain, args.concurrency))
        first = [[item["id"] for item in r[1]["items"]] if isinstance(r, tuple) else [] for r in first_results]
        results, latencies, wall = asyncio.run(fire(url, bodies, args.concurrency))
    finally:
        mean_batch = stop_service(proc, log)
    problems = check(first, results, args)
    flowing = [t for n, t in enumerate(latencies) if fate(n, args.fault_rate, args.seed) != "deadline"]
    fallbacks = sum(1 for r in results if isinstance(r, tuple) and r[0] == 200 and r[1]["fallback"])
    return {
        "max_batch": max_batch,
        "requests": len(bodies),
        "ok": sum(1 for r in results if isinstance(r, tuple) and r[0] == 200),
        "fallbacks": fallbacks,
        "problems": problems,
        "rps": len(bodies) / wall,
        "wall": wall,
        "all": [percentile(latencies, q) for q in (50, 95, 99)],
        "flowing": [percentile(flowing, q) for q in (50, 95, 99)],
        "mean_batch": mean_batch,
    }


def retrieval_timing(users_per_batch: int = 64, repeats: int = 5) -> str:
    """The first stage alone, in this process: one ``retrieve_batch`` of 64 users against 64 calls of one (medians)."""
    from zsgen.embed import default_encoder
    from zsgen.loaders import load_dataset
    from zsgen.retrieval import Request
    from zsgen.retrieval.choice import build_first_stage

    dataset = load_dataset(DATA)
    encoder = default_encoder()
    stage = build_first_stage(dataset.catalog, interactions=dataset.interactions, encoder=encoder)
    requests = [Request(history=body["history"]) for body in users(users_per_batch)]
    stage.retrieve_batch(requests[:2], k=CANDIDATES)  # warm-up
    together, apart = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        stage.retrieve_batch(requests, k=CANDIDATES)
        together.append(time.perf_counter() - start)
        start = time.perf_counter()
        for request in requests:
            stage.retrieve_batch([request], k=CANDIDATES)
        apart.append(time.perf_counter() - start)
    one, many = statistics.median(together), statistics.median(apart)
    rebuilds = []
    for _ in range(3):  # what an item edit costs: the stage rebuilt over the catalog, item texts from the cache
        start = time.perf_counter()
        build_first_stage(dataset.catalog, interactions=dataset.interactions, encoder=encoder)
        rebuilds.append(time.perf_counter() - start)
    return (
        f"fused first stage, ML-100K, {users_per_batch} users, k={CANDIDATES} (median of {repeats}): one batch "
        f"{one * 1000:.1f} ms, {users_per_batch} single calls {many * 1000:.1f} ms ({many / one:.1f}x); "
        f"rebuilt for an item edit in {statistics.median(rebuilds):.2f} s (median of 3)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--deadline", type=float, default=5.0, help="the service's deadline_s")
    parser.add_argument("--stall", type=float, default=8.0, help="seconds a stalled LLM call takes (> deadline)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--retrieval", action="store_true", help="only time the first stage, batched against not")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"ML-100K not found at {DATA}")
    if args.retrieval:
        print(retrieval_timing())
        return 0
    bodies = users(args.requests)
    expected = {
        kind: sum(fate(n, args.fault_rate, args.seed) == kind for n in range(args.requests))
        for kind in ("ok", "server_error", "deadline", "unparseable")
    }
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=llm_server, args=(child, args.fault_rate, args.seed, args.stall), daemon=True
    )
    server.start()
    llm_port = parent.recv()
    modes = []
    with tempfile.TemporaryDirectory() as tmp:
        for max_batch in (32, 1):
            modes.append(run_mode(args, Path(tmp), llm_port, bodies, max_batch))
    parent.close()
    server.join(timeout=30)
    lines = [
        f"zsgen serve load benchmark: {args.requests} requests, concurrency {args.concurrency}, ML-100K (fused first "
        f"stage, listwise rerank of {CANDIDATES} candidates via a loopback LLM server), fault rate {args.fault_rate} "
        f"(seed {args.seed}), deadline {args.deadline} s, stall {args.stall} s",
        f"expected per run: {expected['ok']} LLM orders, {expected['server_error']} HTTP 500, {expected['deadline']} "
        f"stalls past the deadline, {expected['unparseable']} unparseable answers",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs (shared, loaded), Python {platform.python_version()}",
        "",
        f"{'micro-batching':<22} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7}   {'no-stall p50/p95/p99 s':>24}"
        f"  {'mean batch':>10}  {'200s':>5} {'fallbacks':>9} {'problems':>8}",
    ]
    for mode in modes:
        label = "on (max_batch 32)" if mode["max_batch"] > 1 else "off (max_batch 1)"
        flowing = "/".join(f"{v:.3f}" for v in mode["flowing"])
        batch = f"{mode['mean_batch']:.1f}" if mode["mean_batch"] is not None else "?"
        lines.append(
            f"{label:<22} {mode['rps']:>7.1f} {mode['all'][0]:>7.3f} {mode['all'][1]:>7.3f} {mode['all'][2]:>7.3f}   "
            f"{flowing:>24}  {batch:>10}  {mode['ok']:>5} {mode['fallbacks']:>9} {len(mode['problems']):>8}"
        )
    failed = [p for mode in modes for p in mode["problems"]]
    lines.append("")
    lines.append("result: " + ("PASS (0 errors, 0 lost, every response as predicted)" if not failed else "FAIL"))
    lines += failed[:20]
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
