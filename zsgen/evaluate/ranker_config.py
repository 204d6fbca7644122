"""Each evaluation ranker kind's own typed config: a ``[[rankers]]`` table accepts only its kind's keys.

The ``kind`` key picks the model (a discriminated union whose members come from a registry, so a plug-in's kind
joins without an edit here):

- ``random`` and ``generator``: no options;
- ``fused``: a fusion config file and how to tune it (:class:`FusedRankerConfig`);
- ``llm``: a ``rerank`` table, checked as a :class:`zsgen.rerank.RerankConfig`, and token prices;
- ``ease``, ``sasrec``, ``hybrid``: an optional ``model`` table of the baseline's hyper-parameters;
- every registered signal kind (:mod:`zsgen.score.registry`: ``text``, ``popularity``, ``group_popularity``, ...):
  that signal's parameters as top-level keys (``user_vector = "mean"`` for ``text``), checked by its parameter model.

Old spellings of a signal kind (``cosine`` and ``embedding`` for ``text``) load as the registered name, with a
:class:`DeprecationWarning`. How each kind is built into a ranker lives in :mod:`zsgen.evaluate.build`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, NoReturn

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from zsgen.configbase import StrictConfig, error_message
from zsgen.errors import ConfigError

__all__ = [
    "FusedRankerConfig",
    "FusionOptions",
    "LLMRankerConfig",
    "PlainRankerConfig",
    "RankerConfig",
    "SignalRankerConfig",
    "TrainedRankerConfig",
    "ranker_config",
    "ranker_kinds",
    "register_ranker_kind",
]

#: Ranker kinds that train a model on the run's training split (:mod:`zsgen.baselines`); options in ``[rankers.model]``.
TRAINED_KINDS = ("ease", "sasrec", "hybrid")


def check_fusion(fused: bool, fusion: str | None, what: str, key: str) -> None:
    """A fused generator or ranker names a fusion file; nothing else does."""
    if fused and not fusion:
        raise ValueError(f"{what} needs `{key}`, the path of a fusion config")
    if not fused and fusion:
        raise ValueError(f"`{key}` is only for the fused generator or ranker")


class FusionOptions(StrictConfig):
    """A fused scorer (generator or ranker): a :class:`zsgen.score.config.FusionConfig` file and how to tune it.

    With ``tune`` (the default) the weights are searched on the validation split (each user's second-to-last event
    as target, the test event cut off) before anything is ranked; the tuned config is written to the output folder
    as ``fusion-NAME.toml``, where ``zsgen recommend --fusion`` can reuse it. ``tune = false`` uses the file's weights.
    """

    fusion: str | None = Field(default=None, description="fused: the fusion config (TOML or JSON)")
    tune: bool = Field(default=True, description="fused: tune the weights on the validation split first")
    tune_metric: str = Field(default="ndcg@10", description="fused: validation metric the tuning maximises")


class RankerConfig(StrictConfig):
    """What every ranker has: a unique ``name`` (its row in the report) and its ``kind``."""

    name: str = Field(min_length=1)
    kind: str


class PlainRankerConfig(RankerConfig):
    """``random`` (a per-user seeded shuffle of the list) and ``generator`` (the list's own order): no options."""

    kind: Literal["random", "generator"]


class FusedRankerConfig(FusionOptions, RankerConfig):
    """``fused``: the weighted fusion of signals in ``fusion`` (see :class:`FusionOptions`)."""

    kind: Literal["fused"]

    @model_validator(mode="after")
    def _names_a_fusion(self) -> FusedRankerConfig:
        check_fusion(True, self.fusion, f"ranker {self.name!r} of kind 'fused'", "fusion")
        return self


class LLMRankerConfig(RankerConfig):
    """``llm``: reranks the list through :class:`zsgen.rerank.Reranker` set up by the ``rerank`` table. The run fills
    in what the table leaves out (history length, list size, seed, the response cache in the output folder). Token
    prices give the report's cost column."""

    kind: Literal["llm"]
    rerank: dict[str, Any]
    cost_per_million_prompt_tokens: float = Field(default=0.0, ge=0.0)
    cost_per_million_completion_tokens: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="before")
    @classmethod
    def _needs_rerank(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("rerank") is None:
            raise ValueError(f"ranker {data.get('name')!r} of kind 'llm' needs a [rankers.rerank] table")
        return data


class TrainedRankerConfig(RankerConfig):
    """``ease``, ``sasrec`` and ``hybrid``: a baseline trained on the run's training split, with an optional ``model``
    table (:class:`zsgen.baselines.EASEConfig`, :class:`~zsgen.baselines.SASRecConfig`,
    :class:`~zsgen.baselines.config.HybridConfig`)."""

    kind: Literal["ease", "sasrec", "hybrid"]
    model: dict[str, Any] | None = Field(default=None, description="hyper-parameters of the model")

    @model_serializer(mode="wrap")
    def _without_unset_model(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("model") is None:
            data.pop("model", None)
        return data


class SignalRankerConfig(RankerConfig):
    """A registered signal kind ranking the list by its scores; its parameters are the table's other keys. Each kind
    gets a subclass holding its parameter model's fields (:func:`ranker_config`); only the keys a table set are
    written back, so an unset one keeps meaning "the signal's default"."""

    signal: ClassVar[str] = ""

    @model_serializer(mode="wrap")
    def _set_only(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        return {key: value for key, value in data.items() if key in ("name", "kind") or key in self.model_fields_set}

    @model_validator(mode="after")
    def _checked_by_the_signal(self) -> SignalRankerConfig:
        """The signal's own parameter model has the last word (its cross-field checks run here, at load)."""
        from zsgen.score.registry import signal_kind

        if self.signal:
            try:
                signal_kind(self.signal, warn=False).validate_params(self.params())
            except ValidationError as exc:
                raise ValueError("; ".join(error_message(error) for error in exc.errors())) from None
        return self

    def params(self) -> dict[str, Any]:
        """The signal parameters this table set, for the kind's parameter model."""
        return {key: getattr(self, key) for key in self.model_fields_set if key not in ("name", "kind")}


_KINDS: dict[str, type[RankerConfig]] = {
    "random": PlainRankerConfig,
    "generator": PlainRankerConfig,
    "fused": FusedRankerConfig,
    "llm": LLMRankerConfig,
    **dict.fromkeys(TRAINED_KINDS, TrainedRankerConfig),
}


def register_ranker_kind(kind: str, model: type[RankerConfig], *, replace: bool = False) -> None:
    """Make ``kind`` a ranker kind validated by ``model`` (build it by registering a builder for the model with
    :func:`zsgen.evaluate.build.build_ranker`). A signal kind is a ranker kind already, without this."""
    if kind in _KINDS and not replace:
        raise ConfigError(f"ranker kind {kind!r} is already registered")
    _KINDS[kind] = model


_SIGNAL_MODELS: dict[tuple[str, type[BaseModel]], type[SignalRankerConfig]] = {}


def _signal_ranker(kind: str, params: type[BaseModel]) -> type[SignalRankerConfig]:
    """The ranker model of a signal kind (one per parameter model: a kind registered again gets a new one)."""
    if (kind, params) in _SIGNAL_MODELS:
        return _SIGNAL_MODELS[kind, params]
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in params.model_fields.items() if name not in ("name", "kind")
    }
    fields["kind"] = (Literal[kind], ...)  # a literal of the registered name
    model = create_model(f"{kind}_ranker", __base__=SignalRankerConfig, **fields)
    model.signal = kind
    _SIGNAL_MODELS[kind, params] = model
    return model


def ranker_config(kind: str) -> type[RankerConfig]:
    """The config model of ranker ``kind`` (a registered ranker kind, or a signal kind by its registered name)."""
    if kind in _KINDS:
        return _KINDS[kind]
    from zsgen.score.registry import signal_kind

    spec = signal_kind(kind, warn=False)
    if spec.candidates:  # the LLM signal scores another signal's candidates: as a ranker, that is kind "llm"
        raise ConfigError(f"unknown ranker kind (got {kind!r})")
    return _signal_ranker(spec.name, spec.params)


def ranker_kinds() -> list[str]:
    """Every ranker kind: the registered ones, then the signal kinds (without the LLM signal)."""
    from zsgen.score.registry import signal_kind, signal_kinds

    return [*_KINDS, *(kind for kind in signal_kinds() if kind not in _KINDS and not signal_kind(kind).candidates)]


#: Keys every ranker table once had (one flat model held every kind's options), with the value the resolver wrote
#: when a table left them out. Results folders written before the per-kind models hold such keys at these values;
#: they are dropped where the kind has no such key, so those resolved configs still load and re-run.
LEGACY_DEFAULTS: dict[str, Any] = {
    "fusion": None,
    "tune": True,
    "tune_metric": "ndcg@10",
    "user_vector": None,
    "history_length": None,
    "rerank": None,
    "group_by": ["gender", "age"],
    "band_width": 10.0,
    "banded": ["age"],
    "cost_per_million_prompt_tokens": 0.0,
    "cost_per_million_completion_tokens": 0.0,
    "model": None,
}


def canonical_ranker_kind(kind: str) -> str:
    """``kind`` as registered: an old spelling of a signal kind becomes its name, with a DeprecationWarning."""
    if kind in _KINDS:
        return kind
    from zsgen.score.registry import canonical_kind

    return canonical_kind(kind)


def validate_ranker(data: Any, handler: ValidatorFunctionWrapHandler) -> RankerConfig:
    """One ``[[rankers]]`` table as its kind's model (a pydantic wrap validator: its errors keep their location,
    ``rankers.2.user_vector``, among the file's other problems)."""
    if isinstance(data, RankerConfig):
        return data
    if not isinstance(data, Mapping):
        raise ValueError(f"a ranker is a table (got {type(data).__name__})")
    table = dict(data)
    kind = table.get("kind")
    if not isinstance(kind, str):
        _fail("kind", kind, f"required, one of {', '.join(ranker_kinds())}")
    try:
        table["kind"] = canonical_ranker_kind(kind)
        model = ranker_config(table["kind"])
    except ConfigError:
        _fail("kind", kind, f"unknown ranker kind (got {kind!r}); one of {', '.join(ranker_kinds())}")
    for key, default in LEGACY_DEFAULTS.items():
        if key in table and key not in model.model_fields and _same(table[key], default):
            del table[key]
    value = model.__pydantic_validator__.validate_python(table)
    assert isinstance(value, RankerConfig)
    return value


def _fail(key: str, value: Any, message: str) -> NoReturn:
    detail = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=(key,), input=value)
    raise ValidationError.from_exception_data("ranker", [detail])


def _same(value: Any, default: Any) -> bool:
    return (value == default and type(value) is type(default)) or (isinstance(default, float) and value == default)


def legacy_form(ranker: RankerConfig, rename: Callable[[str], str]) -> dict[str, Any]:
    """The ranker as the one flat model dumped it (every key, ``kind`` as ``rename`` spells it): what run
    fingerprints are computed from, so a run folder written before the per-kind models still resumes."""
    dumped = ranker.model_dump(mode="json")
    flat = {key: value for key, value in LEGACY_DEFAULTS.items() if key != "model"}
    flat.update(dumped)
    flat["kind"] = rename(ranker.kind)
    return flat
