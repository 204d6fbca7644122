"""Export an evaluation's or a users file's LLM requests as batch files, and import the answers.

Both directions run the online pipeline itself (:func:`zsgen.evaluate.runner.run_evaluation` for a config,
:func:`zsgen.engines.bulk.recommend_users` for a users file) with the LLM rankers' backends swapped for stand-ins
(:mod:`zsgen.engines.batch.backends`): export records every request and lets the call fall back; import answers every
call from the result lines, and the reranker parses, repairs and falls back exactly as it does online. The import's
per-user rows therefore equal the online path's for the same answers (latency aside: imported answers record 0 s).

An import always starts over in its output (a previous import's results are replaced, never resumed from), so
importing the same files twice writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsgen.catalog import Catalog
from zsgen.engines.batch.backends import (
    EXPORTED,
    CollectingBackend,
    RecordingBackend,
    ReplayBackend,
    ResultTable,
    StandInBackend,
    check_batchable,
)
from zsgen.engines.batch.files import MANIFEST_NAME, BatchLimits, RequestWriter, read_results
from zsgen.errors import ConfigError
from zsgen.evaluate.config import EvalConfig
from zsgen.evaluate.runner import LOG_NAME, RerankerFactory, run_evaluation
from zsgen.evaluate.summary import Summary
from zsgen.rerank import RerankConfig, Reranker

logger = logging.getLogger(__name__)

__all__ = [
    "USERS_RANKER",
    "ExportResult",
    "collecting_rerankers",
    "export_evaluation",
    "export_users",
    "import_evaluation",
    "import_users",
    "quiet_exports",
    "recording_rerankers",
    "replay_rerankers",
    "stand_in_rerankers",
]

#: The ranker name in a users file's ``custom_id``s (a users file has one reranker).
USERS_RANKER = "rerank"
#: Written into an evaluation folder by an import: its results may be replaced by the next import.
IMPORT_MARKER = "batch_import.json"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the run name, the request files (name, model, requests, bytes), the total."""

    run: str
    files: list[dict[str, Any]]
    requests: int
    users: int


def stand_in_rerankers(backend: Callable[[str, RerankConfig], StandInBackend]) -> RerankerFactory:
    """Rerankers whose calls go to the stand-in ``backend(ranker name, settings)`` makes, refusing what cannot be
    one chat request per round (:func:`~zsgen.engines.batch.backends.check_batchable`). The response cache is off:
    answers come from the stand-in, never from an earlier run."""

    def make(name: str, config: RerankConfig, catalog: Catalog) -> Reranker:
        check_batchable(name, config)
        config = config.model_copy(update={"cache": None})
        stand_in = backend(name, config)
        reranker = Reranker(config, catalog=catalog, backend=stand_in)
        stand_in.template_hash = reranker.template_hash
        return reranker

    return make


def recording_rerankers(run: str, writer: RequestWriter) -> RerankerFactory:
    """Rerankers whose calls are written to ``writer`` (refusing what cannot be a batch file)."""
    return stand_in_rerankers(lambda name, config: RecordingBackend(run, name, config, writer=writer))


def collecting_rerankers(run: str, collected: list[tuple[str, dict[str, Any]]]) -> RerankerFactory:
    """Rerankers whose calls are appended to ``collected`` as ``(custom_id, body)`` (the Ray engines' first pass)."""
    return stand_in_rerankers(lambda name, config: CollectingBackend(run, name, config, collected=collected))


def replay_rerankers(run: str, table: ResultTable) -> RerankerFactory:
    """Rerankers whose calls are answered from ``table``."""
    return stand_in_rerankers(lambda name, config: ReplayBackend(run, name, config, table=table))


class _DropExported(logging.Filter):
    """Export makes every call "fail" on purpose; the reranker's fallback warnings about that are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return EXPORTED not in record.getMessage()


@contextmanager
def quiet_exports() -> Iterator[None]:
    """Silence the reranker's fallback warnings for calls a stand-in failed on purpose (``batch_exported``)."""
    target = logging.getLogger("zsgen.rerank.reranker")
    quiet = _DropExported()
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


