"""Reranking methods: one class per method, each saying which templates it renders and what answer it reads.

A method is one *round*: the candidates shown in one order, the model asked, an order over the candidates read back.
The reranker runs the rounds, aggregates them and falls back; a method only knows its own prompts and answers.

Each class declares its :attr:`RerankMethod.steps` — the packaged template of each call and the ``output:`` that
call's answer must have — and the backend protocol it needs. Both are checked when the reranker is built, not per
user: a listwise method pointed at a template whose header says ``output: text`` is a :class:`ConfigError` naming
both, rather than an "unparseable" fallback for every user. The registry :data:`METHODS` replaces a list of names
plus a dispatch chain: adding a method is adding a class here.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from zsgen.catalog import Catalog
from zsgen.errors import BackendError, ConfigError, LLMError, ParseError
from zsgen.llm.base import ChatBackend, ChatMessage, Completion, ScoringBackend
from zsgen.rerank.aggregate import cosine_order, distinct_permutations, order_by
from zsgen.rerank.constraints import ranking_schema
from zsgen.rerank.labels import make_labels
from zsgen.rerank.parse import parse_ranking
from zsgen.rerank.prompt import build_messages, item_view
from zsgen.templates import OutputFormat, PromptTemplate, sample_variables
from zsgen.types import Candidate, History, Profile, Usage

if TYPE_CHECKING:
    from zsgen.rerank.config import RerankConfig

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "NIR",
    "ChatMethod",
    "InContext",
    "Listwise",
    "Pointwise",
    "Recency",
    "RerankMethod",
    "RerankRequest",
    "RoundFailure",
    "RoundResult",
    "ScoringMethod",
    "Step",
    "Verbalizer",
    "method_class",
]

BackendKind = Literal["chat", "scoring"]


@dataclass(frozen=True)
class Step:
    """One call of a method: its packaged template and the ``output:`` its header must declare."""

    template: str
    output: OutputFormat


@dataclass(frozen=True)
class RerankRequest:
    """One user's reranking request, as every round of every method sees it."""

    history: History
    profile: Profile | None
    candidates: Sequence[Candidate]

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.candidates]


@dataclass(frozen=True)
class RoundResult:
    """One shown order and what the model made of it, over candidate indices."""

    order: list[int]
    from_llm: set[int]
    usage: Usage
    scores: list[float] | None = None
    repairs: list[str] = field(default_factory=list)
    repaired: bool = False
    raw_text: str | None = None
    model: str | None = None


