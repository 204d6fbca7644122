"""Bulk recommendation on a Ray cluster with Ray Data: the same lines as :func:`zsgen.engines.bulk.recommend_users`.

Ray does the scheduling; zsgen adds no queue or worker pool. Three Ray Data stages, the same two-pass mechanism as
batch files (:mod:`zsgen.engines.batch`):

1. **Requests.** Users are sharded across ``workers`` actors (``map_batches`` with an actor class, so each worker
   loads the catalog, encoder and catalog embeddings once). Each actor runs the online pipeline with a stand-in
   backend that records the exact body :class:`~zsgen.llm.OpenAIChatBackend` would POST (same messages, limits and
   ``constraint_fields``) under the batch ``custom_id``, and lets the call fall back.
2. **LLM calls.** :func:`zsgen.engines.ray.http.ask_http`: a ``map_batches`` stage posts every body to the
   OpenAI-compatible server's ``/chat/completions`` (retrying 429/5xx gateway statuses, dropped connections and
   timeouts). A request that still fails (an HTTP 500, a server that is down) is an error row, its user a fallback
   flagged with the online backend's reason (``server_error``, ``connection``). Answers are kept beside ``out`` as
   they arrive (``.NAME.answers.jsonl``), so a killed run loses none and a rerun asks only for the missing ones.
3. **Answers.** The actors run the pipeline again with :class:`~zsgen.engines.batch.backends.ReplayBackend`
   answering from those responses: parsing, repair, aggregation and fallback are the online path's own, so a user's
   line equals the local engine's for the same answers, and a failed request is a fallback flagged as the local
   engine flags it.

The CLI embeds the catalog before stage 1 (:func:`zsgen.engines.ray.embed.embed_catalog_ray`, a ``map_batches`` stage
writing the embedding cache the actors' encoders then read), so no actor encodes it.

Only single-call chat methods (listwise, recency, in_context) go through the HTTP processor, as with batch files
(:func:`~zsgen.engines.batch.backends.check_batchable`); without a reranker only stage 3 runs. The answers of stage 2
are gathered on the driver (one small JSON object per LLM call) and the lines are written in users-file order at the
end; a rerun skips the users already in ``out``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsgen.catalog import Catalog
from zsgen.engines.batch.backends import ResultTable, check_batchable
from zsgen.engines.batch.files import BatchResult
from zsgen.engines.batch.run import USERS_RANKER, collecting_rerankers, quiet_exports, replay_rerankers
from zsgen.engines.bulk import UserLine, check_settings, recommendation_record
from zsgen.engines.ray.http import AnswerLog, ask_http
from zsgen.errors import ConfigError, DataError
from zsgen.jsonlog import LogWriter, read_log
from zsgen.recommender import Recommender
from zsgen.rerank import RerankConfig, Reranker
from zsgen.retrieval import Request

logger = logging.getLogger(__name__)

__all__ = ["RAY_RUN", "Build", "PipelineSpec", "answers_path", "recommend_users_ray"]

#: The run name in the ``custom_id``s of a Ray run (they never leave it).
RAY_RUN = "ray"

#: Makes the pipeline around a reranker built for its catalog (or none); pickled to every Ray worker, so it must be
#: a module-level function or a ``functools.partial`` of one.
Build = Callable[[Callable[[Catalog], Reranker] | None], Recommender]


@dataclass(frozen=True)
class PipelineSpec:
    """What a Ray worker needs to build the pipeline, as plain values (nothing from argparse crosses into workers):
    the dataset (``catalog`` None: the demo one), the encoder folder and its embedding cache, and the
    :class:`~zsgen.Recommender` keyword arguments (``first_stage``, ``index``, ``threshold``...). It is a
    :data:`Build`: called with the reranker maker (or None), it loads the dataset and returns the pipeline."""

    catalog: Path | None = None
    data_format: str | None = None
    interactions: Path | None = None
    encoder: Path | None = None
    embedding_cache: Path | None = None
    no_embedding_cache: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, make: Callable[[Catalog], Reranker] | None) -> Recommender:
        from zsgen.embed import CachedEncoder, EmbeddingCache, TransformersEncoder
        from zsgen.loaders import load_dataset, load_demo
        from zsgen.paths import cache_dir

        if self.catalog is None:
            dataset = load_demo()
        else:
            dataset = load_dataset(self.catalog, format=self.data_format, interactions=self.interactions)
        encoder: Any = TransformersEncoder(self.encoder) if self.encoder else TransformersEncoder()
        if not self.no_embedding_cache:
            encoder = CachedEncoder(encoder, EmbeddingCache(self.embedding_cache or cache_dir() / "embeddings.sqlite"))
        reranker = None if make is None else make(dataset.catalog)
        return Recommender(
            dataset.catalog, encoder=encoder, reranker=reranker, interactions=dataset.interactions, **self.options
        )


def _chunks(batch: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The user chunks of a Ray batch (one chunk a row, as :func:`_user_rows` made them)."""
    return [json.loads(text) for text in batch["users"]]


def _requests_of(chunk: list[dict[str, Any]]) -> tuple[list[Request], list[str]]:
    requests = [Request(list(u["history"]) or None, u["profile"]) for u in chunk]
    return requests, [str(u["user_id"]) for u in chunk]


