"""Encoding throughput: zsgen's TransformersEncoder against sentence-transformers on the same model and texts.

    HF_HUB_OFFLINE=1 python evaluation/perf/bench_encode.py [--n 2000] [--repeats 3] [--batch-size 64]

Both encoders get the same packaged all-MiniLM-L6-v2 folder and the same texts (MovieLens-100K titles, years and
genres with seeded synthetic descriptions; generated titles if the data folder is missing). Runs alternate between
the two so that load from other processes on the machine hits both alike; the median of the repeats is reported.
The embeddings must agree (min cosine >= 0.9999) or the benchmark fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k" / "ml-100k.item"

_OPENINGS = [
    "A {adj} story about {who} who {does}.",
    "When {who} {does}, everything changes.",
    "{Who} must decide whether to trust {other} after {event}.",
    "Set in {place}, this {adj} tale follows {who}.",
    "Critics called it {adj}; audiences remember {event}.",
]
_FILL = {
    "adj": ["quiet", "sprawling", "darkly funny", "tender", "relentless", "whimsical", "bleak", "heartfelt"],
    "who": ["a retired detective", "two estranged sisters", "a young pilot", "an exiled prince", "a small-town nurse"],
    "does": [
        "finds a map to a lost city",
        "loses everything in one night",
        "joins a travelling circus",
        "uncovers a conspiracy",
        "falls for a rival",
        "returns home after twenty years",
    ],
    "other": ["a stranger", "an old friend", "the enemy", "a talking robot", "her own brother"],
    "event": ["a storm at sea", "the long winter", "a failed heist", "the first contact", "a wedding gone wrong"],
    "place": ["1920s Shanghai", "a mining colony on Mars", "rural Ireland", "a Paris bakery", "post-war Berlin"],
}


def _sentence(rng: random.Random) -> str:
    template = rng.choice(_OPENINGS)
    values = {key: rng.choice(options) for key, options in _FILL.items()}
    values["Who"] = values["who"][0].upper() + values["who"][1:]
    return template.format(**values)


def build_texts(n: int, seed: int = 0) -> list[str]:
    """Item texts of realistic, varied length: a title line plus zero to four synthetic sentences."""
    rng = random.Random(seed)
    heads: list[str] = []
    if DATA.is_file():
        for line in DATA.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 4:
                heads.append(f"{parts[1]} ({parts[2]}). Genres: {', '.join(parts[3].split())}.")
    if not heads:
        genres = ["Drama", "Comedy", "Sci-Fi", "Romance"]
        heads = [f"Untitled project {i} ({1950 + i % 70}). Genres: {rng.choice(genres)}." for i in range(n)]
    return [
        f"{heads[i % len(heads)]} {' '.join(_sentence(rng) for _ in range(rng.randint(0, 4)))}".strip()
        for i in range(n)
    ]


def machine() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except OSError:
        pass
    import torch

    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), load avg {os.getloadavg()[0]:.2f}"
    )


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch intra-op threads for both sides (default: torch's own)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    from zsgen.embed.local import TransformersEncoder, default_model_path

    texts = build_texts(args.n)
    folder = default_model_path()
    ours = TransformersEncoder(folder, batch_size=args.batch_size)
    theirs = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    theirs.max_seq_length = ours.max_length
    print(machine())
    print(f"{len(texts)} texts, mean {np.mean([len(t) for t in texts]):.0f} chars; model {ours.identity}")

    contenders: dict[str, Callable[[], np.ndarray]] = {
        "zsgen": lambda: ours.encode(texts, progress=False),
        f"sentence-transformers (batch {args.batch_size})": lambda: theirs.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True
        ),
        "sentence-transformers (batch 32, its default)": lambda: theirs.encode(
            texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
        ),
    }
    for fn in contenders.values():  # warm-up: first-call allocations and lazy imports are not throughput
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    results: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            seconds, results[name] = timed(fn)
            times[name].append(seconds)

    reference = results["zsgen"]
    ok = True
    for name, emb in results.items():
        cosines = np.sum(reference * np.asarray(emb, dtype=np.float32), axis=1)
        if name != "zsgen":
            print(f"agreement with {name}: min cosine {cosines.min():.6f}")
            ok &= bool(cosines.min() >= 0.9999)
    base = statistics.median(times["zsgen"])
    print(f"{'encoder':48s} {'median s':>9s} {'texts/s':>9s} {'zsgen speed-up':>15s}")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:48s} {median:9.2f} {len(texts) / median:9.0f} {median / base:14.2f}x")
    print(f"load avg at the end: {os.getloadavg()[0]:.2f}")
    if not ok:
        print("FAIL: embeddings disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