def _prepare_export_folder(folder: Path) -> None:
    """An export folder is empty or holds a previous export (whose files are replaced)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST_NAME
    old = set()
    if manifest.exists():
        try:
            old = {str(f["name"]) for f in json.loads(manifest.read_text(encoding="utf-8"))["files"]}
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{manifest} is not a zsgen batch manifest; choose another --out") from None
        old.add(MANIFEST_NAME)
    others = sorted(p.name for p in folder.iterdir() if p.name not in old)
    if others:
        raise ConfigError(f"{folder} holds other files ({', '.join(others[:3])}); export into an empty folder")
    for name in old:
        (folder / name).unlink(missing_ok=True)


def _write_manifest(folder: Path, run: str, kind: str, writer: RequestWriter, users: int) -> ExportResult:
    files = [{"name": f.name, "model": f.model, "requests": f.requests, "bytes": f.bytes} for f in writer.files]
    manifest = {
        "run": run,
        "source": kind,
        "users": users,
        "requests": writer.requests,
        "custom_id": "RUN:RANKER:USER:ROUND:TEMPLATE_HASH:BODY_DIGEST (percent-encoded parts; zsgen.engines.batch.ids)",
        "files": files,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return ExportResult(run=run, files=files, requests=writer.requests, users=users)


def _export(
    folder: Path, limits: BatchLimits, run: str, kind: str, body: Callable[[RequestWriter], int]
) -> ExportResult:
    _prepare_export_folder(folder)
    writer = RequestWriter(folder, limits)
    try:
        with quiet_exports():
            users = body(writer)
    finally:
        writer.close()
    return _write_manifest(folder, run, kind, writer, users)


# -- an evaluation config ---------------------------------------------------------------------------------------


def export_evaluation(
    config: EvalConfig, folder: str | Path, *, limits: BatchLimits | None = None, progress: bool | None = None
) -> ExportResult:
    """Write the requests ``zsgen evaluate`` would send for ``config`` (every LLM ranker, user and round)."""

    def run(writer: RequestWriter) -> int:
        with tempfile.TemporaryDirectory(prefix="zsgen-export-") as scratch:
            summary = run_evaluation(
                config, scratch, progress=progress, rerankers=recording_rerankers(config.name, writer)
            )
        return summary.users

    return _export(Path(folder), limits or BatchLimits(), config.name, "config", run)


def _digest_files(paths: Sequence[Path]) -> list[dict[str, str]]:
    entries = []
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append({"name": path.name, "sha256": digest})
    return sorted(entries, key=lambda e: (e["sha256"], e["name"]))


def _table(run: str, results: Sequence[Path]) -> ResultTable:
    if not results:
        raise ConfigError("give the batch's output (and error) files to import")
    table = ResultTable(read_results(list(results)))
    runs = table.runs()
    if runs and run not in runs:
        raise ConfigError(
            f"the result files answer run(s) {', '.join(sorted(runs))}, not {run!r}: wrong files, or another --run"
        )
    return table


def _report_unused(table: ResultTable) -> None:
    unused = len(table.results) - len(table.used)
    if unused:
        logger.warning("%d result line(s) answered no request of this run (another run's, or a changed config)", unused)


def import_evaluation(
    config: EvalConfig, results: Sequence[Path], folder: str | Path, *, progress: bool | None = None
) -> Summary:
    """Read a batch's result files and write ``config``'s evaluation outputs into ``folder``, as ``zsgen evaluate``
    does; missing and failed requests become flagged fallbacks."""
    out = Path(folder)
    table = _table(config.name, results)
    log, marker = out / LOG_NAME, out / IMPORT_MARKER
    if log.exists():
        if not marker.exists():
            raise ConfigError(f"{out} holds an evaluation that no batch import wrote; import into another folder")
        log.unlink()  # an import starts over: answers may have changed since the last one
    out.mkdir(parents=True, exist_ok=True)
    record = {"run": config.name, "results": _digest_files(results)}
    marker.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    summary = run_evaluation(
        config, out, progress=progress, rerankers=replay_rerankers(config.name, table), timed=False
    )
    _report_unused(table)
    return summary


# -- a users file -----------------------------------------------------------------------------------------------


def _users_pipeline(
    build: Callable[[Reranker], Any], config: RerankConfig, catalog: Catalog, factory: RerankerFactory
) -> Any:
    return build(factory(USERS_RANKER, config, catalog))


def export_users(
    users: Sequence[Any],
    build: Callable[[Reranker], Any],
    config: RerankConfig,
    catalog: Catalog,
    run: str,
    folder: str | Path,
    *,
    k: int = 10,
    batch_size: int = 256,
    limits: BatchLimits | None = None,
    progress: bool | None = None,
) -> ExportResult:
    """Write the requests :func:`zsgen.engines.bulk.recommend_users` would send for ``users``.

    ``build`` makes the :class:`~zsgen.Recommender` around a given reranker (the same first stage the online run
    uses); ``config`` is that reranker's settings.
    """
    from zsgen.engines.bulk import recommend_users

    def body(writer: RequestWriter) -> int:
        recommender = _users_pipeline(build, config, catalog, recording_rerankers(run, writer))
        with tempfile.TemporaryDirectory(prefix="zsgen-export-") as scratch:
            recommend_users(
                recommender, users, Path(scratch) / "recs.jsonl", k=k, batch_size=batch_size, progress=progress
            )
        return len(users)

    return _export(Path(folder), limits or BatchLimits(), run, "users", body)


def import_users(
    users: Sequence[Any],
    build: Callable[[Reranker], Any],
    config: RerankConfig,
    catalog: Catalog,
    run: str,
    results: Sequence[Path],
    out: str | Path,
    *,
    k: int = 10,
    batch_size: int = 256,
    progress: bool | None = None,
) -> int:
    """Write the recommendations file for ``users`` from a batch's result files; returns the users written."""
    from zsgen.engines.bulk import recommend_users

    target = Path(out)
    table = _table(run, results)
    recommender = _users_pipeline(build, config, catalog, replay_rerankers(run, table))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    scratch = Path(name)
    try:
        scratch.unlink()
        written = recommend_users(recommender, users, scratch, k=k, batch_size=batch_size, progress=progress)
        shutil.move(str(scratch), target)
    finally:
        scratch.unlink(missing_ok=True)
    _report_unused(table)
    return written
