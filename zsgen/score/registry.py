"""The signal registry: one name, one typed parameter model and one factory per signal kind.

Fusion configs, the scorers built from them and evaluation all find a kind here, so a new signal plugs in by
registering, without an if/elif anywhere to edit::

    class MyParams(SignalParams):
        neighbours: int = 20

    @register_signal("my_signal", MyParams, needs_logs=True)
    def _build(name: str, params: MyParams, resources: SignalResources) -> Scorer:
        return MyScorer(neighbours=params.neighbours, name=name)   # fitted later: fit(catalog, train)

A config's ``params`` table is validated by its kind's model (a key of another kind is an error naming the key);
an old spelling of a kind (``aliases``) loads as the canonical kind, with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import (
    BaseModel,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    create_model,
    model_serializer,
    model_validator,
)

from zsgen.configbase import StrictConfig
from zsgen.errors import ConfigError

if TYPE_CHECKING:
    import numpy.typing as npt

    from zsgen.embed.base import Encoder
    from zsgen.score.base import IndexArray, Scorer, UserQuery

logger = logging.getLogger(__name__)

__all__ = [
    "SignalKind",
    "SignalParams",
    "SignalResources",
    "register_signal",
    "signal_kind",
    "signal_kinds",
]


class SignalParams(StrictConfig):
    """Base of every kind's parameter model. Unknown keys are errors; only the keys a config set are written back
    (in the order it gave them), so an unset key keeps meaning "the scorer's default" and a resolved config reads
    like the file it came from."""

    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        out = handler(data)
        if isinstance(data, dict) and isinstance(out, SignalParams):
            out._order = tuple(str(key) for key in data)
        return out

    @model_serializer(mode="wrap")
    def _set_only(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        keys = [k for k in self._order if k in self.model_fields_set]
        keys += [k for k in data if k in self.model_fields_set and k not in keys]
        return {key: data[key] for key in keys if key in data}

    def given(self) -> dict[str, Any]:
        """The parameters the config set (what its ``params`` table says)."""
        out = self.model_dump()
        assert isinstance(out, dict)
        return out


@dataclass(frozen=True)
class SignalResources:
    """What a factory may use besides its parameters: the run's shared encoder or item vectors (text signals), and
    for a signal scoring candidate lists (the LLM) the candidate-scoring callable and the scorer listing them."""

    encoder: Encoder | None = None
    item_vectors: npt.ArrayLike | None = None
    llm: Callable[[UserQuery, IndexArray], Any] | None = None
    llm_candidates: Scorer | None = None


P = TypeVar("P", bound=SignalParams)


@dataclass(frozen=True)
class SignalKind(Generic[P]):
    """A registered kind. ``needs_logs``: fitting needs the interaction log (left out without one). ``uses_text``:
    reads the catalog's item text vectors (shared when several signals do). ``candidates``: scores the candidates
    of the other signals (the LLM signal; it needs another signal with positive weight)."""

    name: str
    params: type[P]
    factory: Callable[[str, P, SignalResources], Scorer]
    needs_logs: bool
    uses_text: bool = False
    candidates: bool = False
    aliases: tuple[str, ...] = ()
    config_model: type[BaseModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The kind's own config model (``kind``, ``params``): a config is validated by it, so a key of another
        # kind's parameters is refused with its location (``signals.NAME.params.KEY: unknown key``).
        model = create_model(
            f"{self.name}_signal",
            __base__=StrictConfig,
            kind=(str, self.name),
            params=(self.params, ...),
        )
        object.__setattr__(self, "config_model", model)

    def validate_params(self, params: Any) -> P:
        """``params`` (a mapping or model) as this kind's parameter model; pydantic errors keep their location."""
        if isinstance(params, self.params):
            return params
        if isinstance(params, SignalParams):
            params = params.given()
        checked = self.config_model.__pydantic_validator__.validate_python({"kind": self.name, "params": params or {}})
        value = checked.params
        assert isinstance(value, self.params)
        return value

    def build(self, name: str, params: SignalParams, resources: SignalResources) -> Scorer:
        """An unfitted scorer for a signal called ``name`` with ``params`` (validated again if not yet typed)."""
        return self.factory(name, self.validate_params(params), resources)


_KINDS: dict[str, SignalKind[Any]] = {}
_ALIASES: dict[str, str] = {}


Factory = Callable[[str, P, SignalResources], "Scorer"]


def register_signal(
    kind: str,
    params: type[P],
    *,
    needs_logs: bool,
    uses_text: bool = False,
    candidates: bool = False,
    aliases: tuple[str, ...] = (),
    replace: bool = False,
) -> Callable[[Factory[P]], Factory[P]]:
    """A decorator registering its factory as signal kind ``kind`` with parameter model ``params`` (or call it:
    ``register_signal("k", Params, needs_logs=True)(factory)``). A kind or alias already taken is an error unless
    ``replace``; the factory is returned unchanged."""

    def add(build: Factory[P]) -> Factory[P]:
        taken = [name for name in (kind, *aliases) if name in _KINDS or name in _ALIASES]
        if taken and not replace:
            raise ConfigError(f"signal kind {kind!r}: {taken} already registered")
        _KINDS[kind] = SignalKind(
            kind, params, build, needs_logs=needs_logs, uses_text=uses_text, candidates=candidates, aliases=aliases
        )
        for alias in aliases:
            _ALIASES[alias] = kind
        return build

    return add


def unregister_signal(kind: str) -> None:
    """Remove a registered kind and its aliases (for tests and plug-ins that replace themselves)."""
    spec = _KINDS.pop(kind, None)
    for alias in spec.aliases if spec is not None else ():
        _ALIASES.pop(alias, None)


def canonical_kind(kind: str, *, warn: bool = True) -> str:
    """The registered name of ``kind``; an old spelling maps to it, with a DeprecationWarning when ``warn`` (off where
    a caller already warned, or is looking a kind up rather than reading a user's file)."""
    if kind in _KINDS:
        return kind
    if kind in _ALIASES:
        canonical = _ALIASES[kind]
        if not warn:
            return canonical
        warnings.warn(
            f"signal kind {kind!r} is an old name of {canonical!r}; write {canonical!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        return canonical
    raise ConfigError(f"unknown signal kind (got {kind!r}); registered kinds: {', '.join(signal_kinds())}")


def signal_kind(kind: str, *, warn: bool = True) -> SignalKind[Any]:
    """The registered kind (by name or old spelling); unknown kinds raise :class:`ConfigError` listing the known."""
    return _KINDS[canonical_kind(kind, warn=warn)]


def signal_kinds() -> list[str]:
    """Every registered kind, sorted."""
    return sorted(_KINDS)
