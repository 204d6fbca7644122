"""The ``custom_id`` of a batch request: which run, ranker, user and round asked it, with which template and body.

Format (every part percent-encoded, so a ``:`` inside a name cannot split it)::

    RUN:RANKER:USER:ROUND:TEMPLATE_HASH:BODY_DIGEST

* ``RUN`` — the evaluation's ``name`` (``--config``) or the ``--run`` name of a users file;
* ``RANKER`` — the LLM ranker's name in the config (``rerank`` for a users file);
* ``USER`` — the user id (a users file: its ``user_id``, else the line number);
* ``ROUND`` — the call's number for that user and ranker, from 0 (a bootstrap round of a single-call method);
* ``TEMPLATE_HASH`` — the prompt template's hash, as results and provenance record it;
* ``BODY_DIGEST`` — the first 12 hex digits of the sha256 of the request body (canonical JSON).

Answers are joined on the first four parts. The last two let an import see that the request it would make now is not
the one that was exported (an edited template, config or data file) and stop, instead of reading answers to other
questions.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from zsgen.errors import DataError

__all__ = ["RequestId", "body_digest"]

#: A round number as export writes it: ASCII digits only.
_ROUND = re.compile(r"[0-9]+")


def body_digest(body: dict[str, Any]) -> str:
    """12 hex digits identifying a request body (keys sorted, compact separators)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RequestId:
    """The parts of a ``custom_id`` (see the module docstring)."""

    run: str
    ranker: str
    user: str
    round: int
    template_hash: str
    digest: str

    @property
    def slot(self) -> tuple[str, str, str, int]:
        """What an answer is joined on: run, ranker, user, round."""
        return (self.run, self.ranker, self.user, self.round)

    def text(self) -> str:
        parts = (self.run, self.ranker, self.user, str(self.round), self.template_hash, self.digest)
        return ":".join(quote(part, safe="") for part in parts)

    @classmethod
    def parse(cls, text: str, *, where: str = "") -> RequestId:
        """The parts of ``text``, percent-decoded: ``u0`` and ``u%30`` are one user. The round must be ASCII digits
        (``str.isdigit`` also accepts ``²``, which ``int`` refuses)."""
        try:
            parts = [unquote(part, errors="strict") for part in text.split(":")]
        except UnicodeDecodeError:  # an escape export never writes (not UTF-8)
            parts = []
        if len(parts) != 6 or not _ROUND.fullmatch(parts[3]):
            raise DataError(f"{where + ': ' if where else ''}custom_id {text!r} was not written by zsgen batch export")
        run, ranker, user, number, template_hash, digest = parts
        return cls(run, ranker, user, int(number), template_hash, digest)
