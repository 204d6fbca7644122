"""Approximate top-k search for large catalogs: a faiss index from a factory string, re-scored exactly.

The exact :class:`~zsgen.retrieval.index.ItemIndex` reads every item vector for every query block; past a few
million items that is the cost of serving. :class:`AnnIndex` asks a faiss index (IVF or HNSW, built from a factory
string, inner product on the L2-normalised vectors) for ``k'`` > ``k`` candidates, re-scores them exactly with the
stored float32 vectors and returns the exact top ``k`` of those candidates, so the scores it returns are exact and
only the candidate set is approximate.

Seen items are excluded by over-fetching (``k'`` grows by the longest exclusion list) and filtering; a row that is
still short of ``k`` after that (an IVF probe that reached too few items, a huge exclusion list) is answered by the
exact index, so ``k`` results come back whenever the catalog allows.

The built index is saved once (:func:`save_ann` / :func:`load_ann`, keyed by :func:`ann_key`) and memory-mapped on
load: ``faiss.IO_FLAG_MMAP`` maps IVF inverted lists (``IVF*,Flat``, ``IVF*,PQ*``) and ``faiss.IO_FLAG_MMAP_IFC`` the
flat / HNSW vector storage (``Flat``, ``HNSW*``; checked with faiss-cpu 1.15; the HNSW graph links are read into
memory), and the float32 vectors
used for re-scoring are a memory-mapped ``.npy``. A memory-mapped faiss index cannot grow (faiss aborts the process
when a mapped vector is resized), so items added later (cold-start) live in a small exact tail that every search
also scans.

Catalogs larger than memory: pass ``np.load("DIR/vectors.npy", mmap_mode="r")``. The build then reads the file in
chunks (a training sample, then chunk by chunk into the index; :mod:`zsgen.retrieval.ondisk`), the re-score reads
the mapped rows it needs, and ``save_ann(index, "DIR")`` keeps that ``vectors.npy`` as the re-score source instead
of writing a second copy. Past :data:`COMPRESS_ABOVE` items :func:`default_factory` stores 8-bit codes in the IVF
lists (a quarter of the float32 size) rather than another float32 copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from zsgen.errors import ConfigError
from zsgen.retrieval.index import (
    FloatMatrix,
    IndexMatrix,
    ItemIndex,
    _as_matrix,
    _check_k,
    _empty_results,
    _exclusion_pairs,
)
from zsgen.retrieval.ondisk import DEFAULT_CHUNK_ROWS, iter_chunks, take_rows, whole_file

logger = logging.getLogger(__name__)

#: Candidates re-scored per requested result (``k' = rescore * k`` plus the longest exclusion list).
DEFAULT_RESCORE = 4
#: IVF lists probed per query, as a fraction of the lists (at least 16): random 384-d vectors, IVF's worst case, need
#: this many for recall@50 near 0.9 (see evaluation/perf/bench_ann.py); clustered embeddings need fewer.
_NPROBE_FRACTION = 1 / 16
#: HNSW search breadth.
DEFAULT_EF_SEARCH = 128
#: Training vectors per IVF centroid (faiss asks for 39 to 256; the low end keeps training of 4096 lists short).
_TRAIN_PER_CENTROID = 40
#: Training rows for trained codes without IVF lists (``SQ8``, ``PQ*``): their statistics settle long before this.
_TRAIN_CAP = 1 << 20
_FORMAT_VERSION = 1


#: Catalogs above this size get 8-bit scalar-quantised codes (``SQ8``, a quarter of the float32 size) in their IVF
#: lists instead of a second float32 copy (the exact re-score reads the float32 vectors anyway, so the codes only
#: have to find candidates), and an HNSW graph over the list centroids, so that adding each item costs a graph
#: walk instead of a scan of all 16k+ centroids (see evaluation/perf/RESULTS.md, "Approximate retrieval").
COMPRESS_ABOVE = 2_000_000


def default_factory(n: int) -> str:
    """A factory string for ``n`` items: HNSW below 100k (no training), IVF with about ``4 sqrt(n)`` lists above,
    holding float32 vectors up to :data:`COMPRESS_ABOVE` items and ``SQ8`` codes (HNSW-searched lists) past it."""
    if n < 100_000:
        return "HNSW32"
    nlist = 1 << max(8, round(math.log2(4 * math.sqrt(n))))
    return f"IVF{nlist}_HNSW32,SQ8" if n > COMPRESS_ABOVE else f"IVF{nlist},Flat"


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError(f"the ann index needs faiss: pip install zsgen[faiss] ({exc})") from None
    return faiss


def _nlist(factory: str) -> int | None:
    match = re.match(r"^(?:OPQ\d+(?:_\d+)?,)?IVF(\d+)", factory)
    return int(match.group(1)) if match else None


def build_faiss(vectors: npt.ArrayLike, factory: str, *, seed: int = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Any:
    """Train and fill a faiss index for inner product; a bad factory string is a :class:`ConfigError` naming it.

    Trains on a seeded sample (IVF: :data:`_TRAIN_PER_CENTROID` rows per list; other trained codes: at most
    :data:`_TRAIN_CAP` rows) and adds in chunks of ``chunk_rows``, so ``vectors`` may be a memory-mapped ``.npy``
    larger than memory: it is then read with file reads (:mod:`zsgen.retrieval.ondisk`) and only the sample, one
    chunk and the index's own codes are in memory (pick compressed codes, e.g. ``IVF16384,SQ8``, for such catalogs:
    ``IVF*,Flat`` holds a second full copy of the vectors)."""
    faiss = _import_faiss()
    shape = np.shape(vectors)
    if len(shape) != 2:
        raise ConfigError(f"item vectors must be a 2-d array, got shape {shape}")
    n, dim = int(shape[0]), int(shape[1])
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise ConfigError(f"bad faiss index factory string {factory!r}: {first}") from None
    if not index.is_trained:
        nlist = _nlist(factory)
        if nlist is not None and n < nlist:
            raise ConfigError(f"index {factory!r} has {nlist} lists but the catalog has only {n} items")
        sample = min(n, _TRAIN_CAP) if nlist is None else min(n, nlist * _TRAIN_PER_CENTROID)
        if sample < n:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
            train = take_rows(vectors, rows)
        else:
            blocks = [block for _, block in iter_chunks(vectors, chunk_rows)]
            train = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
        logger.info("training %s on %d of %d vectors", factory, sample, n)
        index.train(train)
        del train
    logger.info("adding %d vectors to %s", n, factory)
    with tqdm(total=n, desc=f"adding to {factory}", unit="item", disable=n <= chunk_rows) as bar:
        for _, block in iter_chunks(vectors, chunk_rows):
            index.add(block)
            bar.update(block.shape[0])
    return index


def _configure(index: Any, nprobe: int | None, ef_search: int | None) -> tuple[int | None, int | None]:
    """Set the search breadth (given, or the default for the index); returns the (nprobe, efSearch) in force."""
    faiss = _import_faiss()
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        ivf.nprobe = nprobe if nprobe is not None else max(16, int(ivf.nlist * _NPROBE_FRACTION))
        coarse = getattr(faiss.downcast_index(ivf.quantizer), "hnsw", None)
        if coarse is not None:
            # An HNSW graph over the centroids (``IVF*_HNSW*``) asked for nprobe lists walks only efSearch of them
            # (faiss's default 16): at nprobe 1024 of 16,384 lists it picked 12% of the right lists and recall@50
            # fell from 0.26 to 0.09 (10M items, evaluation/perf/RESULTS.md). Its breadth follows nprobe.
            coarse.efSearch = max(int(coarse.efSearch), int(ivf.nprobe))
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = ef_search if ef_search is not None else DEFAULT_EF_SEARCH
    return (
        int(ivf.nprobe) if ivf is not None else None,
        int(hnsw.efSearch) if hnsw is not None else None,
    )


class AnnIndex:
    """Approximate candidates from faiss, exact re-score, the :class:`~zsgen.retrieval.index.SearchIndex` interface.

    ``factory`` is a faiss index factory string (default :func:`default_factory` of the catalog size); ``rescore``
    is how many candidates per wanted result are re-scored exactly; ``nprobe`` (IVF) and ``ef_search`` (HNSW) trade
    speed for recall. Pass ``faiss_index`` to wrap an index already built or loaded for exactly these vectors.
    """

    def __init__(
        self,
        vectors: npt.ArrayLike,
        factory: str | None = None,
        *,
        rescore: int = DEFAULT_RESCORE,
        nprobe: int | None = None,
        ef_search: int | None = None,
        faiss_index: Any = None,
    ) -> None:
        if rescore < 1:
            raise ConfigError(f"rescore must be a positive integer, got {rescore!r}")
        self._vectors: FloatMatrix = (
            vectors if isinstance(vectors, np.memmap) else _as_matrix(vectors, dim=None, what="item vectors")
        )
        if self._vectors.ndim != 2:
            raise ConfigError(f"item vectors must be a 2-d array, got shape {self._vectors.shape}")
        self.factory = factory if factory is not None else default_factory(len(self._vectors))
        self.rescore = rescore
        if faiss_index is None:
            faiss_index = build_faiss(self._vectors, self.factory)
        if int(faiss_index.ntotal) != len(self._vectors) or int(faiss_index.d) != self.dim:
            raise ConfigError(
                f"the faiss index holds {faiss_index.ntotal} x {faiss_index.d} vectors, "
                f"the catalog {len(self._vectors)} x {self.dim}"
            )
        self.nprobe, self.ef_search = _configure(faiss_index, nprobe, ef_search)
        self.faiss_index: Any = faiss_index
        self._base = len(self._vectors)  # rows the faiss index covers; later rows are the exact tail
        # Cold-start rows live apart from the (possibly memory-mapped, larger than memory) base rows, so adding one
        # item never copies the catalog.
        self._tail: FloatMatrix = np.zeros((0, self.dim), dtype=np.float32)
        self._exact: ItemIndex | None = None  # built on first need: most searches never fall back

    @property
    def vectors(self) -> FloatMatrix:
        """All item vectors: the base rows as given (a memory map stays one) until items are added, then a copy."""
        if not self._tail.shape[0]:
            return self._vectors
        return np.concatenate([self._vectors, self._tail], axis=0)

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def __len__(self) -> int:
        return self._base + int(self._tail.shape[0])

    def add(self, vectors: npt.ArrayLike) -> None:
        """Append cold-start items; they are searched exactly (the faiss index may be memory-mapped, read-only)."""
        new = _as_matrix(vectors, dim=self.dim, what="new item vectors")
        self._tail = np.ascontiguousarray(np.concatenate([self._tail, new], axis=0))
        self._exact = None

    def scores(self, queries: npt.ArrayLike) -> FloatMatrix:
        q = _as_matrix(queries, dim=self.dim, what="queries")
        return np.asarray(q @ self.vectors.T, dtype=np.float32)

    def search(
        self,
        queries: npt.ArrayLike,
        k: int,
        *,
        exclude: Sequence[Collection[int]] | None = None,
        threshold: float | None = None,
    ) -> tuple[FloatMatrix, IndexMatrix]:
        """Top ``k`` per query as :meth:`ItemIndex.search` returns it; scores exact, candidates approximate."""
        _check_k(k)
        q = _as_matrix(queries, dim=self.dim, what="queries")
        m, n = q.shape[0], len(self)
        out_s, out_i = _empty_results(m, k)
        if m == 0 or n == 0:
            return out_s, out_i
        _exclusion_pairs(exclude, m, n)  # validates
        banned = None if exclude is None else [np.unique(np.fromiter(map(int, e), np.int64, len(e))) for e in exclude]
        extra = max((b.size for b in banned), default=0) if banned is not None else 0
        ask = min(self._base, self.rescore * k + extra)
        if ask > 0:
            _, found = self.faiss_index.search(q, ask)
        else:
            found = np.full((m, 0), -1, dtype=np.int64)
        tail = np.arange(self._base, n, dtype=np.int64)
        short: list[int] = []
        for row in range(m):
            cand = found[row]
            cand = cand[cand >= 0]
            if tail.size:
                cand = np.concatenate([cand, tail])
            if banned is not None and banned[row].size:
                cand = cand[~np.isin(cand, banned[row])]
            cand = np.unique(cand)
            vals = self._rows(cand) @ q[row]
            if threshold is not None:
                keep = vals >= threshold
                cand, vals = cand[keep], vals[keep]
            order = np.lexsort((cand, -vals))[:k]
            out_s[row, : order.size] = vals[order]
            out_i[row, : order.size] = cand[order]
            available = n - (banned[row].size if banned is not None else 0)
            if order.size < k and order.size < available and threshold is None:
                short.append(row)
        if short:
            # Too few candidates survived (IVF probes that reached few items, long exclusion lists): answer exactly.
            logger.debug("ann: %d of %d queries short of k=%d; answering them exactly", len(short), m, k)
            rows = np.asarray(short, dtype=np.int64)
            if self._exact is None:
                self._exact = ItemIndex(self.vectors)
            s, i = self._exact.search(q[rows], k, exclude=[banned[r] for r in short] if banned is not None else None)
            out_s[rows], out_i[rows] = s, i
        return out_s, out_i

    def _rows(self, ids: IndexMatrix) -> FloatMatrix:
        """Vectors of sorted item positions, base rows and tail rows alike."""
        cut = int(np.searchsorted(ids, self._base))
        head = np.asarray(self._vectors[ids[:cut]], dtype=np.float32)
        return head if cut == ids.size else np.concatenate([head, self._tail[ids[cut:] - self._base]], axis=0)


# --------------------------------------------------------------------------------------------------- on disk


def ann_key(encoder_identity: str, texts: Sequence[str], factory: str) -> str:
    """A stable name for one built index: encoder identity, the item texts in order, and the factory string."""
    digest = hashlib.sha256()
    for part in (f"v{_FORMAT_VERSION}", encoder_identity, factory, str(len(texts))):
        digest.update(part.encode("utf-8") + b"\0")
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()[:32]


def default_ann_dir() -> Path:
    """``ann/`` next to the embedding cache file."""
    from zsgen.embed.cache import default_cache_path

    return default_cache_path().parent / "ann"


def _save_vectors(index: AnnIndex, target: Path) -> None:
    """``vectors.npy`` for the re-score: kept as it is when the index already maps that file, copied file to file
    when it maps another whole ``.npy`` (no pass through this process's memory), else written from memory."""
    source = whole_file(index._vectors)
    if source is not None:
        if target.exists() and target.samefile(source):
            return
        shutil.copyfile(source, target)
        return
    np.save(target, np.asarray(index._vectors))


def save_ann(index: AnnIndex, folder: str | Path) -> Path:
    """Write ``index.faiss``, ``vectors.npy`` and ``meta.json`` into ``folder`` (the faiss part only, not the tail)."""
    faiss = _import_faiss()
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    _save_vectors(index, path / "vectors.npy")
    faiss.write_index(index.faiss_index, str(path / "index.faiss"))
    meta = {
        "version": _FORMAT_VERSION,
        "factory": index.factory,
        "n": index._base,
        "dim": index.dim,
        "rescore": index.rescore,
        "nprobe": index.nprobe,
        "ef_search": index.ef_search,
    }
    (path / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return path


def load_ann(
    folder: str | Path,
    *,
    mmap: bool = True,
    rescore: int | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> AnnIndex:
    """An :class:`AnnIndex` saved by :func:`save_ann`, memory-mapped unless ``mmap`` is False.

    The search settings saved with it apply unless given here."""
    faiss = _import_faiss()
    path = Path(folder)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a saved ann index ({exc})") from None
    if meta.get("version") != _FORMAT_VERSION:
        raise ConfigError(f"{path}/meta.json: format version {meta.get('version')!r}, expected {_FORMAT_VERSION}")
    # IVF: inverted lists mapped (IO_FLAG_MMAP); flat codes and HNSW storage: IO_FLAG_MMAP_IFC. The two flags
    # together fail for IVF ("mmap only supported for File objects").
    flags = 0
    if mmap:
        flags = faiss.IO_FLAG_MMAP if _nlist(str(meta["factory"])) is not None else faiss.IO_FLAG_MMAP_IFC
    try:
        vectors = np.load(path / "vectors.npy", mmap_mode="r" if mmap else None)
        faiss_index = faiss.read_index(str(path / "index.faiss"), flags)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{path}: cannot read the saved ann index ({exc})") from None
    return AnnIndex(
        vectors,
        meta["factory"],
        rescore=rescore if rescore is not None else int(meta.get("rescore", DEFAULT_RESCORE)),
        nprobe=nprobe if nprobe is not None else meta.get("nprobe"),
        ef_search=ef_search if ef_search is not None else meta.get("ef_search"),
        faiss_index=faiss_index,
    )


def cached_ann(
    vectors: npt.ArrayLike,
    key: str,
    factory: str | None = None,
    *,
    folder: str | Path | None = None,
    rescore: int = DEFAULT_RESCORE,
) -> AnnIndex:
    """Load the index saved under ``key`` (memory-mapped), or build it, save it and load it back mapped."""
    root = Path(folder) if folder is not None else default_ann_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    if (path / "meta.json").is_file():
        logger.info("ann index: loading %s (memory-mapped)", path)
        return load_ann(path, rescore=rescore)
    built = AnnIndex(vectors, factory, rescore=rescore)
    # Written to a private folder and renamed into place, so a process starting meanwhile never maps half a file;
    # when two processes build the same key at once, the first rename wins and the other's copy is dropped.
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        save_ann(built, staging)
        try:
            staging.rename(path)
        except OSError:
            if not (path / "meta.json").is_file():
                raise
            logger.info("ann index: %s was saved by another process meanwhile; using that one", path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("ann index: built %s and saved it to %s", built.factory, path)
    return load_ann(path, rescore=rescore)