class _RequestStage:
    """Ray actor: a shard of users in, the LLM request bodies their rankings need out (one row per call)."""

    def __init__(self, build: Build, config: RerankConfig, k: int) -> None:
        self.k = k
        self.collected: list[tuple[str, dict[str, Any]]] = []
        factory = collecting_rerankers(RAY_RUN, self.collected)
        self.recommender = build(lambda catalog: factory(USERS_RANKER, config, catalog))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        self.collected.clear()
        with quiet_exports():
            for chunk in _chunks(batch):
                requests, keys = _requests_of(chunk)
                self.recommender.recommend_batch(requests, k=self.k, keys=keys)
        return {"custom_id": [c for c, _ in self.collected], "body": [json.dumps(b) for _, b in self.collected]}


class _AnswerStage:
    """Ray actor: a shard of users in, their recommendation lines out, every LLM call answered from ``results``."""

    def __init__(self, build: Build, config: RerankConfig | None, k: int, results: dict[str, BatchResult]) -> None:
        self.k = k
        make: Callable[[Catalog], Reranker] | None = None
        if config is not None:
            factory = replay_rerankers(RAY_RUN, ResultTable(results))
            answering = config

            def make(catalog: Catalog) -> Reranker:
                return factory(USERS_RANKER, answering, catalog)

        self.recommender = build(make)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        keys: list[str] = []
        lines: list[str] = []
        for chunk in _chunks(batch):
            requests, chunk_keys = _requests_of(chunk)
            rankings = self.recommender.recommend_batch(requests, k=self.k, keys=chunk_keys)
            keys += chunk_keys
            lines += [
                json.dumps(recommendation_record(key, r), ensure_ascii=False)
                for key, r in zip(chunk_keys, rankings, strict=True)
            ]
        return {"user_id": keys, "line": lines}


def answers_path(out: Path) -> Path:
    """Where a Ray run keeps the LLM answers it received for ``out`` (``.NAME.answers.jsonl``), so that a run killed
    after asking loses nothing and its rerun asks only for what is missing."""
    return out.parent / f".{out.name}.answers.jsonl"


def _user_rows(users: Sequence[UserLine], batch_size: int) -> list[dict[str, str]]:
    """One row per chunk of ``batch_size`` consecutive users — the chunks :func:`zsgen.engines.bulk.recommend_users`
    ranks together, so retrieval sees the same batches as on the local engine. First-stage (cosine) scores still agree
    with the local engine's only to float rounding: Ray gives each actor's torch one thread (``OMP_NUM_THREADS=1``), and
    the encoder's sums round differently with another thread count. Reranked items, whose scores come from the
    LLM's order, are identical."""
    rows = []
    for start in range(0, len(users), batch_size):
        chunk = [
            {"user_id": u.user_id, "history": list(u.history), "profile": u.profile}
            for u in users[start : start + batch_size]
        ]
        rows.append({"users": json.dumps(chunk)})
    return rows


def recommend_users_ray(
    build: Build,
    config: RerankConfig | None,
    users: Sequence[UserLine],
    out: Path,
    *,
    k: int = 10,
    batch_size: int = 64,
    workers: int = 2,
    settings: str | None = None,
) -> int:
    """Recommend for every user not yet in ``out`` on the connected Ray cluster (``ray.init`` first) and append their
    lines in users-file order; returns how many were written now. ``settings`` works as in
    :func:`zsgen.engines.bulk.recommend_users`."""
    import ray

    if not ray.is_initialized():
        raise ConfigError("connect to a Ray cluster first (ray.init)")
    if batch_size < 1 or workers < 1:
        raise DataError(f"batch size and workers must be positive, got {batch_size} and {workers}")
    if config is not None:
        check_batchable(USERS_RANKER, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        check_settings(out, settings)
    done = read_log(out, repair=True)
    stray = sorted(set(done) - {u.user_id for u in users})
    if stray:
        raise DataError(f"holds users the users file does not (e.g. {stray[:3]}); choose another --out", path=out)
    todo = [u for u in users if u.user_id not in done]
    if not todo:
        return 0
    rows = _user_rows(todo, batch_size)
    shards = ray.data.from_items(rows, override_num_blocks=len(rows))
    results: dict[str, BatchResult] = {}
    if config is not None:
        requests = shards.map_batches(
            _RequestStage,
            fn_constructor_kwargs={"build": build, "config": config, "k": k},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
        )
        collected = [(str(row["custom_id"]), json.loads(row["body"])) for row in requests.iter_rows()]
        answers = AnswerLog(answers_path(out))
        results = ask_http(collected, config.base_url, workers=workers, batch_size=batch_size, answers=answers)
    answered = shards.map_batches(
        _AnswerStage,
        fn_constructor_kwargs={"build": build, "config": config, "k": k, "results": results},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
    )
    by_user = {str(row["user_id"]): str(row["line"]) for row in answered.iter_rows()}
    missing = [u.user_id for u in todo if u.user_id not in by_user]
    if missing:
        raise DataError(f"the Ray run returned no line for {len(missing)} user(s), e.g. {missing[:3]}", path=out)
    writer = LogWriter(out)
    try:
        writer.write_many([json.loads(by_user[u.user_id]) for u in todo])
    finally:
        writer.close()
    return len(todo)
