"""Batch-file throughput: export and import of a users file with N users (users/s), through zsgen's own pipeline.

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_batch.py [--users 10000] [--dataset ../shared/data/ml-100k]

Users are drawn from MovieLens-100K (seeded): each is a real user's most recent 5-10 items, cut at a random point, so
10,000 distinct requests come from its 943 users. Both directions run what ``zsgen batch export --users`` and
``zsgen batch import --users`` run: cosine retrieval (MiniLM; catalog vectors from the embedding cache, encoded once
before timing), 20 candidates, the packaged listwise template, ``structured = "json_schema"``, then writing request
lines (export) or parsing answers and writing the recommendations file (import). The answers are synthesised between
the two (every shown label, in reverse), which is not timed: a real batch's run time is the provider's.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from zsgen.embed import CachedEncoder, EmbeddingCache, TransformersEncoder
from zsgen.engines.batch import export_users, import_users
from zsgen.engines.bulk import read_users
from zsgen.loaders import load_dataset
from zsgen.paths import cache_dir
from zsgen.recommender import Recommender
from zsgen.rerank import RerankConfig, Reranker


def write_users(dataset: Any, n: int, path: Path, seed: int) -> None:
    """``n`` users, each a window of a real user's history (ids), seeded."""
    log, catalog = dataset.interactions, dataset.catalog
    events: dict[int, list[tuple[float, int]]] = {}
    for user, item, stamp in zip(log.user_index.tolist(), log.item_index.tolist(), log.timestamp.tolist(), strict=True):
        events.setdefault(user, []).append((stamp, item))
    histories = [[catalog[item].id for _, item in sorted(e)] for _, e in sorted(events.items())]
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for number in range(n):
            history = rng.choice(histories)
            end = rng.randint(5, len(history))
            length = rng.randint(5, 10)
            handle.write(json.dumps({"user_id": f"u{number}", "history": history[max(0, end - length) : end]}) + "\n")


def answer_all(request_files: list[Path], out: Path) -> int:
    """A result line for every request: status 200, the shown labels in reverse order."""
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        for path in request_files:
            for raw in path.read_text(encoding="utf-8").splitlines():
                request = json.loads(raw)
                schema = request["body"]["response_format"]["json_schema"]["schema"]
                labels = schema["properties"]["ranking"]["items"]["enum"]
                body = {
                    "id": f"chatcmpl-{count}",
                    "object": "chat.completion",
                    "model": request["body"]["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": json.dumps({"ranking": labels[::-1]})},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 800, "completion_tokens": 60, "total_tokens": 860},
                }
                line = {
                    "id": f"batch_req_{count}",
                    "custom_id": request["custom_id"],
                    "response": {"status_code": 200, "request_id": f"req_{count}", "body": body},
                    "error": None,
                }
                handle.write(json.dumps(line) + "\n")
                count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/ml-100k"))
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument(
        "--embedding-cache", type=Path, help="catalog vectors cache (default: zsgen's, as the CLI uses)"
    )
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    catalog = dataset.catalog
    config = RerankConfig(
        method="listwise", backend="openai", model="smollm2", candidates=args.candidates, structured="json_schema"
    )
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        encoder = CachedEncoder(
            TransformersEncoder(), EmbeddingCache(args.embedding_cache or cache_dir() / "embeddings.sqlite")
        )

        def build(reranker: Reranker) -> Recommender:
            return Recommender(catalog, encoder=encoder, reranker=reranker)

        users_path = work / "users.jsonl"
        write_users(dataset, args.users, users_path, args.seed)
        users = read_users(users_path, catalog.resolve)
        warm = time.perf_counter()
        # The catalog's vectors, encoded (or read from the cache) once, outside the timed parts.
        Recommender(catalog, encoder=encoder).recommend(list(users[0].history), k=1)
        warm_s = time.perf_counter() - warm

        start = time.perf_counter()
        exported = export_users(
            users, build, config, catalog, "bench", work / "export", batch_size=args.batch_size, progress=False
        )
        export_s = time.perf_counter() - start
        files = sorted((work / "export").glob("batch-*.jsonl"))
        answered = answer_all(files, work / "output.jsonl")

        start = time.perf_counter()
        written = import_users(
            users,
            build,
            config,
            catalog,
            "bench",
            [work / "output.jsonl"],
            work / "recs.jsonl",
            batch_size=args.batch_size,
            progress=False,
        )
        import_s = time.perf_counter() - start
        fallbacks = sum(json.loads(line)["fallback"] for line in (work / "recs.jsonl").read_text().splitlines())
        result = {
            "users": len(users),
            "requests": exported.requests,
            "request_files": len(files),
            "request_bytes": sum(f["bytes"] for f in exported.files),
            "answered": answered,
            "warm_up_s": round(warm_s, 1),
            "export_s": round(export_s, 1),
            "export_users_per_s": round(len(users) / export_s, 1),
            "import_s": round(import_s, 1),
            "import_users_per_s": round(written / import_s, 1),
            "fallbacks": fallbacks,
            "python": platform.python_version(),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
