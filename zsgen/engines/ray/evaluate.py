"""``zsgen evaluate --engine ray``: an evaluation whose users are sharded across Ray workers, with the same
``per_user.jsonl``, ``summary.json`` and report as ``zsgen evaluate``.

It is the batch-file mechanism (:mod:`zsgen.engines.batch`) with Ray Data in place of the batch job:

1. **Embedding.** The catalog's item texts go through :func:`zsgen.engines.ray.embed.embed_texts_ray` (a ``map_batches``
   stage, each actor loading the default encoder once); the vectors land in the embedding cache as the local
   encoder would leave them, and are handed to every worker's text scorers.
2. **Set-up.** The driver prepares the run over ``--out`` (:func:`~zsgen.evaluate.runner.prepare_run`: split,
   sample, tuning, rankers; a folder holding another run is refused here, before any work is sent) and finds the
   users its log lacks, as a resumed ``zsgen evaluate`` does. They are cut into shards of ``batch_users``.
3. **Requests.** A ``map_batches`` stage of ``workers`` actors, each preparing the same run once (with the
   driver's tuned fusions: nothing is tuned twice) in a scratch folder of its own, ranks its shards with every LLM
   ranker's backend collecting request bodies (:func:`~zsgen.engines.batch.run.collecting_rerankers`), as
   ``zsgen batch export`` does.
4. **LLM calls.** :func:`zsgen.engines.ray.http.ask_http`: every body through ``ray.data.llm``'s HTTP processor to its
   ranker's ``base_url`` (one processor per server), ``workers`` actors each posting its block concurrently.
5. **Answers.** A second actor stage ranks the shards again with every call answered from those responses
   (:func:`~zsgen.engines.batch.run.replay_rerankers`), as ``zsgen batch import`` does: candidates, baselines, prompts,
   parsing, repair and fallback are the local run's own code. The driver appends each user's record to the log in
   the run's order as soon as every user before it has arrived, then writes the summary and report
   (:func:`~zsgen.evaluate.runner.finish_run`).

What differs from the local engine: LLM latency is recorded as 0 s (the HTTP stage's timings are not per user);
the response cache (``llm_cache.sqlite``) is neither read nor written; the LLM answers of step 4 are kept in
the folder as they arrive (``.ray_answers.jsonl``, removed once the run is finished), so a run interrupted before
step 5 asks only for the answers it lacks, and one interrupted in step 5 keeps the users already logged. Either
engine may resume the other's folder: the run fingerprint does not depend on the engine. Every worker prepares the
run again (split, candidates, baselines; not the tuning), and reads the dataset at the path the config names, so
on a cluster of several machines the dataset must be at that path on each. Only single-call chat
methods with ``backend = "openai"`` can be sent this way (:func:`~zsgen.engines.batch.backends.check_batchable`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsgen.catalog import Catalog
from zsgen.engines.batch.backends import ResultTable
from zsgen.engines.batch.files import BatchResult
from zsgen.engines.batch.run import collecting_rerankers, quiet_exports, replay_rerankers
from zsgen.errors import ConfigError, DataError
from zsgen.evaluate.config import EvalConfig
from zsgen.evaluate.fusion import RunFusion
from zsgen.evaluate.runner import (
    LOG_NAME,
    RerankerFactory,
    finish_run,
    load_eval_dataset,
    pending_cases,
    prepare_run,
    rank_cases,
)
from zsgen.evaluate.summary import Summary
from zsgen.jsonlog import LogWriter
from zsgen.metrics.split import UserCase
from zsgen.rerank import RerankConfig, Reranker

logger = logging.getLogger(__name__)

__all__ = ["check_sendable", "evaluate_ray"]

#: The LLM answers a Ray evaluation received, kept in its folder until the run is finished (see ``AnswerLog``).
ANSWERS_NAME = ".ray_answers.jsonl"

#: Collected ``(custom_id, body)`` pairs by the server they go to.
Collected = dict[str, list[tuple[str, dict[str, Any]]]]


def _collecting(run: str, collected: Collected) -> RerankerFactory:
    """Collecting rerankers, each ranker's requests filed under its server."""

    def make(name: str, config: RerankConfig, catalog: Catalog) -> Reranker:
        return collecting_rerankers(run, collected.setdefault(config.base_url or "", []))(name, config, catalog)

    return make


