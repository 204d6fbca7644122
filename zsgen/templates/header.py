"""The ``{#- zsgen ... -#}`` header that opens every prompt template: what it is for, which variables it reads and
what kind of answer it asks for (:data:`OUTPUT_FORMATS`).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel

from zsgen.errors import TemplateError

#: What the model is asked to produce, so the reranker knows how to read it.
#: ``labels``: a ranked list of candidate labels; ``text``: free text that feeds a later chain step;
#: ``label_logits``: one label, read from the next-token logits; ``yes_no``: "Yes"/"No" about one candidate.
OutputFormat = Literal["labels", "text", "label_logits", "yes_no"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

#: The variables the reranker can supply. A template declares the subset it reads.
KNOWN_VARIABLES: dict[str, str] = {
    "history": "list of items the user consumed, oldest first: {id, title, year, genres, description}",
    "candidates": "list of items to rank, in shown order: {label, id, title, year, genres, description}",
    "candidate": "one item of the same shape (pointwise templates)",
    "n": "how many labels to ask for",
    "profile": "free text about the user, or None (cold-start users have only this)",
    "preferences": "NIR step 1's answer",
    "representative": "NIR step 2's answer",
}

ROLES: tuple[str, ...] = ("system", "user", "assistant")
TEMPLATE_SUFFIX = ".jinja"

_HEADER = re.compile(r"\A\ufeff?\s*\{#-?[ \t]*zsgen[ \t]*:?[ \t]*\n(?P<body>.*?)-?#\}", re.DOTALL)
_HEADER_KEYS = ("description", "variables", "output", "answer")
_REQUIRED_KEYS = ("description", "variables", "output")


_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Header(BaseModel):
    description: str
    variables: tuple[str, ...]
    output: OutputFormat
    answer: str | None = None
    line: int  # where the header starts (for messages)


def _parse_header(source: str, where: str) -> _Header:
    """Read the ``{#- zsgen ... -#}`` comment that must open every template."""
    match = _HEADER.match(source)
    if not match:
        raise TemplateError(
            "missing header: the file must start with a '{#- zsgen' comment whose following lines give "
            "description, variables and output",
            template=where,
            line=1,
        )
    first_line = source.count("\n", 0, match.start("body")) + 1
    fields: dict[str, str] = {}
    lines: dict[str, int] = {}
    current: str | None = None
    for offset, raw in enumerate(match.group("body").splitlines()):
        line_no = first_line + offset
        if not raw.strip():
            continue
        if raw[:1] in (" ", "\t") and current is not None:  # continuation of the previous value
            fields[current] = f"{fields[current]} {raw.strip()}".strip()
            continue
        key, sep, value = raw.partition(":")
        key = key.strip()
        if not sep or not _VARIABLE_NAME.match(key):
            raise TemplateError(f"header line is not 'key: value': {raw.strip()!r}", template=where, line=line_no)
        if key not in _HEADER_KEYS:
            raise TemplateError(
                f"unknown header key {key!r} (known: {', '.join(_HEADER_KEYS)})", template=where, line=line_no
            )
        if key in fields:
            raise TemplateError(f"header key {key!r} given twice", template=where, line=line_no)
        fields[key] = value.strip()
        lines[key] = line_no
        current = key
    for key in _REQUIRED_KEYS:
        if not fields.get(key):
            raise TemplateError(f"header lacks {key!r}", template=where, line=first_line)
    output = fields["output"]
    if output not in OUTPUT_FORMATS:
        raise TemplateError(
            f"output {output!r} is not one of {', '.join(OUTPUT_FORMATS)}", template=where, line=lines["output"]
        )
    names = [v for v in re.split(r"[\s,]+", fields["variables"].strip().strip("[]")) if v]
    for name in names:
        if not _VARIABLE_NAME.match(name):
            raise TemplateError(f"bad variable name {name!r} in header", template=where, line=lines["variables"])
    if len(set(names)) != len(names):
        raise TemplateError("a variable is listed twice in the header", template=where, line=lines["variables"])
    return _Header(
        description=fields["description"],
        variables=tuple(names),
        output=output,  # checked against OUTPUT_FORMATS above; pydantic validates it again
        answer=fields.get("answer"),
        line=first_line,
    )
