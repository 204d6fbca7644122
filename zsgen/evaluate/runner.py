"""Runs an evaluation: split, candidates, every ranker on the same lists, one log line per user, then the summary.

``per_user.jsonl`` is the run's log and its resume point. Each finished user is appended as one JSON line holding
every ranker's result and flushed to disk (``fsync``) before the next user starts. A restarted run reads the log,
drops a trailing partial line (the process died mid-write), skips the users already there and appends the rest, so
no row is lost or written twice. The summary is always computed from the log, in the split's user order, which makes
a resumed run's summary identical to an uninterrupted one's. LLM answers also go through the response cache in the
output folder, so even the user that was in flight is not asked again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError, DataError
from zsgen.evaluate.build import CACHE_NAME as CACHE_NAME  # re-exported: callers import these from the runner
from zsgen.evaluate.build import RerankerFactory as RerankerFactory
from zsgen.evaluate.build import build_rankers
from zsgen.evaluate.build import rerank_settings as rerank_settings
from zsgen.evaluate.config import (
    COLD_PROTOCOLS,
    IMPUTING,
    EvalConfig,
    rewrite_paths,
    write_resolved,
)
from zsgen.evaluate.fusion import RunFusion, fusion_hashes, resolve_fusions, write_tuned
from zsgen.evaluate.generators import CandidateGenerator, CandidateList, ScorerFactory, build_generator
from zsgen.evaluate.ranker_config import (
    TRAINED_KINDS,
    LLMRankerConfig,
    RankerConfig,
)
from zsgen.evaluate.rankers import (
    LLMRanker,
    Ranker,
    RankOutcome,
    ScorerRanker,
)
from zsgen.evaluate.recall import generator_recall
from zsgen.evaluate.summary import Summary, summarize
from zsgen.interactions import Dataset, Interactions
from zsgen.jsonlog import LogWriter, read_log
from zsgen.loaders.spec import relative_path
from zsgen.metrics.split import UserCase, holdout_events, leave_one_out, sample_users

logger = logging.getLogger(__name__)

LOG_NAME = "per_user.jsonl"
CONFIG_NAME = "config.toml"
SUMMARY_NAME = "summary.json"
TOP_IDS = 10


# -- building the parts -------------------------------------------------------------------------------------------


def load_eval_dataset(config: EvalConfig) -> tuple[Catalog, Interactions]:
    """The dataset with its interaction log (evaluation needs one)."""
    from zsgen.loaders import load_dataset

    path = Path(config.dataset.path)
    if not path.exists():
        raise DataError("unknown dataset: no such file or folder", path=path, field="dataset.path")
    interactions = resolve_interactions(config)
    dataset: Dataset = load_dataset(path, format=config.dataset.format, interactions=interactions)
    if dataset.interactions is None or len(dataset.interactions) == 0:
        raise DataError("the dataset has no interaction log, so there is nothing to evaluate", path=path)
    return dataset.catalog, dataset.interactions


def resolve_interactions(config: EvalConfig) -> Path | None:
    """The separate interaction log of a JSONL/CSV catalog, if the config names one; it must exist."""
    if config.dataset.interactions is None:
        return None
    path = Path(config.dataset.interactions)
    if not path.exists():
        raise DataError("interaction log not found", path=path, field="dataset.interactions")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_record(config: EvalConfig, catalog: Catalog, interactions: Interactions, out_dir: Path) -> dict[str, Any]:
    """What the run read, without machine paths: the dataset path relative to ``out_dir`` (as the resolved config
    names it) and the sha256 of each file the loaders read (the catalog, the interaction log and, for cold users,
    the user file), plus one digest
    over them all. The digest, not the path, is what the resume fingerprint holds."""
    root = Path(config.dataset.path).resolve()
    base = root if root.is_dir() else root.parent
    files: dict[str, str] = {}
    sources: list[str | Path | None] = [catalog.source, interactions.source]
    # Cold users read the user file (profiles, groups); cold items only through a group_popularity ranker.
    grouped = any(r.kind == "group_popularity" for r in config.rankers)
    if config.protocol == "cold_users" or (config.protocol == "cold_items" and grouped):
        from zsgen.loaders.users import user_file

        sources.append(user_file(config.dataset.path))
    for source in sources:
        if source is None:
            continue
        path = Path(source).resolve()
        if path.is_file():
            name = path.relative_to(base).as_posix() if path.is_relative_to(base) else relative_path(path, out_dir)
            files[name] = file_sha256(path)
    combined = hashlib.sha256("".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items())).encode())
    return {"path": relative_path(root, out_dir), "sha256": combined.hexdigest(), "files": files}


def portable_config(config: EvalConfig, out_dir: Path) -> EvalConfig:
    """The config as the output folder records it: every file setting relative to ``out_dir``."""
    return rewrite_paths(config, lambda value: relative_path(value, out_dir))


def provenance(
    config: EvalConfig,
    rankers: Sequence[Ranker],
    fingerprint: str,
    fusions: Mapping[str, RunFusion] | None = None,
    dataset: Mapping[str, Any] | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Versions, the data files read (with their sha256), the models and templates each LLM ranker used, and each
    fused scorer's weights, for the resolved config. Paths are relative to ``out_dir`` (the current directory when
    it is not given)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {"python": platform.python_version()}
    for package in ("zsgen", "numpy", "scipy", "torch", "transformers", "openai"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    models: dict[str, Any] = {}
    for ranker in rankers:
        if isinstance(ranker, LLMRanker):
            reranker = ranker.reranker
            models[ranker.name] = {
                "model": str(getattr(reranker, "model_name", None) or "default"),
                "backend": str(reranker.config.backend),
                "method": str(reranker.config.method),
                "template": str(getattr(reranker, "template_name", "")),
                "template_hash": str(getattr(reranker, "template_hash", "")),
            }
            answer_schema = reranker.answer_schema()
            if answer_schema is not None:
                models[ranker.name]["structured"] = str(reranker.config.structured)
                models[ranker.name]["answer_schema"] = json.dumps(answer_schema, sort_keys=True)
    record: dict[str, Any] = {"fingerprint": fingerprint, "versions": versions}
    if dataset is not None:
        record["dataset"] = dict(dataset)
    record["llm"] = models
    trained = {
        ranker.name: dict(getattr(ranker.scorer, "training", {}))
        for ranker in rankers
        if isinstance(ranker, ScorerRanker) and ranker.kind in TRAINED_KINDS
    }
    if trained:
        record["trained"] = trained  # what training chose (L2 weight, epochs) and how long it took, per ranker
    if fusions:
        folder = out_dir if out_dir is not None else Path.cwd()
        record["fusion"] = {key: fusion.provenance(folder) for key, fusion in fusions.items()}
    return record


def run_fingerprint(config: EvalConfig, rankers: Sequence[Ranker], data_sha256: str = "") -> str:
    """The config's digest (paths left out) plus the data, template and fusion file hashes: edited data, an edited
    template or fusion config must not resume into old results, while the same files elsewhere may."""
    hashes = [data_sha256]
    hashes += [str(getattr(r.reranker, "template_hash", "")) for r in rankers if isinstance(r, LLMRanker)]
    hashes += fusion_hashes(config)
    return hashlib.sha256("|".join([config.fingerprint(), *hashes]).encode()).hexdigest()[:16]


def check_resumable(out_dir: Path, fingerprint: str, rankers: Sequence[str] | None = None) -> None:
    """Refuse to append to a log that another config (or template) wrote.

    ``config.toml`` is written atomically, so a crash leaves the old file or the new one. Folders written by older
    zsgen versions may hold a torn one (cut off mid-write, or not TOML at all) beside a valid log: then the
    fingerprint cannot be read, and the log is the only evidence. The run resumes, with a warning, when every logged
    user was ranked by exactly this run's ``rankers`` (in order); otherwise it stops as for any other config, since
    mixing two runs' rows would make every number wrong without a sign.
    """
    log = out_dir / LOG_NAME
    if not log.exists() or log.stat().st_size == 0:
        return
    config_path = out_dir / CONFIG_NAME
    if not config_path.exists():
        raise ConfigError(f"{out_dir} holds {LOG_NAME} without {CONFIG_NAME}; choose an empty output folder")
    try:
        previous = tomllib.loads(config_path.read_text(encoding="utf-8")).get("provenance", {}).get("fingerprint")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        previous = None
    if previous == fingerprint:
        return
    if previous is None and rankers is not None:
        logged = {tuple(record.get("rankers", {})) for record in read_log(log).values()}
        if logged == {tuple(rankers)}:
            logger.warning(
                "%s is unreadable or incomplete (a write torn by a crash?); resuming because every user in %s was "
                "ranked by the same rankers; %s is written anew",
                config_path,
                LOG_NAME,
                CONFIG_NAME,
            )
            return
        raise ConfigError(
            f"{config_path} is unreadable or incomplete (a write torn by a crash?) and {LOG_NAME} was written by "
            f"other rankers than this run's; choose another --out, or delete that folder to start over"
        )
    raise ConfigError(
        f"{out_dir} holds results of a different config or template (fingerprint {previous}, this run "
        f"{fingerprint}); choose another --out, or delete that folder to start over"
    )


# -- the run ------------------------------------------------------------------------------------------------------


def _batches(cases: Sequence[UserCase], size: int) -> Iterator[Sequence[UserCase]]:
    for start in range(0, len(cases), size):
        yield cases[start : start + size]


def user_record(
    case: UserCase, candidates: CandidateList, catalog: Catalog, outcomes: Mapping[str, RankOutcome]
) -> dict[str, Any]:
    """The log line of one user: the target's place in the shown list and in every ranker's order.

    A multi-target case (cold-start protocols) also logs ``targets`` and, per ranker, ``ranks`` (one per target,
    None when not listed); its ``rank`` and ``target_position`` are then those of the best-placed target."""
    multi = case.targets is not None
    positions = [candidates.position_of(int(t)) for t in case.all_targets]
    listed = [p for p in positions if p is not None]
    position = (min(listed) if listed else None) if multi else positions[0]
    results: dict[str, Any] = {}
    for name, outcome in outcomes.items():
        items = candidates.items[outcome.order]
        place = np.empty(len(outcome.order), dtype=np.int64)
        place[outcome.order] = np.arange(len(outcome.order))
        ranks = [None if p is None else int(place[p]) for p in positions]
        found = [r for r in ranks if r is not None]
        rank = (min(found) if found else None) if multi else ranks[0]
        entry: dict[str, Any] = {"rank": rank, "top": [catalog[int(i)].id for i in items[:TOP_IDS]]}
        if multi:
            entry["ranks"] = ranks
        if outcome.llm is not None:
            stats = outcome.llm
            entry.update(
                fallback=stats.fallback,
                fallback_reason=stats.fallback_reason,
                parse_status=stats.parse_status,
                repairs=stats.repairs,
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=stats.completion_tokens,
                calls=stats.calls,
                latency_s=round(stats.latency_s, 4),
            )
        results[name] = entry
    record: dict[str, Any] = {
        "user_id": case.user_id,
        "target": catalog[case.target].id,
        "history_length": int(case.history.size),
        "n_candidates": len(candidates),
        "target_position": position,
        "rankers": results,
    }
    if multi:
        record["targets"] = [catalog[int(t)].id for t in case.all_targets]
    return record


class _Counters:
    """Running LLM totals for the progress bar."""

    def __init__(self, specs: Sequence[RankerConfig]) -> None:
        self.prices = {
            s.name: (s.cost_per_million_prompt_tokens, s.cost_per_million_completion_tokens)
            for s in specs
            if isinstance(s, LLMRankerConfig)
        }
        self.tokens = 0
        self.cost = 0.0
        self.fallbacks = 0

    def add(self, record: Mapping[str, Any]) -> None:
        for name, entry in record["rankers"].items():
            if "prompt_tokens" not in entry:
                continue
            prompt, completion = int(entry["prompt_tokens"]), int(entry["completion_tokens"])
            self.tokens += prompt + completion
            price_in, price_out = self.prices.get(name, (0.0, 0.0))
            self.cost += (prompt * price_in + completion * price_out) / 1e6
            self.fallbacks += int(bool(entry["fallback"]))

    def postfix(self) -> dict[str, str]:
        return {"tokens": f"{self.tokens:,}", "cost": f"${self.cost:.4f}", "fallbacks": str(self.fallbacks)}


@dataclass
class PreparedRun:
    """An evaluation set up over its output folder, before any user is ranked: the split's users (``cases``, in the
    run's order), the candidate generator and every ranker, tuned and checked against the folder.

    :func:`run_evaluation` ranks the users its log lacks with :func:`rank_cases` and ends with :func:`finish_run`;
    the Ray engine prepares one per worker and ranks a shard of the users on each
    (:mod:`zsgen.engines.ray.evaluate`)."""

    config: EvalConfig
    out: Path
    catalog: Catalog
    cases: list[UserCase]
    factory: ScorerFactory
    data: dict[str, Any]
    recorded: EvalConfig
    fusions: dict[str, RunFusion]
    rankers: list[Ranker]
    fingerprint: str
    generator: CandidateGenerator
    show: bool

    def write_config(self) -> None:
        """Write ``config.toml``: the config as run, with provenance (model ids once backends are loaded)."""
        provenance_record = provenance(self.config, self.rankers, self.fingerprint, self.fusions, self.data, self.out)
        write_resolved(self.recorded, self.out / CONFIG_NAME, provenance_record)


def prepare_run(
    config: EvalConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    rerankers: RerankerFactory | None = None,
    timed: bool = True,
    item_vectors: np.ndarray | None = None,
    fusions: Mapping[str, RunFusion] | None = None,
) -> PreparedRun:
    """Split, sample, tune and build the rankers of ``config`` over ``out_dir`` (created); a folder holding another
    run is refused here. Writes the tuned fusion files, not the log. Parameters as :func:`run_evaluation`'s, and
    ``fusions``: the fusions another preparation of the same run resolved (the Ray engine's driver hands its own to
    the workers), used as they are, neither tuned again nor written."""
    from zsgen.score.base import TrainData

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog, interactions = load_eval_dataset(config)
    candidate_items = None
    if config.protocol in COLD_PROTOCOLS:
        from zsgen.evaluate.coldstart import cold_split

        test = cold_split(config, catalog, interactions, "test")
        cases = sample_users(test.cases, config.users, config.seed)
        train, candidate_items = test.train, test.candidate_items
    else:
        cases = sample_users(
            leave_one_out(interactions, config.split, min_history=config.min_history), config.users, config.seed
        )
        if not cases:
            raise DataError(
                f"no user has the {config.min_history + holdout_events(config.split)} events this split needs",
                path=config.dataset.path,
            )
        train = TrainData.from_interactions(interactions, holdout=holdout_events(config.split), n_items=len(catalog))
    factory = ScorerFactory(catalog, train, item_vectors=item_vectors, impute_cold=config.protocol in IMPUTING)
    data = dataset_record(config, catalog, interactions, out)
    recorded = portable_config(config, out)
    resolved = (
        dict(fusions)
        if fusions is not None
        else resolve_fusions(config, catalog, interactions, factory, out, data_source=recorded.dataset.path)
    )
    show = sys.stderr.isatty() if progress is None else progress
    rankers = build_rankers(
        config, catalog, interactions, factory, out, resolved, progress=show, rerankers=rerankers, timed=timed
    )
    fingerprint = run_fingerprint(config, rankers, data["sha256"])
    check_resumable(out, fingerprint, [spec.name for spec in config.rankers])
    if fusions is None:
        write_tuned(resolved)
    candidate_fusion = resolved["candidates"].config if "candidates" in resolved else None
    generator = build_generator(
        config.candidates, factory, seed=config.seed, fusion=candidate_fusion, items=candidate_items
    )
    return PreparedRun(
        config=config,
        out=out,
        catalog=catalog,
        cases=list(cases),
        factory=factory,
        data=data,
        recorded=recorded,
        fusions=resolved,
        rankers=list(rankers),
        fingerprint=fingerprint,
        generator=generator,
        show=show,
    )


def rank_cases(
    run: PreparedRun,
    todo: Sequence[UserCase],
    write: Callable[[dict[str, Any]], None],
    *,
    done: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Rank ``todo`` (in batches of ``batch_users``) and hand each user's log record to ``write`` as it is finished;
    ``done`` (records already logged) only starts the progress bar and its token counters where they were."""
    from tqdm.auto import tqdm

    config, rankers = run.config, run.rankers
    # Baselines and remote LLMs work on a whole batch; local LLMs go user by user so each line is logged at once.
    batch_rankers = [r for r in rankers if not isinstance(r, LLMRanker) or r.concurrent]
    llm_rankers = [r for r in rankers if isinstance(r, LLMRanker) and not r.concurrent]
    counts_tokens = any(isinstance(r, LLMRanker) for r in rankers)
    counters = _Counters(config.rankers)
    for record in done:
        counters.add(record)
    bar = tqdm(total=len(todo) + len(done), initial=len(done), unit="user", desc=config.name, disable=not run.show)
    try:
        for batch in _batches(todo, config.batch_users):
            lists = run.generator.generate(batch)
            outcomes = {r.name: r.rank(batch, lists) for r in batch_rankers}
            for row, case in enumerate(batch):
                per_user = {name: results[row] for name, results in outcomes.items()}
                for ranker in llm_rankers:
                    per_user[ranker.name] = ranker.rank_one(case, lists[row])
                ordered = {spec.name: per_user[spec.name] for spec in config.rankers}
                record = user_record(case, lists[row], run.catalog, ordered)
                write(record)
                counters.add(record)
                bar.update(1)
                if counts_tokens:
                    bar.set_postfix(counters.postfix(), refresh=False)
    finally:
        bar.close()


