"""The LLM reranking stage: candidates in, a validated permutation out, never an exception for an LLM fault.

One round shows the candidates in some order, asks the model (chat answer or verbalizer logits), and reads back an
order over the candidates. Several rounds with genuinely different shuffles are aggregated by Borda count, because
small and large models alike favour positions (LLMRank). Every failure turns into the retrieval (cosine) order with
``fallback=True`` and a reason, so callers always get a usable ranking.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zsgen.catalog import Catalog
from zsgen.errors import BackendError, LabelTokenError, LLMError, ParseError
from zsgen.itemtext import display_title
from zsgen.labels import make_labels
from zsgen.parse import parse_ranking
from zsgen.prompts import PromptLibrary, PromptTemplate
from zsgen.types import Candidate, History, Item, Profile, RankedItem, Ranking, Source, Usage

logger = logging.getLogger(__name__)
T = TypeVar("T")

RerankMethod = Literal["listwise", "recency", "in_context", "nir", "verbalizer", "pointwise"]
BackendName = Literal["openai", "local", "verbalizer"]

#: Which packaged templates each method renders, in call order.
METHOD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "listwise": ("listwise",),
    "recency": ("recency",),
    "in_context": ("in_context",),
    "nir": ("nir_preferences", "nir_representative", "nir_rank"),
    "verbalizer": ("verbalizer_listwise",),
    "pointwise": ("pointwise",),
}
_VERBALIZER_METHODS = {"verbalizer", "pointwise"}
_RRF_K = 60.0

#: JSON schema sent to servers that accept structured output (``structured="json_schema"``).
RANKING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ranking": {"type": "array", "items": {"type": "string"}}},
    "required": ["ranking"],
    "additionalProperties": False,
}


class RerankConfig(BaseModel):
    """Everything that decides what the reranker asks and of whom. Secrets are not part of it."""

    model_config = ConfigDict(extra="forbid")

    method: RerankMethod = "listwise"
    backend: BackendName = "local"
    model: str | None = None
    base_url: str | None = None
    structured: Literal["json_schema", "json_object", "none"] = "none"
    template: str | None = Field(default=None, description="override the (last) template the method renders")
    template_dir: Path | None = None
    candidates: int = Field(default=20, ge=1)
    history_length: int = Field(default=10, ge=1)
    bootstrap: int = Field(default=1, ge=1, le=64)
    shuffle: bool = Field(default=False, description="show candidates shuffled even when bootstrap is 1")
    seed: int = 0
    fuse_cosine: float | None = Field(default=None, ge=0.0, le=1.0)
    label_style: Literal["letters", "numbers"] = "letters"
    window: int = Field(default=20, ge=2, description="verbalizer listwise window (labels per forward pass)")
    max_tokens: int = Field(default=256, ge=1)
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    concurrency: int = Field(default=8, ge=1)
    cache: Path | None = None

    @model_validator(mode="after")
    def _backend_fits_method(self) -> RerankConfig:
        needs_verbalizer = self.method in _VERBALIZER_METHODS
        if needs_verbalizer and self.backend != "verbalizer":
            raise ValueError(f"method {self.method!r} reads logits: use backend 'verbalizer'")
        if not needs_verbalizer and self.backend == "verbalizer":
            raise ValueError(f"backend 'verbalizer' supports methods 'verbalizer' and 'pointwise', not {self.method!r}")
        return self


class _RoundResult(BaseModel):
    """One shown order and what the model made of it, expressed over candidate indices."""

    order: list[int]
    from_llm: set[int]
    scores: list[float] | None = None
    repairs: list[str] = Field(default_factory=list)
    repaired: bool = False
    raw_text: str | None = None


def item_view(item: Item) -> dict[str, Any]:
    """The fields a template sees for one item (titles in natural form: "The Aristocats", not "Aristocats, The")."""
    return {
        "id": item.id,
        "title": display_title(item.title),
        "year": item.year,
        "genres": list(item.genres),
        "description": item.description,
    }


def distinct_permutations(n: int, rounds: int, seed: int) -> list[list[int]]:
    """``rounds`` seeded shuffles of ``range(n)``, pairwise different whenever ``n!`` allows it."""
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    result: list[list[int]] = []
    limit = 1
    for f in range(2, n + 1):
        limit *= f
        if limit >= rounds:
            break
    attempts = 0
    while len(result) < rounds:
        perm = list(range(n))
        rng.shuffle(perm)
        key = tuple(perm)
        attempts += 1
        if key in seen and len(seen) < limit and attempts < rounds * 100:
            continue
        seen.add(key)
        result.append(perm)
    return result


def borda(orders: Sequence[Sequence[int]], n: int) -> list[float]:
    """Borda points per candidate (n-1 for first place ... 0 for last), averaged over rounds."""
    points = [0.0] * n
    for order in orders:
        for position, index in enumerate(order):
            points[index] += n - 1 - position
    return [p / max(len(orders), 1) for p in points]


def weighted_rrf(orders: Sequence[Sequence[int]], weights: Sequence[float], n: int) -> list[float]:
    """Weighted reciprocal-rank fusion scores (k=60), for blending a weak model's order with cosine order."""
    scores = [0.0] * n
    for order, weight in zip(orders, weights, strict=True):
        for position, index in enumerate(order):
            scores[index] += weight / (_RRF_K + position + 1)
    return scores


