"""A local causal LM as a chat backend: greedy generation through ``transformers``.

Runs without any server, which makes every reranking code path testable offline with the packaged SmolLM2. CPU
generation is slow, so ``max_new_tokens`` given here is a hard cap over what callers ask for, and generations run
one at a time (the model is shared; parallel generate calls would only fight for the same cores).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zsgen.cache import ResponseCache, request_key
from zsgen.errors import BackendError, ConfigError
from zsgen.llm.base import AsyncChatBackend, ChatMessage, Completion, completion_from_cache, store_completion
from zsgen.llm.models import LoadedModel, load_causal_lm, render_chat
from zsgen.types import Usage

log = logging.getLogger(__name__)


class LocalChatBackend(AsyncChatBackend):
    """Greedy chat completions from a local Hugging Face model folder (default: SmolLM2-135M-Instruct).

    ``json_schema`` and ``choices`` are accepted for interface compatibility and ignored: a plain ``generate`` cannot
    constrain its output, so callers validate the text as they must for any server. It opens no connections, so
    closing it is a no-op; the model lives as long as the object.
    """

    name = "local"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_new_tokens: int = 128,
        device: str = "cpu",
        dtype: str = "float32",
        cache: ResponseCache | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self._loaded: LoadedModel = load_causal_lm(model_dir, device=device, dtype=dtype)
        self.max_new_tokens = max_new_tokens
        self.cache = cache
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self._loaded.name

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Prompt tokens of ``messages`` as this backend would send them (chat template included)."""
        return len(render_chat(self._loaded.tokenizer, messages))

    async def achat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int = 256,
        json_schema: dict[str, Any] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Completion:
        """Generation in a worker thread, so an event loop driving several users stays responsive."""
        return await asyncio.to_thread(self._answer, messages, max_tokens)

    def _answer(self, messages: list[ChatMessage], max_tokens: int) -> Completion:
        limit = min(max_tokens, self.max_new_tokens)
        if limit < 1:
            raise ConfigError(f"max_tokens must be positive, got {max_tokens}")
        key = request_key(backend=self.name, model=self.model, messages=messages, max_tokens=limit, temperature=0.0)
        hit = completion_from_cache(self.cache, key)
        if hit is not None:
            return hit
        with self._lock:
            completion = self._generate(messages, limit)
        store_completion(self.cache, key, completion)
        return completion

    def _generate(self, messages: list[ChatMessage], limit: int) -> Completion:
        import torch

        tokenizer = self._loaded.tokenizer
        model = self._loaded.model
        prompt = render_chat(tokenizer, messages)
        input_ids = torch.tensor([prompt], device=self._loaded.device)
        eos = model.generation_config.eos_token_id
        eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        try:
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=limit,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                )
        except RuntimeError as exc:
            raise BackendError(f"local generation failed: {exc}", reason="server_error", attempts=1) from exc
        new_tokens = [int(t) for t in output[0, len(prompt) :].tolist()]
        stopped = bool(new_tokens) and new_tokens[-1] in eos_ids
        finish_reason = "stop" if stopped or len(new_tokens) < limit else "length"
        text = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        if not text:
            reason = "truncated" if finish_reason == "length" else "empty"
            raise BackendError(f"local model {self.model} returned no text", reason=reason, attempts=1)
        usage = Usage(prompt_tokens=len(prompt), completion_tokens=len(new_tokens), calls=1)
        return Completion(text=text, finish_reason=finish_reason, usage=usage, model=self.model)

    def __repr__(self) -> str:
        return f"LocalChatBackend(model={self.model!r}, max_new_tokens={self.max_new_tokens})"