def finish_run(run: PreparedRun) -> Summary:
    """Write the resolved config, ``summary.json`` and the report from the log, which must hold every user."""
    from zsgen.evaluate.report import write_report

    config, out = run.config, run.out
    run.write_config()  # again, now that backends are loaded: model ids are the ones actually used
    records = read_log(out / LOG_NAME)
    missing = [case.user_id for case in run.cases if case.user_id not in records]
    if missing:
        raise DataError(f"the log lacks {len(missing)} of the run's users (e.g. {missing[:3]})", path=out / LOG_NAME)
    # The recall table is about leave-one-out targets of score-based generators; cold-start runs rank every candidate.
    recall = {} if config.protocol in COLD_PROTOCOLS else generator_recall(config, run.factory, run.cases, run.fusions)
    summary = summarize(
        run.recorded,
        [records[case.user_id] for case in run.cases],
        generator_recall=recall,
        dataset_sha256=run.data["sha256"],
    )
    (out / SUMMARY_NAME).write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    write_report(summary, out)
    return summary


def pending_cases(run: PreparedRun) -> tuple[list[UserCase], dict[str, dict[str, Any]]]:
    """The run's users its log does not hold yet, in the run's order, and the records it does hold (a trailing
    partial line, left by a process killed mid-write, is dropped); a log naming users this run does not evaluate is
    refused."""
    log_path = run.out / LOG_NAME
    done = read_log(log_path, repair=True)
    wanted = {case.user_id for case in run.cases}
    stray = sorted(set(done) - wanted)
    if stray:
        raise DataError(f"the log has users this run does not evaluate (e.g. {stray[:3]})", path=log_path)
    if done:
        logger.info("resuming: %d of %d users already done", len(done), len(run.cases))
    return [case for case in run.cases if case.user_id not in done], done


def run_evaluation(
    config: EvalConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    rerankers: RerankerFactory | None = None,
    timed: bool = True,
    item_vectors: np.ndarray | None = None,
) -> Summary:
    """Run (or resume) ``config`` into ``out_dir`` and write every artefact; returns the summary.

    ``progress=None`` shows the bar only on a terminal. ``rerankers`` and ``timed`` let batch export and import run
    this same code with other LLM backends (:data:`RerankerFactory`). ``item_vectors`` are the catalog's unit text
    vectors in catalog order, computed elsewhere (the Ray engine embeds the catalog on its cluster); without them the
    first text scorer encodes the catalog with the default encoder.
    """
    run = prepare_run(config, out_dir, progress=progress, rerankers=rerankers, timed=timed, item_vectors=item_vectors)
    todo, done = pending_cases(run)
    run.write_config()
    writer = LogWriter(run.out / LOG_NAME)
    try:
        rank_cases(run, todo, writer.write, done=list(done.values()))
    finally:
        writer.close()
    return finish_run(run)
