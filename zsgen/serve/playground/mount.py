"""The playground inside ``zsgen serve``: one process, one loaded catalog, one LLM backend, one token.

The page router is public (the page holds no data); the API router sits behind the service's bearer token and is
left out of the service's OpenAPI schema, which describes the recommendation API clients are generated from. Each
playground action reads the service's current snapshot (:class:`~zsgen.serve.live.LiveCatalog`), so an item put or
retired at runtime is a candidate (or not) in the playground at once, exactly as in ``/v1/recommendations``, and
templates run on a reranker from the service's pool, sharing its backend: its HTTP client and concurrency bound, or
its loaded local model.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI

from zsgen.interactions import Dataset
from zsgen.rerank import Reranker
from zsgen.serve.auth import require_token
from zsgen.serve.playground import PlaygroundContext, build_playground_routers
from zsgen.serve.playground.context import LiveView
from zsgen.serve.service import ServiceState

__all__ = ["mount_playground", "playground_context"]


def playground_context(state: ServiceState) -> PlaygroundContext:
    """The playground over the service's state; the config must have an enabled ``[playground]`` table."""
    settings = state.config.playground
    if settings is None or not settings.enabled:
        raise ValueError("the serve config has no enabled [playground] table")
    pool = state.rerankers
    template_dir = settings.template_dir or (pool.config.template_dir if pool is not None else None)
    if template_dir is None:  # the config's validation already refuses this
        raise ValueError("playground: no template_dir")

    def live() -> LiveView:
        snapshot = state.live.snapshot

        def reranker() -> Reranker | None:
            return pool.get(snapshot.catalog, snapshot.version, {}) if pool is not None else None

        return LiveView(snapshot.catalog, snapshot.recommender, reranker)

    start = state.live.snapshot
    return PlaygroundContext(
        dataset=Dataset(catalog=start.catalog, interactions=state.interactions),
        recommender=start.recommender,
        rerank_config=pool.config if pool is not None else None,
        template_dir=Path(template_dir),
        max_try_users=settings.max_try_users,
        default_try_users=settings.default_try_users,
        resamples=settings.resamples,
        seed=settings.seed,
        live=live,
    )


def mount_playground(app: FastAPI, state: ServiceState) -> PlaygroundContext:
    """Add ``/playground`` (public page) and ``/playground/api/...`` (behind the token) to ``app``; the caller closes
    the returned context on shutdown."""
    ctx = playground_context(state)
    page, api = build_playground_routers(ctx)
    app.include_router(page)
    app.include_router(api, dependencies=[Depends(require_token)], include_in_schema=False)
    return ctx
