"""Scoring candidates with a local LM's next-token logits instead of generated text.

Listwise (LlamaRec-style): candidates carry labels (A)…(T); one forward pass gives the logits of the first assistant
token, and the log-softmax over the label tokens is the ranking score. Pointwise: one yes/no question per candidate;
all those conversations share a long prefix (instructions, history), which is run once and its KV cache reused for
every candidate's suffix. Neither can fail to parse, which is why DESIGN.md §2 prefers them for local models.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zsgen.errors import ConfigError, LabelTokenError
from zsgen.lifecycle import Closing
from zsgen.llm.base import ChatMessage
from zsgen.llm.models import LoadedModel, load_causal_lm, render_chat

log = logging.getLogger(__name__)


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by every sequence."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for i in range(shortest):
        token = first[i]
        if any(s[i] != token for s in sequences[1:]):
            return i
    return shortest


class VerbalizerBackend(Closing):
    """Label and yes/no probabilities from a local causal LM, with no generation (a :class:`ScoringBackend`).

    Labels that are not single, distinct tokens raise :class:`LabelTokenError`, a ``ConfigError``: no retry or other
    user can fix them, so the reranker checks them with :meth:`check_labels` before it ranks anyone.
    """

    name = "verbalizer"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self._loaded: LoadedModel = load_causal_lm(model_dir, device=device, dtype=dtype)
        self.batch_size = batch_size
        #: Prompt tokens the model actually ran in the latest call (a shared prefix counts once). Under concurrent
        #: calls it belongs to whichever call finished last.
        self.last_prompt_tokens = 0
        self._lock = threading.Lock()  # one forward pass at a time: they would only compete for the same cores

    @property
    def model(self) -> str:
        return self._loaded.name

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(render_chat(self._loaded.tokenizer, messages))

    def label_token_ids(self, prompt: Sequence[int], labels: Sequence[str]) -> list[int]:
        """The single token each label is written as right after ``prompt``.

        A label is checked in context: the prompt followed by the label must tokenize as the prompt plus exactly one
        token. This catches labels that split into pieces ("10" → "1", "0") and labels that merge with what
        precedes them. The bare and the space-prefixed spellings differ in BPE vocabularies; only the bare one is
        what the model writes first after the generation prompt, so that is the one scored.
        """
        tokenizer = self._loaded.tokenizer
        if not labels:
            raise LabelTokenError("no labels given")
        if len(set(labels)) != len(labels):
            raise LabelTokenError(f"labels must be distinct, got {list(labels)}")
        prompt_text = tokenizer.decode(list(prompt), skip_special_tokens=False)
        base = tokenizer.encode(prompt_text, add_special_tokens=False)
        ids: list[int] = []
        for label in labels:
            if not label or label != label.strip():
                raise LabelTokenError(f"label {label!r} must be non-empty without surrounding spaces")
            full = tokenizer.encode(prompt_text + label, add_special_tokens=False)
            if len(full) != len(base) + 1 or full[: len(base)] != base:
                pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(label, add_special_tokens=False))
                raise LabelTokenError(
                    f"label {label!r} is not a single token for {self.model} after the generation prompt "
                    f"(it tokenizes as {pieces}); use shorter labels such as letters A-T"
                )
            ids.append(full[-1])
        if len(set(ids)) != len(ids):
            raise LabelTokenError(f"labels {list(labels)} map to repeated tokens for {self.model}")
        return ids

    def check_labels(self, messages: list[ChatMessage], labels: Sequence[str]) -> None:
        """Raise :class:`LabelTokenError` unless each label is one distinct token right after ``messages``."""
        self.label_token_ids(render_chat(self._loaded.tokenizer, messages), labels)

    def label_logprobs(self, messages: list[ChatMessage], labels: Sequence[str]) -> list[float]:
        """Log-probabilities of each label as the first assistant token, renormalised over the labels only."""
        import torch

        prompt = render_chat(self._loaded.tokenizer, messages)
        label_ids = self.label_token_ids(prompt, labels)
        with self._lock:
            logits = self._last_logits([prompt])[0]
            self.last_prompt_tokens = len(prompt)
        scores = torch.log_softmax(logits[label_ids].double(), dim=-1)
        return [float(x) for x in scores.tolist()]

    def yes_probabilities(
        self,
        conversations: list[list[ChatMessage]],
        *,
        yes: str = "Yes",
        no: str = "No",
        reuse_prefix: bool = True,
    ) -> list[float]:
        """P(yes) / (P(yes) + P(no)) as the first assistant token, for each conversation.

        The longest token prefix common to all conversations is run once; each chunk of suffixes then attends to a
        copy of its KV cache. Results match running each conversation alone (``reuse_prefix=False``, the slow
        reference) up to float rounding and do not depend on the order of ``conversations``.
        """
        import torch

        if not conversations:
            return []
        tokenizer = self._loaded.tokenizer
        prompts = [render_chat(tokenizer, messages) for messages in conversations]
        label_ids: list[int] | None = None
        for prompt in prompts:
            ids = self.label_token_ids(prompt, [yes, no])
            if label_ids is not None and ids != label_ids:
                raise LabelTokenError(f"{yes!r}/{no!r} tokenize differently across conversations")
            label_ids = ids
        assert label_ids is not None
        # Keep at least one token of every conversation out of the prefix: its logits are the ones we read.
        prefix_len = 0
        if reuse_prefix:
            prefix_len = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
        with self._lock:
            if reuse_prefix:
                logits = self._last_logits(prompts, prefix_len=prefix_len)
            else:
                logits = torch.cat([self._last_logits([p]) for p in prompts], dim=0)
            self.last_prompt_tokens = prefix_len + sum(len(p) - prefix_len for p in prompts)
        pair = logits[:, label_ids].double()
        return [float(x) for x in torch.softmax(pair, dim=-1)[:, 0].tolist()]

    def _last_logits(self, prompts: list[list[int]], *, prefix_len: int = 0) -> Any:
        """Next-token logits after each prompt, shape (len(prompts), vocab); prompts share ``prefix_len`` tokens.

        Suffixes are left-padded so that every row ends at the last column: the LM head then runs on one position
        per row (``logits_to_keep=1``) instead of the whole sequence, which dominates the cost for a 49k vocabulary.
        """
        import torch

        model = self._loaded.model
        device = self._loaded.device
        pad = int(self._loaded.tokenizer.pad_token_id)
        rows: list[Any] = []
        with torch.inference_mode():
            prefix_cache = None
            if prefix_len > 0:
                prefix = torch.tensor([prompts[0][:prefix_len]], device=device)
                prefix_cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
            for start in range(0, len(prompts), self.batch_size):
                chunk = [p[prefix_len:] for p in prompts[start : start + self.batch_size]]
                width = max(len(s) for s in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long, device=device)
                mask = torch.ones((len(chunk), prefix_len + width), dtype=torch.long, device=device)
                positions = torch.full((len(chunk), width), prefix_len, dtype=torch.long, device=device)
                for row, suffix in enumerate(chunk):
                    offset = width - len(suffix)
                    ids[row, offset:] = torch.tensor(suffix, device=device)
                    mask[row, prefix_len : prefix_len + offset] = 0
                    positions[row, offset:] = torch.arange(prefix_len, prefix_len + len(suffix), device=device)
                cache = copy_cache(prefix_cache, len(chunk)) if prefix_cache is not None else None
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    cache=cache,
                    use_cache=cache is not None,
                    logits_to_keep=1,
                )
                rows.append(out.logits[:, -1].float())
        return torch.cat(rows, dim=0)

    def __repr__(self) -> str:
        return f"VerbalizerBackend(model={self.model!r})"


def copy_cache(cache: Any, batch: int) -> Any:
    """A fresh cache holding ``cache``'s keys and values repeated ``batch`` times (a forward pass appends to it)."""
    import copy

    fresh = copy.deepcopy(cache)
    if batch > 1:
        fresh.batch_repeat_interleave(batch)
    return fresh
