"""The one base for zsgen's configuration models, and the one way their validation errors reach a user.

Configuration is pydantic so that a file, a dict and keyword arguments are checked by the same rules. pydantic's own
:class:`~pydantic.ValidationError` is the wrong thing for a user to see, though: it is a ``ValueError`` outside the
zsgen error tree, spans several lines and prefixes messages with "Value error,". :class:`StrictConfig` turns it into a
:class:`~zsgen.errors.ConfigError` at construction, with every problem located by its dotted key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from zsgen.errors import ConfigError

__all__ = ["StrictConfig", "validation_message"]


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    kind = error.get("type")
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind in ("literal_error", "enum"):
        message = f"{message} (got {error.get('input')!r})"
    return f"{where}: {message}" if where else message


def validation_message(exc: ValidationError, what: str = "") -> str:
    """One line: ``what: key.path: message; other.key: message`` — no pydantic prefixes, no URLs."""
    problems = "; ".join(_problem(error) for error in exc.errors())
    return f"{what}: {problems}" if what else problems


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
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(validation_message(exc, f"invalid {cls._label()}")) from None

    @classmethod
    def _label(cls) -> str:
        return cls._config_name or cls.__name__
