"""The playground over HTTP: a public page router and an API router the service puts behind its auth.

``GET /playground`` and ``GET /playground/static/{asset}`` serve the page, which holds no data: everything it shows
comes from ``/playground/api/...`` with the bearer token the user typed (kept in sessionStorage, sent as an
``Authorization`` header, never in a URL). So the page loads without a token, and the API needs one when the service
has one. Errors are JSON ``{"detail": "<one line>", "line": <template line or null>}``: 400 for a request the
service cannot serve (unknown user or item, no LLM configured), 404 for an unknown template, 409 for a save that
would overwrite, 422 for a template fault (with its line) or a malformed body.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from zsgen.errors import TemplateError, ZsgenError
from zsgen.serve.playground.context import PlaygroundContext
from zsgen.serve.playground.runs import Playground, RenderResult, RunResult, TryResult
from zsgen.serve.playground.templates import (
    MAX_TEMPLATE_CHARS,
    Problem,
    SaveConflict,
    check_source,
    last_step_name,
    load_template,
    save_template,
    template_names,
)
from zsgen.serve.playground.users import PickedUser

__all__ = ["API_PREFIX", "PAGE_PATH", "build_api_router", "build_page_router"]

PAGE_PATH = "/playground"
API_PREFIX = "/playground/api"

_HERE = Path(__file__).resolve().parent
#: The only files the static route serves, with their media types (no path from the request reaches the disk).
_ASSETS = {"playground.js": "text/javascript", "playground.css": "text/css"}
#: The page runs only its own script and style files and talks only to its own origin, so text that did slip into
#: the page as markup still could not run or load anything.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PAGE = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)

T = TypeVar("T")


# -- request bodies -------------------------------------------------------------------------------------------------
class UserSpec(BaseModel):
    """A dataset user by id, or a typed one: history item ids or titles (oldest first) and/or a profile text."""

    user_id: str | None = Field(default=None, max_length=200)
    history: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=1000)
    profile: str | None = Field(default=None, max_length=10_000)


class TemplateBody(BaseModel):
    template: str = Field(max_length=MAX_TEMPLATE_CHARS)


class UserTemplateBody(TemplateBody):
    user: UserSpec


class TryBody(TemplateBody):
    n: int | None = Field(default=None, ge=1)


class SaveBody(TemplateBody):
    name: str = Field(max_length=200, description="file name in the template folder, e.g. my_listwise.jinja")
    overwrite: bool = False


# -- responses ------------------------------------------------------------------------------------------------------
class Info(BaseModel):
    method: str | None
    backend: str | None
    model: str | None
    can_run: bool
    templates: list[str]
    start_template: str
    has_users: bool
    users: int
    max_try_users: int
    default_try_users: int


class TemplateText(BaseModel):
    name: str
    origin: str
    source: str


class CheckResult(BaseModel):
    ok: bool
    problems: list[Problem]


class Saved(BaseModel):
    name: str
    overwritten: bool


# -- errors ---------------------------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(exc: ZsgenError) -> JSONResponse:
    line: int | None = None
    if isinstance(exc, TemplateError):
        line = exc.line
        where = exc.template or ""
        bare = str(exc).removeprefix(f"{where}:{line}: ").removeprefix(f"{where}: ")
        message = f"line {line}: {bare}" if line is not None else bare
        status = 404 if bare.startswith("no template named") else 422
    elif isinstance(exc, SaveConflict):
        message, status = str(exc), 409
    else:
        message, status = str(exc), 400
    return JSONResponse({"detail": _one_line(message), "line": line}, status_code=status)


def _guarded(action: Callable[[], T]) -> T | JSONResponse:
    try:
        return action()
    except ZsgenError as exc:
        return _error(exc)


# -- routers --------------------------------------------------------------------------------------------------------
def build_page_router() -> APIRouter:
    """``GET /playground`` (the page) and its two static files; nothing here reads the dataset or the model."""
    router = APIRouter(tags=["playground"])

    @router.get(PAGE_PATH, response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path") or "").rstrip("/")
        html = _PAGE.get_template("playground.html").render(
            api_base=f"{root}{API_PREFIX}", static_base=f"{root}{PAGE_PATH}/static"
        )
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    @router.get(f"{PAGE_PATH}/static/{{asset}}", include_in_schema=False)
    def static(asset: str) -> Response:
        media = _ASSETS.get(asset)
        if media is None:
            return JSONResponse({"detail": "not found", "line": None}, status_code=404)
        return Response(
            (_HERE / "static" / asset).read_bytes(), media_type=media, headers={"X-Content-Type-Options": "nosniff"}
        )

    return router


def build_api_router(ctx: PlaygroundContext) -> APIRouter:
    """The JSON endpoints under ``/playground/api`` (see module docstring for errors)."""
    playground = Playground(ctx)
    router = APIRouter(prefix=API_PREFIX, tags=["playground"])

    def picked(spec: UserSpec) -> PickedUser:
        return playground.users.resolve(
            ctx.view().recommender, user_id=spec.user_id, history=spec.history, profile=spec.profile
        )

    @router.get("/info", response_model=Info)
    def info() -> Any:
        cfg = ctx.config

        def build() -> Info:
            return Info(
                method=cfg.method if cfg else None,
                backend=cfg.backend if cfg else None,
                model=cfg.model if cfg else None,
                can_run=cfg is not None,
                templates=template_names(ctx.template_dir),
                start_template=last_step_name(cfg),
                has_users=playground.users.has_users,
                users=len(playground.users.cases()),
                max_try_users=ctx.max_try_users,
                default_try_users=min(ctx.default_try_users, ctx.max_try_users),
            )

        return _guarded(build)

    @router.get("/templates/{name}", response_model=TemplateText)
    def template(name: str) -> Any:
        def build() -> TemplateText:
            found = load_template(ctx.template_dir, name)
            return TemplateText(name=found.name, origin=found.origin, source=found.source)

        return _guarded(build)

    @router.get("/users", response_model=list[str])
    def users(prefix: str = Query(default="", max_length=200), limit: int = Query(default=50, ge=1, le=500)) -> Any:
        return _guarded(lambda: playground.users.ids(prefix, limit))

    @router.post("/render", response_model=RenderResult)
    def render(body: UserTemplateBody) -> Any:
        return _guarded(lambda: playground.render(body.template, picked(body.user)))

    @router.post("/run", response_model=RunResult)
    def run(body: UserTemplateBody) -> Any:
        return _guarded(lambda: playground.run(body.template, picked(body.user)))

    @router.post("/check", response_model=CheckResult)
    def check(body: TemplateBody) -> Any:
        def build() -> CheckResult:
            problems = check_source(body.template, ctx.config)
            return CheckResult(ok=not problems, problems=problems)

        return _guarded(build)

    @router.post("/try", response_model=TryResult)
    def try_users(body: TryBody) -> Any:
        n = body.n if body.n is not None else min(ctx.default_try_users, ctx.max_try_users)
        return _guarded(lambda: playground.try_users(body.template, n))

    @router.post("/save", response_model=Saved)
    def save(body: SaveBody) -> Any:
        def build() -> Saved:
            target, replaced = save_template(ctx.template_dir, body.name, body.template, overwrite=body.overwrite)
            return Saved(name=target.name, overwritten=replaced)

        return _guarded(build)

    return router
