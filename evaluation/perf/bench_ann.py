"""Approximate retrieval at catalog scale: zsgen's AnnIndex against exact faiss ``IndexFlatIP``.

    nice -n 10 python evaluation/perf/bench_ann.py [--n 1000000] [--dim 384] [--queries 1000] [--k 50]
        [--factory IVF4096,Flat] [--nprobe 64 256] [--ef-search 64 128] [--rescore 1 4]
    nice -n 10 python evaluation/perf/bench_ann.py --n 10000000 --scratch DIR [--prepare-only] ...

With ``--scratch DIR`` nothing of catalog size is held in memory: the items are written chunk by chunk to
``DIR/<data>/vectors.npy``, the ground truth is ``IndexFlatIP``'s top-k over 500k-row chunks of that file (merged;
its time is the exact baseline), and the AnnIndex is built from the memory-mapped file and saved beside it with a
hard link of the items as its ``vectors.npy``. Items, ground truth and index are reused when found, so a sweep can
be rerun alone; ``--prepare-only`` stops after the ground truth. Delete ``DIR`` afterwards (~18 GiB per 10M data set).

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
import json
import logging
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from zsgen.retrieval.ann import AnnIndex, default_factory, load_ann, save_ann
from zsgen.retrieval.ondisk import NpyWriter, iter_chunks, take_rows


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_now() -> str:
    """Resident memory now, split into anonymous memory (the process's own) and file pages mapped in (the memory
    maps' pages: shared page cache the kernel can drop, but counted in RSS and in the peak above). Linux only."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return "RSS now: n/a"
    kib = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("RssAnon", "RssFile"))}
    anon, mapped = kib.get("RssAnon", 0) / 2**20, kib.get("RssFile", 0) / 2**20
    return f"RSS now: anon {anon:.2f} GiB + file-mapped {mapped:.2f} GiB"


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


def item_folder(root: Path, args: argparse.Namespace) -> Path:
    shape = f"c{args.clusters}-s{args.spread:g}" if args.clusters else "iso"
    return root / f"n{args.n}-d{args.dim}-seed{args.seed}-{shape}-q{args.queries}"


