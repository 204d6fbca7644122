"""What the playground's buttons do, without HTTP: render, run, and try a template on a few held-out users.

Every action takes the template *text* from the page and compiles it in the sandbox (:mod:`.templates`). Rendering
needs no model: it builds the method over the edited template and renders the first call for one user's first-stage
candidates. Running clones the service's reranker with the edited template (:meth:`zsgen.rerank.Reranker.with_template`:
same backend, same settings), so what the page shows is what the service would do with that template; a chat
backend is wrapped in a recorder, so the messages shown are the ones actually sent, every call of every round.

"Try on N users" is a small paired comparison on the held-out events of the loaded dataset: the same N users (a
seeded sample of the leave-one-out cases), the same first-stage candidates, NDCG@10 of the reranked order against
NDCG@10 of the first-stage order, with the percentile bootstrap interval of the per-user differences. The metric
and the interval are the evaluation harness's own (:mod:`zsgen.metrics.metrics`). Ranks are positions in the
candidate list: a target the first stage did not retrieve is a miss for both orders. The first stage is the
service's as loaded; if it was fitted on the whole log it has seen the held-out events, which flatters both orders
alike but not their difference, the number this button is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, Field

from zsgen.catalog import Catalog
from zsgen.errors import ConfigError
from zsgen.llm.base import ChatBackend, ChatMessage, Completion
from zsgen.metrics.metrics import (
    Interval,
    bootstrap_indices,
    bootstrap_interval,
    metric_values,
    paired_difference,
)
from zsgen.metrics.split import sample_users
from zsgen.rerank import RerankConfig, Reranker, RerankMethod, RerankRequest, method_class
from zsgen.rerank.methods import ChatMethod
from zsgen.retrieval import Request
from zsgen.serve.playground.context import LiveView, PlaygroundContext
from zsgen.serve.playground.templates import compile_source
from zsgen.serve.playground.users import PickedUser, UserBook
from zsgen.templates import PromptLibrary, PromptTemplate
from zsgen.types import Candidate, Ranking

__all__ = [
    "Listed",
    "Playground",
    "RenderResult",
    "RunResult",
    "TryResult",
    "TryUser",
    "UserView",
]

#: The cut-off of the paired comparison.
NDCG_K = 10


class Listed(BaseModel):
    """One item of an ordered list as the page shows it."""

    id: str
    title: str
    score: float | None = None
    source: str | None = None


class UserView(BaseModel):
    label: str
    history: list[Listed]
    profile: str | None = None
    target: Listed | None = None


class RenderResult(BaseModel):
    """The first call's messages for one user, and the first-stage candidates they were rendered for."""

    user: UserView
    messages: list[ChatMessage]
    first_stage: list[Listed]
    target_rank_first_stage: int | None = None
    note: str | None = None


class RunResult(RenderResult):
    """A run: every call sent (``calls``), the raw answer, how it parsed, and the reranked list."""

    calls: list[list[ChatMessage]] = Field(default_factory=list)
    reranked: list[Listed]
    target_rank_reranked: int | None = None
    raw_text: str | None = None
    parse_status: str
    repairs: list[str] = Field(default_factory=list)
    fallback: bool = False
    fallback_reason: str | None = None
    model: str | None = None
    template_hash: str | None = None


class TryUser(BaseModel):
    user_id: str
    target: Listed
    first_stage_rank: int | None
    reranked_rank: int | None
    fallback: bool
    fallback_reason: str | None = None


class TryResult(BaseModel):
    """A paired comparison on ``n`` held-out users; ranks are 0-based positions in the candidate list."""

    n: int
    k: int = NDCG_K
    candidates: int
    users: list[TryUser]
    first_stage: Interval
    reranked: Interval
    difference: Interval
    fallbacks: int
    resamples: int
    template_hash: str


