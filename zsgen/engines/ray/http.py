"""The LLM stage of both Ray engines: request bodies POSTed by a Ray Data ``map_batches`` stage through aiohttp, the
answers back as :class:`~zsgen.engines.batch.files.BatchResult` rows keyed by ``custom_id``, ready for
:class:`~zsgen.engines.batch.backends.ReplayBackend`.

Ray does the scheduling (``workers`` actors, each posting its block of bodies concurrently); zsgen adds no queue or
pool. The bodies were built by the online backend's own request builder (:mod:`zsgen.llm.chat_request`), and this
stage posts them to the same URL with the same ``Authorization`` header. A request is retried on 429/408/502/503/504
and on a dropped connection or timeout (``MAX_RETRIES`` times, with backoff); whatever still fails becomes an error
row, never an exception: its user falls back flagged with the online backend's reason (``server_error`` for a 500,
``http_400``, ``connection``, ``timeout``), exactly as the local engine flags the same fault.

Answers are kept as they arrive in an :class:`AnswerLog` (one JSON line each, fsynced per block), so a run killed in
or after this stage loses no answer, and a rerun sends only the requests the log has no answer for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zsgen.engines.batch.files import BatchResult
from zsgen.errors import ConfigError
from zsgen.llm.chat_request import auth_headers, chat_url
from zsgen.llm.openai_client import status_reason

logger = logging.getLogger(__name__)

__all__ = ["AnswerLog", "ask_http", "requests_dataset"]

#: Retries of a request that failed transiently (429, 408, 502, 503, 504, dropped connection, timeout).
MAX_RETRIES = 3
_TRANSIENT = {408, 429, 502, 503, 504}
#: Seconds one request may take (the online backend's default timeout).
TIMEOUT = 60.0


class _HttpStage:
    """Ray actor: rows of ``(custom_id, body)`` in, one answer or error row per request out (never an exception)."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float, retries: int, backoff: float) -> None:
        self.url, self.headers, self.timeout, self.retries, self.backoff = url, headers, timeout, retries, backoff

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        ids = [str(c) for c in batch["custom_id"]]
        bodies = [str(b) for b in batch["body"]]
        answers = asyncio.run(self._post_all(bodies))
        return {
            "custom_id": ids,
            "status": [status for status, _, _ in answers],
            "response": [text for _, text, _ in answers],
            "error": [error for _, _, error in answers],
        }

    async def _post_all(self, bodies: list[str]) -> list[tuple[int, str, str]]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        headers = {"Content-Type": "application/json", **self.headers}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            return list(await asyncio.gather(*(self._post(session, body) for body in bodies)))

    async def _post(self, session: Any, body: str) -> tuple[int, str, str]:
        """``(status, body text, "")`` for an answer, ``(-1, "", "reason: words")`` when none came."""
        import aiohttp

        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                async with session.post(self.url, data=body.encode()) as response:
                    text = await response.text(errors="replace")
                    if response.status in _TRANSIENT and not last:
                        await asyncio.sleep(self.backoff * 2**attempt)
                        continue
                    return response.status, text, ""
            except TimeoutError as exc:
                failure = f"timeout: no answer within {self.timeout:g} s ({type(exc).__name__})"
            except (aiohttp.ClientError, OSError) as exc:
                failure = f"connection: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            if last:
                return -1, "", failure
            await asyncio.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover


def _result(row: dict[str, Any]) -> BatchResult:
    """A stage row as a live :class:`BatchResult` (failures take the online backend's reasons)."""
    custom_id = str(row["custom_id"])
    where = f"ray http stage ({custom_id})"
    error = str(row.get("error") or "")
    if error:
        reason, _, said = error.partition(": ")
        return BatchResult(custom_id, None, None, said, where, live=True, reason=reason)
    status = int(row["status"])
    try:
        body = json.loads(row["response"])
    except ValueError:
        body = None  # an HTML error page: a failed request, its status says why
    if status != 200:
        return BatchResult(custom_id, status, body, None, where, live=True, reason=status_reason(status))
    if not isinstance(body, dict):
        return BatchResult(custom_id, None, None, "the answer is not a JSON object", where, True, "malformed_response")
    return BatchResult(custom_id, status, body, None, where, live=True)


