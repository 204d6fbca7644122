"""The zsgen exception tree, written out in one place.

Every error zsgen raises on purpose derives from :class:`ZsgenError`, so callers can catch one class::

    ZsgenError
    ├── ConfigError            a setting, option or config file is wrong (raised when a component is built)
    │   └── LabelTokenError        verbalizer labels are not single, distinct tokens for this tokenizer
    ├── DataError              an input file or record is malformed (carries path / line / field)
    │   ├── DuplicateItemError     two catalog items share an id
    │   └── EmptyTextError         an item (or profile) has no text to embed
    ├── UnknownItemError       an id or title is not in the catalog (carries close matches)
    ├── EmptyHistoryError      neither history nor profile was given
    ├── InvalidKError          k is not positive or larger than the items that can be ranked
    ├── TemplateError          a prompt template is missing, has a syntax error or an undefined variable
    ├── EncoderError           an embedding model could not be loaded or answered badly
    └── LLMError               a language-model fault: never escapes ``Recommender.recommend``
        ├── BackendError           transport / HTTP / server failure after retries (incl. timeouts)
        └── ParseError             the answer could not be turned into a ranking

User mistakes (bad files, unknown ids, bad templates, settings that cannot work) raise, and configuration problems
raise as early as they can be seen: a reranking method pointed at a template whose ``output:`` it cannot read, or
verbalizer labels the model cannot produce, raise ``ConfigError`` when the reranker (or its backend) is built, before
any user is ranked. Every ``LLMError`` is caught by the reranker and turned into a cosine-order fallback whose reason
is recorded on the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ZsgenError(Exception):
    """Base class of every error zsgen raises deliberately."""


class ConfigError(ZsgenError):
    """A setting, CLI option or configuration file is invalid."""


class DataError(ZsgenError):
    """An input file or record is malformed.

    The location is kept in structured fields as well as in the message, so a caller can point at the exact spot.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        elif line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.reason = message


class DuplicateItemError(DataError):
    """Two items in a catalog share an id; silently keeping one would lose data."""


class EmptyTextError(DataError):
    """An item or profile has no text, so it cannot be embedded."""


class UnknownItemError(ZsgenError):
    """An item id or title is not in the catalog."""

    def __init__(self, key: str, *, suggestions: Sequence[str] = (), kind: str = "item") -> None:
        self.key = key
        self.suggestions = list(suggestions)
        hint = f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {kind} {key!r}{hint}")


class EmptyHistoryError(ZsgenError):
    """Neither a history nor a profile text was given: there is nothing to recommend from."""


class InvalidKError(ZsgenError):
    """k (or a candidate count) is not positive, or is larger than what can be ranked."""


class TemplateError(ZsgenError):
    """A prompt template is missing, does not parse, or uses a variable that was not supplied."""

    def __init__(
        self, message: str, *, template: str | None = None, line: int | None = None, limit: str | None = None
    ) -> None:
        self.template = template
        self.line = line
        #: What went wrong, without the ``template:line`` prefix.
        self.detail = message
        #: The resource limit a render crossed (``"time"``, ``"output size"``, ...), or None for any other fault.
        self.limit = limit
        where = template or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)


class EncoderError(ZsgenError):
    """An embedding model could not be loaded, or returned something unusable."""


class LLMError(ZsgenError):
    """A fault of the language-model stage. The recommender turns these into a flagged cosine fallback."""


class BackendError(LLMError):
    """The backend failed after retries: connection, timeout, HTTP status, refusal or an empty answer."""

    def __init__(self, message: str, *, reason: str = "backend_error", attempts: int | None = None) -> None:
        self.reason = reason
        self.attempts = attempts
        super().__init__(message)


class LabelTokenError(ConfigError):
    """Verbalizer labels must each be one token, all distinct; otherwise logits cannot be compared.

    A configuration problem (label style, window, template or model), not a model fault: it raises, found when the
    reranker's backend is built rather than as a fallback for every user.
    """


class LogprobsUnavailableError(ConfigError):
    """The server answers, but without log-probabilities (``transformers serve`` ignores ``logprobs``): the verbalizer
    and pointwise methods cannot read scores from it. Found by one probe request when the reranker's backend is built.
    """


class ParseError(LLMError):
    """The model's answer could not be read as a ranking of the candidates."""

    def __init__(self, message: str, *, raw_text: str = "") -> None:
        self.raw_text = raw_text
        super().__init__(message)
