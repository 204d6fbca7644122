"""Batch files: an evaluation's or a users file's LLM requests as OpenAI-Batch-API / ``vllm run-batch`` JSONL, and
the answers read back through the online path's parsing, repair and fallback.

* :mod:`.ids` — the ``custom_id`` format (run, ranker, user, round, template hash, body digest);
* :mod:`.files` — request files split at the limits, one model per file; result files read in any order;
* :mod:`.backends` — the recording, collecting and replaying stand-ins for an OpenAI-compatible server;
* :mod:`.run` — export and import for an evaluation config or a users file.

Only single-call chat methods (listwise, recency, in_context) with ``backend = "openai"`` and a named ``model`` can be
batched: NIR's chained calls depend on each other's answers, and logit scoring is no chat request.
"""

from zsgen.engines.batch.backends import (
    CollectingBackend,
    RecordingBackend,
    ReplayBackend,
    StandInBackend,
    check_batchable,
    request_body,
)
from zsgen.engines.batch.files import BatchLimits, BatchResult, RequestWriter, read_results
from zsgen.engines.batch.ids import RequestId, body_digest
from zsgen.engines.batch.run import ExportResult, export_evaluation, export_users, import_evaluation, import_users

__all__ = [
    "BatchLimits",
    "BatchResult",
    "CollectingBackend",
    "ExportResult",
    "RecordingBackend",
    "ReplayBackend",
    "RequestId",
    "RequestWriter",
    "StandInBackend",
    "body_digest",
    "check_batchable",
    "export_evaluation",
    "export_users",
    "import_evaluation",
    "import_users",
    "read_results",
    "request_body",
]
