"""Bulk recommendation on a Ray cluster with Ray Data: the same lines as :func:`zsgen.bulk.recommend_users`.

Ray does the scheduling; zsgen adds no queue or worker pool. Three Ray Data stages, the same two-pass mechanism as
batch files (:mod:`zsgen.batch`):

1. **Requests.** Users are sharded across ``workers`` actors (``map_batches`` with an actor class, so each worker
   loads the catalog, encoder and catalog embeddings once). Each actor runs the online pipeline with a stand-in
   backend that records the exact body :class:`~zsgen.llm.OpenAIChatBackend` would POST (same messages, limits and
   ``constraint_fields``) under the batch ``custom_id``, and lets the call fall back.
2. **LLM calls.** ``ray.data.llm``'s HTTP processor (``HttpRequestProcessorConfig``) posts every body to the
   OpenAI-compatible server's ``/chat/completions`` (retrying 429/5xx gateway statuses and dropped connections).
   A server's JSON error answer (e.g. HTTP 500 ``{"error": ...}``) is a failed request, its user a flagged
   fallback. Ray 2.60's HTTP processor has no ``should_continue_on_error``: a request that still has no JSON answer
   after its retries (server unreachable) aborts the run before anything is written, and a rerun starts over.
3. **Answers.** The actors run the pipeline again with :class:`~zsgen.batch.backends.ReplayBackend` answering from
   those responses: parsing, repair, aggregation and fallback are the online path's own, so a user's line equals
   the local engine's for the same answers, and a failed request is a flagged fallback (``batch_error``).

Only single-call chat methods (listwise, recency, in_context) go through the HTTP processor, as with batch files
(:func:`~zsgen.batch.backends.check_batchable`); without a reranker only stage 3 runs. The answers of stage 2 are
gathered on the driver (one small JSON object per LLM call) and the lines are written in users-file order at the
end; a rerun skips the users already in ``out``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsgen.batch.backends import EXPORTED, ReplayBackend, ResultTable, _Named, check_batchable
from zsgen.batch.files import BatchResult
from zsgen.batch.run import USERS_RANKER, _quiet_exports
from zsgen.bulk import UserLine, _check_settings, recommendation_record
from zsgen.catalog import Catalog
from zsgen.errors import BackendError, ConfigError, DataError
from zsgen.evaluate.runner import _LogWriter, read_log
from zsgen.llm.base import ChatMessage, Completion
from zsgen.recommender import Recommender
from zsgen.rerank import RerankConfig, Reranker
from zsgen.retrieval import Request

logger = logging.getLogger(__name__)

__all__ = ["RAY_RUN", "Build", "recommend_users_ray"]

#: The run name in the ``custom_id``s of a Ray run (they never leave it).
RAY_RUN = "ray"

#: Makes the pipeline around a reranker built for its catalog (or none); pickled to every Ray worker, so it must be
#: a module-level function or a ``functools.partial`` of one.
Build = Callable[[Callable[[Catalog], Reranker] | None], Recommender]


@dataclass
class _Collecting(_Named):
    """Records each call's ``custom_id`` and body, and fails the call (the answer comes from the HTTP stage)."""

    collected: list[tuple[str, dict[str, Any]]] | None = None

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        rid, body = self.request(messages, max_tokens, json_schema, choices)
        if self.collected is None:
            self.collected = []
        self.collected.append((rid.text(), body))
        raise BackendError(f"{EXPORTED}: sent through Ray's HTTP processor", reason=EXPORTED)


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
        self.backend: _Collecting | None = None

        def make(catalog: Catalog) -> Reranker:
            backend = _Collecting(RAY_RUN, USERS_RANKER, config.model_copy(update={"cache": None}))
            reranker = Reranker(backend.config, catalog=catalog, backend=backend)
            backend.template_hash = reranker.template_hash
            self.backend = backend
            return reranker

        self.recommender = build(make)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        assert self.backend is not None
        self.backend.collected = []
        with _quiet_exports():
            for chunk in _chunks(batch):
                requests, keys = _requests_of(chunk)
                self.recommender.recommend_batch(requests, k=self.k, keys=keys)
        collected = self.backend.collected
        return {"custom_id": [c for c, _ in collected], "body": [json.dumps(b) for _, b in collected]}


