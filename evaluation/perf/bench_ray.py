"""The Ray engine's overhead against the local engine: the same users file (or evaluation config), the same loopback
server, both ways, side by side in one run.

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_ray.py [--users 500] [--workers 2] [--cpus 2]
    HF_HUB_OFFLINE=1 python evaluation/perf/bench_ray.py --mode evaluate --dataset PATH/ml-100k [--users 200]

Needs ``pip install "zsgen[ray]"``. The users are drawn from the packaged demo catalog (seeded: 3-6 item ids each).
Both runs are ``zsgen recommend --users F --out F`` with listwise reranking of 20 candidates (``--structured
json_schema``, one call per user) against a stdlib OpenAI-compatible server on 127.0.0.1 that answers at once with
the same ranking, so the wall time is zsgen's and Ray's, not a model's. The local run goes first (it also fills the
embedding cache both then read); the Ray run joins a local ``ray.init(num_cpus=CPUS)`` cluster started before its
clock starts (the start-up is reported separately). The two output files must be byte-identical; the script says so.

``--mode evaluate`` times ``zsgen evaluate`` and ``zsgen evaluate --engine ray`` on one LLMRank-style config over the
dataset (``--users`` seeded users, 20 candidates, history 20; cosine and popularity baselines and a listwise
``json_schema`` ranker against the same loopback server), each engine twice: from an empty embedding cache (the
local run encodes the catalog in-process, the Ray run in its ``map_batches`` stage), then again with that cache
filled (only ranking and the LLM stage left). The per-user rows of all four runs must be equal apart from LLM
latency (the Ray engine records 0 s); the script says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from zsgen.cli import main
from zsgen.loaders import load_demo

ANSWER = '{"ranking": ["B", "A", "C", "D"]}'


class _Handler(BaseHTTPRequestHandler):
    """Answers every chat completion with ``ANSWER`` (and lists one model)."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "bench-model", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        message = {"role": "assistant", "content": ANSWER}
        usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
        self._send(
            {
                "id": "x",
                "object": "chat.completion",
                "model": "bench-model",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        )


def write_users(path: Path, n: int, seed: int) -> None:
    ids = [item.id for item in load_demo().catalog]
    rng = random.Random(seed)
    lines = [json.dumps({"user_id": f"u{i}", "history": rng.sample(ids, rng.randint(3, 6))}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


EVAL_CONFIG = """
name = "bench-ray"
protocol = "llmrank"
history_length = 20
seed = {seed}
users = {users}

[dataset]
path = "{dataset}"

[candidates]
n = 20

[metrics]
baseline = "cosine"
recall_generators = []

[[rankers]]
name = "cosine"
kind = "text"

[[rankers]]
name = "popularity"
kind = "popularity"

[[rankers]]
name = "listwise"
kind = "llm"

[rankers.rerank]
method = "listwise"
backend = "openai"
base_url = "{base_url}"
model = "bench-model"
structured = "json_schema"
concurrency = 8
"""


def _timed_eval(argv: list[str], cache: Path) -> float:
    os.environ["ZSGEN_CACHE_DIR"] = str(cache)  # an empty embedding cache: each engine embeds the catalog itself
    start = time.perf_counter()
    assert main(argv) == 0
    return time.perf_counter() - start


def _rows(folder: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (folder / "per_user.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        for entry in row["rankers"].values():
            entry.pop("latency_s", None)
    return rows


def bench_evaluate(args: argparse.Namespace, base_url: str) -> None:
    import ray

    with tempfile.TemporaryDirectory(prefix="zsgen-bench-ray-") as scratch:
        folder = Path(scratch)
        config = folder / "bench.toml"
        dataset = Path(args.dataset).resolve().as_posix()
        config.write_text(EVAL_CONFIG.format(seed=args.seed, users=args.users, dataset=dataset, base_url=base_url))
        command = ["evaluate", "--config", str(config), "--no-progress", "-q"]
        times: dict[str, float] = {}
        # Cold: an empty embedding cache, so the engine embeds the catalog; warm: the run again into a new folder,
        # every vector read from the cache that run filled (only the ranking and the LLM stage are left).
        for warmth in ("cold", "warm"):
            times[f"local {warmth}"] = _timed_eval([*command, "--out", str(folder / f"local-{warmth}")], folder / "lc")
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - start
        try:
            for warmth in ("cold", "warm"):
                opts = ["--engine", "ray", "--ray-workers", str(args.workers), "--out", str(folder / f"ray-{warmth}")]
                times[f"ray {warmth}"] = _timed_eval([*command, *opts], folder / "rc")
        finally:
            ray.shutdown()
        runs = [_rows(folder / name) for name in ("local-cold", "local-warm", "ray-cold", "ray-warm")]
        same = all(rows == runs[0] for rows in runs)
    print(f"machine: {platform.machine()}, {platform.python_version()}, ray {ray.__version__}")
    print(f"zsgen evaluate: {args.users} users of {args.dataset}, ray workers: {args.workers}, ray cpus: {args.cpus}")
    for name, seconds in times.items():
        print(f"{name:<11} {seconds:6.1f} s ({args.users / seconds:.1f} users/s)")
    print(f"ray cluster start {init_s:.1f} s, not included")
    for warmth in ("cold", "warm"):
        ratio = times[f"ray {warmth}"] / times[f"local {warmth}"]
        print(f"ray / local wall time, {warmth} embedding cache: {ratio:.2f}x")
    print(f"per-user rows of all four runs equal (LLM latency aside): {same}")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("recommend", "evaluate"), default="recommend")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", help="--mode evaluate: the dataset folder (RecBole atomic files, e.g. ml-100k)")
    args = parser.parse_args()
    import ray

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    if args.mode == "evaluate":
        if not args.dataset:
            parser.error("--mode evaluate needs --dataset")
        bench_evaluate(args, base_url)
        server.shutdown()
        return
    with tempfile.TemporaryDirectory(prefix="zsgen-bench-ray-") as scratch:
        folder = Path(scratch)
        users = folder / "users.jsonl"
        write_users(users, args.users, args.seed)
        opts = [
            "--users", str(users), "--no-progress", "-q", "--rerank", "listwise", "--backend", "openai",
            "--base-url", base_url, "--model", "bench-model", "--candidates", "20", "--structured", "json_schema",
            "--embedding-cache", str(folder / "embeddings.sqlite"), "--first-stage", "cosine",
        ]  # fmt: skip
        start = time.perf_counter()
        assert main(["recommend", *opts, "--out", str(folder / "local.jsonl")]) == 0
        local_s = time.perf_counter() - start
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - start
        try:
            start = time.perf_counter()
            ray_opts = ["--engine", "ray", "--ray-workers", str(args.workers), "--out", str(folder / "ray.jsonl")]
            assert main(["recommend", *opts, *ray_opts]) == 0
            ray_s = time.perf_counter() - start
        finally:
            ray.shutdown()
        same = (folder / "local.jsonl").read_bytes() == (folder / "ray.jsonl").read_bytes()
    server.shutdown()
    print(f"machine: {platform.machine()}, {platform.python_version()}, ray {ray.__version__}")
    print(f"users: {args.users}, ray workers: {args.workers}, ray cpus: {args.cpus}")
    print(f"local engine: {local_s:.1f} s ({args.users / local_s:.1f} users/s)")
    print(f"ray engine:   {ray_s:.1f} s ({args.users / ray_s:.1f} users/s), cluster start {init_s:.1f} s not included")
    print(f"ray / local wall time: {ray_s / local_s:.2f}x; outputs byte-identical: {same}")


if __name__ == "__main__":
    main_()