class _RecordingChat:
    """A chat backend that notes every call's messages and passes it on to the shared backend it wraps.

    Closing it closes nothing: the wrapped backend belongs to the service's reranker."""

    def __init__(self, inner: ChatBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[list[ChatMessage]] = []

    @property
    def model(self) -> str:
        return self.inner.model

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        self.calls.append([dict(m) for m in messages])
        if choices is None:
            return await self.inner.achat(messages, max_tokens=max_tokens, json_schema=json_schema)
        return await self.inner.achat(messages, max_tokens=max_tokens, json_schema=json_schema, choices=choices)

    def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        self.calls.append([dict(m) for m in messages])
        if choices is None:
            return self.inner.chat(messages, max_tokens=max_tokens, json_schema=json_schema)
        return self.inner.chat(messages, max_tokens=max_tokens, json_schema=json_schema, choices=choices)


class Playground:
    """The actions behind the page, on one :class:`PlaygroundContext` (safe to call from several threads)."""

    def __init__(self, ctx: PlaygroundContext) -> None:
        self.ctx = ctx
        self.users = UserBook(ctx.dataset)

    # -- pieces -----------------------------------------------------------------------------------------------------
    @property
    def config(self) -> RerankConfig:
        """The settings templates render and run with (the defaults when the service has none: render-only)."""
        return self.ctx.config or RerankConfig()

    def pool_size(self, user: PickedUser, view: LiveView) -> int:
        """How many first-stage candidates the reranker sees: the recommender's setting, else the rerank config's."""
        wanted = view.recommender.candidates or self.config.candidates
        return min(wanted, len(view.catalog) - len(set(user.history.item_ids)))

    def first_stage(self, user: PickedUser, view: LiveView) -> list[Candidate]:
        """The candidates the reranker is shown: the library's pipeline without its LLM (``Recommender.recommend``),
        cut at the pool the pipeline with the LLM would retrieve."""
        first = view.recommender.with_reranker(None)
        ranking = first.recommend(user.history, profile=user.profile, k=self.pool_size(user, view))
        return [Candidate(id=item.id, score=item.score) for item in ranking.items]

    @staticmethod
    def _listed(view: LiveView, item_id: str, score: float | None = None, source: str | None = None) -> Listed:
        return Listed(id=item_id, title=view.catalog.get(item_id).title, score=score, source=source)

    def _user_view(self, user: PickedUser, view: LiveView) -> UserView:
        return UserView(
            label=user.label,
            history=[self._listed(view, i) for i in user.history.item_ids],
            profile=user.profile.text if user.profile else None,
            target=self._listed(view, user.target) if user.target else None,
        )

    def _method(self, template: PromptTemplate, catalog: Catalog) -> RerankMethod:
        """The configured method over the edited template (earlier chain steps keep theirs); a ConfigError when the
        method cannot read the template's ``output:``."""
        cfg = self.config
        kind = method_class(cfg.method)
        library = PromptLibrary(cfg.template_dir)
        earlier = [library.get(name) for name in kind.template_names(cfg.template)[:-1]]
        return kind(cfg, [*earlier, template], catalog)

    def _first_call(self, method: RerankMethod, template: PromptTemplate, request: RerankRequest) -> list[ChatMessage]:
        """The messages of the edited template's first call, as the method renders it for this request."""
        cfg = self.config
        shown = method.shown_orders(len(request.candidates), cfg.seed)[0]
        if isinstance(method, ChatMethod):
            chain = {name: f"(step {i}'s answer, filled in when run)" for i, name in enumerate(method.chain_names, 1)}
            return method.messages(template, request, shown, n=method.picks(len(shown)), chain=chain)
        if method.order_sensitive:  # the verbalizer: one window of labelled candidates per call
            return method.messages(template, request, shown[: cfg.window], n=1)
        return method.messages(template, request, shown[:1])  # pointwise: one candidate per call

    @staticmethod
    def _reranker(view: LiveView) -> Reranker:
        reranker = view.reranker()
        if reranker is None:
            raise ConfigError("the service has no LLM configured (no rerank settings), so templates cannot be run")
        return reranker

    @staticmethod
    def _rank(ids: Sequence[str], target: str | None) -> int | None:
        if target is None:
            return None
        return ids.index(target) if target in ids else None

    # -- actions ----------------------------------------------------------------------------------------------------
    def render(self, source: str, user: PickedUser) -> RenderResult:
        template = compile_source(source)
        view = self.ctx.view()
        return self._render(template, user, self.first_stage(user, view), view)

    def _render(
        self, template: PromptTemplate, user: PickedUser, candidates: list[Candidate], view: LiveView
    ) -> RenderResult:
        method = self._method(template, view.catalog)
        request = RerankRequest(history=user.history, profile=user.profile, candidates=candidates)
        note = None
        if isinstance(method, ChatMethod) and method.chain_names:
            note = "earlier chain steps' answers are placeholders here; run to see the real ones"
        return RenderResult(
            user=self._user_view(user, view),
            messages=self._first_call(method, template, request),
            first_stage=[self._listed(view, c.id, c.score, view.recommender.retriever.source) for c in candidates],
            target_rank_first_stage=self._rank([c.id for c in candidates], user.target),
            note=note,
        )

    def _clone(self, template: PromptTemplate, view: LiveView) -> tuple[Reranker, _RecordingChat | None]:
        base = self._reranker(view)
        if isinstance(base.method, ChatMethod):
            recorder = _RecordingChat(cast(ChatBackend, base.backend))
            return base.with_template(template, backend=recorder), recorder
        return base.with_template(template), None

    def run(self, source: str, user: PickedUser) -> RunResult:
        template = compile_source(source)
        view = self.ctx.view()
        candidates = self.first_stage(user, view)
        rendered = self._render(template, user, candidates, view)  # template faults surface before any request
        clone, recorder = self._clone(template, view)
        # The library's pipeline with the edited template's reranker: the pool, rerank and fallback the service uses.
        pipeline = view.recommender.with_reranker(clone)
        ranking = pipeline.recommend(user.history, profile=user.profile, k=len(candidates))
        reranked = [self._listed(view, i.id, i.score, i.source) for i in ranking.items]
        note = None if recorder is not None else "a scoring method's calls are not recorded: the first one, rendered"
        return RunResult(
            **rendered.model_dump(exclude={"note"}),
            note=note,
            calls=recorder.calls if recorder is not None else [rendered.messages],
            reranked=reranked,
            target_rank_reranked=self._rank(ranking.item_ids, user.target),
            raw_text=ranking.raw_text,
            parse_status=ranking.parse_status,
            repairs=ranking.repairs,
            fallback=ranking.fallback,
            fallback_reason=ranking.fallback_reason,
            model=ranking.model,
            template_hash=ranking.template_hash,
        )

    def try_users(self, source: str, n: int) -> TryResult:
        """The paired comparison on ``n`` held-out users (see module docstring); ``n`` is bounded by the context."""
        if not 1 <= n <= self.ctx.max_try_users:
            raise ConfigError(f"n must be between 1 and {self.ctx.max_try_users}, got {n}")
        template = compile_source(source)
        view = self.ctx.view()
        self._method(template, view.catalog)  # an output the method cannot read is an error before any user is run
        cases = self.users.cases()
        if not cases:
            raise ConfigError("the loaded dataset has no users with held-out events to try the template on")
        chosen = sample_users(cases, n, self.ctx.seed)
        picked = [self.users.picked(case) for case in chosen]
        pools = [self.pool_size(user, view) for user in picked]
        requests = [Request(user.history, user.profile) for user in picked]
        # Both orders through the library's pipeline: without the LLM (the first stage's list) and with the edited
        # template's reranker over the same pools.
        firsts = view.recommender.with_reranker(None).recommend_batch(requests, k=pools)
        lists = [[Candidate(id=item.id, score=item.score) for item in first.items] for first in firsts]
        clone, _ = self._clone(template, view)
        pipeline = view.recommender.with_reranker(clone)
        rankings: list[Ranking] = pipeline.recommend_batch(requests, k=pools, keys=[case.user_id for case in chosen])
        rows: list[TryUser] = []
        for case, user, cands, ranking in zip(chosen, picked, lists, rankings, strict=True):
            rows.append(
                TryUser(
                    user_id=case.user_id,
                    target=self._listed(view, user.target or ""),
                    first_stage_rank=self._rank([c.id for c in cands], user.target),
                    reranked_rank=self._rank(ranking.item_ids, user.target),
                    fallback=ranking.fallback,
                    fallback_reason=ranking.fallback_reason,
                )
            )
        metric = f"ndcg@{NDCG_K}"
        first = metric_values([r.first_stage_rank for r in rows], metric)
        reranked = metric_values([r.reranked_rank for r in rows], metric)
        indices = bootstrap_indices(len(rows), resamples=self.ctx.resamples, seed=self.ctx.seed)

        return TryResult(
            n=len(rows),
            candidates=int(np.max(pools)) if pools else 0,
            users=rows,
            first_stage=bootstrap_interval(first, indices),
            reranked=bootstrap_interval(reranked, indices),
            difference=paired_difference(reranked, first, indices),
            fallbacks=sum(r.fallback for r in rows),
            resamples=self.ctx.resamples,
            template_hash=template.hash,
        )
