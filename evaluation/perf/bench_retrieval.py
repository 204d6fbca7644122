"""Exact top-k retrieval: zsgen's chunked numpy ItemIndex against faiss-cpu IndexFlatIP.

    python evaluation/perf/bench_retrieval.py [--sizes 100000 1000000] [--users 1000] [--k 50] [--repeats 3]

Random unit float32 vectors (384-d, the MiniLM size). Both sides answer the same queries; runs alternate and the
median is reported. Results must be identical except where two items' scores are equal to within float rounding
(two BLAS libraries may round a dot product differently, which can swap near-ties). Peak memory is the growth of
a fresh process's resident-set high-water mark during one search (reset through /proc/self/clear_refs just before
it), so faiss's own allocations count too; the item matrix and the index are built before it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TIE_TOLERANCE = 1e-6


def machine() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except OSError:
        pass
    import faiss

    blas = {k: v for k, v in os.environ.items() if "BLAS" in k or k.startswith("OMP_")}
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} OpenMP threads), BLAS env {blas or 'unset'}, "
        f"load avg {os.getloadavg()[0]:.2f}"
    )


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    matrix = rng.standard_normal((n, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_growth_mib(fn: Callable[[], object]) -> float | None:
    """Resident-set high-water mark reached by ``fn`` above the resident set when it started."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) / 1024


def compare(items: np.ndarray, queries: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> tuple[int, int, int]:
    """(rows identical, rows differing only by near-ties, rows really different)."""
    same = near = wrong = 0
    for row in range(queries.shape[0]):
        a, b = ours[row], theirs[row]
        if np.array_equal(a, b):
            same += 1
            continue
        union = np.union1d(a, b)
        exact = items[union].astype(np.float64) @ queries[row].astype(np.float64)
        score = dict(zip(union.tolist(), exact.tolist(), strict=True))
        # Differences are acceptable only between positions whose exact scores are equal within rounding.
        fine = all(abs(score[int(x)] - score[int(y)]) <= TIE_TOLERANCE for x, y in zip(a, b, strict=True))
        if fine:
            near += 1
        else:
            wrong += 1
    return same, near, wrong


def make_data(n: int, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """The same items, users and seen-lists in every process for a given size and seed."""
    rng = np.random.default_rng([args.seed, n])
    items = unit_rows(rng, n, args.dim)
    queries = unit_rows(rng, args.users, args.dim)
    seen = [rng.choice(n, size=20, replace=False).tolist() for _ in range(args.users)]
    return items, queries, seen


def contenders(
    items: np.ndarray, queries: np.ndarray, seen: list[list[int]], k: int, only: str | None = None
) -> dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]]:
    import faiss

    from zsgen.retrieval.index import ItemIndex

    out: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {}
    if only in (None, "zsgen", "zsgen-exclude"):
        ours = ItemIndex(items)
        if only in (None, "zsgen"):
            out["zsgen"] = lambda: ours.search(queries, k)
    if only in (None, "faiss"):
        flat = faiss.IndexFlatIP(items.shape[1])
        flat.add(items)
        out["faiss"] = lambda: flat.search(queries, k)
    if only in (None, "zsgen-exclude"):
        out["zsgen-exclude"] = lambda: ours.search(queries, k, exclude=seen)
    return out


LABELS = {
    "zsgen": "zsgen ItemIndex",
    "faiss": "faiss IndexFlatIP",
    "zsgen-exclude": "zsgen ItemIndex, 20 exclusions/user",
}


def probe(name: str, n: int, args: argparse.Namespace) -> None:
    """Child mode: build one contender on fresh data and print its search's peak memory growth as JSON."""
    items, queries, seen = make_data(n, args)
    (fn,) = contenders(items, queries, seen, args.k, only=name).values()
    print(json.dumps({"peak_mib": peak_growth_mib(fn)}))


def probe_memory(name: str, n: int, args: argparse.Namespace) -> float | None:
    command = [sys.executable, __file__, "--probe", name, "--sizes", str(n), "--users", str(args.users)]
    command += ["--k", str(args.k), "--dim", str(args.dim), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    value = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
    return None if value is None else float(value)


def run_size(n: int, args: argparse.Namespace) -> bool:
    items, queries, seen = make_data(n, args)
    runners = contenders(items, queries, seen, args.k)
    times: dict[str, list[float]] = {name: [] for name in runners}
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    del runners
    memory = {name: probe_memory(name, n, args) for name in times}

    same, near, wrong = compare(items, queries, results["zsgen"][1], results["faiss"][1])
    leaked = sum(bool(set(row.tolist()) & set(s)) for row, s in zip(results["zsgen-exclude"][1], seen, strict=True))
    base = statistics.median(times["faiss"])
    size = items.nbytes / 2**20
    print(f"\n{n:,} items x {args.dim}-d ({size:,.0f} MiB), {args.users:,} users, top-{args.k}, {args.repeats} repeats")
    print(f"{'method':38s} {'median s':>9s} {'users/s':>9s} {'vs faiss':>9s} {'peak +MiB':>10s}")
    for name, runs in times.items():
        median = statistics.median(runs)
        mem = memory[name]
        mem_text = f"{mem:10.0f}" if mem is not None else f"{'n/a':>10s}"
        print(f"{LABELS[name]:38s} {median:9.2f} {args.users / median:9.0f} {base / median:8.2f}x {mem_text}")
    print(
        f"results vs faiss: {same} rows identical, {near} differ only by near-ties (<= {TIE_TOLERANCE}), {wrong} differ"
    )
    print(f"rows returning an excluded item: {leaked}")
    return wrong == 0 and leaked == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", choices=sorted(LABELS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, args.sizes[0], args)
        return 0
    print(machine())
    ok = all([run_size(n, args) for n in args.sizes])
    print(f"load avg at the end: {os.getloadavg()[0]:.2f}")
    if not ok:
        print("FAIL: results differ from faiss beyond near-ties, or exclusions leaked")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
