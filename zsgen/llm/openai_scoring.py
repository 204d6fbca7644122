"""Logit scoring over HTTP: the verbalizer and pointwise methods against an OpenAI-compatible server.

The local :class:`~zsgen.llm.verbalizer.VerbalizerBackend` reads the next-token logits of a model in this process.
A server cannot hand out logits, but it can return the log-probabilities of the most likely first tokens: one
generated token (``max_tokens: 1``, temperature 0) with ``logprobs: true, top_logprobs: N``. A label's score is its
token's log-probability, renormalised over the labels only — exactly ``log_softmax(logits[labels])`` as the local
backend computes it, since any renormalisation or masking the server applies keeps the ratios between tokens.

**Restricting to the labels.** Among the top 20 tokens of the full vocabulary many are not labels ("The", "<"...), so
some labels would not come back. With ``restrict_choice`` the request carries vLLM's ``structured_outputs:
{"choice": labels}``; vLLM 0.32 then returns the top log-probabilities *after* the constraint (checked against the
real server: all 20 labels come back, with the same differences between them as without it). ``allowed_token_ids``
was tried and not used: it only restricts the returned log-probabilities when the server runs with ``--logprobs-mode
processed_logprobs`` and needs the labels' token ids, i.e. the server's tokenizer. A server that rejects the choice
constraint (HTTP 400 about it) is logged once and asked without it from then on.

**Labels that do not come back** get a floor: half the largest probability an absent token can have (no more than the
least likely returned token, no more than the probability mass the returned tokens leave). It always ranks below
every returned label, and absent labels tie among themselves (ties keep retrieval order).

**Servers without log-probabilities** (``transformers serve`` ignores ``logprobs``): a response without them is
``BackendError(reason="no_logprobs")``. The reranker's build-time label check (:meth:`check_labels`) sends one probe
request and raises :class:`LogprobsUnavailableError` (a ``ConfigError``) instead, so such a server is reported
before any user is ranked rather than every user falling back.

**Token checks and counts.** Where the server has vLLM's ``/tokenize`` endpoint, :meth:`check_labels` uses it to
check that each label is one token right after the generation prompt (as the local backend does with its tokenizer);
elsewhere that check is skipped and only the probe runs. :meth:`count_tokens` returns the ``prompt_tokens`` the
server reported for those very messages (remembered per request, also across the response cache), so counting costs
no request.

Client, keys, retries, the portal loop and the response cache are :class:`~zsgen.llm.openai_chat.OpenAIChatBackend`'s;
the cache stores the returned top log-probabilities, so a rerun with the same cache file sends no request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import openai
from pydantic import BaseModel, ValidationError

from zsgen._sync import arun_on_portal, on_portal, run_sync
from zsgen.cache import request_key
from zsgen.errors import BackendError, ConfigError, LabelTokenError, LogprobsUnavailableError
from zsgen.llm.base import ChatMessage
from zsgen.llm.chat_request import _count
from zsgen.llm.openai_chat import _SCHEMA_COMPLAINT, OpenAIChatBackend, _server_message

log = logging.getLogger(__name__)

__all__ = ["LogprobsUnavailableError", "OpenAIScoringBackend", "TokenLogprobs", "label_scores"]

#: What the OpenAI API and vLLM's default ``--max-logprobs`` allow.
DEFAULT_TOP_LOGPROBS = 20

#: Probe answers that say the configuration, not a passing fault, is wrong: they become a ConfigError at build time.
_TRANSIENT_REASONS = frozenset({"timeout", "connection", "server_error", "rate_limited"})

#: How many messages' prompt-token counts are remembered for :meth:`OpenAIScoringBackend.count_tokens`.
_REMEMBERED_COUNTS = 8192


class TokenLogprobs(BaseModel):
    """The first generated token's alternatives as the server returned them (what the response cache stores)."""

    top: list[tuple[str, float]]
    prompt_tokens: int
    model: str
    cached: bool = False


def label_scores(top: Sequence[tuple[str, float]], labels: Sequence[str]) -> tuple[list[float], list[str]]:
    """Log-probabilities of ``labels`` renormalised over the labels, and the labels that got the floor.

    A token returned twice (some servers list the chosen token among its alternatives) counts once, at its highest
    value. A label absent from ``top`` cannot be more likely than the least likely returned token, nor than the mass
    the returned tokens leave; its floor is half of that bound, so it ranks below every returned label.
    """
    if not top:
        raise ValueError("no token log-probabilities to score labels with")
    best: dict[str, float] = {}
    for token, logprob in top:
        if token not in best or logprob > best[token]:
            best[token] = logprob
    bound = min(best.values())
    left = 1.0 - sum(math.exp(v) for v in best.values())
    if left > 0.0:
        bound = min(bound, math.log(left))
    floor = bound - math.log(2.0)
    raw = [best.get(label, floor) for label in labels]
    peak = max(raw)
    total = peak + math.log(sum(math.exp(v - peak) for v in raw))
    return [v - total for v in raw], [label for label in labels if label not in best]


