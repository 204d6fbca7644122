"""Approximate retrieval at catalog scale: zsgen's AnnIndex against exact faiss ``IndexFlatIP``.

    nice -n 10 python evaluation/perf/bench_ann.py [--n 1000000] [--dim 384] [--queries 1000] [--k 50]
        [--factory IVF4096,Flat] [--nprobe 64 256]

Items are seeded random unit vectors: isotropic by default (the hardest case for any ANN index: past the few items
a query was made from, the top 50 are noise-level scores with no structure to find), or with ``--clusters C`` drawn
around C random centres (``center + spread * noise``, normalised), closer to real text embeddings. Queries are the
normalised mean of 3 items (from one cluster with ``--clusters``), like a user's mean history vector. Ground truth is
``IndexFlatIP``'s top-k. For each IVF ``nprobe`` the script reports recall@k of :class:`~zsgen.retrieval.ann.AnnIndex`
(faiss candidates, exact re-score of ``rescore`` x k candidates, loaded memory-mapped), queries/s of both, build time
(train + add) and memory (process peak RSS after each step, and the saved files' sizes). Queries run as one batch, as
the retriever sends them.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from zsgen.retrieval.ann import AnnIndex, default_factory, load_ann, save_ann


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def unit_rows(rng: np.random.Generator, n: int, dim: int, chunk: int = 250_000) -> np.ndarray:
    """``n`` random unit rows, generated in chunks so the float64 temporaries stay small."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + block.shape[0]] = block
    return out


def clustered_rows(rng: np.random.Generator, n: int, dim: int, clusters: int, spread: float) -> np.ndarray:
    """``n`` unit rows around ``clusters`` random centres; row ``i`` belongs to centre ``i % clusters``."""
    centres = unit_rows(rng, clusters, dim)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 250_000):
        rows = np.arange(start, min(n, start + 250_000))
        block = centres[rows % clusters] + spread / np.sqrt(dim) * rng.standard_normal((rows.size, dim), np.float32)
        out[rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--factory", help="faiss factory string (default: zsgen's default for --n)")
    parser.add_argument("--nprobe", type=int, nargs="+", help="IVF lists probed (default: zsgen's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, help="draw items around this many centres (default: isotropic)")
    parser.add_argument("--spread", type=float, default=1.0, help="with --clusters: noise norm relative to a centre")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, faiss {faiss.__version__}, "
        f"threads {faiss.omp_get_max_threads()}"
    )
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if args.clusters:
        items = clustered_rows(rng, args.n, args.dim, args.clusters, args.spread)
        owner = rng.integers(0, args.clusters, size=(args.queries, 1))
        members = args.n // args.clusters
        picks = owner + args.clusters * rng.integers(0, members, size=(args.queries, 3))
    else:
        items = unit_rows(rng, args.n, args.dim)
        picks = rng.integers(0, args.n, size=(args.queries, 3))
    queries = items[picks].mean(axis=1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    shape = f"{args.clusters} clusters, spread {args.spread}" if args.clusters else "isotropic"
    print(
        f"data: {args.n} x {args.dim} items ({shape}), {args.queries} queries, {time.perf_counter() - t0:.1f} s, "
        f"peak RSS {peak_rss_gib():.2f} GiB"
    )

    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(items)
    build_flat = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, truth = flat.search(queries, args.k)
    search_flat = time.perf_counter() - t0
    print(
        f"IndexFlatIP: build {build_flat:.1f} s, {args.queries / search_flat:.1f} queries/s, "
        f"peak RSS {peak_rss_gib():.2f} GiB"
    )
    del flat

    factory = args.factory or default_factory(args.n)
    t0 = time.perf_counter()
    ann = AnnIndex(items, factory)
    build_ann = time.perf_counter() - t0
    print(f"AnnIndex {factory}: build (train + add) {build_ann:.1f} s, peak RSS {peak_rss_gib():.2f} GiB")
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_ann(ann, Path(tmp) / "ix")
        size = (folder / "index.faiss").stat().st_size / 2**30
        print(
            f"saved: index.faiss {size:.2f} GiB + vectors.npy {(folder / 'vectors.npy').stat().st_size / 2**30:.2f} GiB"
        )
        del ann
        for nprobe in args.nprobe or [None]:
            loaded = load_ann(folder, nprobe=nprobe)
            loaded.search(queries[:10], args.k)  # warm the mapped pages a little
            t0 = time.perf_counter()
            _, found = loaded.search(queries, args.k)
            took = time.perf_counter() - t0
            recall = np.mean(
                [len(set(f) & set(t)) / args.k for f, t in zip(found.tolist(), truth.tolist(), strict=True)]
            )
            print(
                f"AnnIndex {factory} (memory-mapped) nprobe={loaded.nprobe} rescore={loaded.rescore}: "
                f"recall@{args.k} {recall:.3f}, {args.queries / took:.1f} queries/s "
                f"({(args.queries / took) / (args.queries / search_flat):.1f}x IndexFlatIP)"
            )
    print(f"peak RSS at the end {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
