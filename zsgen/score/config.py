"""The fusion configuration: which signals, their parameters, their weights and how scores are combined.

It is a pydantic model that round-trips through TOML and JSON, so the weights chosen on a validation split can be
written into a resolved config and reused unchanged by ``zsgen recommend``. TOML is written by
:mod:`zsgen.tomlio`.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from zsgen.configbase import StrictConfig
from zsgen.errors import ConfigError
from zsgen.paths import data_dir
from zsgen.score.registry import SignalParams, signal_kind
from zsgen.tomlio import dumps, write_text_atomic

#: The kinds zsgen ships; others can be registered (:func:`zsgen.score.registry.register_signal`).
SignalKind = Literal[
    "text", "popularity", "cooccurrence", "user_filtering", "item_filtering", "llm", "group_popularity"
]
Normalisation = Literal["rank", "zscore", "minmax", "none"]
Method = Literal["weighted", "rrf"]
ParamValue = str | int | float | bool

#: Signals that cannot be computed without interaction logs (``llm`` depends on what generates its candidates).
LOG_KINDS: frozenset[str] = frozenset(
    {"popularity", "cooccurrence", "user_filtering", "item_filtering", "group_popularity"}
)

#: The fusion zsgen ships (in the package's data folder): the first stage used by default on data with a log.
PACKAGED_FUSION_FILE = "fusion_default.toml"


def packaged_fusion_path() -> Path:
    """Where the packaged default fusion lives; its header comment says which validation run chose its weights."""
    return data_dir() / PACKAGED_FUSION_FILE


class SignalConfig(StrictConfig):
    """One signal: its kind (registered in :mod:`zsgen.score.registry`) and its parameters, validated by that kind's
    own model, so a key of another kind is an error naming the key.

    An old spelling of a kind (``embedding``, ``cosine`` for ``text``) loads as the canonical one, with a
    :class:`DeprecationWarning`. Parameters cannot be null (TOML has no null): leave a key out to get the default.
    """

    kind: str
    params: SerializeAsAny[SignalParams] = Field(default_factory=SignalParams)

    @model_validator(mode="before")
    @classmethod
    def _typed_params(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("kind"), str):
            return data
        out = dict(data)
        try:
            spec = signal_kind(out["kind"])
        except ConfigError:
            # The kind's own check below names the key and the registered kinds; params of an unknown kind are moot.
            return {key: value for key, value in out.items() if key != "params"}
        out["kind"] = spec.name
        out["params"] = spec.validate_params(out.get("params"))
        return out

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        try:
            return signal_kind(kind).name
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class SearchSpace(StrictConfig):
    """A bounded weight search: never more than ``max_trials`` evaluated weight vectors.

    Trials, in order until the budget is spent: each signal alone; ``samples`` random vectors (each weight drawn
    from that signal's values, seeded); then coordinate ascent from the best so far — for each signal in turn,
    every value with the others fixed — for up to ``rounds`` passes or until a pass improves nothing. When the full
    grid fits the budget it is enumerated instead of the random and coordinate steps.
    """

    values: dict[str, list[float]] = Field(default_factory=dict, description="per-signal weight values")
    default_values: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0])
    samples: int = Field(default=0, ge=0)
    seed: int = 0
    max_trials: int = Field(default=400, ge=1, le=100_000)
    rounds: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _non_negative(self) -> SearchSpace:
        for name, values in [*self.values.items(), ("default_values", self.default_values)]:
            if not values or any(v < 0 or not math.isfinite(v) for v in values):
                raise ValueError(f"weight values for {name!r} must be a non-empty list of finite numbers >= 0")
        return self

    def values_for(self, signal: str) -> list[float]:
        return sorted(set(self.values.get(signal, self.default_values)))


class TuningRecord(StrictConfig):
    """Where the weights came from, written beside them so a reader knows they were not chosen on the test."""

    split: Literal["validation"] = "validation"
    metric: str
    value: float
    trials: int
    users: int
    source: str | None = None


class FusionConfig(StrictConfig):
    """Signals by name, their weights, and the combination.

    ``method="weighted"``: ``Σ weight · normalise(score)`` per user, with ``normalisation`` one of ``rank``
    (``1 - (r-1)/(n-1)``, r the 1-based rank, ties sharing the best rank), ``zscore`` (minus the user's mean over
    all items, divided by the standard deviation), ``minmax`` (to [0, 1]) or ``none``. ``method="rrf"``:
    weighted reciprocal-rank fusion ``Σ weight / (rrf_k + r)``. Statistics are over every catalog item, the user's
    history included (scorers do not mask it). A signal missing from ``weights`` has weight 0.
    """

    _config_name = "fusion config"

    signals: dict[str, SignalConfig]
    weights: dict[str, float] = Field(default_factory=dict)
    normalisation: Normalisation = "zscore"
    method: Method = "weighted"
    rrf_k: float = Field(default=60.0, gt=0)
    search: SearchSpace = Field(default_factory=SearchSpace)
    tuned: TuningRecord | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FusionConfig:
        if not self.signals:
            raise ValueError("at least one signal is required")
        unknown = sorted(set(self.weights) - set(self.signals))
        if unknown:
            raise ValueError(f"weights name unknown signals {unknown}; signals are {sorted(self.signals)}")
        bad = {k: v for k, v in self.weights.items() if v < 0 or not math.isfinite(v)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0; got {bad}")
        unknown = sorted(set(self.search.values) - set(self.signals))
        if unknown:
            raise ValueError(f"search.values name unknown signals {unknown}")
        return self

    def weight(self, signal: str) -> float:
        return float(self.weights.get(signal, 0.0))

    def active(self) -> list[str]:
        """Signals with a positive weight, in config order."""
        return [name for name in self.signals if self.weight(name) > 0]

    def with_weights(self, weights: Mapping[str, float], tuned: TuningRecord | None = None) -> FusionConfig:
        data = self.model_dump()
        data["weights"] = {name: float(weights.get(name, 0.0)) for name in self.signals}
        data["tuned"] = None if tuned is None else tuned.model_dump()
        return FusionConfig.model_validate(data)

    # -- serialisation --------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)

    def to_toml(self) -> str:
        return dumps(self.model_dump(mode="json"))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<fusion config>") -> FusionConfig:
        try:
            return cls.model_validate(dict(data))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<fusion config>") -> FusionConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "<fusion config>") -> FusionConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a fusion config must be a JSON object")
        return cls.from_mapping(data, source=source)

    @classmethod
    def packaged(cls) -> FusionConfig:
        """zsgen's default fusion, shipped with the package so that data with an interaction log gets the fused
        first stage without a tuning run. Its weights were chosen on ML-100K's validation split (full-catalog
        protocol, NDCG@10; the file's header comment names the run); per-user normalised weights transfer to other
        datasets only roughly, so ``zsgen tune`` on your own validation split can do better."""
        return cls.load(packaged_fusion_path())

    @classmethod
    def load(cls, path: str | Path) -> FusionConfig:
        """Read ``.toml`` or ``.json`` (by suffix)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read fusion config ({exc.strerror})") from None
        if path.suffix.lower() == ".json":
            return cls.from_json(text, source=str(path))
        return cls.from_toml(text, source=str(path))

    def save(self, path: str | Path) -> None:
        """Write ``.json`` or TOML (by suffix), atomically: a tuning run killed meanwhile leaves no half file."""
        path = Path(path)
        write_text_atomic(path, self.to_json() if path.suffix.lower() == ".json" else self.to_toml())
