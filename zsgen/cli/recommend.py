"""``zsgen recommend``: rank the items a user most likely wants next, as a table or as JSON.

The options map one to one onto :class:`~zsgen.recommender.Recommender` and
:class:`~zsgen.rerank.RerankConfig`, so what a user tries here is what they write in Python.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsgen.cli.common import (
    add_catalog_options,
    argv_text,
    encoder_from,
    load_dataset_from,
    print_json,
)
from zsgen.errors import ConfigError
from zsgen.rerank.methods import METHODS
from zsgen.retrieval.choice import FIRST_STAGES
from zsgen.user_vectors import USER_VECTORS

if TYPE_CHECKING:
    from zsgen.catalog import Catalog
    from zsgen.cli.common import Subparsers
    from zsgen.recommender import Recommender
    from zsgen.rerank import RerankConfig, Reranker

logger = logging.getLogger("zsgen")


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``recommend``."""
    p = subparsers.add_parser(
        "recommend",
        help="rank the items a user (or every user of a users file) most likely wants next",
        description="Rank the items a user most likely wants next: embedding retrieval (or a tuned fusion), then "
        "optionally an LLM rerank that falls back to the first-stage order on any LLM fault. With --users, every "
        "user of a JSONL file, written to --out (resumable after a kill).",
    )
    p.add_argument("--history", nargs="+", metavar="ID_OR_TITLE", default=[], help="the user's items, oldest first")
    p.add_argument("--profile", help="free-text profile (for a user with no history, or in addition to it)")
    p.add_argument(
        "--users",
        type=Path,
        help='users file, one JSON object a line: {"user_id": ..., "history": [ids or titles], "profile": "..."}',
    )
    p.add_argument("--out", type=Path, help="with --users: the recommendations file (JSONL, appended; resumed)")
    p.add_argument("--batch-size", type=int, default=64, help="with --users: users retrieved and reranked together")
    p.add_argument("--no-progress", action="store_true", help="with --users: no progress bar (also with -q)")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="with --users: run here (default) or on a Ray cluster with Ray Data (pip install 'zsgen[ray]'; LLM "
        "requests through ray.data.llm's HTTP processor to --base-url)",
    )
    p.add_argument("--ray-address", help="with --engine ray: the cluster to join (e.g. auto); default: a local one")
    p.add_argument("--ray-workers", type=int, default=2, help="with --engine ray: worker actors per stage (default 2)")
    add_pipeline_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """The options that build the pipeline (dataset, first stage, reranker): shared with ``zsgen batch``."""
    add_catalog_options(p)
    p.add_argument("-k", "--k", type=int, default=10, help="how many items to return (default 10)")
    p.add_argument(
        "--user-vector", choices=USER_VECTORS, help="how the history becomes a user vector (cosine first stage; mean)"
    )
    p.add_argument("--history-length", type=int, help="use only the most recent N history items for retrieval")
    p.add_argument(
        "--threshold",
        type=float,
        help="drop candidates below this score, in the first stage's own scale (cosine similarity, or fused score)",
    )
    p.add_argument("--rerank", choices=list(METHODS), help="rerank candidates with an LLM using this method")
    p.add_argument("--backend", choices=("openai", "local", "verbalizer"), help="LLM backend for --rerank")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (key: OPENAI_API_KEY)")
    p.add_argument("--model", help="model name (openai; discovered from /v1/models if omitted) or local model folder")
    p.add_argument("--candidates", type=int, default=20, help="candidates retrieved for reranking (default 20)")
    p.add_argument("--bootstrap", type=int, default=1, help="rerank B shuffled copies and aggregate (Borda)")
    p.add_argument("--fuse-cosine", type=float, help="blend the LLM order with cosine order (weight of cosine, 0-1)")
    p.add_argument(
        "--structured",
        choices=("json_schema", "json_object", "none"),
        default="none",
        help="ask an openai backend for structured output: each call's schema names the shown labels (default none: "
        "the answer is parsed and repaired)",
    )
    p.add_argument("--picks", type=int, help="labels the LLM names, best first (default: every candidate)")
    p.add_argument(
        "--structured-choice",
        action="store_true",
        help="with --picks 1: constrain the answer with vLLM's structured_outputs choice",
    )
    p.add_argument(
        "--no-restrict-labels",
        dest="restrict_labels",
        action="store_false",
        help="verbalizer/pointwise with --backend openai: do not send vLLM's choice constraint (servers such as "
        "OpenAI's API reject it); labels outside the top log-probabilities then get a floor score",
    )
    p.add_argument(
        "--on-schema-rejected",
        choices=("fallback", "unconstrained"),
        default="fallback",
        help="when the server rejects the structured-output schema: fall back (default) or ask without it",
    )
    p.add_argument("--template-dir", type=Path, help="folder of prompt templates overriding the packaged ones")
    p.add_argument("--response-cache", type=Path, help="sqlite file caching LLM responses")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request LLM timeout in seconds")
    p.add_argument("--concurrency", type=int, default=8, help="openai: LLM requests in flight at once (default 8)")
    p.add_argument(
        "--index",
        metavar="numpy|faiss|ann[:FACTORY]",
        help="cosine first stage's search index: numpy (exact, default), faiss (exact IndexFlatIP) or ann / "
        "ann:FACTORY (a faiss factory string such as IVF4096,Flat or HNSW32; approximate candidates re-scored "
        "exactly, built once and memory-mapped from the cache folder; for catalogs of millions)",
    )
    p.add_argument(
        "--first-stage",
        choices=FIRST_STAGES,
        help="how candidates are retrieved: fused (text cosine + co-occurrence + user filtering, with zsgen's "
        "packaged default weights; needs an interaction log) or cosine (text similarity alone). Default: fused when "
        "the dataset has an interaction log and no cosine option (--user-vector, --history-length, --threshold) is "
        "given, else cosine",
    )
    p.add_argument(
        "--fusion",
        type=Path,
        help="fused first stage with the weights of this tuned fusion config (fusion-NAME.toml written by zsgen "
        "evaluate, or by zsgen tune) instead of the packaged defaults; its log-based signals use the dataset's "
        "interaction log",
    )
    p.add_argument(
        "--interactions",
        type=Path,
        help="interaction log (JSONL/CSV) for a JSONL/CSV catalog: the fused first stage's co-occurrence and "
        "filtering signals are fitted on it",
    )


