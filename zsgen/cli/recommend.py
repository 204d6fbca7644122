"""``zsgen recommend``: rank the items a user most likely wants next, as a table or as JSON.

The options map one to one onto :class:`~zsgen.recommender.Recommender` and
:class:`~zsgen.rerank.RerankConfig`, so what a user tries here is what they write in Python.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsgen.cli.common import (
    add_catalog_options,
    argv_text,
    encoder_from,
    load_dataset_from,
    print_json,
    printable,
)
from zsgen.rerank.methods import METHODS
from zsgen.retrieval.user_vectors import USER_VECTORS

if TYPE_CHECKING:
    from zsgen.cli.common import Subparsers

logger = logging.getLogger("zsgen")


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``recommend``."""
    p = subparsers.add_parser(
        "recommend",
        help="rank the items a user most likely wants next",
        description="Rank the items a user most likely wants next: embedding retrieval (or a tuned fusion), then "
        "optionally an LLM rerank that falls back to the first-stage order on any LLM fault.",
    )
    add_catalog_options(p)
    p.add_argument("--history", nargs="+", metavar="ID_OR_TITLE", default=[], help="the user's items, oldest first")
    p.add_argument("--profile", help="free-text profile (for a user with no history, or in addition to it)")
    p.add_argument("-k", "--k", type=int, default=10, help="how many items to return (default 10)")
    p.add_argument(
        "--user-vector", choices=USER_VECTORS, help="how the history becomes a user vector (cosine first stage; mean)"
    )
    p.add_argument("--history-length", type=int, help="use only the most recent N history items for retrieval")
    p.add_argument("--threshold", type=float, help="drop candidates below this cosine similarity")
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
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--fusion",
        type=Path,
        help="first stage from a tuned fusion config (fusion-NAME.toml written by zsgen evaluate, or by zsgen tune) "
        "instead of cosine; its log-based signals use the dataset's interaction log",
    )
    p.add_argument(
        "--interactions", type=Path, help="interaction log (JSONL/CSV) for a JSONL/CSV catalog, used by --fusion"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the user's items first (a typo fails before any model loads), then build the pipeline and rank."""
    from zsgen.recommender import Recommender
    from zsgen.rerank import RerankConfig

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
    reranker = None
    if args.rerank or args.backend:
        method = args.rerank or ("verbalizer" if args.backend == "verbalizer" else "listwise")
        backend = args.backend or ("verbalizer" if method in ("verbalizer", "pointwise") else "local")
        # An invalid combination raises ConfigError (a StrictConfig), which the CLI prints as one line.
        reranker = RerankConfig(
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
        )
    encoder = encoder_from(args)
    retriever: Any = None
    if args.fusion is not None:  # fusion weights tuned on a validation split, reused here (zsgen tune)
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
        print_json(ranking.model_dump(mode="json"))
        return 0
    if history:
        print(printable("history: " + "; ".join(catalog.get(h).title for h in history)))
    if profile:
        print(printable(f"profile: {profile}"))
    print(f"{'rank':>4}  {'score':>7}  {'source':<7}  {'id':<8}  title")
    for rank, item in enumerate(ranking.items, start=1):
        print(printable(f"{rank:>4}  {item.score:>7.4f}  {item.source:<7}  {item.id:<8}  {item.title}"))
    if ranking.fallback:
        print(f"note: the LLM stage failed ({ranking.fallback_reason}); shown in cosine order", file=sys.stderr)
    return 0
