"""OpenAIChatBackend throughput against a loopback server that answers every request after a fixed 50 ms.

    python evaluation/perf/bench_openai_throughput.py [--requests 256] [--latency 0.05] [--levels 1,8,32]

The server (zsgen.testing.servers' ScriptedServer, in its own process so it does not share the client's GIL) stands in
for a remote model whose latency, not our client, is the bottleneck. For each concurrency level the same number of
requests go through ``achat_many``; requests/s and the speed-up over concurrency 1 are printed, with the most
requests the server saw in flight at once (it must equal the level: the semaphore is the only bound).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import platform
import sys
import time
from collections import Counter


def serve(conn: multiprocessing.connection.Connection, latency: float) -> None:
    """Server process: answer every chat request after ``latency`` s; report stats on request."""
    from zsgen.testing.servers import Reply, ScriptedServer, completion_body

    with ScriptedServer(default=Reply(delay=latency, body=completion_body("A, B, C"))) as server:
        conn.send(server.base_url)
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(
                    {
                        "requests": len(server.chat_requests),
                        "max_in_flight": server.max_in_flight,
                        "cpu": time.process_time(),
                    }
                )
            elif command == "reset":
                server.requests.clear()
                server.max_in_flight = 0
                conn.send("ok")
            else:
                return


async def run_level(base_url: str, concurrency: int, requests: int) -> tuple[float, float, int, dict[str, int]]:
    from zsgen.llm import Completion, OpenAIChatBackend

    backend = OpenAIChatBackend(base_url, model="bench", api_key="k", max_retries=0, concurrency=concurrency)
    async with backend:
        await backend.achat([{"role": "user", "content": "warm-up"}], max_tokens=8)  # connection set-up
        conversations = [[{"role": "user", "content": f"request {i}"}] for i in range(requests)]
        start, cpu = time.perf_counter(), time.process_time()
        results = await backend.achat_many(conversations, max_tokens=8)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    ok = sum(isinstance(r, Completion) for r in results)
    failures = Counter(r.reason for r in results if not isinstance(r, Completion))
    return elapsed, cpu, ok, dict(failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--levels", default="1,8,32")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(child, args.latency), daemon=True)
    proc.start()
    try:
        base_url = parent.recv()
        rates: dict[int, float] = {}
        print(f"{args.requests} requests per level, server latency {args.latency * 1000:.0f} ms, {base_url}")
        for level in levels:
            parent.send("reset")
            parent.recv()
            parent.send("stats")
            server_cpu = parent.recv()["cpu"]
            elapsed, client_cpu, ok, failures = asyncio.run(run_level(base_url, level, args.requests))
            parent.send("stats")
            stats = parent.recv()
            server_cpu = stats["cpu"] - server_cpu
            rates[level] = args.requests / elapsed
            speedup = rates[level] / rates[levels[0]]
            print(
                f"  concurrency {level:3d}: {elapsed:6.2f} s, {rates[level]:7.1f} req/s, x{speedup:5.1f} vs"
                f" concurrency {levels[0]}, {ok}/{args.requests} ok, server saw at most"
                f" {stats['max_in_flight']} in flight; CPU per request: client"
                f" {client_cpu / args.requests * 1000:.1f} ms, server {server_cpu / args.requests * 1000:.1f} ms"
                + (f"; failures: {failures}" if failures else ""),
                flush=True,
            )
        parent.send("stop")
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    ideal = 1 / args.latency
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f},"
        f" python {sys.version.split()[0]}; ideal sequential rate {ideal:.0f} req/s"
    )
    top = max(levels)
    print(f"speed-up at concurrency {top}: {rates[top] / rates[levels[0]]:.1f}x (goal >= 20x)")


if __name__ == "__main__":
    main()