class AnswerLog:
    """The HTTP stage's successful answers, one JSON line each, kept beside a run's output so that nothing answered
    is lost: a rerun reads them back and sends only the requests still unanswered. A torn last line (a kill during
    a write) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, BatchResult]:
        found: dict[str, BatchResult] = {}
        if not self.path.is_file():
            return found
        for number, raw in enumerate(self.path.read_bytes().splitlines(), start=1):
            try:
                record = json.loads(raw)
                custom_id, body = str(record["custom_id"]), record["body"]
            except (ValueError, KeyError, TypeError):
                logger.warning("%s:%d: not an answer line (torn by a kill?); asking again", self.path, number)
                continue
            found[custom_id] = BatchResult(custom_id, 200, body, None, f"{self.path.name}:{number}", live=True)
        return found

    def append(self, results: Sequence[BatchResult]) -> None:
        kept = [r for r in results if r.ok]
        if not kept:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps({"custom_id": r.custom_id, "body": r.body}, ensure_ascii=False) + "\n" for r in kept)
        with self.path.open("ab") as handle:
            if handle.tell() > 0:  # start on a line boundary even after a torn write
                with self.path.open("rb") as check:
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":
                        handle.write(b"\n")
            handle.write(data.encode())
            handle.flush()
            os.fsync(handle.fileno())


def requests_dataset(collected: Sequence[tuple[str, dict[str, Any]]], blocks: int) -> Any:
    """A Ray dataset of ``(custom_id, body)`` pairs in about ``blocks`` blocks (bodies as JSON text, so Arrow does not
    merge the keys of every body in a block)."""
    import ray

    rows = [{"custom_id": rid, "body": json.dumps(body)} for rid, body in collected]
    return ray.data.from_items(rows, override_num_blocks=max(1, min(blocks, len(rows))))


def ask_http(
    collected: Sequence[tuple[str, dict[str, Any]]],
    base_url: str | None,
    *,
    workers: int,
    batch_size: int,
    answers: AnswerLog | None = None,
    timeout: float = TIMEOUT,
    backoff: float = 0.5,
) -> dict[str, BatchResult]:
    """POST every ``(custom_id, body)`` to ``base_url``'s ``/chat/completions`` with ``workers`` Ray actors; the
    answers by ``custom_id``. Requests ``answers`` already holds are not sent again; new answers are appended to it as
    each block arrives. ``OPENAI_API_KEY``, if set, goes in the ``Authorization`` header as the OpenAI client sends
    it. Needs a connected Ray cluster."""
    import ray

    if not base_url:
        raise ConfigError("--engine ray sends the LLM requests to the ranker's base_url (an OpenAI-compatible server)")
    wanted = {rid for rid, _ in collected}
    results = {rid: r for rid, r in (answers.read() if answers else {}).items() if rid in wanted}
    todo = [(rid, body) for rid, body in collected if rid not in results]
    if results:
        logger.info("ray: %d LLM answers kept from an earlier run; asking %d", len(results), len(todo))
    if todo:
        blocks = max(workers, -(-len(todo) // batch_size))
        answered = requests_dataset(todo, blocks).map_batches(
            _HttpStage,
            fn_constructor_kwargs={
                "url": chat_url(base_url),
                "headers": auth_headers(os.environ.get("OPENAI_API_KEY")),
                "timeout": timeout,
                "retries": MAX_RETRIES,
                "backoff": backoff,
            },
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)),
        )
        for batch in answered.iter_batches(batch_size=None, batch_format="numpy"):
            columns = ("custom_id", "status", "response", "error")
            rows = zip(*(batch[c] for c in columns), strict=True)
            block = [_result(dict(zip(columns, row, strict=True))) for row in rows]
            if answers is not None:
                answers.append(block)
            results.update((r.custom_id, r) for r in block)
    failed = sum(not r.ok for r in results.values())
    logger.info("ray: %d LLM requests answered (%d failed)", len(results), failed)
    return results
