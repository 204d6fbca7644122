"""The answer shape a listwise call may ask a server to enforce: the shown labels, and exactly how many of them.

A fixed schema such as ``{"ranking": array of strings}`` lets constrained decoding write anything inside the strings;
a small model then fills the array with placeholders and titles until the token cap and every user falls back. A
schema built for the candidates of one call — the labels as an ``enum`` and the number of picks as ``minItems`` =
``maxItems`` — leaves the model no way to name an item outside the candidate set or to stop early, so a served
model's answer can always be read; the parser then only has duplicates to repair.

``uniqueItems`` is deliberately absent: vLLM's grammar backend rejects it (HTTP 400 "Unimplemented keys"), which
would make every call fail. When a call asks for one label, a choice constraint (exactly one of the labels) is the
tighter form where a server offers one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["RANKING_KEY", "ranking_schema"]

#: The JSON key the packaged listwise templates ask the ranking under.
RANKING_KEY = "ranking"


def ranking_schema(labels: Sequence[str], picks: int) -> dict[str, Any]:
    """The JSON schema of an answer naming ``picks`` of ``labels``, best first: ``{"ranking": [label, ...]}``."""
    if not labels:
        raise ValueError("a ranking schema needs at least one label")
    if not 1 <= picks <= len(labels):
        raise ValueError(f"picks must be between 1 and {len(labels)}, got {picks}")
    return {
        "title": "ranking",
        "type": "object",
        "properties": {
            RANKING_KEY: {
                "type": "array",
                "items": {"type": "string", "enum": [str(label) for label in labels]},
                "minItems": picks,
                "maxItems": picks,
            }
        },
        "required": [RANKING_KEY],
        "additionalProperties": False,
    }