def make_items_on_disk(folder: Path, args: argparse.Namespace) -> tuple[np.memmap, np.ndarray]:
    """The items of ``args`` as ``folder/vectors.npy`` (written chunk by chunk) and the queries; reused if present."""
    path, qpath = folder / "vectors.npy", folder / "queries.npy"
    if path.is_file() and qpath.is_file():
        print(f"data: reusing {path}")
        return np.load(path, mmap_mode="r"), np.load(qpath)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    centres = unit_rows(rng, args.clusters, args.dim) if args.clusters else None
    chunk = 250_000
    with NpyWriter(path.with_suffix(".part"), args.n, args.dim) as out:
        for start in tqdm(range(0, args.n, chunk), desc="items", unit="chunk"):
            rows = np.arange(start, min(args.n, start + chunk))
            if centres is None:
                block = rng.standard_normal((rows.size, args.dim), dtype=np.float32)
            else:
                noise = rng.standard_normal((rows.size, args.dim), dtype=np.float32)
                block = centres[rows % args.clusters] + args.spread / np.sqrt(args.dim) * noise
            out.write(block / np.linalg.norm(block, axis=1, keepdims=True))
    path.with_suffix(".part").rename(path)
    items = np.load(path, mmap_mode="r")
    if args.clusters:
        owner = rng.integers(0, args.clusters, size=(args.queries, 1))
        picks = owner + args.clusters * rng.integers(0, args.n // args.clusters, size=(args.queries, 3))
    else:
        picks = rng.integers(0, args.n, size=(args.queries, 3))
    flat = picks.reshape(-1)
    order = np.argsort(flat)
    rows = np.empty((flat.size, args.dim), dtype=np.float32)
    rows[order] = take_rows(items, flat[order])
    queries = rows.reshape(args.queries, 3, args.dim).mean(axis=1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.save(qpath, queries)
    print(f"data: wrote {path} in {time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_gib():.2f} GiB")
    return items, queries


def exact_on_disk(folder: Path, items: np.memmap, queries: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, float]]:
    """Exact top-k by ``IndexFlatIP`` over chunks of the file, merging the per-chunk top-k; reused if present."""
    tpath, jpath = folder / f"truth{k}.npy", folder / f"truth{k}.json"
    if tpath.is_file() and jpath.is_file():
        print(f"IndexFlatIP (chunked): reusing {tpath}")
        return np.load(tpath), json.loads(jpath.read_text())
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    searching = 0.0
    t0 = time.perf_counter()
    for start, block in tqdm(iter_chunks(items, 500_000), desc="exact", unit="chunk"):
        t1 = time.perf_counter()
        flat = faiss.IndexFlatIP(block.shape[1])
        flat.add(block)
        del block
        s, i = flat.search(queries, k)
        del flat
        both_s = np.concatenate([best_s, s], axis=1)
        both_i = np.concatenate([best_i, i + start], axis=1)
        top = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(both_s, top, 1), np.take_along_axis(both_i, top, 1)
        searching += time.perf_counter() - t1
    timing = {"total_s": time.perf_counter() - t0, "search_s": searching}
    np.save(tpath, best_i)
    jpath.write_text(json.dumps(timing) + "\n")
    print(
        f"IndexFlatIP (chunked, 500k rows per chunk): {timing['total_s']:.1f} s in all "
        f"({len(queries) / timing['total_s']:.2f} queries/s), {timing['search_s']:.1f} s adding + searching "
        f"({len(queries) / timing['search_s']:.2f} queries/s without the file reads), peak RSS {peak_rss_gib():.2f} GiB"
    )
    return best_i, timing


def chunked(args: argparse.Namespace) -> None:
    """``--scratch``: items on disk, exact ground truth in chunks, AnnIndex built from the memory map."""
    folder = item_folder(Path(args.scratch), args)
    items, queries = make_items_on_disk(folder, args)
    truth, timing = exact_on_disk(folder, items, queries, args.k)
    if args.prepare_only:
        return
    exact_qps = args.queries / timing["total_s"]
    factory = args.factory or default_factory(args.n)
    ix = folder / ("ix-" + factory.replace(",", "_"))
    if not (ix / "meta.json").is_file():
        ix.mkdir(exist_ok=True)
        (ix / "vectors.npy").unlink(missing_ok=True)
        os.link(folder / "vectors.npy", ix / "vectors.npy")  # the index's re-score source, no second copy
        items = np.load(ix / "vectors.npy", mmap_mode="r")
        t0 = time.perf_counter()
        ann = AnnIndex(items, factory)
        build = time.perf_counter() - t0
        print(f"AnnIndex {factory}: build (train + add) {build:.1f} s, peak RSS {peak_rss_gib():.2f} GiB, {rss_now()}")
        save_ann(ann, ix)
        (ix / "build.json").write_text(json.dumps({"build_s": build, "peak_rss_gib": peak_rss_gib()}) + "\n")
        del ann
        print(f"after the build: {rss_now()}")
    else:
        print(f"AnnIndex {factory}: reusing {ix} ({(ix / 'build.json').read_text().strip()})")
    print(
        f"saved: index.faiss {(ix / 'index.faiss').stat().st_size / 2**30:.2f} GiB + vectors.npy "
        f"{(ix / 'vectors.npy').stat().st_size / 2**30:.2f} GiB (a hard link to the items)"
    )
    sweep(ix, factory, queries, truth, exact_qps, "chunked IndexFlatIP", args)
    print(f"peak RSS at the end {peak_rss_gib():.2f} GiB")


def sweep(
    folder: Path,
    factory: str,
    queries: np.ndarray,
    truth: np.ndarray,
    exact_qps: float,
    exact_name: str,
    args: argparse.Namespace,
) -> None:
    """Recall@k and queries/s of the saved index, loaded memory-mapped, for each nprobe x efSearch x rescore."""
    for nprobe in args.nprobe or [None]:
        for ef_search in args.ef_search or [None]:
            for rescore in args.rescore:
                loaded = load_ann(folder, nprobe=nprobe, ef_search=ef_search, rescore=rescore)
                loaded.search(queries[:10], args.k)  # warm the mapped pages a little
                t0 = time.perf_counter()
                _, found = loaded.search(queries, args.k)
                took = time.perf_counter() - t0
                print(
                    f"AnnIndex {factory} (memory-mapped) nprobe={loaded.nprobe} efSearch={loaded.ef_search} "
                    f"rescore={loaded.rescore}: recall@{args.k} {recall_at(found, truth):.3f}, "
                    f"{args.queries / took:.1f} queries/s ({(args.queries / took) / exact_qps:.1f}x {exact_name}), "
                    f"peak RSS {peak_rss_gib():.2f} GiB, {rss_now()}"
                )
                del loaded


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found.tolist(), truth.tolist(), strict=True)]))


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
    parser.add_argument(
        "--scratch", help="catalogs past memory: items, ground truth and index in a folder under this one, chunked"
    )
    parser.add_argument("--prepare-only", action="store_true", help="with --scratch: stop after the ground truth")
    parser.add_argument("--ef-search", type=int, nargs="+", help="HNSW search breadth (default: zsgen's default)")
    parser.add_argument("--rescore", type=int, nargs="+", default=[4], help="candidates re-scored per result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, faiss {faiss.__version__}, "
        f"threads {faiss.omp_get_max_threads()}"
    )
    if args.scratch:
        chunked(args)
        return
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
        sweep(folder, factory, queries, truth, args.queries / search_flat, "IndexFlatIP", args)
    print(f"peak RSS at the end {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