def order_by(scores: Sequence[float]) -> list[int]:
    """Indices by descending score; ties keep the earlier (retrieval-order) candidate first."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def cosine_order(candidates: Sequence[Candidate]) -> list[int]:
    """The candidates' own order by their first-stage (cosine) scores: what a fault falls back to and what fusion blends
    with. Retrieval hands candidates over best first, so this is usually ``range(n)``; a caller that shows them in
    another order (an evaluation showing a generator's shuffled list) still gets cosine order back on a fault."""
    return order_by([c.score for c in candidates])


class Reranker:
    """Reranks retrieved candidates with an LLM; never raises for an LLM fault (see module docstring).

    User mistakes still raise: an unknown template, a template error, or verbalizer labels that are not single tokens
    for the model (a configuration problem that retrying cannot fix).
    """

    def __init__(
        self,
        config: RerankConfig | None = None,
        *,
        catalog: Catalog,
        backend: Any | None = None,
        api_key: str | None = None,
    ) -> None:
        self.config = config or RerankConfig()
        self.catalog = catalog
        self.library = PromptLibrary(self.config.template_dir)
        names = list(METHOD_TEMPLATES[self.config.method])
        if self.config.template:
            names[-1] = self.config.template
        self.templates: list[PromptTemplate] = [self.library.get(name) for name in names]
        self.template_name = "+".join(t.name for t in self.templates)
        digest = hashlib.sha256("".join(t.hash for t in self.templates).encode()).hexdigest()[:16]
        self.template_hash = self.templates[0].hash if len(self.templates) == 1 else digest
        self._backend = backend
        self._api_key = api_key

    # -- backends -------------------------------------------------------------------------------------------------
    @property
    def backend(self) -> Any:
        """The model client, built on first use so that constructing a Reranker is cheap and loads nothing."""
        if self._backend is None:
            self._backend = self._build_backend()
        return self._backend

    def _build_backend(self) -> Any:
        from zsgen.cache import ResponseCache

        cfg = self.config
        cache = ResponseCache(cfg.cache) if cfg.cache else None
        if cfg.backend == "openai":
            from zsgen.llm import OpenAIChatBackend

            return OpenAIChatBackend(
                cfg.base_url,
                model=cfg.model,
                api_key=self._api_key,
                timeout=cfg.timeout,
                max_retries=cfg.max_retries,
                concurrency=cfg.concurrency,
                structured=cfg.structured,
                cache=cache,
            )
        if cfg.backend == "local":
            from zsgen.llm import LocalChatBackend

            return LocalChatBackend(cfg.model, max_new_tokens=cfg.max_tokens, cache=cache)
        from zsgen.llm import VerbalizerBackend

        return VerbalizerBackend(cfg.model)

    @property
    def model_name(self) -> str | None:
        return getattr(self._backend, "model", None) if self._backend is not None else self.config.model

    # -- public API -----------------------------------------------------------------------------------------------
    def rerank(
        self,
        history: History,
        candidates: Sequence[Candidate],
        *,
        profile: Profile | None = None,
        seed: int | None = None,
    ) -> Ranking:
        """Rerank one user's candidates (synchronous form of :meth:`arerank`)."""
        return _run(self.arerank(history, candidates, profile=profile, seed=seed))

    def rerank_many(
        self,
        requests: Sequence[tuple[History, Sequence[Candidate], Profile | None]],
        *,
        seed: int | None = None,
    ) -> list[Ranking]:
        """Rerank many users; with a remote backend, requests run concurrently up to the configured bound."""

        async def all_users() -> list[Ranking]:
            tasks = [self.arerank(h, c, profile=p, seed=seed) for h, c, p in requests]
            return list(await asyncio.gather(*tasks))

        return _run(all_users())

    async def arerank(
        self,
        history: History,
        candidates: Sequence[Candidate],
        *,
        profile: Profile | None = None,
        seed: int | None = None,
    ) -> Ranking:
        start = time.perf_counter()
        candidates = list(candidates)
        variables = self._base_variables(history, profile)
        usage = Usage()
        rounds: list[_RoundResult] = []
        errors: list[str] = []
        failed_texts: list[str] = []
        if len(candidates) <= 1:
            return self._fallback(candidates, "fewer than two candidates", usage, start, parse_status="none")
        try:
            shown_orders = self._shown_orders(len(candidates), self.config.seed if seed is None else seed)
            for shown in shown_orders:
                try:
                    result, used = await self._one_round(variables, candidates, shown)
                except LabelTokenError:
                    raise
                except LLMError as exc:
                    errors.append(_reason(exc))
                    logger.info("rerank round failed: %s", exc)
                    if isinstance(exc, _RoundFailure):
                        usage = usage.add(exc.usage)
                        failed_texts.append(exc.raw_text)
                    continue
                usage = usage.add(used)
                rounds.append(result)
        except LabelTokenError:
            raise
        except LLMError as exc:  # failures outside a round (e.g. NIR's first steps)
            errors.append(_reason(exc))
        if not rounds:
            reason = errors[0] if errors else "no answer"
            ranking = self._fallback(candidates, reason, usage, start, parse_status="fallback")
            if failed_texts:
                ranking.raw_text = "\n---\n".join(failed_texts)
            return ranking
        return self._assemble(candidates, rounds, errors, usage, start)

    # -- internals ------------------------------------------------------------------------------------------------
    def _base_variables(self, history: History, profile: Profile | None) -> dict[str, Any]:
        recent = history.last(self.config.history_length)
        return {
            "history": [item_view(self.catalog.get(i)) for i in recent.item_ids],
            "profile": profile.text if profile is not None else None,
        }

    def _shown_orders(self, n: int, seed: int) -> list[list[int]]:
        if self.config.method == "pointwise":
            return [list(range(n))]  # pointwise scores do not depend on the order shown
        if self.config.bootstrap == 1 and not self.config.shuffle:
            return [list(range(n))]
        return distinct_permutations(n, self.config.bootstrap, seed)

    def _candidate_views(self, candidates: Sequence[Candidate], shown: Sequence[int]) -> list[dict[str, Any]]:
        labels = make_labels(len(shown), self.config.label_style)
        views = []
        for label, index in zip(labels, shown, strict=True):
            view = item_view(self.catalog.get(candidates[index].id))
            view["label"] = label
            views.append(view)
        return views

    async def _one_round(
        self, variables: dict[str, Any], candidates: Sequence[Candidate], shown: Sequence[int]
    ) -> tuple[_RoundResult, Usage]:
        method = self.config.method
        if method == "pointwise":
            return await self._pointwise_round(variables, candidates)
        if method == "verbalizer":
            return await self._verbalizer_round(variables, candidates, shown)
        return await self._chat_round(variables, candidates, shown)

    async def _chat_round(
        self, variables: dict[str, Any], candidates: Sequence[Candidate], shown: Sequence[int]
    ) -> tuple[_RoundResult, Usage]:
        usage = Usage()
        variables = dict(variables)
        for template in self.templates[:-1]:  # NIR's chain: each step's answer feeds the next
            completion = await self._chat(template.render(**variables))
            usage = usage.add(completion.usage)
            key = "preferences" if "preferences" not in variables else "representative"
            variables[key] = completion.text.strip()
        views = self._candidate_views(candidates, shown)
        messages = self.templates[-1].render(**variables, candidates=views, n=len(views))
        completion = await self._chat(messages, schema=RANKING_SCHEMA)
        usage = usage.add(completion.usage)
        if completion.finish_reason == "length":
            raise _RoundFailure("truncated", raw_text=completion.text, usage=usage)
        labels = [v["label"] for v in views]
        titles = [v["title"] for v in views]
        # Missing candidates are appended in cosine order.
        cosine_rank = {index: rank for rank, index in enumerate(cosine_order(candidates))}
        fallback_positions = sorted(range(len(shown)), key=lambda pos: cosine_rank[shown[pos]])
        try:
            parsed = parse_ranking(
                completion.text, labels, titles, fallback_order=fallback_positions, expected=len(views)
            )
        except ParseError:
            raise _RoundFailure("unparseable", raw_text=completion.text, usage=usage) from None
        order = [shown[pos] for pos in parsed.order]
        from_llm = {shown[pos] for pos in parsed.order[: parsed.from_llm]}
        return (
            _RoundResult(
                order=order,
                from_llm=from_llm,
                repairs=list(parsed.repairs),
                repaired=parsed.status == "repaired",
                raw_text=completion.text,
            ),
            usage,
        )

    async def _chat(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> Any:
        try:
            return await self.backend.achat(messages, max_tokens=self.config.max_tokens, json_schema=schema)
        except LLMError:
            raise
        except Exception as exc:
            logger.warning("backend raised %s", type(exc).__name__)
            raise BackendError(f"backend raised {type(exc).__name__}: {exc}", reason="backend_exception") from exc

    async def _verbalizer_round(
        self, variables: dict[str, Any], candidates: Sequence[Candidate], shown: Sequence[int]
    ) -> tuple[_RoundResult, Usage]:
        template = self.templates[-1]
        scores: dict[int, float] = {}
        window = self.config.window
        calls = 0
        prompt_tokens = 0
        for start in range(0, len(shown), window):
            chunk = list(shown[start : start + window])
            views = self._candidate_views(candidates, chunk)
            messages = template.render(**variables, candidates=views, n=1)
            logprobs = await asyncio.to_thread(self.backend.label_logprobs, messages, [v["label"] for v in views])
            calls += 1
            prompt_tokens += self.backend.count_tokens(messages)
            for index, value in zip(chunk, logprobs, strict=True):
                scores[index] = float(value)
        values = [scores[i] for i in range(len(candidates))]
        order = order_by(values)
        return (
            _RoundResult(order=order, from_llm=set(order), scores=values),
            Usage(prompt_tokens=prompt_tokens, calls=calls),
        )

    async def _pointwise_round(
        self, variables: dict[str, Any], candidates: Sequence[Candidate]
    ) -> tuple[_RoundResult, Usage]:
        template = self.templates[-1]
        conversations = []
        for index in range(len(candidates)):
            view = item_view(self.catalog.get(candidates[index].id))
            conversations.append(template.render(**variables, candidate=view))
        probabilities = await asyncio.to_thread(self.backend.yes_probabilities, conversations)
        values = [float(p) for p in probabilities]
        order = order_by(values)
        # Tokens in the prompts as written; prefix reuse means fewer are actually computed.
        prompt_tokens = sum(self.backend.count_tokens(c) for c in conversations)
        return (
            _RoundResult(order=order, from_llm=set(order), scores=values),
            Usage(prompt_tokens=prompt_tokens, calls=1),
        )

    def _assemble(
        self,
        candidates: Sequence[Candidate],
        rounds: list[_RoundResult],
        errors: list[str],
        usage: Usage,
        start: float,
    ) -> Ranking:
        n = len(candidates)
        if len(rounds) == 1 and rounds[0].scores is not None:
            llm_scores = rounds[0].scores
        else:
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
            if rounds[0].scores is not None and len(rounds) == 1:
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
            **self._provenance(),
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
            **self._provenance(),
            usage=usage,
            timings={"rerank_s": time.perf_counter() - start},
        )

    def _provenance(self) -> dict[str, Any]:
        return {
            "method": self.config.method,
            "backend": self.config.backend,
            "model": self.model_name,
            "template": self.template_name,
            "template_hash": self.template_hash,
        }


class _RoundFailure(LLMError):
    """A round whose answer arrived but could not be used; keeps the text and tokens for the result."""

    def __init__(self, reason: str, *, raw_text: str, usage: Usage) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw_text = raw_text
        self.usage = usage


def _reason(exc: LLMError) -> str:
    if isinstance(exc, _RoundFailure | BackendError):
        return exc.reason
    if isinstance(exc, ParseError):
        return "unparseable"
    return type(exc).__name__


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, also when the caller already has an event loop running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
