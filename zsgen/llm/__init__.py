"""Model backends for reranking, under two protocols (:mod:`zsgen.llm.base`):

* :class:`ChatBackend` — :class:`OpenAIChatBackend` (any OpenAI-compatible server) and :class:`LocalChatBackend`
  (greedy ``transformers`` generation) answer chat messages with a :class:`Completion`;
* :class:`ScoringBackend` — :class:`VerbalizerBackend` scores labels and yes/no from a local model's next-token logits.

Model faults leave them only as :class:`zsgen.errors.BackendError`; labels a model cannot produce are a
:class:`zsgen.errors.LabelTokenError` (a ``ConfigError``). Every backend can be closed (``close``, ``aclose``, ``with``,
``async with``). The local backends import torch and transformers lazily, so ``import zsgen.llm`` stays light.
"""

from zsgen.llm.base import (
    BACKEND_ERROR_REASONS,
    Backend,
    ChatBackend,
    ChatMessage,
    Completion,
    ScoringBackend,
)
from zsgen.llm.local import LocalChatBackend
from zsgen.llm.models import default_local_model_dir, load_causal_lm
from zsgen.llm.openai_chat import OpenAIChatBackend
from zsgen.llm.verbalizer import VerbalizerBackend

__all__ = [
    "BACKEND_ERROR_REASONS",
    "Backend",
    "ChatBackend",
    "ChatMessage",
    "Completion",
    "LocalChatBackend",
    "OpenAIChatBackend",
    "ScoringBackend",
    "VerbalizerBackend",
    "default_local_model_dir",
    "load_causal_lm",
]
