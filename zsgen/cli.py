"""The ``zsgen`` command: recommend, encode, prompts, evaluate.

Every ZsgenError becomes one line on stderr and exit status 1; argparse usage errors exit 2. No tracebacks for
user mistakes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zsgen.errors import ConfigError, ZsgenError

logger = logging.getLogger("zsgen")

USER_VECTORS = ("mean", "recency", "last", "maxsim")
RERANK_METHODS = ("listwise", "recency", "in_context", "nir", "verbalizer", "pointwise")


def _add_catalog_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--catalog", type=Path, help="catalog file or dataset folder (JSONL, CSV, MovieLens, RecBole)")
    source.add_argument("--demo", action="store_true", help="use the demo catalog that ships with zsgen (default)")
    parser.add_argument("--format", dest="data_format", help="force a loader: jsonl, csv, ml-100k, ml-1m, recbole")
    parser.add_argument("--encoder", type=Path, help="local embedding model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--embedding-cache", type=Path, help="embedding cache file (default: in the zsgen cache dir)")
    parser.add_argument("--no-embedding-cache", action="store_true", help="encode without reading or writing a cache")


def _add_recommend(subparsers: Any) -> None:
    p = subparsers.add_parser("recommend", help="rank the items a user most likely wants next")
    _add_catalog_options(p)
    p.add_argument("--history", nargs="+", metavar="ID_OR_TITLE", default=[], help="the user's items, oldest first")
    p.add_argument("--profile", help="free-text profile (for a user with no history, or in addition to it)")
    p.add_argument("--k", type=int, default=10, help="how many items to return (default 10)")
    p.add_argument(
        "--user-vector", choices=USER_VECTORS, help="how the history becomes a user vector (cosine first stage; mean)"
    )
    p.add_argument("--history-length", type=int, help="use only the most recent N history items for retrieval")
    p.add_argument("--threshold", type=float, help="drop candidates below this cosine similarity")
    p.add_argument("--rerank", choices=RERANK_METHODS, help="rerank candidates with an LLM using this method")
    p.add_argument("--backend", choices=("openai", "local", "verbalizer"), help="LLM backend for --rerank")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (key: OPENAI_API_KEY)")
    p.add_argument("--model", help="model name (openai; discovered from /v1/models if omitted) or local model folder")
    p.add_argument("--candidates", type=int, default=20, help="candidates retrieved for reranking (default 20)")
    p.add_argument("--bootstrap", type=int, default=1, help="rerank B shuffled copies and aggregate (Borda)")
    p.add_argument("--fuse-cosine", type=float, help="blend the LLM order with cosine order (weight of cosine, 0-1)")
    p.add_argument("--structured", choices=("json_schema", "json_object", "none"), default="none")
    p.add_argument("--template-dir", type=Path, help="folder of prompt templates overriding the packaged ones")
    p.add_argument("--response-cache", type=Path, help="sqlite file caching LLM responses")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request LLM timeout in seconds")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--fusion",
        type=Path,
        help="first stage from a tuned fusion config (fusion-NAME.toml written by zsgen evaluate, or by python -m "
        "zsgen.score) instead of cosine; its log-based signals use the dataset's interaction log",
    )
    p.add_argument(
        "--interactions", type=Path, help="interaction log (JSONL/CSV) for a JSONL/CSV catalog, used by --fusion"
    )
    p.set_defaults(func=_cmd_recommend)


def _add_encode(subparsers: Any) -> None:
    p = subparsers.add_parser("encode", help="pre-compute and cache a catalog's item embeddings")
    _add_catalog_options(p)
    p.set_defaults(func=_cmd_encode)


def _load_dataset(args: argparse.Namespace) -> Any:
    from zsgen.loaders import load_dataset, load_demo

    if args.catalog is None:
        return load_demo()
    return load_dataset(args.catalog, format=args.data_format, interactions=getattr(args, "interactions", None))


def _encoder(args: argparse.Namespace) -> Any:
    from zsgen.embed import CachedEncoder, EmbeddingCache, TransformersEncoder

    encoder = TransformersEncoder(args.encoder) if args.encoder else TransformersEncoder()
    if args.no_embedding_cache:
        return encoder
    from zsgen.paths import cache_dir

    return CachedEncoder(encoder, EmbeddingCache(args.embedding_cache or cache_dir() / "embeddings.sqlite"))


def _cmd_recommend(args: argparse.Namespace) -> int:
    from zsgen.recommender import Recommender
    from zsgen.rerank import RerankConfig

    dataset = _load_dataset(args)
    catalog = dataset.catalog
    history: list[str] = list(args.history)
    profile = args.profile
    if args.catalog is None and not history and profile is None:
        from zsgen.loaders import load_demo_user

        demo_user = load_demo_user()
        history, profile = demo_user.history, demo_user.profile
        logger.info("no user given: using the demo user")
    history = [catalog.resolve(key) for key in history]  # fail on a typo before any model is loaded
    reranker = None
    if args.rerank or args.backend:
        method = args.rerank or ("verbalizer" if args.backend == "verbalizer" else "listwise")
        backend = args.backend or ("verbalizer" if method in ("verbalizer", "pointwise") else "local")
        try:
            reranker = RerankConfig(
                method=method,
                backend=backend,
                model=args.model,
                base_url=args.base_url,
                candidates=args.candidates,
                bootstrap=args.bootstrap,
                fuse_cosine=args.fuse_cosine,
                structured=args.structured,
                template_dir=args.template_dir,
                cache=args.response_cache,
                timeout=args.timeout,
            )
        except ValueError as exc:
            raise ConfigError(_first_pydantic_message(exc)) from None
    encoder = _encoder(args)
    retriever: Any = None
    if args.fusion is not None:  # fusion weights tuned on a validation split, reused here (zsgen.retrieval.fused)
        from zsgen.retrieval import FusedRetriever

        retriever = FusedRetriever.from_file(args.fusion, catalog, dataset.interactions, encoder=encoder)
        encoder = None  # the fused first stage holds it; the recommender builds no cosine retriever
    recommender = Recommender(
        catalog,
        encoder=encoder,
        retriever=retriever,
        reranker=reranker,
        user_vector=args.user_vector,
        history_length=args.history_length,
        threshold=args.threshold,
    )
    ranking = recommender.recommend(history or None, profile=profile, k=args.k)
    if args.json:
        print(json.dumps(ranking.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return 0
    if history:
        print("history: " + "; ".join(catalog.get(h).title for h in history))
    if profile:
        print(f"profile: {profile}")
    print(f"{'rank':>4}  {'score':>7}  {'source':<7}  {'id':<8}  title")
    for rank, item in enumerate(ranking.items, start=1):
        print(f"{rank:>4}  {item.score:>7.4f}  {item.source:<7}  {item.id:<8}  {item.title}")
    if ranking.fallback:
        print(f"note: the LLM stage failed ({ranking.fallback_reason}); shown in cosine order", file=sys.stderr)
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from zsgen.itemtext import ItemTextTemplate

    catalog = _load_dataset(args).catalog
    encoder = _encoder(args)
    texts = ItemTextTemplate().render_all(catalog)
    vectors = encoder.encode(texts, progress=True)
    stats = getattr(encoder, "last_stats", None)
    line = f"encoded {vectors.shape[0]} items, {vectors.shape[1]} dimensions, encoder {encoder.identity}"
    if stats is not None:
        line += f": {stats.hits} from cache, {stats.encoded} newly encoded"
    print(line)
    return 0


def _first_pydantic_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zsgen", description="Zero-shot next-item recommendation with LLMs.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_recommend(subparsers)
    _add_encode(subparsers)
    from zsgen.cli_prompts import add_subparser as add_prompts

    add_prompts(subparsers)
    try:
        from zsgen.cli_evaluate import add_subparser as add_evaluate
    except ImportError:  # evaluation needs optional plotting packages
        pass
    else:
        add_evaluate(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose == 0:  # model-loading progress bars are noise on a one-shot command
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # zsgen never downloads models
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ZsgenError as exc:
        print(f"zsgen: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zsgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