def _messages_digest(messages: list[ChatMessage]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class OpenAIScoringBackend(OpenAIChatBackend):
    """Label and yes/no probabilities from an OpenAI-compatible server's ``top_logprobs`` (a ``ScoringBackend``).

    See the module docstring for how labels are restricted, floored and checked. ``restrict_choice`` sends vLLM's
    ``structured_outputs`` choice constraint with every scoring request; a server that refuses the field (OpenAI's
    API with HTTP 400, ``transformers serve`` with 422) is asked without it from the first refusal on, so turning it
    off there only saves that one refused request. ``top_logprobs`` is capped by the server (20 on OpenAI; vLLM's
    ``--max-logprobs``). It is also a chat backend for the same server, as its base class. Other settings (timeout,
    retries, concurrency, cache, key) are :class:`~zsgen.llm.openai_chat.OpenAIChatBackend`'s.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
        restrict_choice: bool = True,
        **settings: Any,
    ) -> None:
        if top_logprobs < 1:
            raise ConfigError(f"top_logprobs must be >= 1, got {top_logprobs}")
        super().__init__(base_url, **settings)
        self.top_logprobs = top_logprobs
        self.restrict_choice = restrict_choice
        self._choice_rejected: str | None = None  # the server's words, once it refused the choice constraint
        self._probed = False
        self._counts: OrderedDict[str, int] = OrderedDict()
        #: Scoring requests actually sent to the server (cache hits excluded): what a rerun with a warm cache saves.
        self.requests_sent = 0
        #: Labels that were absent from a response's top log-probabilities and got the floor.
        self.floored_labels = 0
        self._warned_floor = False

    # -- the ScoringBackend protocol ----------------------------------------------------------------------------------

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """The prompt tokens the server reported for these messages (0 when they were never scored here)."""
        return self._counts.get(_messages_digest(messages), 0)

    def check_labels(self, messages: list[ChatMessage], labels: Sequence[str]) -> None:
        """Check, before any user, that the server returns log-probabilities and that each label is one token.

        The first call probes with one scoring request: no log-probabilities (or an HTTP 4xx) raises a ConfigError
        naming the server; a passing fault (connection, timeout, 5xx) is only logged, since every user would then
        fall back with its reason anyway. Labels are checked with ``/tokenize`` where the server has it. Called from
        the portal loop itself (an async caller's first use), the remote checks are skipped.
        """
        if not labels:
            raise LabelTokenError("no labels given")
        if len(set(labels)) != len(labels):
            raise LabelTokenError(f"labels must be distinct, got {list(labels)}")
        for label in labels:
            if not label or label != label.strip():
                raise LabelTokenError(f"label {label!r} must be non-empty without surrounding spaces")
        if on_portal():
            log.debug("check_labels called on the portal loop: remote label checks skipped")
            return
        run_sync(self._check_on_portal(messages, list(labels)))

    def label_logprobs(self, messages: list[ChatMessage], labels: Sequence[str]) -> list[float]:
        return run_sync(self._label_logprobs(messages, list(labels)))

    async def alabel_logprobs(self, messages: list[ChatMessage], labels: Sequence[str]) -> list[float]:
        """:meth:`label_logprobs` for async code (the reranker's methods use it: no thread per request)."""
        return await arun_on_portal(self._label_logprobs(messages, list(labels)))

    def yes_probabilities(
        self, conversations: list[list[ChatMessage]], *, yes: str = "Yes", no: str = "No"
    ) -> list[float]:
        return run_sync(self._yes_probabilities(conversations, yes, no))

    async def ayes_probabilities(
        self, conversations: list[list[ChatMessage]], *, yes: str = "Yes", no: str = "No"
    ) -> list[float]:
        """P(yes) / (P(yes) + P(no)) per conversation: one request each, up to ``concurrency`` at once.

        Each conversation is sent whole; a server with prefix caching (vLLM's default) computes their shared prefix
        once, which is why the pointwise template puts the candidate last.
        """
        return await arun_on_portal(self._yes_probabilities(conversations, yes, no))

    # -- on the portal loop ---------------------------------------------------------------------------------------

    async def _label_logprobs(self, messages: list[ChatMessage], labels: list[str]) -> list[float]:
        answer = await self._score(messages, labels)
        scores, absent = label_scores(answer.top, labels)
        self._note_floors(absent, len(labels))
        return scores

    async def _yes_probabilities(self, conversations: list[list[ChatMessage]], yes: str, no: str) -> list[float]:
        async def one(messages: list[ChatMessage]) -> float:
            lp_yes = (await self._label_logprobs(messages, [yes, no]))[0]
            return math.exp(lp_yes)  # already renormalised over the two: exp(yes) / (exp(yes) + exp(no))

        return list(await asyncio.gather(*(one(m) for m in conversations)))

    async def _score(self, messages: list[ChatMessage], labels: list[str]) -> TokenLogprobs:
        """One ``max_tokens: 1`` request with top log-probabilities, through the response cache and the retries."""
        model = await self.aresolve_model()
        restrict = self.restrict_choice and self._choice_rejected is None
        try:
            answer = await self._request(model, messages, labels if restrict else None)
        except BackendError as exc:
            if not (restrict and exc.reason == "schema_rejected"):
                raise
            if self._choice_rejected is None:
                self._choice_rejected = str(exc)
                log.error(
                    "%s; scoring requests are now sent without it (labels missing from the top log-probabilities "
                    "get the floor)",
                    exc,
                )
            answer = await self._request(model, messages, None)
        self._remember_count(messages, answer.prompt_tokens)
        return answer

    async def _request(self, model: str, messages: list[ChatMessage], choice: list[str] | None) -> TokenLogprobs:
        extras: dict[str, Any] = dict(self.extra_body or {})
        if choice is not None:
            extras["structured_outputs"] = {"choice": choice}
        key = request_key(
            backend="openai_scoring",
            base_url=self._cache_base_url,
            model=model,
            messages=messages,
            max_tokens=1,
            temperature=0.0,
            top_logprobs=self.top_logprobs,
            extra_body=extras or None,
        )
        hit = self._from_cache(key)
        if hit is not None:
            return hit
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            **extras,
        }

        async def attempt() -> bytes:
            client, semaphore = self._open()
            async with semaphore:
                self.requests_sent += 1
                return await client.post("/chat/completions", body=body, cast_to=bytes)

        raw = await self.retry.acall("scoring request", attempt, self._scoring_error(constrained=bool(choice)))
        answer = self._read_logprobs(raw, model)
        if self.cache is not None:
            self.cache.put(key, answer.model_dump(mode="json", exclude={"cached"}))
        return answer

    def _scoring_error(self, *, constrained: bool) -> Callable[[openai.OpenAIError, int], BackendError]:
        """The chat backend's error mapping, plus: a constrained request refused with HTTP 422 about the constraint
        is ``schema_rejected`` too (``transformers serve``: "Unexpected fields in the request: {'structured_outputs'}"),
        so the request is retried without the constraint and the server's real ability shows."""
        mapped = self._error("scoring request", constrained=constrained)

        def to_backend_error(exc: openai.OpenAIError, attempts: int) -> BackendError:
            if constrained and isinstance(exc, openai.APIStatusError) and exc.status_code == 422:
                said = _server_message(exc)
                if _SCHEMA_COMPLAINT.search(said):
                    return BackendError(
                        f"{self._shown_url} rejected the structured-output constraint (HTTP 422: {said})",
                        reason="schema_rejected",
                        attempts=attempts,
                    )
            return mapped(exc, attempts)

        return to_backend_error

    def _from_cache(self, key: str) -> TokenLogprobs | None:
        payload = self.cache.get(key) if self.cache is not None else None
        if payload is None:
            return None
        try:
            answer = TokenLogprobs.model_validate(payload)
        except ValidationError:
            return None
        return answer.model_copy(update={"cached": True}) if answer.top else None

    def _read_logprobs(self, raw: bytes, model: str) -> TokenLogprobs:
        """The first token's alternatives from a chat completion, or precisely why there are none."""
        where = self._shown_url or "api.openai.com"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BackendError(f"{where}: response is not JSON ({exc})", reason="malformed_response") from exc
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BackendError(f"{where}: response has no choices", reason="malformed_response")
        logprobs = choices[0].get("logprobs")
        if logprobs is None:
            raise BackendError(
                f"{where} returned no log-probabilities (the server ignores 'logprobs'): the verbalizer and pointwise "
                "methods need a server that returns them, such as vLLM",
                reason="no_logprobs",
            )
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        if not isinstance(content, list) or not content or not isinstance(content[0], dict):
            raise BackendError(f"{where}: 'logprobs' has no token entries", reason="malformed_response")
        first = content[0]
        top: list[tuple[str, float]] = []
        for entry in [first, *(first.get("top_logprobs") or [])]:
            token = entry.get("token") if isinstance(entry, dict) else None
            value = entry.get("logprob") if isinstance(entry, dict) else None
            if not isinstance(token, str) or isinstance(value, bool) or not isinstance(value, int | float):
                raise BackendError(
                    f"{where}: a log-probability entry is malformed: {str(entry)[:120]}", reason="malformed_response"
                )
            if not math.isfinite(value) or value > 1e-6:
                raise BackendError(f"{where}: log-probability {value!r} is not <= 0", reason="malformed_response")
            top.append((token, min(float(value), 0.0)))
        usage = data.get("usage")
        served = data.get("model")
        return TokenLogprobs(
            top=top,
            prompt_tokens=_count(usage.get("prompt_tokens")) if isinstance(usage, dict) else 0,
            model=served if isinstance(served, str) and served else model,
        )

    def _remember_count(self, messages: list[ChatMessage], prompt_tokens: int) -> None:
        digest = _messages_digest(messages)
        self._counts[digest] = prompt_tokens
        self._counts.move_to_end(digest)
        while len(self._counts) > _REMEMBERED_COUNTS:
            self._counts.popitem(last=False)

    def _note_floors(self, absent: list[str], total: int) -> None:
        if not absent:
            return
        self.floored_labels += len(absent)
        if not self._warned_floor:
            self._warned_floor = True
            hint = (
                "" if self.restrict_choice else "; restricting to the labels (restrict_labels = true, vLLM) avoids this"
            )
            log.warning(
                "%d of %d labels were not among the server's top %d log-probabilities and got the floor score%s",
                len(absent),
                total,
                self.top_logprobs,
                hint,
            )

    # -- build-time checks ----------------------------------------------------------------------------------------

    async def _check_on_portal(self, messages: list[ChatMessage], labels: list[str]) -> None:
        if not self._probed:
            try:
                await self._score(messages, labels)
            except BackendError as exc:
                if exc.reason == "no_logprobs":
                    raise LogprobsUnavailableError(
                        f"{self._shown_url or 'api.openai.com'} cannot return log-probabilities, which the "
                        f"verbalizer and pointwise methods read (vLLM and OpenAI's chat models return them; "
                        f"`transformers serve` does not): {exc}"
                    ) from exc
                if exc.reason not in _TRANSIENT_REASONS:
                    raise ConfigError(f"a probe scoring request to {self._shown_url} failed: {exc}") from exc
                log.warning("could not probe %s for log-probabilities (%s); going on", self._shown_url, exc)
                return
            self._probed = True
        await self._check_tokens(messages, labels)

    async def _check_tokens(self, messages: list[ChatMessage], labels: list[str]) -> None:
        """Each label one token after the generation prompt, by the server's ``/tokenize`` (skipped where absent)."""
        model = await self.aresolve_model()
        prompt = await self._tokenize({"model": model, "messages": messages, "add_generation_prompt": True})
        if prompt is None:
            return
        answered = [
            {
                "model": model,
                "messages": [*messages, {"role": "assistant", "content": label}],
                "add_generation_prompt": False,
                "continue_final_message": True,
            }
            for label in labels
        ]
        fulls = await asyncio.gather(*(self._tokenize(body) for body in answered))
        ids: list[int] = []
        for label, full in zip(labels, fulls, strict=True):
            if full is None or full[: len(prompt)] != prompt:
                log.info("the chat template renders an answer differently from the generation prompt; skipping")
                return
            if len(full) != len(prompt) + 1:
                raise LabelTokenError(
                    f"label {label!r} is not a single token for {model} at {self._shown_url} after the generation "
                    f"prompt (it adds {len(full) - len(prompt)} tokens); use shorter labels such as letters A-T"
                )
            ids.append(full[-1])
        if len(set(ids)) != len(ids):
            raise LabelTokenError(f"labels {labels} map to repeated tokens for {model}")

    async def _tokenize(self, body: dict[str, Any]) -> list[int] | None:
        """Token ids from vLLM's ``POST /tokenize`` (at the server root), or None where the server has no such route."""
        client, _ = self._open()
        root = str(client.base_url).rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        try:
            raw = await client.post(f"{root}/tokenize", body=body, cast_to=bytes)
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            log.info("no usable /tokenize at %s (%s): label token check skipped", self._shown_url, type(exc).__name__)
            return None
        try:
            tokens = json.loads(raw).get("tokens")
        except (ValueError, AttributeError):
            return None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            return None
        return [int(t) for t in tokens]

    def __repr__(self) -> str:
        return (
            f"OpenAIScoringBackend(base_url={self._shown_url!r}, model={self._model!r}, "
            f"top_logprobs={self.top_logprobs}, restrict_choice={self.restrict_choice}, "
            f"concurrency={self.concurrency}, max_retries={self.max_retries})"
        )
