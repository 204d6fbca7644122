"""Chat backends that stand in for a server: one writes each request to a batch file, one answers from result files.

Both build the request body exactly as :class:`~zsgen.llm.OpenAIChatBackend` would POST it (same model, messages,
``max_tokens``, temperature 0, extra body and constraint fields), and the replayer reads an answer body with that
backend's own reader. Everything around them — prompts, shuffles, parsing, repair, aggregation, fallback — is the
online path itself, run by the reranker, so an imported answer is used exactly as a live one would be.

The request a call belongs to comes from the reranker's :class:`~zsgen.rerank.scope.CallScope` (user, call number)
plus what the backend was built for (run, ranker, template hash); see :mod:`zsgen.engines.batch.ids`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zsgen.engines.batch.files import BatchResult, RequestWriter
from zsgen.engines.batch.ids import RequestId, body_digest
from zsgen.errors import BackendError, ConfigError, DataError
from zsgen.llm.base import AsyncChatBackend, ChatMessage, Completion
from zsgen.llm.openai_chat import OpenAIChatBackend
from zsgen.rerank.config import RerankConfig
from zsgen.rerank.methods import ChatMethod, method_class
from zsgen.rerank.scope import current_scope

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORTED",
    "CollectingBackend",
    "RecordingBackend",
    "ReplayBackend",
    "ResultTable",
    "StandInBackend",
    "check_batchable",
    "request_body",
]

#: The reason the recorder's calls "fail" with: the request went to a file, the answer comes later.
EXPORTED = "batch_exported"

#: The key placed in the stand-in client: batch files carry no credentials (the provider's upload does).
_NO_KEY = "batch-file"


def check_batchable(name: str, config: RerankConfig) -> None:
    """Raise :class:`ConfigError` unless ``config`` makes one OpenAI-compatible chat call per round with a named model.

    A batch file holds independent requests: NIR's three chained calls (each prompt holds the previous answer) would
    need three batches run one after another, and logit scoring (verbalizer, pointwise) is no chat request.
    """
    kind = method_class(config.method)
    if not issubclass(kind, ChatMethod) or len(kind.steps) != 1:
        raise ConfigError(
            f"ranker {name!r}: method {config.method!r} cannot be written as a batch file; batch files support the "
            f"single-call chat methods listwise, recency and in_context"
        )
    if config.backend != "openai":
        raise ConfigError(
            f"ranker {name!r}: batch files carry OpenAI-compatible chat requests; set backend = 'openai' (it is "
            f"{config.backend!r})"
        )
    if not config.model:
        raise ConfigError(f"ranker {name!r}: a batch file names its model; set model (the id the server serves)")


def chat_client(config: RerankConfig) -> OpenAIChatBackend:
    """The online backend this configuration would use; it builds bodies and reads answers, and never connects."""
    return OpenAIChatBackend(
        config.base_url,
        model=config.model,
        api_key=_NO_KEY,
        structured=config.structured,
        structured_choice=config.structured_choice,
    )


def request_body(
    client: OpenAIChatBackend,
    messages: list[ChatMessage],
    max_tokens: int,
    json_schema: dict[str, Any] | None,
    choices: Sequence[str] | None,
) -> dict[str, Any]:
    """The body ``client`` would POST for this call, built by its own request builder
    (:class:`~zsgen.llm.chat_request.ChatRequest`, the one the online backend sends through)."""
    request = client.chat_request
    return request.body(client.model, messages, max_tokens, request.constraint(json_schema, choices))


@dataclass
class StandInBackend(AsyncChatBackend):
    """What every stand-in shares: the client that builds bodies, and how a call's ``custom_id`` is made.

    Subclasses answer :meth:`achat`: record the request somewhere and fail the call (``batch_exported``), or
    answer it from results gathered elsewhere (batch result files, Ray's HTTP stage)."""

    run: str
    ranker: str
    config: RerankConfig
    template_hash: str = ""
    client: OpenAIChatBackend = field(init=False)

    name = "openai"

    def __post_init__(self) -> None:
        self.client = chat_client(self.config)

    @property
    def model(self) -> str:
        return self.client.model

    def request(
        self,
        messages: list[ChatMessage],
        max_tokens: int,
        json_schema: dict[str, Any] | None,
        choices: Sequence[str] | None,
    ) -> tuple[RequestId, dict[str, Any]]:
        scope = current_scope()
        if scope is None:
            raise ConfigError("a batch-file backend was called outside a user's scope (Reranker.arerank(key=...))")
        body = request_body(self.client, messages, max_tokens, json_schema, choices)
        rid = RequestId(self.run, self.ranker, scope.key, scope.next_call(), self.template_hash, body_digest(body))
        return rid, body

    def close(self) -> None:
        """Nothing to release: the stand-ins never connect."""

    async def aclose(self) -> None:
        """Nothing to release: the stand-ins never connect."""


@dataclass
class ExportingBackend(StandInBackend):
    """Keeps each call's ``custom_id`` and body (:meth:`keep`) and fails the call (reason ``batch_exported``): the
    answer comes later, from a batch file or a Ray HTTP stage."""

    #: Where the kept request goes, for the fallback's log message.
    destination = "kept for later"

    def keep(self, custom_id: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        rid, body = self.request(messages, max_tokens, json_schema, choices)
        self.keep(rid.text(), body)
        raise BackendError(f"{EXPORTED}: {self.destination}", reason=EXPORTED)


@dataclass
class RecordingBackend(ExportingBackend):
    """Writes each call's request line to a batch file."""

    writer: RequestWriter | None = None
    destination = "written to a batch file"

    def keep(self, custom_id: str, body: dict[str, Any]) -> None:
        if self.writer is None:
            raise ConfigError("RecordingBackend needs a writer")
        self.writer.write(custom_id, body)


@dataclass
class CollectingBackend(ExportingBackend):
    """Keeps each call's ``custom_id`` and body in memory: the Ray engines send what it collected through Ray Data's
    HTTP stage and replay the answers."""

    collected: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    destination = "collected for a later request stage"

    def keep(self, custom_id: str, body: dict[str, Any]) -> None:
        self.collected.append((custom_id, body))


@dataclass
class ResultTable:
    """Result lines by the slot they answer (run, ranker, user, round), with what was used, for the import's tally."""

    results: dict[str, BatchResult]
    by_slot: dict[tuple[str, str, str, int], tuple[RequestId, BatchResult]] = field(init=False)
    used: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.by_slot = {}
        for custom_id, result in self.results.items():
            rid = RequestId.parse(custom_id, where=result.where)
            seen = self.by_slot.get(rid.slot)
            if seen is not None and seen[1].ok and result.ok:
                raise DataError(
                    f"{result.where}: request {custom_id} answers the same user and round as {seen[0].text()} at "
                    f"{seen[1].where} (result files of two different exports?)"
                )
            if seen is None or (result.ok and not seen[1].ok):  # a success is kept over a failure
                self.by_slot[rid.slot] = (rid, result)

    def runs(self) -> set[str]:
        return {slot[0] for slot in self.by_slot}


@dataclass
class ReplayBackend(StandInBackend):
    """Answers each call from a batch's result lines; a missing or failed line raises the reason the reranker records.

    Reasons: ``batch_missing`` (no line for this request), ``batch_error`` (the batch reports an error for it),
    ``batch_http_<status>`` (the request ran and the server answered that status), or whatever the online reader
    says of the body (``malformed_response``, ``empty``, ``refusal``, ``truncated``).
    """

    table: ResultTable | None = None

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        rid, _ = self.request(messages, max_tokens, json_schema, choices)
        if self.table is None:
            raise ConfigError("ReplayBackend needs a result table")
        found = self.table.by_slot.get(rid.slot)
        if found is None:
            raise BackendError(f"no result line for request {rid.text()}", reason="batch_missing")
        exported, result = found
        if (exported.template_hash, exported.digest) != (rid.template_hash, rid.digest):
            raise ConfigError(
                f"{result.where}: request {exported.text()} differs from the one this run makes now "
                f"({rid.text()}): the config, data or prompt templates changed since the export; export again"
            )
        self.table.used.add(result.custom_id)
        if not result.ok:
            reason, said = result.failure
            raise BackendError(f"{result.where}: {said}", reason=reason)
        raw = json.dumps(result.body, ensure_ascii=False).encode()
        return self.client._read(raw, self.model)  # the online path's reader: same checks, same reasons