class _ShardStage:
    """Ray actor: shards of the run's users in (one JSON list of user ids a row); out, the LLM request bodies their
    rankings need (``table`` None: step 3) or their log records (answers from ``table``: step 5).

    The run is prepared once per actor, with the driver's tuned fusions (so nothing is tuned again), in a scratch
    folder removed once prepared: ranking writes nothing there (records go back to the driver; stand-in backends use
    no response cache)."""

    def __init__(
        self, config: EvalConfig, vectors: np.ndarray, fusions: dict[str, RunFusion], table: ResultTable | None
    ) -> None:
        self.collected: Collected = {}
        self.answering = table is not None
        rerankers = (
            replay_rerankers(config.name, table) if table is not None else _collecting(config.name, self.collected)
        )
        scratch = tempfile.mkdtemp(prefix="zsgen-ray-evaluate-")
        try:
            with quiet_exports():
                self.run = prepare_run(
                    config,
                    scratch,
                    progress=False,
                    rerankers=rerankers,
                    timed=table is None,
                    item_vectors=vectors,
                    fusions=fusions,
                )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.cases = {case.user_id: case for case in self.run.cases}

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        records: list[dict[str, Any]] = []
        for pairs in self.collected.values():
            pairs.clear()
        with quiet_exports():
            for text in batch["users"]:
                rank_cases(self.run, [self.cases[user] for user in json.loads(text)], records.append)
        if self.answering:
            return {"user_id": [str(r["user_id"]) for r in records], "record": [json.dumps(r) for r in records]}
        rows = [(url, custom_id, body) for url, pairs in self.collected.items() for custom_id, body in pairs]
        return {
            "url": [url for url, _, _ in rows],
            "custom_id": [custom_id for _, custom_id, _ in rows],
            "body": [json.dumps(body) for _, _, body in rows],
        }


def _shard_rows(todo: Sequence[UserCase], size: int) -> list[dict[str, str]]:
    """One row per shard of ``size`` consecutive users (the runner's own batches, so candidates are generated for
    the same groups of users as on the local engine)."""
    return [
        {"users": json.dumps([case.user_id for case in todo[start : start + size]])}
        for start in range(0, len(todo), size)
    ]


def _append_in_order(out: Path, todo: Sequence[UserCase], rows: Iterable[dict[str, Any]]) -> None:
    """Append each user's record to the log in the run's order, as soon as every user before it has arrived."""
    arrived: dict[str, dict[str, Any]] = {}
    written = 0
    writer = LogWriter(out / LOG_NAME)
    try:
        for row in rows:
            arrived[str(row["user_id"])] = json.loads(row["record"])
            ready = []
            while written < len(todo) and todo[written].user_id in arrived:
                ready.append(arrived.pop(todo[written].user_id))
                written += 1
            writer.write_many(ready)
    finally:
        writer.close()
    if written < len(todo):
        missing = [case.user_id for case in todo[written:] if case.user_id not in arrived]
        raise DataError(f"the Ray run returned no record for {len(missing)} user(s), e.g. {missing[:3]}", path=out)


def check_sendable(config: EvalConfig, out: Path) -> None:
    """Refuse, before anything runs, an LLM ranker whose calls cannot be sent as independent chat requests."""
    from zsgen.engines.batch.backends import check_batchable
    from zsgen.evaluate.ranker_config import LLMRankerConfig
    from zsgen.evaluate.runner import rerank_settings

    for spec in config.rankers:
        if isinstance(spec, LLMRankerConfig):
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
    from zsgen.engines.ray.embed import embed_catalog_ray
    from zsgen.engines.ray.http import AnswerLog, ask_http

    if not ray.is_initialized():
        raise ConfigError("connect to a Ray cluster first (ray.init)")
    if workers < 1 or batch_size < 1:
        raise DataError(f"workers and batch size must be positive, got {workers} and {batch_size}")
    out = Path(out_dir)
    check_sendable(config, out)
    catalog, _ = load_eval_dataset(config)
    # The evaluation's text scorers use the default encoder behind the default cache (TextCosineScorer).
    vectors = embed_catalog_ray(catalog, cache=EmbeddingCache(default_cache_path()), workers=workers)
    run = prepare_run(
        config,
        out,
        progress=progress,
        rerankers=replay_rerankers(config.name, ResultTable({})),
        timed=False,
        item_vectors=vectors,
    )
    todo, _ = pending_cases(run)
    run.write_config()
    if todo:
        rows = _shard_rows(todo, config.batch_users)
        shards = ray.data.from_items(rows, override_num_blocks=len(rows))
        pool = ray.data.ActorPoolStrategy(size=min(workers, len(rows)))
        results: dict[str, BatchResult] = {}
        if any(spec.kind == "llm" for spec in config.rankers):
            requests = shards.map_batches(
                _ShardStage,
                fn_constructor_kwargs={"config": config, "vectors": vectors, "fusions": run.fusions, "table": None},
                batch_size=1,
                compute=pool,
            )
            collected: Collected = {}
            for row in requests.iter_rows():
                collected.setdefault(str(row["url"]), []).append((str(row["custom_id"]), json.loads(row["body"])))
            answers = AnswerLog(out / ANSWERS_NAME)  # kept until the run is finished: a rerun asks only what is missing
            for url, pairs in collected.items():
                results.update(ask_http(pairs, url, workers=workers, batch_size=batch_size, answers=answers))
        answered = shards.map_batches(
            _ShardStage,
            fn_constructor_kwargs={
                "config": config,
                "vectors": vectors,
                "fusions": run.fusions,
                "table": ResultTable(results),
            },
            batch_size=1,
            compute=pool,
        )
        _append_in_order(out, todo, answered.iter_rows())
    summary = finish_run(run)
    (out / ANSWERS_NAME).unlink(missing_ok=True)  # every user is logged: the answers are in per_user.jsonl now
    return summary
