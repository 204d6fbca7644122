"""Short labels that stand for candidates in a prompt.

Asking the model for labels rather than titles keeps answers short and parseable (DESIGN.md §2, lesson 5). Single
letters are one token in every tokenizer we met, which the verbalizer needs; past 26 candidates numbers take over.
"""

from __future__ import annotations

import string
from typing import Literal

from zsgen.errors import ConfigError, InvalidKError

LabelStyle = Literal["letters", "numbers"]


def make_labels(n: int, style: LabelStyle = "letters") -> list[str]:
    """Labels for ``n`` candidates: "A".."Z" when they suffice and letters are wanted, else "1".."n"."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidKError(f"number of labels must be a non-negative integer, got {n!r}")
    if style not in ("letters", "numbers"):
        raise ConfigError(f"unknown label style {style!r} (expected 'letters' or 'numbers')")
    if style == "letters" and n <= len(string.ascii_uppercase):
        return list(string.ascii_uppercase[:n])
    return [str(i) for i in range(1, n + 1)]
