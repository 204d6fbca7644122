"""``zsgen batch export`` / ``zsgen batch import``: an evaluation's or a users file's LLM requests as batch files
(OpenAI Batch API, ``vllm run-batch``), and their answers read back into ``zsgen evaluate``'s outputs or a
recommendations file (see :mod:`zsgen.engines.batch`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsgen.cli.recommend import add_pipeline_options, build_recommender, rerank_config_from

if TYPE_CHECKING:
    from zsgen.cli.common import Subparsers


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``batch`` with its ``export`` and ``import`` commands."""
    p = subparsers.add_parser(
        "batch",
        help="write LLM requests as batch files (OpenAI Batch API, vllm run-batch) and import their answers",
        description="Batch files for the LLM stage: 'export' writes the requests of an evaluation config or a users "
        "file; run them with the OpenAI Batch API or 'vllm run-batch'; 'import' reads the output and error files "
        "and writes what 'zsgen evaluate' (or 'zsgen recommend --users') would have written. Only single-call chat "
        "methods (listwise, recency, in_context) with an openai backend and a named --model can be batched.",
    )
    commands = p.add_subparsers(dest="batch_command", required=True, metavar="COMMAND", help="export or import")
    export = commands.add_parser("export", help="write the LLM requests as batch JSONL files")
    _add_source(export)
    export.add_argument("--out", type=Path, required=True, help="folder for the request files and manifest.json")
    export.add_argument("--max-requests", type=int, default=50_000, help="requests per file at most (default 50000)")
    export.add_argument(
        "--max-bytes", type=int, default=200 * 1024 * 1024, help="bytes per file at most (default 200 MB)"
    )
    export.set_defaults(func=run_export)
    imp = commands.add_parser("import", help="read a batch's output and error files")
    _add_source(imp)
    imp.add_argument(
        "--results", type=Path, nargs="+", required=True, help="output and error files of the batch (any order)"
    )
    imp.add_argument(
        "--out",
        type=Path,
        required=True,
        help="--config: the evaluation folder (per_user.jsonl, summary.json, report); --users: the recommendations "
        "file. Both are written anew on every import.",
    )
    imp.set_defaults(func=run_import)


def _add_source(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="evaluation config (TOML): its LLM rankers' requests")
    source.add_argument("--users", type=Path, help="users file (JSONL: user_id, history, profile), with the options")
    p.add_argument(
        "--data-dir", type=Path, help="--config: where `dataset.name` is looked up (default: $ZSGEN_DATA_DIR)"
    )
    p.add_argument("--run", help="--users: the run name in every custom_id (default: the users file's name)")
    p.add_argument("--batch-size", type=int, default=256, help="--users: users retrieved together (default 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also with -q)")
    add_pipeline_options(p)


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress or args.verbosity < 0 else None


def _users_setup(args: argparse.Namespace) -> tuple[Any, ...]:
    """The users, the reranker settings and a builder of the pipeline around a given reranker."""
    from zsgen.cli.common import load_dataset_from
    from zsgen.engines.batch.backends import check_batchable
    from zsgen.engines.bulk import read_users
    from zsgen.errors import ConfigError
    from zsgen.rerank import Reranker

    config = rerank_config_from(args, default_backend="openai")
    if config is None:
        args.rerank = "listwise"
        config = rerank_config_from(args, default_backend="openai")
    if config is None:  # pragma: no cover - rerank is set above
        raise ConfigError("a batch needs a rerank method")
    check_batchable("rerank", config)
    dataset = load_dataset_from(args)
    users = read_users(args.users, dataset.catalog.resolve)

    def build(reranker: Reranker) -> Any:
        return build_recommender(args, dataset, reranker)

    run = args.run or args.users.stem
    return users, build, config, dataset.catalog, run


#: Options that describe a users file's pipeline, with their defaults: a config says all of this itself.
_USERS_ONLY: dict[str, Any] = {
    "run": None,
    "catalog": None,
    "demo": False,
    "encoder": None,
    "k": 10,
    "user_vector": None,
    "history_length": None,
    "threshold": None,
    "rerank": None,
    "backend": None,
    "base_url": None,
    "model": None,
    "candidates": 20,
    "bootstrap": 1,
    "fuse_cosine": None,
    "structured": "none",
    "picks": None,
    "structured_choice": False,
    "on_schema_rejected": "fallback",
    "template_dir": None,
    "fusion": None,
    "interactions": None,
}


def _config(args: argparse.Namespace) -> Any:
    """The evaluation config; pipeline options given with it are an error rather than silently unused."""
    from zsgen.errors import ConfigError
    from zsgen.evaluate.config import load_config

    given = [name for name, default in _USERS_ONLY.items() if getattr(args, name) != default]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"{options}: with --config the config says this (these options are for --users)")

    return load_config(args.config, {}, data_dir=args.data_dir)


def run_export(args: argparse.Namespace) -> int:
    from zsgen.engines.batch import BatchLimits, export_evaluation, export_users

    limits = BatchLimits(max_requests=args.max_requests, max_bytes=args.max_bytes)
    if args.config is not None:
        result = export_evaluation(_config(args), args.out, limits=limits, progress=_progress(args))
    else:
        users, build, config, catalog, run = _users_setup(args)
        result = export_users(
            users,
            build,
            config,
            catalog,
            run,
            args.out,
            k=args.k,
            batch_size=args.batch_size,
            limits=limits,
            progress=_progress(args),
        )
    print(f"run {result.run}: {result.requests} requests for {result.users} users in {len(result.files)} file(s):")
    for entry in result.files:
        print(f"  {args.out / entry['name']}  {entry['model']}  {entry['requests']} requests  {entry['bytes']} bytes")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from zsgen.engines.batch import import_evaluation, import_users

    if args.config is not None:
        summary = import_evaluation(_config(args), args.results, args.out, progress=_progress(args))
        k = summary.headline_k
        print(f"{summary.name}: {summary.users} users; report: {args.out / 'report.md'}")
        for ranker in summary.rankers:
            hr, ndcg = ranker.all_users[f"HR@{k}"], ranker.all_users[f"NDCG@{k}"]
            print(f"  {ranker.name:<24} HR@{k} {hr.mean:.4f}  NDCG@{k} {ndcg.mean:.4f}")
        return 0
    users, build, config, catalog, run = _users_setup(args)
    written = import_users(
        users,
        build,
        config,
        catalog,
        run,
        args.results,
        args.out,
        k=args.k,
        batch_size=args.batch_size,
        progress=_progress(args),
    )
    print(f"{written} users written to {args.out}")
    return 0
