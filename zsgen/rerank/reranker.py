"""The LLM reranking stage: candidates in, a validated permutation out, never an exception for an LLM fault.

One round shows the candidates in some order, asks the model through the configured method (:mod:`.methods`), and
reads back an order over the candidates. Several rounds with genuinely different shuffles are aggregated by Borda
count (:mod:`.aggregate`), because small and large models alike favour positions (LLMRank). Every
:class:`~zsgen.errors.LLMError` turns into the retrieval (cosine) order with ``fallback=True`` and a reason, so
callers always get a usable ranking. Configuration problems raise :class:`~zsgen.errors.ConfigError` instead, as
early as they can be seen: a template whose ``output:`` the method cannot read when the reranker is built, labels the
model cannot produce when its backend is built — before any user is ranked.

The synchronous API runs on zsgen's portal loop (:mod:`zsgen._sync`), so a remote backend's one HTTP client serves
every call; :meth:`Reranker.close` (or ``with``) releases it.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

from zsgen._sync import run_sync
from zsgen.catalog import Catalog
from zsgen.errors import BackendError, ConfigError, LLMError, ParseError, TemplateError
from zsgen.lifecycle import Closing
from zsgen.llm.base import ChatBackend, ScoringBackend
from zsgen.rerank.aggregate import borda, cosine_order, order_by, weighted_rrf
from zsgen.rerank.config import RerankConfig
from zsgen.rerank.methods import ChatMethod, RerankMethod, RerankRequest, RoundFailure, RoundResult, method_class
from zsgen.rerank.scope import call_scope
from zsgen.templates import PromptLibrary, PromptTemplate
from zsgen.types import Candidate, History, Profile, RankedItem, Ranking, Source, Usage

logger = logging.getLogger(__name__)

__all__ = ["Reranker"]


class Reranker(Closing):
    """Reranks retrieved candidates with an LLM; never raises for an LLM fault (see module docstring).

    User mistakes still raise: an unknown template, a template error, a template whose ``output:`` does not fit the
    method, or verbalizer labels that are not single tokens for the model (``ConfigError``, which retrying cannot fix).
    ``backend`` overrides the one ``config.backend`` would build (a :class:`~zsgen.llm.ChatBackend` for chat methods,
    a :class:`~zsgen.llm.ScoringBackend` for ``verbalizer`` / ``pointwise``); it is checked when first used.
    """

    def __init__(
        self,
        config: RerankConfig | None = None,
        *,
        catalog: Catalog,
        backend: ChatBackend | ScoringBackend | None = None,
        api_key: str | None = None,
    ) -> None:
        self.config = config or RerankConfig()
        self.catalog = catalog
        self.library = PromptLibrary(self.config.template_dir)
        kind = method_class(self.config.method)
        self._use_templates([self.library.get(name) for name in kind.template_names(self.config.template)])
        self._backend = backend
        self._backend_checked = False
        self._api_key = api_key
        self._last_model: str | None = None
        if backend is None and self.config.backend == "openai":
            # A remote client costs nothing to build (it connects on first use), and building it now reports a
            # missing key or an unusable response cache as the ConfigError it is, before any user is ranked.
            self._backend = self._build_backend()
        elif backend is None and self.config.cache is not None:
            self._cache_file_is_usable()

    def _use_templates(self, templates: list[PromptTemplate]) -> None:
        """Build the method over ``templates`` (a ConfigError if their ``output:`` does not fit it) and name them."""
        self.templates: list[PromptTemplate] = templates
        self.method: RerankMethod = method_class(self.config.method)(self.config, templates, self.catalog)
        self.template_name = "+".join(t.name for t in templates)
        digest = hashlib.sha256("".join(t.hash for t in templates).encode()).hexdigest()[:16]
        self.template_hash = templates[0].hash if len(templates) == 1 else digest

    def with_template(
        self, template: PromptTemplate, *, backend: ChatBackend | ScoringBackend | None = None
    ) -> Reranker:
        """A reranker like this one whose last template is ``template`` (one edited in memory, say).

        It talks to ``backend``, by default this reranker's own (built now if need be), so that trying many edits
        costs one HTTP client or one loaded model, not one each (the prompt playground, :mod:`zsgen.serve`). Closing
        the copy closes a shared backend too: close the original only. A template whose ``output:`` the method cannot
        read is the same :class:`ConfigError` as at construction.
        """
        clone = copy.copy(self)
        clone._use_templates([*self.templates[:-1], template])
        clone._backend = backend if backend is not None else self.backend
        clone._backend_checked = False  # a scoring method checks its labels on the new template's render
        return clone

    def _cache_file_is_usable(self) -> None:
        """Open (and close) the response cache once, so that a damaged file is a ConfigError now, not per user."""
        from zsgen.cache import ResponseCache

        if self.config.cache is not None:
            ResponseCache(self.config.cache).close()

    # -- backends -------------------------------------------------------------------------------------------------
    @property
    def backend(self) -> ChatBackend | ScoringBackend:
        """The model client, built (or a given one checked) on first use: constructing a Reranker loads no model.

        A remote (``openai``) backend is built with the reranker, since that costs nothing and reports a missing key
        or a damaged response cache early; a local one, which loads weights, is built here. Raises
        :class:`~zsgen.errors.ConfigError` for a backend the method cannot use, such as labels the verbalizer model
        cannot produce as single tokens.
        """
        if self._backend is None:
            self._backend = self._build_backend()
        if not self._backend_checked:
            self.method.check_backend(self._backend)
            self._backend_checked = True
        return self._backend

    def _build_backend(self) -> ChatBackend | ScoringBackend:
        from zsgen.cache import ResponseCache

        cfg = self.config
        cache = ResponseCache(cfg.cache) if cfg.cache else None
        if cfg.backend == "openai":
            # What reaching the server takes is the same for both kinds; what is asked of it differs.
            connection: dict[str, Any] = {
                "model": cfg.model,
                "api_key": self._api_key,
                "timeout": cfg.timeout,
                "max_retries": cfg.max_retries,
                "concurrency": cfg.concurrency,
                "cache": cache,
            }
            if self.method.backend_kind == "scoring":
                from zsgen.llm import OpenAIScoringBackend

                return OpenAIScoringBackend(
                    cfg.base_url, top_logprobs=cfg.top_logprobs, restrict_choice=cfg.restrict_labels, **connection
                )
            from zsgen.llm import OpenAIChatBackend

            return OpenAIChatBackend(
                cfg.base_url,
                structured=cfg.structured,
                structured_choice=cfg.structured_choice,
                on_schema_rejected=cfg.on_schema_rejected,
                **connection,
            )
        if cfg.backend == "local":
            from zsgen.llm import LocalChatBackend

            return LocalChatBackend(cfg.model, max_new_tokens=cfg.max_tokens, cache=cache)
        from zsgen.llm import VerbalizerBackend

        return VerbalizerBackend(cfg.model)

    def answer_schema(self) -> dict[str, Any] | None:
        """The answer schema a call over ``config.candidates`` candidates sends, or None when no constraint is sent
        (free-text methods, scoring methods, ``structured="none"``): for provenance and the response-cache docs."""
        if self.config.structured == "none" or not isinstance(self.method, ChatMethod):
            return None
        return self.method.answer_schema(self.config.candidates)

    @property
    def model_name(self) -> str | None:
        """The model that answered last (as the server named it), else the configured one."""
        return self._last_model or self.config.model

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the backend's connections (a remote client is reopened if the reranker is used again)."""
        if self._backend is not None:
            self._backend.close()

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()

    # -- public API -----------------------------------------------------------------------------------------------
    def rerank(
        self,
        history: History,
        candidates: Sequence[Candidate],
        *,
        profile: Profile | None = None,
        seed: int | None = None,
        key: str | None = None,
    ) -> Ranking:
        """Rerank one user's candidates (synchronous form of :meth:`arerank`)."""
        backend = self.backend  # built here, in the caller's thread: configuration errors raise before any request
        return run_sync(self._arerank(backend, history, candidates, profile=profile, seed=seed, key=key))

    def rerank_many(
        self,
        requests: Sequence[tuple[History, Sequence[Candidate], Profile | None]],
        *,
        seed: int | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[Ranking]:
        """Rerank many users; with a remote backend, requests run concurrently up to the configured bound.

        Users enter a few at a time (twice ``concurrency``), not all at once. Each renders its prompt and parses its
        answer on the portal loop, which also runs the HTTP client: 1,000 users started together rendered back to back
        for seconds on a loaded machine while the first requests' connect and read deadlines ran out, so requests
        the server never saw came back as timeouts and were retried (found by evaluation/perf/bench_faults.py).

        ``keys`` name the users (one per request): each user's calls are made inside its
        :class:`~zsgen.rerank.scope.CallScope`, which batch files use to name requests."""
        backend = self.backend
        if keys is not None and len(keys) != len(requests):
            raise ConfigError(f"rerank_many: {len(keys)} keys for {len(requests)} requests")
        names: Sequence[str | None] = keys if keys is not None else [None] * len(requests)
        in_flight = 2 * self.config.concurrency

        async def all_users() -> list[Ranking]:
            gate = asyncio.Semaphore(in_flight)  # made here, on the loop that uses it

            async def one(
                history: History, candidates: Sequence[Candidate], profile: Profile | None, key: str | None
            ) -> Ranking:
                async with gate:
                    return await self._arerank(backend, history, candidates, profile=profile, seed=seed, key=key)

            return list(await asyncio.gather(*(one(h, c, p, k) for (h, c, p), k in zip(requests, names, strict=True))))

        return run_sync(all_users())

    async def arerank(
        self,
        history: History,
        candidates: Sequence[Candidate],
        *,
        profile: Profile | None = None,
        seed: int | None = None,
        key: str | None = None,
    ) -> Ranking:
        """Rerank one user's candidates; a fault of the model gives cosine order with ``fallback=True``.

        ``key`` names the user for backends that label their requests (:mod:`zsgen.rerank.scope`)."""
        return await self._arerank(self.backend, history, candidates, profile=profile, seed=seed, key=key)

    def fallback_ranking(self, candidates: Sequence[Candidate], reason: str) -> Ranking:
        """The retrieval order flagged ``fallback=True`` with ``reason``, exactly as an LLM fault gives it: for a
        caller that gives up on the model itself (the HTTP service's per-request deadline)."""
        return self._fallback(candidates, reason, Usage(), time.perf_counter(), parse_status="fallback")

    # -- internals ------------------------------------------------------------------------------------------------
    async def _arerank(
        self,
        backend: ChatBackend | ScoringBackend,
        history: History,
        candidates: Sequence[Candidate],
        *,
        profile: Profile | None,
        seed: int | None,
        key: str | None = None,
    ) -> Ranking:
        with call_scope(key):  # a task of its own (gather), so the scope covers exactly this user's rounds
            return await self._arerank_scoped(backend, history, candidates, profile=profile, seed=seed)

    async def _arerank_scoped(
        self,
        backend: ChatBackend | ScoringBackend,
        history: History,
        candidates: Sequence[Candidate],
        *,
        profile: Profile | None,
        seed: int | None,
    ) -> Ranking:
        start = time.perf_counter()
        request = RerankRequest(history=history, profile=profile, candidates=list(candidates))
        if len(request.candidates) <= 1:
            return self._fallback(request.candidates, "fewer than two candidates", Usage(), start, parse_status="none")
        usage = Usage()
        rounds: list[RoundResult] = []
        errors: list[str] = []
        failed_texts: list[str] = []
        shown_orders = self.method.shown_orders(len(request.candidates), self.config.seed if seed is None else seed)
        for shown in shown_orders:
            try:
                result = await self.method.run_round(backend, request, shown)
            except LLMError as exc:
                errors.append(_reason(exc))
                logger.info("rerank round failed: %s", exc)
                if isinstance(exc, RoundFailure):
                    usage = usage.add(exc.usage)
                    failed_texts.append(exc.raw_text)
                    self._last_model = exc.model or self._last_model
                continue
            except ConfigError:
                raise
            except TemplateError as exc:  # a user's template failed or hit a limit for this user's data: say which
                errors.append("template_limit" if exc.limit is not None else "template_error")
                logger.warning("rerank round failed in its template: %s", exc)
                continue
            except Exception as exc:  # a backend or method fault of an unforeseen kind: this user falls back, not all
                errors.append("backend_exception")
                logger.error("rerank round failed unexpectedly: %s: %s", type(exc).__name__, exc, exc_info=True)
                continue
            usage = usage.add(result.usage)
            rounds.append(result)
            if result.model:
                self._last_model = result.model
        if not rounds:
            reason = errors[0] if errors else "no answer"
            raw = "\n---\n".join(failed_texts) if failed_texts else None
            return self._fallback(request.candidates, reason, usage, start, parse_status="fallback", raw_text=raw)
        return self._assemble(request.candidates, rounds, errors, usage, start)

    def _assemble(
        self,
        candidates: Sequence[Candidate],
        rounds: list[RoundResult],
        errors: list[str],
        usage: Usage,
        start: float,
    ) -> Ranking:
        n = len(candidates)
        single_scored = len(rounds) == 1 and rounds[0].scores is not None
        llm_scores = rounds[0].scores if single_scored and rounds[0].scores is not None else None
        if llm_scores is None:
            llm_scores = borda([r.order for r in rounds], n)
        llm_order = order_by(llm_scores)
        from_llm = set().union(*(r.from_llm for r in rounds))
        fused = self.config.fuse_cosine is not None and self.config.fuse_cosine > 0
        if fused:
            w = float(self.config.fuse_cosine or 0.0)
            final_scores = weighted_rrf([llm_order, cosine_order(candidates)], [1.0 - w, w], n)
            final_order = order_by(final_scores)
        else:
            final_order = llm_order
            if single_scored:
                final_scores = llm_scores
            else:  # rank-derived, strictly decreasing: trec_eval-style tools re-sort by score
                final_scores = [0.0] * n
                for position, index in enumerate(final_order):
                    final_scores[index] = (n - position) / n
        items = []
        for index in final_order:
            item = self.catalog.get(candidates[index].id)
            source: Source = "fusion" if fused else ("llm" if index in from_llm else "cosine")
            items.append(RankedItem(id=item.id, title=item.title, score=final_scores[index], source=source))
        repairs = [repair for r in rounds for repair in r.repairs]
        if errors:
            repairs.append(f"{len(errors)} of {len(errors) + len(rounds)} rounds failed: {', '.join(errors)}")
        repaired = any(r.repaired for r in rounds) or bool(errors)
        raw = rounds[0].raw_text if len(rounds) == 1 else "\n---\n".join(r.raw_text or "" for r in rounds)
        return Ranking(
            items=items,
            parse_status="repaired" if repaired else "ok",
            repairs=repairs,
            raw_text=raw if any(r.raw_text for r in rounds) else None,
            method=self.config.method,
            backend=self.config.backend,
            model=self.model_name,
            template=self.template_name,
            template_hash=self.template_hash,
            usage=usage,
            timings={"rerank_s": time.perf_counter() - start},
        )

    def _fallback(
        self,
        candidates: Sequence[Candidate],
        reason: str,
        usage: Usage,
        start: float,
        *,
        parse_status: Literal["fallback", "none"],
        raw_text: str | None = None,
    ) -> Ranking:
        if parse_status == "fallback":
            logger.warning("LLM rerank fell back to cosine order: %s", reason)
        items = [
            RankedItem(id=c.id, title=self.catalog.get(c.id).title, score=c.score, source="cosine")
            for c in (candidates[index] for index in cosine_order(candidates))
        ]
        return Ranking(
            items=items,
            fallback=parse_status == "fallback",
            fallback_reason=reason if parse_status == "fallback" else None,
            parse_status=parse_status,
            raw_text=raw_text,
            method=self.config.method,
            backend=self.config.backend,
            model=self.model_name,
            template=self.template_name,
            template_hash=self.template_hash,
            usage=usage,
            timings={"rerank_s": time.perf_counter() - start},
        )


def _reason(exc: LLMError) -> str:
    if isinstance(exc, RoundFailure | BackendError):
        return exc.reason
    if isinstance(exc, ParseError):
        return "unparseable"
    return type(exc).__name__
