"""The prompt playground: edit a reranking template in the browser and see what it does, served at ``/playground``.

Pick a user (one of the loaded dataset's, with their held-out next item, or a typed history and profile), edit the
template, and see side by side the rendered messages, the raw LLM answer, the parse status and repairs, and the
reranked list against the first-stage order. "Check" lists template problems with their line numbers, "try on N
users" runs a small paired comparison (NDCG@10 reranked vs first stage, with a bootstrap interval) on held-out
events, and "save" writes the template into the template folder. The page is server-rendered HTML with a little
JavaScript, no front-end build step.

Design: two routers, so that the page can stay public while the data stays behind the service's auth.
:func:`build_playground_routers` returns ``(page, api)``:

* ``page`` serves ``GET /playground`` and ``GET /playground/static/{playground.js,playground.css}``. The page holds
  no data (no user ids, no template text), so it can load without a token;
* ``api`` serves the JSON endpoints under ``/playground/api`` (``info``, ``templates/{name}``, ``users``,
  ``render``, ``run``, ``check``, ``try``, ``save``). The page's script sends ``Authorization: Bearer <token>`` on
  every API call when a token was typed into its token field (kept in sessionStorage, never in a URL).

The service mounts them as::

    page, api = build_playground_routers(ctx)
    app.include_router(page)
    app.include_router(api, dependencies=[Depends(auth)])

and calls ``ctx.close()`` on shutdown (it closes a reranker the playground built for itself).
:func:`build_playground_router` returns both as one router, for a service without auth (with auth on it, the page
itself would need the header, which a browser's address bar cannot send).

Templates are user input and are only ever compiled and rendered in zsgen's sandbox (:mod:`zsgen.templates`). Running
one uses :meth:`zsgen.rerank.Reranker.with_template`, a copy of the service's reranker that shares its backend.
"""

from __future__ import annotations

from fastapi import APIRouter

from zsgen.serve.playground.context import MAX_TRY_USERS, PlaygroundContext
from zsgen.serve.playground.routes import API_PREFIX, PAGE_PATH, build_api_router, build_page_router
from zsgen.serve.playground.runs import Playground

__all__ = [
    "API_PREFIX",
    "MAX_TRY_USERS",
    "PAGE_PATH",
    "Playground",
    "PlaygroundContext",
    "build_playground_router",
    "build_playground_routers",
]


def build_playground_routers(ctx: PlaygroundContext) -> tuple[APIRouter, APIRouter]:
    """``(page, api)``: mount ``page`` as is and ``api`` behind the service's auth (see module docstring)."""
    return build_page_router(), build_api_router(ctx)


def build_playground_router(ctx: PlaygroundContext) -> APIRouter:
    """The page and the API as one router, for a service without auth."""
    page, api = build_playground_routers(ctx)
    router = APIRouter()
    router.include_router(page)
    router.include_router(api)
    return router