def rerank_config_from(args: argparse.Namespace, *, default_backend: str = "local") -> RerankConfig | None:
    """The reranker the options ask for, or None (no --rerank, no --backend)."""
    from zsgen.rerank import RerankConfig

    if not (args.rerank or args.backend):
        return None
    method = args.rerank or ("verbalizer" if args.backend == "verbalizer" else "listwise")
    backend = args.backend or ("verbalizer" if method in ("verbalizer", "pointwise") else default_backend)
    # An invalid combination raises ConfigError (a StrictConfig), which the CLI prints as one line.
    return RerankConfig(
        method=method,
        backend=backend,
        model=args.model,
        base_url=args.base_url,
        candidates=args.candidates,
        bootstrap=args.bootstrap,
        fuse_cosine=args.fuse_cosine,
        structured=args.structured,
        structured_choice=args.structured_choice,
        on_schema_rejected=args.on_schema_rejected,
        restrict_labels=args.restrict_labels,
        picks=args.picks,
        template_dir=args.template_dir,
        cache=args.response_cache,
        timeout=args.timeout,
        concurrency=args.concurrency,
    )


def build_recommender(args: argparse.Namespace, dataset: Any, reranker: Reranker | RerankConfig | None) -> Recommender:
    """The pipeline of the options around ``reranker`` (loads the encoder); the first stage follows the library's
    rule (:func:`zsgen.retrieval.choice.choose_first_stage`) unless ``--first-stage`` or ``--fusion`` says otherwise."""
    from zsgen.recommender import Recommender

    _check_first_stage(args, has_log=dataset.interactions is not None)
    return Recommender(
        dataset.catalog,
        encoder=encoder_from(args),
        reranker=reranker,
        user_vector=args.user_vector,
        history_length=args.history_length,
        threshold=args.threshold,
        interactions=dataset.interactions,
        first_stage=args.first_stage,
        fusion=args.fusion,
        index=args.index,
    )


#: Reranker settings that change how fast lines come, not what they say.
_NOT_DECIDING = {"cache", "timeout", "concurrency"}


def _settings_digest(args: argparse.Namespace, config: RerankConfig | None) -> str:
    """What decides a users file's lines (dataset, first stage and its index, reranker, k), as 16 hex digits: a
    resumed run with other options must not append to them. Paths count by name as given; the response cache and
    timeouts do not."""
    import hashlib
    import json

    decided = {
        "catalog": str(args.catalog),
        "format": args.data_format,
        "encoder": str(args.encoder),
        "k": args.k,
        "user_vector": args.user_vector,
        "history_length": args.history_length,
        "threshold": args.threshold,
        "fusion": str(args.fusion),
        "first_stage": args.first_stage,
        "rerank": None if config is None else config.model_dump(mode="json", exclude=_NOT_DECIDING),
    }
    if args.index not in (None, "numpy"):
        # An approximate index finds other candidates (and faiss rounds scores its own way), so it decides lines;
        # the default stays out of the digest so files written before the index counted still resume.
        decided["index"] = args.index
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:16]


def run_users(args: argparse.Namespace) -> int:
    """``--users``: every user of the file through the same pipeline, appended to ``--out``."""
    from zsgen.engines.bulk import read_users, recommend_users
    from zsgen.errors import ConfigError

    if args.out is None:
        raise ConfigError("--users needs --out (the recommendations file)")
    if args.history or args.profile is not None:
        raise ConfigError("give either --users or --history/--profile, not both")
    dataset = load_dataset_from(args)
    users = read_users(args.users, dataset.catalog.resolve)  # every line checked before any model loads
    config = rerank_config_from(args)
    if args.engine == "ray":
        _check_first_stage(args, has_log=dataset.interactions is not None)  # here, before any worker starts
        return _run_users_ray(args, dataset.catalog, users, config)
    recommender = build_recommender(args, dataset, config)
    with recommender:
        written = recommend_users(
            recommender,
            users,
            args.out,
            k=args.k,
            batch_size=args.batch_size,
            progress=False if args.no_progress or args.verbosity < 0 else None,
            settings=_settings_digest(args, config),
        )
    print(f"{written} of {len(users)} users recommended now; {args.out}")
    return 0


