"""Batch files on disk: request files split at the providers' limits, and result files read back in any order.

Request lines are ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`` (the OpenAI Batch API
and ``vllm run-batch`` read the same format). A file holds requests for one model only and at most
:attr:`BatchLimits.max_requests` lines and :attr:`BatchLimits.max_bytes` bytes (the OpenAI Batch API's 50,000 and
200 MB by default); a new file starts when the next line would break either limit.

Result lines are ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``; output and
error files may come in any order and in several pieces, so they are read into one table keyed by ``custom_id``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from zsgen.engines.batch.ids import RequestId
from zsgen.errors import ConfigError, DataError

__all__ = ["BatchLimits", "BatchResult", "RequestFile", "RequestWriter", "read_results"]

CHAT_URL = "/v1/chat/completions"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class BatchLimits:
    """Where request files are split: the OpenAI Batch API's limits unless a provider needs smaller files."""

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ConfigError(
                f"batch file limits must be positive, got {self.max_requests} requests, {self.max_bytes} B"
            )


@dataclass
class RequestFile:
    """One written request file: its name inside the export folder, the model it asks, its size."""

    name: str
    model: str
    requests: int = 0
    bytes: int = 0


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"


@dataclass
class RequestWriter:
    """Appends request lines to ``batch-<model>-NNN.jsonl`` files in ``folder``, one series per model."""

    folder: Path
    limits: BatchLimits = field(default_factory=BatchLimits)
    files: list[RequestFile] = field(default_factory=list)
    _open: dict[str, tuple[RequestFile, IO[bytes]]] = field(default_factory=dict)

    def write(self, custom_id: str, body: dict[str, Any]) -> None:
        model = str(body.get("model"))
        line = json.dumps(
            {"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": body},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        line += b"\n"
        if len(line) > self.limits.max_bytes:
            raise ConfigError(
                f"request {custom_id} is {len(line)} bytes, more than the {self.limits.max_bytes}-byte file limit"
            )
        current = self._open.get(model)
        if current is not None:
            entry, handle = current
            if entry.requests >= self.limits.max_requests or entry.bytes + len(line) > self.limits.max_bytes:
                handle.close()
                current = None
        if current is None:
            number = sum(1 for f in self.files if f.model == model) + 1
            entry = RequestFile(name=f"batch-{_slug(model)}-{number:03d}.jsonl", model=model)
            self.files.append(entry)
            current = (entry, (self.folder / entry.name).open("wb"))
            self._open[model] = current
        entry, handle = current
        handle.write(line)
        entry.requests += 1
        entry.bytes += len(line)

    def close(self) -> None:
        for _, handle in self._open.values():
            handle.close()
        self._open.clear()

    @property
    def requests(self) -> int:
        return sum(f.requests for f in self.files)


@dataclass(frozen=True)
class BatchResult:
    """One result line: the HTTP status and body of a request the batch ran, or why it did not run."""

    custom_id: str
    status: int | None
    body: Any
    error: str | None
    where: str
    #: Answered by a live HTTP stage (Ray Data), not a batch job: failures take the online backend's reasons
    #: (``server_error``, ``http_400``...), so a fault is flagged as the local engine flags it.
    live: bool = False
    #: A live failure's reason as the online backend gives it (``server_error``, ``connection``, ``timeout``...).
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200 and isinstance(self.body, dict)

    @property
    def failure(self) -> tuple[str, str]:
        """Why this request has no usable answer: a fallback reason and the batch's own words."""
        if self.error is not None:
            return self.reason or "batch_error", self.error
        if self.live and self.status is not None and self.status != 200:
            said = _error_text(self.body.get("error")) if isinstance(self.body, dict) else None
            return self.reason or f"http_{self.status}", said or f"HTTP {self.status}"
        if self.status is None or not isinstance(self.body, dict):
            return "batch_error", "the result line has no response body"
        said = _error_text(self.body.get("error")) or f"HTTP {self.status}"
        return f"batch_http_{self.status}", said


def _error_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        said = value.get("message") or value.get("code") or value
        return " ".join(str(said).split())[:300]
    return " ".join(str(value).split())[:300] or "error"


def _result(record: Any, where: str, path: Path, number: int) -> BatchResult:
    if not isinstance(record, dict):
        raise DataError("a result line must be a JSON object", path=path, line=number)
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise DataError("a result line needs a custom_id", path=path, line=number, field="custom_id")
    response = record.get("response")
    status: int | None = None
    body: Any = None
    if response is not None:
        if not isinstance(response, dict):
            raise DataError("response must be an object or null", path=path, line=number, field="response")
        raw_status = response.get("status_code")
        if raw_status is not None and (not isinstance(raw_status, int) or isinstance(raw_status, bool)):
            raise DataError("status_code must be an integer", path=path, line=number, field="response.status_code")
        status = raw_status
        body = response.get("body")
    return BatchResult(
        custom_id=custom_id, status=status, body=body, error=_error_text(record.get("error")), where=where
    )


def read_results(paths: list[Path]) -> dict[str, BatchResult]:
    """Every result line of ``paths`` (output and error files, any order) by canonical ``custom_id``.

    Lines are compared after decoding their ``custom_id`` (:meth:`RequestId.parse`), so ``u0`` and ``u%30`` are one
    request. A request answered more than once (a retried batch, the same file given twice, two spellings) keeps its
    successful answer over a failure, whichever comes first; two different successful answers to one request are a
    :class:`DataError` naming both lines, since either could be used. A ``custom_id`` zsgen did not write is a
    :class:`DataError` naming its line.
    """
    results: dict[str, BatchResult] = {}
    for path in paths:
        if not path.is_file():
            raise DataError("no such result file", path=path)
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    raise DataError("not a JSON line", path=path, line=number) from None
                where = f"{path.name}:{number}"
                result = _result(record, where, path, number)
                canonical = RequestId.parse(result.custom_id, where=where).text()
                result = replace(result, custom_id=canonical)
                seen = results.get(canonical)
                if seen is None or (result.ok and not seen.ok):
                    results[canonical] = result
                elif result.ok and seen.ok and result.body != seen.body:
                    raise DataError(
                        f"request {canonical} has two different answers, here and at {seen.where}",
                        path=path,
                        line=number,
                    )
    return results
