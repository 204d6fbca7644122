"""The FastAPI application: routes over a :class:`~zsgen.serve.service.ServiceState`.

``create_app(config)`` loads nothing itself: the state is built on startup (in a worker thread; uvicorn opens the
port once it is loaded) and kept on ``app.state.zsgen``, so one process serves one catalog. Routes:

- ``POST /v1/recommendations`` and ``POST /v1/recommendations:batch``: rankings, as ``zsgen recommend --json``;
- ``PUT /v1/items/{id}`` / ``DELETE /v1/items/{id}``: add or replace an item (encoded and searchable when the call
  returns), or retire one (never recommended again); written to the config's store first, if it names one;
- ``GET /healthz`` (the process answers), ``GET /readyz`` (models loaded; what is served), and FastAPI's
  ``/openapi.json`` and ``/docs``;
- with a ``[playground]`` table, the prompt playground: ``GET /playground`` (public; the page holds no data) and its
  JSON API under ``/playground/api`` behind the same token (:mod:`zsgen.serve.playground.mount`). It is mounted once
  the state exists, since it works on the loaded catalog and reranker.

Other routers mount on the same state behind the same token with
``app.include_router(router, dependencies=[Depends(require_token)])`` and read ``request.app.state.zsgen``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request, Response
from starlette.convertors import Convertor, register_url_convertor

from zsgen.errors import UnknownItemError, ZsgenError
from zsgen.serve.auth import require_token
from zsgen.serve.config import ServeConfig
from zsgen.serve.envelope import Envelope
from zsgen.serve.errors import ERROR_RESPONSES, ApiError, from_zsgen, install_handlers
from zsgen.serve.hosts import HostPolicy
from zsgen.serve.ids import check_item_id, check_new_item_id
from zsgen.serve.playground.context import PlaygroundContext
from zsgen.serve.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    Health,
    ItemBody,
    ItemResult,
    Readiness,
    RecommendationResponse,
    RecommendRequest,
)
from zsgen.serve.service import ServiceState, build_state

__all__ = ["create_app", "service"]

logger = logging.getLogger(__name__)

ItemId = Annotated[str, Path(description="the item's id (README, Serving: item ids); may hold '/'")]


def service(request: Request) -> ServiceState:
    """FastAPI dependency: the loaded :class:`ServiceState`."""
    state: ServiceState = request.app.state.zsgen
    return state


State = Annotated[ServiceState, Depends(service)]


_ITEMS = "/v1/items/"


class _Anything(Convertor[str]):
    """A path parameter that matches any text, newlines included (Starlette's ``path`` stops at one, so an id with a
    newline got a routing 404 instead of the id check's 422)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _Anything())


def _path_id(request: Request) -> str:
    """The id as the decoded path has it. Not the route's parameter: Starlette matches routes with ``$``, which also
    matches before a final newline, so ``/v1/items/50%0A`` would reach the handler as ``50``."""
    path = str(request.scope["path"])
    return path[len(_ITEMS) :] if path.startswith(_ITEMS) else path


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def create_app(config: ServeConfig, *, state: ServiceState | None = None) -> FastAPI:
    """The service for ``config``; ``state`` (already built) skips loading, e.g. to share models between tests."""

    playgrounds: list[PlaygroundContext] = []

    def add_playground(app: FastAPI, state: ServiceState) -> None:
        """Mount the playground once the state it works on exists (at start, or now when ``state`` is given)."""
        if config.playground is not None and config.playground.enabled and not playgrounds:
            from zsgen.serve.playground.mount import mount_playground

            playgrounds.append(mount_playground(app, state))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "zsgen", None) is None:  # given to create_app (or set by the caller): kept
            app.state.zsgen = await asyncio.to_thread(build_state, config)
        add_playground(app, app.state.zsgen)
        logger.info("zsgen serve: ready (%d items)", len(app.state.zsgen.catalog))
        try:
            yield
        finally:
            for playground in playgrounds:
                playground.close()
            await app.state.zsgen.aclose()

    app = FastAPI(
        title="zsgen",
        summary="Zero-shot next-item recommendation: first-stage retrieval, LLM rerank with a first-stage fallback.",
        version=_version(),
        lifespan=lifespan,
    )
    if state is not None:  # usable without the lifespan too (an ASGI client that does not run it)
        app.state.zsgen = state
        add_playground(app, state)
    install_handlers(app)
    app.add_middleware(
        Envelope, max_body_bytes=config.max_body_bytes, hosts=HostPolicy(config.host, config.allowed_hosts)
    )
    guarded = [Depends(require_token)]

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """The process is up and answering."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness, dependencies=guarded, tags=["health"], responses=ERROR_RESPONSES)
    async def readyz(state: State) -> Readiness:
        """Models are loaded; what is being served."""
        snapshot = state.live.snapshot
        reranker = None
        if state.rerankers is not None:
            rerank = state.rerankers.config
            reranker = f"{rerank.method} via {rerank.backend}" + (f" ({rerank.model})" if rerank.model else "")
        return Readiness(
            status="ready",
            catalog_size=len(snapshot.catalog),
            retired=len(snapshot.retired),
            first_stage=snapshot.stage.source,
            reranker=reranker,
        )

    @app.post(
        "/v1/recommendations",
        response_model=RecommendationResponse,
        dependencies=guarded,
        tags=["recommendations"],
        responses=ERROR_RESPONSES,
    )
    async def recommend(body: RecommendRequest, request: Request, state: State) -> RecommendationResponse:
        """One user's ranking: the JSON of ``zsgen recommend --json`` plus ``request_id``."""
        deadline = asyncio.get_running_loop().time() + config.deadline_s
        prepared = state.prepare(body)
        ranking = await state.recommend(prepared, deadline)
        return RecommendationResponse(**ranking.model_dump(), request_id=_request_id(request))

    @app.post(
        "/v1/recommendations:batch",
        response_model=BatchResponse,
        dependencies=guarded,
        tags=["recommendations"],
        responses=ERROR_RESPONSES,
    )
    async def recommend_batch(body: BatchRequest, request: Request, state: State) -> BatchResponse:
        """Many users: all are checked first (one bad user refuses the call, naming it), then ranked together."""
        if len(body.users) > config.max_batch_users:
            raise ApiError(422, "batch_too_large", f"{len(body.users)} users; at most {config.max_batch_users}")
        deadline = asyncio.get_running_loop().time() + config.deadline_s
        prepared = [state.prepare(user, where=f"users[{n}]: ") for n, user in enumerate(body.users)]
        rankings = await asyncio.gather(*(state.recommend(p, deadline) for p in prepared))
        request_id = _request_id(request)
        return BatchResponse(
            request_id=request_id,
            results=[
                RecommendationResponse(**r.model_dump(), request_id=f"{request_id}-{n}") for n, r in enumerate(rankings)
            ],
        )

    item_responses: dict[int | str, dict[str, object]] = {
        **ERROR_RESPONSES,
        201: {"model": ItemResult, "description": "a new item was added"},
        409: {"model": ErrorResponse, "description": "the id is another item's title (item_id_conflict)"},
    }

    @app.put(
        "/v1/items/{item_id:anything}",
        response_model=ItemResult,
        dependencies=guarded,
        tags=["items"],
        responses=item_responses,
    )
    async def put_item(
        item_id: ItemId, body: ItemBody, request: Request, response: Response, state: State
    ) -> ItemResult:
        """Add an item (201) or replace the one with this id (200; a retired one is put back): encoded and
        recommendable when this returns, kept across restarts when the config names a store."""
        item_id = _path_id(request)
        check_new_item_id(item_id, state.live.snapshot.catalog)
        try:
            item = body.to_item(item_id)
        except ValueError as exc:
            raise ApiError(422, "invalid_input", f"invalid item: {exc}") from None
        try:
            created = await state.put_item(item)
        except ZsgenError as exc:  # an item whose text renders empty, say
            raise from_zsgen(exc) from None
        response.status_code = 201 if created else 200
        return ItemResult(
            id=item.id,
            created=created,
            retired=False,
            catalog_size=len(state.live.snapshot.catalog),
            request_id=_request_id(request),
        )

    @app.delete(
        "/v1/items/{item_id:anything}",
        response_model=ItemResult,
        dependencies=guarded,
        tags=["items"],
        responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "no item with this id"}},
    )
    async def retire_item(item_id: ItemId, request: Request, state: State) -> ItemResult:
        """Retire an item: it stays in the catalog (histories may name it) but is never recommended again."""
        item_id = _path_id(request)
        check_item_id(item_id)
        try:
            await state.retire_item(item_id)
        except UnknownItemError as exc:
            raise ApiError(404, "unknown_item", str(exc), suggestions=exc.suggestions) from None
        return ItemResult(
            id=item_id,
            created=False,
            retired=True,
            catalog_size=len(state.live.snapshot.catalog),
            request_id=_request_id(request),
        )

    return app


def _version() -> str:
    import zsgen

    return str(zsgen.__version__)