class _AnswerStage:
    """Ray actor: a shard of users in, their recommendation lines out, every LLM call answered from ``results``."""

    def __init__(self, build: Build, config: RerankConfig | None, k: int, results: dict[str, BatchResult]) -> None:
        self.k = k
        make: Callable[[Catalog], Reranker] | None = None
        if config is not None:
            table = ResultTable(results)
            answering = config.model_copy(update={"cache": None})

            def make(catalog: Catalog) -> Reranker:
                backend = ReplayBackend(RAY_RUN, USERS_RANKER, answering, table=table)
                reranker = Reranker(answering, catalog=catalog, backend=backend)
                backend.template_hash = reranker.template_hash
                return reranker

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


def _preprocess(row: dict[str, Any]) -> dict[str, Any]:
    return {"payload": json.loads(row["body"]), "custom_id": row["custom_id"]}


def _postprocess(row: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": row["custom_id"], "response": json.dumps(row["http_response"]), "error": ""}


def _result(row: dict[str, Any]) -> BatchResult:
    """A processor row as the batch reader's :class:`BatchResult`: a chat completion is an answer (HTTP 200); an
    error row, or a JSON body without ``choices`` (a server error), is a failure."""
    custom_id = str(row["custom_id"])
    where = f"ray http processor ({custom_id})"
    failed = row.get("__inference_error__") or row.get("error") or ""
    if failed:
        return BatchResult(custom_id, None, None, " ".join(str(failed).split())[:300], where)
    body = json.loads(row["response"])
    # Ray Data stores rows as Arrow tables, which give every row of a block every key seen in it (None where a row
    # had none): an error body arrives with "choices": None, an answer with "error": None.
    if isinstance(body, dict) and isinstance(body.get("choices"), list) and body.get("error") is None:
        return BatchResult(custom_id, 200, body, None, where)
    said = body.get("error") if isinstance(body, dict) else body
    return BatchResult(custom_id, None, None, " ".join(str(said or "no chat completion").split())[:300], where)


def _user_rows(users: Sequence[UserLine], batch_size: int) -> list[dict[str, str]]:
    """One row per chunk of ``batch_size`` consecutive users — the chunks :func:`zsgen.bulk.recommend_users` ranks
    together, so retrieval sees the same batches as on the local engine. First-stage (cosine) scores still agree with
    the local engine's only to float rounding: Ray gives each actor's torch one thread (``OMP_NUM_THREADS=1``), and
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


def _ask(ray_data: Any, requests: Any, config: RerankConfig, workers: int, batch_size: int) -> dict[str, BatchResult]:
    """Stage 2: every request body through ``ray.data.llm``'s HTTP processor; answers keyed by ``custom_id``."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    if not config.base_url:
        raise ConfigError("--engine ray sends the LLM requests to --base-url (an OpenAI-compatible server)")
    headers = {}
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    processor = build_processor(
        HttpRequestProcessorConfig(
            url=config.base_url.rstrip("/") + "/chat/completions",
            headers=headers,
            max_retries=3,
            batch_size=batch_size,
            concurrency=workers,
        ),
        preprocess=_preprocess,
        postprocess=_postprocess,
    )
    results: dict[str, BatchResult] = {}
    for row in processor(requests).iter_rows():
        result = _result(dict(row))
        results[result.custom_id] = result
    return results


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
    :func:`zsgen.bulk.recommend_users`."""
    import ray

    if not ray.is_initialized():
        raise ConfigError("connect to a Ray cluster first (ray.init)")
    if batch_size < 1 or workers < 1:
        raise DataError(f"batch size and workers must be positive, got {batch_size} and {workers}")
    if config is not None:
        check_batchable(USERS_RANKER, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        _check_settings(out, settings)
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
        results = _ask(ray.data, requests, config, workers, batch_size)
        logger.info("ray: %d LLM requests answered (%d failed)", len(results), sum(not r.ok for r in results.values()))
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
    writer = _LogWriter(out)
    try:
        writer.write_many([json.loads(by_user[u.user_id]) for u in todo])
    finally:
        writer.close()
    return len(todo)
