"""Keeping variables from posing as structure: role markers become a private separator in the template *source*,
and in every variable control characters, role-marker look-alikes and chat-template tokens (:data:`CHAT_TOKEN`)
become inert text, so item text or a profile can never open a chat turn of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from zsgen.errors import TemplateError

_MARKER_LINE = re.compile(r"^[ \t]*<<(system|user|assistant)>>[ \t]*$", re.MULTILINE)
# A private-use character: variables never keep it (_clean_text strips it), so only the template source can produce
# the separator. It must not be whitespace, or Jinja's "-%}" / "-#}" trimming would eat it.
_SEP = "\ue000"
_SPLIT = re.compile(f"{_SEP}{_SEP}(system|user|assistant){_SEP}{_SEP}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\x85]")
_MARKER_LOOKALIKE = re.compile(r"<<\s*(system|user|assistant)\s*>>", re.IGNORECASE)
# Role and control tokens of common chat templates, in any case: ChatML and Llama 3 style ``<|im_start|>`` (and
# DeepSeek's full-width ``<｜...｜>``), Llama 2 ``[INST]``/``<<SYS>>``/``<s>``, Mistral's bracketed control words,
# Gemma's ``<start_of_turn>``. A server renders messages through its own template, so item text holding these could
# open turns of its own there; a local backend also removes its tokenizer's exact special tokens (zsgen.llm.models).
CHAT_TOKEN = re.compile(
    r"<[|\uff5c][^<>|\uff5c\s]{0,64}[|\uff5c]>"
    r"|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|THINK)\]"
    r"|<</?SYS>>"
    r"|</?s>"
    r"|<(?:start_of_turn|end_of_turn|bos|eos|pad|unk)>",
    re.IGNORECASE,
)


def _mark_roles(source: str) -> str:
    """Replace role-marker lines by the private separator; the line count stays the same, so line numbers hold."""
    return _MARKER_LINE.sub(lambda m: f"{_SEP}{_SEP}{m.group(1)}{_SEP}{_SEP}", source)


def defuse_chat_token(token: str) -> str:
    """A visible, inert stand-in for a chat-template token: ``<|im_start|>`` becomes ``(im_start)``.

    The word stays readable (a description that quotes a token still says what it quoted) but no tokenizer or
    server template reads it as a control token any more.
    """
    core = token.strip("<>[]|\uff5c")
    return f"({core})" if core else "(token)"


def _clean_text(text: str, *, flatten: bool) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub(" ", text).replace(_SEP, "")
    text = _MARKER_LOOKALIKE.sub(lambda m: f"[{m.group(1).lower()}]", text)
    text = CHAT_TOKEN.sub(lambda m: defuse_chat_token(m.group()), text)
    if flatten:
        text = " ".join(text.split())
    return text


def _sanitise(value: Any, name: str, depth: int = 0) -> Any:
    """A plain-data copy of a variable with every string made safe to embed.

    Strings inside items (depth > 0) are flattened to one line: an item can then never start a line of the prompt,
    so it cannot pose as another candidate's line or as a marker. Top-level texts (profile, earlier chain answers)
    keep their line breaks but lose control characters and role-marker look-alikes.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _clean_text(value, flatten=depth > 0)
    if isinstance(value, BaseModel):
        return _sanitise(value.model_dump(), name, depth)
    if isinstance(value, Mapping):
        return {str(k): _sanitise(v, name, depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence):  # str was handled above
        return [_sanitise(v, name, depth + 1) for v in value]
    raise TemplateError(f"variable {name!r} holds a {type(value).__name__}; templates only get plain data")


def _split_messages(text: str, where: str) -> list[dict[str, str]]:
    parts = _SPLIT.split(text)
    if len(parts) == 1:
        content = text.strip()
        if not content:
            raise TemplateError("the template rendered no text", template=where)
        return [{"role": "user", "content": content}]
    if parts[0].strip():
        raise TemplateError(f"text before the first role marker: {parts[0].strip()[:60]!r}", template=where)
    messages: list[dict[str, str]] = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        content = content.strip()
        if not content:
            continue
        if messages and messages[-1]["role"] == role:  # many chat templates reject two turns of one role in a row
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{content}"
        else:
            messages.append({"role": role, "content": content})
    if not messages:
        raise TemplateError("the template rendered only empty messages", template=where)
    return messages
