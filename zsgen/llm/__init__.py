"""Model backends for reranking, under two protocols (:mod:`zsgen.llm.base`):

* :class:`ChatBackend` — :class:`OpenAIChatBackend` (any OpenAI-compatible server) and :class:`LocalChatBackend`
  (greedy ``transformers`` generation) answer chat messages with a :class:`Completion`;
* :class:`ScoringBackend` — :class:`VerbalizerBackend` scores labels and yes/no from a local model's next-token logits,
  :class:`OpenAIScoringBackend` from an OpenAI-compatible server's ``top_logprobs`` (vLLM, OpenAI).

Model faults leave them only as :class:`zsgen.errors.BackendError`; labels a model cannot produce are a
:class:`zsgen.errors.LabelTokenError` (a ``ConfigError``). Every backend can be closed (``close``, ``aclose``, ``with``,
``async with``). The local backends import torch and transformers lazily, so ``import zsgen.llm`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from zsgen.llm.base import (
    BACKEND_ERROR_REASONS,
    Backend,
    ChatBackend,
    ChatMessage,
    Completion,
    ScoringBackend,
)

if TYPE_CHECKING:
    from zsgen.llm.local import LocalChatBackend
    from zsgen.llm.models import default_local_model_dir, load_causal_lm
    from zsgen.llm.openai_chat import OpenAIChatBackend
    from zsgen.llm.openai_scoring import OpenAIScoringBackend
    from zsgen.llm.verbalizer import VerbalizerBackend

#: The backends load on first use: the protocols above are what the reranker needs at import time, and pulling in
#: the openai SDK (or torch) for every ``import zsgen.rerank`` would make the whole library heavy to import.
_LAZY = {
    "LocalChatBackend": "zsgen.llm.local",
    "OpenAIChatBackend": "zsgen.llm.openai_chat",
    "OpenAIScoringBackend": "zsgen.llm.openai_scoring",
    "VerbalizerBackend": "zsgen.llm.verbalizer",
    "default_local_model_dir": "zsgen.llm.models",
    "load_causal_lm": "zsgen.llm.models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zsgen.llm' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BACKEND_ERROR_REASONS",
    "Backend",
    "ChatBackend",
    "ChatMessage",
    "Completion",
    "LocalChatBackend",
    "OpenAIChatBackend",
    "OpenAIScoringBackend",
    "ScoringBackend",
    "VerbalizerBackend",
    "default_local_model_dir",
    "load_causal_lm",
]