class RoundFailure(LLMError):
    """A round whose answer arrived but could not be used; keeps the text, tokens and model for the result."""

    def __init__(self, reason: str, *, raw_text: str, usage: Usage, model: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw_text = raw_text
        self.usage = usage
        self.model = model


class RerankMethod(ABC):
    """A reranking method, built once per reranker from its settings and its resolved templates."""

    #: The name in ``RerankConfig.method`` and on results.
    name: ClassVar[str]
    #: The calls of one round, in order. ``RerankConfig.template`` overrides the last step's template.
    steps: ClassVar[tuple[Step, ...]]
    #: Which backend protocol the method talks to, and the ``RerankConfig.backend`` names that provide it.
    backend_kind: ClassVar[BackendKind]
    backends: ClassVar[tuple[str, ...]]
    #: Whether the order the candidates are shown in can change the answer (bootstrap shuffles are pointless if not).
    order_sensitive: ClassVar[bool] = True

    def __init__(self, config: RerankConfig, templates: Sequence[PromptTemplate], catalog: Catalog) -> None:
        if len(templates) != len(self.steps):
            raise ConfigError(f"method {self.name!r} renders {len(self.steps)} template(s), got {len(templates)}")
        for number, (step, template) in enumerate(zip(self.steps, templates, strict=True), start=1):
            if template.output != step.output:
                where = f"step {number} of {len(self.steps)} of " if len(self.steps) > 1 else ""
                raise ConfigError(
                    f"template {template.name!r} ({template.path or 'in memory'}) declares output: {template.output}, "
                    f"but {where}method {self.name!r} reads output: {step.output}; pick a template made for it"
                )
        self.config = config
        self.templates = list(templates)
        self.catalog = catalog

    @classmethod
    def template_names(cls, override: str | None = None) -> list[str]:
        """The templates to load: the packaged ones, the last replaced by ``override`` if given."""
        names = [step.template for step in cls.steps]
        if override:
            names[-1] = override
        return names

    def check_backend(self, backend: ChatBackend | ScoringBackend) -> None:
        """Raise :class:`ConfigError` for a backend this method cannot use (called once, when it is built).

        The methods are looked up on the class, not with ``isinstance(backend, Protocol)``: on Python 3.11 that reads
        every protocol member of the instance, and reading ``OpenAIChatBackend.model`` may ask the server.
        """
        required = _CHAT_METHODS if self.backend_kind == "chat" else _SCORING_METHODS
        missing = [name for name in required if not callable(getattr(type(backend), name, None))]
        if missing:
            raise ConfigError(
                f"method {self.name!r} needs a {self.backend_kind} backend; {type(backend).__name__} lacks "
                f"{', '.join(missing)}"
            )

    def shown_orders(self, n: int, seed: int) -> list[list[int]]:
        """The orders the rounds show the candidates in (see :func:`zsgen.rerank.aggregate.distinct_permutations`)."""
        if not self.order_sensitive or (self.config.bootstrap == 1 and not self.config.shuffle):
            return [list(range(n))]
        return distinct_permutations(n, self.config.bootstrap, seed)

    @abstractmethod
    async def run_round(
        self, backend: ChatBackend | ScoringBackend, request: RerankRequest, shown: Sequence[int]
    ) -> RoundResult:
        """Ask the model once with the candidates in ``shown`` order; raise an :class:`LLMError` on a fault."""

    def messages(
        self,
        template: PromptTemplate,
        request: RerankRequest,
        shown: Sequence[int],
        *,
        n: int | None = None,
        chain: dict[str, str] | None = None,
    ) -> list[ChatMessage]:
        return build_messages(
            template,
            self.catalog,
            request.history,
            request.profile,
            request.ids,
            shown,
            history_length=self.config.history_length,
            label_style=self.config.label_style,
            n=n,
            chain=chain,
        )

    async def amessages(
        self,
        template: PromptTemplate,
        request: RerankRequest,
        shown: Sequence[int],
        *,
        n: int | None = None,
        chain: dict[str, str] | None = None,
    ) -> list[ChatMessage]:
        """:meth:`messages` for async code: a user's template (isolated, so its render waits on a worker process
        for up to the render limit) renders in a worker thread, never on the event loop; a packaged one inline."""
        if not template.isolated:
            return self.messages(template, request, shown, n=n, chain=chain)
        return await asyncio.to_thread(self.messages, template, request, shown, n=n, chain=chain)


_CHAT_METHODS = ("achat", "chat", "close", "aclose")
_SCORING_METHODS = ("label_logprobs", "yes_probabilities", "count_tokens", "check_labels", "close", "aclose")


class ChatMethod(RerankMethod):
    """Methods that read a generated answer: earlier steps' free text feeds later steps; the last step's answer is a
    ranked list of labels, parsed and repaired (duplicates dropped, missing candidates appended in cosine order)."""

    backend_kind = "chat"
    backends = ("openai", "local")
    #: The variable each earlier (``output: text``) step's answer is passed on as.
    chain_names: ClassVar[tuple[str, ...]] = ()

    async def run_round(
        self, backend: ChatBackend | ScoringBackend, request: RerankRequest, shown: Sequence[int]
    ) -> RoundResult:
        chat = cast(ChatBackend, backend)  # check_backend vetted it when the reranker was built
        usage = Usage()
        chain: dict[str, str] = {}
        for template, name in zip(self.templates[:-1], self.chain_names, strict=True):
            completion = await self._chat(chat, await self.amessages(template, request, shown, chain=chain))
            usage = usage.add(completion.usage)
            chain[name] = completion.text.strip()
        labels = make_labels(len(shown), self.config.label_style)
        picks = self.picks(len(shown))
        messages = await self.amessages(self.templates[-1], request, shown, n=picks, chain=chain)
        # The answer's shape for this call: these labels only, exactly `picks` of them (zsgen.rerank.constraints).
        choices = labels if picks == 1 else None
        completion = await self._chat(chat, messages, schema=ranking_schema(labels, picks), choices=choices)
        usage = usage.add(completion.usage)
        cut = completion.finish_reason == "length"
        if cut and not self.constrained(completion):
            raise RoundFailure("truncated", raw_text=completion.text, usage=usage, model=completion.model)
        titles = [item_view(self.catalog.get(request.candidates[index].id))["title"] for index in shown]
        # Missing candidates are appended in cosine order.
        cosine_rank = {index: rank for rank, index in enumerate(cosine_order(request.candidates))}
        fallback_positions = sorted(range(len(shown)), key=lambda pos: cosine_rank[shown[pos]])
        try:
            parsed = parse_ranking(completion.text, labels, titles, fallback_order=fallback_positions, expected=picks)
        except ParseError:
            raise RoundFailure("unparseable", raw_text=completion.text, usage=usage, model=completion.model) from None
        except Exception as exc:  # a parser bug some answer found: that answer is unusable, the batch goes on
            logger.error("parsing an answer failed unexpectedly (%s); treating it as unparseable", exc, exc_info=True)
            raise RoundFailure("unparseable", raw_text=completion.text, usage=usage, model=completion.model) from exc
        repairs = list(parsed.repairs)
        if cut:  # a constrained answer cut at the cap is a prefix of a valid ranking: its labels stand
            repairs.insert(0, f"answer cut at max_tokens after {parsed.from_llm} label(s)")
        if completion.unconstrained:
            repairs.insert(0, "the server rejected the structured-output constraint; answered without it")
        return RoundResult(
            order=[shown[pos] for pos in parsed.order],
            from_llm={shown[pos] for pos in parsed.order[: parsed.from_llm]},
            usage=usage,
            repairs=repairs,
            repaired=parsed.status == "repaired" or completion.unconstrained or cut,
            raw_text=completion.text,
            model=completion.model,
        )

    def constrained(self, completion: Completion) -> bool:
        """Whether a server decoded ``completion`` under the call's schema, so that everything in it up to a cut is
        labels in the right form. Only a free-running model's cut-off answer is unusable (it rambles, and a
        rambling answer may name candidates by accident); a constrained one cut at ``max_tokens`` is a prefix of a
        valid ranking."""
        return self.config.backend == "openai" and self.config.structured != "none" and not completion.unconstrained

    def picks(self, shown: int) -> int:
        """How many labels the last call asks for: ``RerankConfig.picks`` (default all), at most the shown ones."""
        return min(self.config.picks or shown, shown)

    def answer_schema(self, shown: int) -> dict[str, Any]:
        """The schema a call over ``shown`` candidates sends, for provenance (labels differ only by count)."""
        return ranking_schema(make_labels(shown, self.config.label_style), self.picks(shown))

    async def _chat(
        self,
        backend: ChatBackend,
        messages: list[ChatMessage],
        schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        try:
            if choices is None:  # backends written before ``choices`` existed keep working
                return await backend.achat(messages, max_tokens=self.config.max_tokens, json_schema=schema)
            return await backend.achat(messages, max_tokens=self.config.max_tokens, json_schema=schema, choices=choices)
        except (LLMError, ConfigError):
            raise
        except Exception as exc:  # a third-party backend's own fault is still a model fault: fall back, say why
            raise BackendError(f"backend raised {type(exc).__name__}: {exc}", reason="backend_exception") from exc


class Listwise(ChatMethod):
    """One call: the labelled candidates, answered with the labels best first."""

    name = "listwise"
    steps = (Step("listwise", "labels"),)


class Recency(ChatMethod):
    """Listwise, with the prompt naming the user's most recent item (LLMRank's recency cue)."""

    name = "recency"
    steps = (Step("recency", "labels"),)


class InContext(ChatMethod):
    """Listwise, after a worked example taken from the user's own history."""

    name = "in_context"
    steps = (Step("in_context", "labels"),)


class NIR(ChatMethod):
    """NIR's three-step chain: preferences, then representative history items, then the ranking."""

    name = "nir"
    steps = (
        Step("nir_preferences", "text"),
        Step("nir_representative", "text"),
        Step("nir_rank", "labels"),
    )
    chain_names = ("preferences", "representative")


class ScoringMethod(RerankMethod):
    """Methods that read next-token logits (a local model) or log-probabilities (an OpenAI-compatible server, through
    :class:`~zsgen.llm.openai_scoring.OpenAIScoringBackend`): nothing to parse, so nothing to repair."""

    backend_kind = "scoring"
    backends = ("verbalizer", "openai")

    def check_backend(self, backend: ChatBackend | ScoringBackend) -> None:
        """Also check, on a sample render of the template, that the labels this method reads are single tokens."""
        super().check_backend(backend)
        scorer = cast(ScoringBackend, backend)
        messages = self.templates[-1].render(**sample_variables())
        for labels in self.label_sets():
            scorer.check_labels(messages, labels)

    @abstractmethod
    def label_sets(self) -> list[list[str]]:
        """Every list of labels a round may score."""


class Verbalizer(ScoringMethod):
    """Listwise scoring in forward passes of ``window`` labelled candidates: label log-probabilities rank them."""

    name = "verbalizer"
    steps = (Step("verbalizer_listwise", "label_logits"),)

    def label_sets(self) -> list[list[str]]:
        window, total = self.config.window, self.config.candidates
        sizes = {min(window, total - start) for start in range(0, total, window)}
        return [make_labels(size, self.config.label_style) for size in sorted(sizes) if size > 0]

    async def run_round(
        self, backend: ChatBackend | ScoringBackend, request: RerankRequest, shown: Sequence[int]
    ) -> RoundResult:
        scorer = cast(ScoringBackend, backend)
        template = self.templates[-1]
        scores: dict[int, float] = {}
        calls = prompt_tokens = 0
        for start in range(0, len(shown), self.config.window):
            chunk = list(shown[start : start + self.config.window])
            messages = await self.amessages(template, request, chunk, n=1)
            labels = make_labels(len(chunk), self.config.label_style)
            logprobs = await _label_logprobs(scorer, messages, labels)
            calls += 1
            prompt_tokens += scorer.count_tokens(messages)
            for index, value in zip(chunk, logprobs, strict=True):
                scores[index] = float(value)
        values = [scores[i] for i in range(len(request.candidates))]
        order = order_by(values)
        return RoundResult(
            order=order,
            from_llm=set(order),
            usage=Usage(prompt_tokens=prompt_tokens, calls=calls),
            scores=values,
            model=scorer.model,
        )


class Pointwise(ScoringMethod):
    """One yes/no question per candidate; P(yes) ranks them. The shared prompt prefix runs once."""

    name = "pointwise"
    steps = (Step("pointwise", "yes_no"),)
    order_sensitive = False  # each candidate is scored alone

    def label_sets(self) -> list[list[str]]:
        return [["Yes", "No"]]

    async def run_round(
        self, backend: ChatBackend | ScoringBackend, request: RerankRequest, shown: Sequence[int]
    ) -> RoundResult:
        scorer = cast(ScoringBackend, backend)
        template = self.templates[-1]
        conversations = [await self.amessages(template, request, [index]) for index in range(len(request.candidates))]
        remote = getattr(scorer, "ayes_probabilities", None)
        if callable(remote):  # an HTTP scorer: one request per candidate, concurrently, on its own event loop
            probabilities = await remote(conversations)
        else:  # a local model: one batched forward pass in a worker thread, off the event loop
            probabilities = await asyncio.to_thread(scorer.yes_probabilities, conversations)
        values = [float(p) for p in probabilities]
        order = order_by(values)
        # Tokens in the prompts as written; prefix reuse (local) or prefix caching (server) computes fewer.
        prompt_tokens = sum(scorer.count_tokens(c) for c in conversations)
        return RoundResult(
            order=order,
            from_llm=set(order),
            usage=Usage(prompt_tokens=prompt_tokens, calls=len(conversations) if callable(remote) else 1),
            scores=values,
            model=scorer.model,
        )


async def _label_logprobs(scorer: ScoringBackend, messages: list[ChatMessage], labels: list[str]) -> list[float]:
    """Label log-probabilities from a scorer: awaited where it has an async form (HTTP), else in a worker thread (a
    local forward pass must not block the event loop that other users' requests run on)."""
    remote = getattr(scorer, "alabel_logprobs", None)
    if callable(remote):
        return cast(list[float], await remote(messages, labels))
    return await asyncio.to_thread(scorer.label_logprobs, messages, labels)


#: Every method by name.
METHODS: dict[str, type[RerankMethod]] = {
    cls.name: cls for cls in (Listwise, Recency, InContext, NIR, Verbalizer, Pointwise)
}


def method_class(name: str) -> type[RerankMethod]:
    """The method called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown rerank method {name!r} (known: {', '.join(METHODS)})") from None
