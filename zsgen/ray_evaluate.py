"""``zsgen evaluate --engine ray``: an evaluation whose catalog embedding and LLM requests run on a Ray cluster, with
the same ``per_user.jsonl``, ``summary.json`` and report as ``zsgen evaluate``.

It is the batch-file mechanism (:mod:`zsgen.batch`) with Ray Data in place of the batch job, in four steps:

1. **Embedding.** The catalog's item texts go through :func:`zsgen.ray_embed.embed_texts_ray` (a ``map_batches``
   stage, each actor loading the default encoder once); the vectors land in the embedding cache as the local
   encoder would leave them, and are handed to the run's text scorers.
2. **Requests.** :func:`~zsgen.evaluate.runner.run_evaluation` runs in a scratch folder with every LLM ranker's
   backend collecting its request bodies (:func:`~zsgen.batch.run.collecting_rerankers`), as ``zsgen batch export``
   does; the users already in ``--out`` are skipped, as a resumed ``zsgen evaluate`` skips them.
3. **LLM calls.** :func:`zsgen.ray_http.ask_http`: every body through ``ray.data.llm``'s HTTP processor to its
   ranker's ``base_url`` (one processor per server), ``workers`` actors each posting its block concurrently.
4. **Answers.** ``run_evaluation`` runs again into ``--out`` with every call answered from those responses
   (:func:`~zsgen.batch.run.replay_rerankers`), as ``zsgen batch import`` does: prompts, parsing, repair,
   aggregation, fallback and the log, summary and report are the local run's own code.

What differs from the local engine: LLM latency is recorded as 0 s (the HTTP stage's timings are not per user);
the response cache (``llm_cache.sqlite``) is neither read nor written; and a run interrupted during steps 1-3 keeps
nothing of them (a rerun asks again), while one interrupted in step 4 resumes there like the local engine. Either
engine may resume the other's folder: the run fingerprint does not depend on the engine. The ranking itself (split,
candidates, baselines, parsing) runs on the driver; what Ray spreads over the cluster is the work that grows with
the catalog and with the LLM: embedding and requests. Only single-call chat methods with ``backend = "openai"`` can
be sent this way (:func:`~zsgen.batch.backends.check_batchable`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from zsgen.batch.backends import ResultTable
from zsgen.batch.files import BatchResult
from zsgen.batch.run import collecting_rerankers, quiet_exports, replay_rerankers
from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.evaluate.config import EvalConfig
from zsgen.evaluate.runner import CONFIG_NAME, LOG_NAME, RerankerFactory, load_eval_dataset, run_evaluation
from zsgen.evaluate.summary import Summary
from zsgen.rerank import RerankConfig, Reranker

logger = logging.getLogger(__name__)

__all__ = ["check_sendable", "evaluate_ray"]

#: Collected ``(custom_id, body)`` pairs by the server they go to.
Collected = dict[str, list[tuple[str, dict[str, Any]]]]


def _collecting(run: str, collected: Collected) -> RerankerFactory:
    """Collecting rerankers, each ranker's requests filed under its server."""

    def make(name: str, config: RerankConfig, catalog: Catalog) -> Reranker:
        return collecting_rerankers(run, collected.setdefault(config.base_url or "", []))(name, config, catalog)

    return make


def _collect(config: EvalConfig, out: Path, vectors: np.ndarray, progress: bool | None) -> Collected:
    """Step 2: the requests of the users not yet in ``out``. The scratch run is a sibling of ``out`` holding copies
    of its log and config, so it resumes, and refuses a foreign folder, exactly as a run into ``out`` would: the run
    fingerprint names data files outside the dataset folder relative to the output folder, which a sibling shares.
    It is removed when the step ends, failed or not (a killed process may leave a hidden ``.NAME.ray-*`` folder)."""
    collected: Collected = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{out.name}.ray-", dir=out.parent)
    try:
        for name in (LOG_NAME, CONFIG_NAME):
            if (out / name).is_file():
                shutil.copyfile(out / name, Path(scratch) / name)
        with quiet_exports():
            run_evaluation(
                config, scratch, progress=progress, rerankers=_collecting(config.name, collected), item_vectors=vectors
            )
    except (ConfigError, DataError) as exc:  # name the user's folder, not the scratch copy
        raise type(exc)(str(exc).replace(scratch, str(out))) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return collected


def check_sendable(config: EvalConfig, out: Path) -> None:
    """Refuse, before anything runs, an LLM ranker whose calls cannot be sent as independent chat requests."""
    from zsgen.batch.backends import check_batchable
    from zsgen.evaluate.runner import rerank_settings

    for spec in config.rankers:
        if spec.kind == "llm":
            try:
                settings = RerankConfig(**rerank_settings(spec, config, out))
            except ConfigError as exc:
                raise ConfigError(f"ranker {spec.name!r}: {exc}") from None
            check_batchable(spec.name, settings)


def evaluate_ray(
    config: EvalConfig,
    out_dir: str | Path,
    *,
    workers: int = 2,
    batch_size: int = 64,
    progress: bool | None = None,
) -> Summary:
    """Run (or resume) ``config`` into ``out_dir`` on the connected Ray cluster (``ray.init`` first); returns the
    summary. ``workers`` actors per Ray stage; ``batch_size`` request bodies per HTTP block."""
    import ray

    from zsgen.embed.cache import EmbeddingCache, default_cache_path
    from zsgen.ray_embed import embed_catalog_ray
    from zsgen.ray_http import ask_http, requests_dataset

    if not ray.is_initialized():
        raise ConfigError("connect to a Ray cluster first (ray.init)")
    if workers < 1 or batch_size < 1:
        raise DataError(f"workers and batch size must be positive, got {workers} and {batch_size}")
    out = Path(out_dir)
    check_sendable(config, out)
    catalog, _ = load_eval_dataset(config)
    # The evaluation's text scorers use the default encoder behind the default cache (TextCosineScorer).
    vectors = embed_catalog_ray(catalog, cache=EmbeddingCache(default_cache_path()), workers=workers)
    collected = _collect(config, out, vectors, progress)
    results: dict[str, BatchResult] = {}
    for url, pairs in collected.items():
        if pairs:
            blocks = max(workers, -(-len(pairs) // batch_size))
            results.update(ask_http(requests_dataset(pairs, blocks), url, workers=workers, batch_size=batch_size))
    return run_evaluation(
        config,
        out,
        progress=progress,
        rerankers=replay_rerankers(config.name, ResultTable(results)),
        timed=False,
        item_vectors=vectors,
    )
