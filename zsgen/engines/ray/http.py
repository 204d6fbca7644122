"""The LLM stage of both Ray engines: request bodies through ``ray.data.llm``'s HTTP processor, answers back as
:class:`~zsgen.engines.batch.files.BatchResult` rows keyed by ``custom_id``, ready for
:class:`~zsgen.engines.batch.backends.ReplayBackend`.

Ray does the scheduling (``concurrency`` actors, each posting its block of bodies concurrently, retrying 429/408/
502/503/504 and dropped connections); zsgen adds no queue or pool. Ray 2.60's processor hands back only the JSON
body of an answer, so the session it opens uses :class:`StatusResponse`, which returns the HTTP status beside the
body: a failed request is then flagged with the online backend's reason (``server_error`` for a 500,
``http_400``...), exactly as the local engine flags the same fault. A request with no answer at all after its
retries (server unreachable) makes the processor abort the run; nothing is written and a rerun starts that pass over.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import aiohttp

from zsgen.engines.batch.files import BatchResult
from zsgen.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["StatusResponse", "ask_http"]

#: Retries of a request Ray's processor considers transient (429, 408, 502, 503, 504, dropped connection).
MAX_RETRIES = 3


class StatusResponse(aiohttp.ClientResponse):
    """An aiohttp response whose ``json()`` is ``{"status_code", "body"}``: the processor keeps only what ``json()``
    returns, and the status is what tells an answer from a server error. A body that is not JSON (an HTML error
    page) is ``None`` rather than an exception that would abort the whole run."""

    async def json(self, *args: Any, **kwargs: Any) -> Any:
        try:
            body = await super().json(content_type=None)
        except ValueError:
            body = None
        return {"status_code": self.status, "body": body}


def _preprocess(row: dict[str, Any]) -> dict[str, Any]:
    return {"payload": json.loads(row["body"]), "custom_id": row["custom_id"]}


def _postprocess(row: dict[str, Any]) -> dict[str, Any]:
    # One JSON string per row: Ray Data stores rows as Arrow tables, which would merge the keys of every body in a
    # block (an answer would gain "error": None, an error body "choices": None).
    return {"custom_id": row["custom_id"], "response": json.dumps(row["http_response"]), "error": ""}


def _result(row: dict[str, Any]) -> BatchResult:
    """A processor row as a live :class:`BatchResult` (failures take the online backend's reasons)."""
    custom_id = str(row["custom_id"])
    where = f"ray http processor ({custom_id})"
    failed = row.get("__inference_error__") or row.get("error") or ""
    if failed:
        return BatchResult(custom_id, None, None, " ".join(str(failed).split())[:300], where, live=True)
    response = json.loads(row["response"])
    return BatchResult(custom_id, int(response["status_code"]), response["body"], None, where, live=True)


def requests_dataset(collected: Sequence[tuple[str, dict[str, Any]]], blocks: int) -> Any:
    """A Ray dataset of ``(custom_id, body)`` pairs in about ``blocks`` blocks (bodies as JSON text: see
    :func:`_postprocess`)."""
    import ray

    rows = [{"custom_id": rid, "body": json.dumps(body)} for rid, body in collected]
    return ray.data.from_items(rows, override_num_blocks=max(1, min(blocks, len(rows))))


def ask_http(requests: Any, base_url: str | None, *, workers: int, batch_size: int) -> dict[str, BatchResult]:
    """Post every row of ``requests`` (``custom_id``, ``body``) to ``base_url``'s ``/chat/completions`` through
    ``ray.data.llm``'s HTTP processor with ``workers`` actors; the answers by ``custom_id``. ``OPENAI_API_KEY``, if
    set, goes in the ``Authorization`` header as the OpenAI client would send it."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    if not base_url:
        raise ConfigError("--engine ray sends the LLM requests to the ranker's base_url (an OpenAI-compatible server)")
    headers = {}
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    processor = build_processor(
        HttpRequestProcessorConfig(
            url=base_url.rstrip("/") + "/chat/completions",
            headers=headers,
            max_retries=MAX_RETRIES,
            batch_size=batch_size,
            concurrency=workers,
            session_factory=functools.partial(aiohttp.ClientSession, response_class=StatusResponse),
        ),
        preprocess=_preprocess,
        postprocess=_postprocess,
    )
    results: dict[str, BatchResult] = {}
    for row in processor(requests).iter_rows():
        result = _result(dict(row))
        results[result.custom_id] = result
    logger.info("ray: %d LLM requests answered (%d failed)", len(results), sum(not r.ok for r in results.values()))
    return results
