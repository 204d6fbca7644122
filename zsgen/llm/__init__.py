"""Chat-model backends for reranking: an OpenAI-compatible client, a local ``transformers`` generator and a local
verbalizer that scores labels from next-token logits. They share :class:`Completion` and raise only
:class:`zsgen.errors.BackendError` / :class:`zsgen.errors.LabelTokenError` for model faults.

The local backends import torch and transformers lazily, so ``import zsgen.llm`` stays light.
"""

from zsgen.llm.base import BACKEND_ERROR_REASONS, ChatBackend, ChatMessage, Completion
from zsgen.llm.local import LocalChatBackend
from zsgen.llm.models import default_local_model_dir, load_causal_lm
from zsgen.llm.openai_chat import OpenAIChatBackend
from zsgen.llm.verbalizer import VerbalizerBackend

__all__ = [
    "BACKEND_ERROR_REASONS",
    "ChatBackend",
    "ChatMessage",
    "Completion",
    "LocalChatBackend",
    "OpenAIChatBackend",
    "VerbalizerBackend",
    "default_local_model_dir",
    "load_causal_lm",
]