def pipeline_spec(args: argparse.Namespace) -> Any:
    """The options as a :class:`~zsgen.engines.ray.recommend.PipelineSpec`: plain values a Ray worker builds the
    same pipeline from (the worker loads the dataset itself)."""
    from zsgen.engines.ray.recommend import PipelineSpec

    return PipelineSpec(
        catalog=args.catalog,
        data_format=args.data_format,
        interactions=getattr(args, "interactions", None),
        encoder=args.encoder,
        embedding_cache=args.embedding_cache,
        no_embedding_cache=args.no_embedding_cache,
        options={
            "user_vector": args.user_vector,
            "history_length": args.history_length,
            "threshold": args.threshold,
            "first_stage": args.first_stage,
            "fusion": args.fusion,
            "index": args.index,
        },
    )


def _run_users_ray(args: argparse.Namespace, catalog: Catalog, users: Any, config: RerankConfig | None) -> int:
    """``--users --engine ray``: the same lines, computed by Ray Data on the cluster of ``--ray-address``. The catalog
    is embedded first, by a ``map_batches`` stage, into the embedding cache the workers' pipelines then read (with
    ``--no-embedding-cache`` each worker encodes it itself)."""

    from zsgen.engines.ray.cluster import connected
    from zsgen.engines.ray.recommend import recommend_users_ray

    with connected(args.ray_address, log_to_driver=args.verbosity > 0):
        if not args.no_embedding_cache:
            from zsgen.embed.cache import EmbeddingCache
            from zsgen.engines.ray.embed import embed_catalog_ray
            from zsgen.paths import cache_dir

            cache = EmbeddingCache(args.embedding_cache or cache_dir() / "embeddings.sqlite")
            embed_catalog_ray(catalog, model_path=args.encoder, cache=cache, workers=args.ray_workers)
        written = recommend_users_ray(
            pipeline_spec(args),
            config,
            users,
            args.out,
            k=args.k,
            batch_size=args.batch_size,
            workers=args.ray_workers,
            settings=_settings_digest(args, config),
        )
    print(f"{written} of {len(users)} users recommended now (ray); {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Resolve the user's items first (a typo fails before any model loads), then build the pipeline and rank."""
    if args.users is not None:
        return run_users(args)
    if args.engine != "local":
        raise ConfigError("--engine ray runs a users file: give --users and --out")
    dataset = load_dataset_from(args)
    catalog = dataset.catalog
    history: list[str] = list(args.history)
    profile = argv_text(args.profile)
    if args.catalog is None and not history and profile is None:
        from zsgen.loaders import load_demo_user

        demo_user = load_demo_user()
        history, profile = demo_user.history, demo_user.profile
        logger.info("no user given: using the demo user")
    history = [catalog.resolve(key) for key in history]  # fail on a typo before any model is loaded
    recommender = build_recommender(args, dataset, rerank_config_from(args))
    ranking = recommender.recommend(history or None, profile=profile, k=args.k)
    if args.json:
        print_json(ranking.model_dump(mode="json"))
        return 0
    from zsgen.cli.table import print_table

    print_table(
        ranking,
        catalog,
        history=history,
        profile=profile,
        first_stage_ids=_first_stage_ids(recommender, history, profile, len(ranking.items)),
    )
    return 0


def _first_stage_ids(recommender: Recommender, history: list[str], profile: str | None, k: int) -> list[str] | None:
    """The first stage's own top ``k`` for this user (a second retrieval, milliseconds), to say whether the LLM
    changed it; None without a reranker."""
    if recommender.reranker is None:
        return None
    from zsgen.recommender import Recommender

    plain = Recommender(recommender.catalog, retriever=recommender.retriever, threshold=recommender.threshold)
    return plain.recommend(history or None, profile=profile, k=k).item_ids


def _check_first_stage(args: argparse.Namespace, *, has_log: bool) -> None:
    """Contradictions between the first-stage flags, named by their flags (the library names its parameters; it
    also refuses --user-vector / --history-length with a fused first stage)."""
    if args.first_stage == "cosine" and args.fusion is not None:
        raise ConfigError(
            "--first-stage cosine contradicts --fusion (a tuned fused first stage): give one or the other"
        )
    if args.first_stage == "fused" and args.fusion is None and not has_log:
        raise ConfigError(
            "--first-stage fused needs a dataset with an interaction log (a MovieLens or RecBole folder, or "
            "--interactions FILE for a JSONL/CSV catalog); without one the first stage is cosine"
        )
