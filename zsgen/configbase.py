"""The one base for zsgen's configuration models, and the one way their validation errors reach a user.

Configuration is pydantic so that a file, a dict and keyword arguments are checked by the same rules. pydantic's own
:class:`~pydantic.ValidationError` is the wrong thing for a user to see, though: it is a ``ValueError`` outside the
zsgen error tree, spans several lines and prefixes messages with "Value error,". :class:`StrictConfig` turns it into a
:class:`~zsgen.errors.ConfigError` at construction, with every problem located by its dotted key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from zsgen.errors import ConfigError

__all__ = ["StrictConfig", "error_location", "error_message", "validate_config", "validation_message"]

_Model = TypeVar("_Model", bound=BaseModel)


def error_message(error: Mapping[str, Any]) -> str:
    """The message of one pydantic error (an item of ``ValidationError.errors()``) as a user should read it.

    Without pydantic's "Value error, " prefixes; an unknown key says so; a wrong choice shows what was given. For
    callers that report the location their own way (the loaders put it in :class:`~zsgen.errors.DataError` fields).
    """
    message = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    kind = error.get("type")
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind in ("literal_error", "enum"):
        message = f"{message} (got {error.get('input')!r})"
    return message


def error_location(error: Mapping[str, Any]) -> str:
    """The dotted key of one pydantic error: ``rankers.2.kind``."""
    return ".".join(str(part) for part in error.get("loc", ()))


def _problem(error: Mapping[str, Any], prefix: str) -> str:
    where = error_location(error)
    message = error_message(error)
    if not where:
        return f"{prefix.rstrip('.')}: {message}" if prefix else message
    return f"{prefix}{where}: {message}"


def validation_message(exc: ValidationError, what: str = "", *, prefix: str = "") -> str:
    """One line: ``what: key.path: message; other.key: message`` — no pydantic prefixes, no URLs.

    ``prefix`` is put before every location, for a model validated as part of a larger file (``rankers.1.rerank.``).
    """
    problems = "; ".join(_problem(error, prefix) for error in exc.errors())
    return f"{what}: {problems}" if what else problems


def validate_config(model: type[_Model], data: Any, *, what: str, prefix: str = "") -> _Model:
    """``data`` validated as ``model``, any model (a :class:`StrictConfig` or not); problems raise :class:`ConfigError`
    with locations under ``prefix``. This is how a table nested in a file, but validated by its own model later
    (e.g. an evaluation ranker's ``rerank`` table), is checked early with its full location in the file."""
    try:
        return model.__pydantic_validator__.validate_python(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, what, prefix=prefix)) from None


class StrictConfig(BaseModel):
    """A configuration model: unknown keys are errors, and invalid values raise :class:`ConfigError`.

    ``_config_name`` names the model in messages (``invalid RerankConfig: candidates: ...``).
    """

    model_config = ConfigDict(extra="forbid")
    _config_name: ClassVar[str | None] = None

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(validation_message(exc, f"invalid {self._label()}")) from None

    # Marks this __init__ as pydantic's own: nested models are then validated by pydantic-core directly (keeping the
    # full location ``outer.inner.key`` in the one error the outermost model raises) instead of through __init__.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(validation_message(exc, f"invalid {cls._label()}")) from None

    @classmethod
    def _label(cls) -> str:
        return cls._config_name or cls.__name__
