"""Hyper-parameters of the trained baselines, as validated models: an evaluation config's ``[rankers.model]`` table.

Kept apart from the models so a config can be checked (and the defaults documented) without importing torch.
Defaults are small on purpose: they train in minutes on a laptop CPU for MovieLens-100K-sized logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from zsgen.configbase import StrictConfig, validate_config
from zsgen.errors import ConfigError

#: EASE's L2 weights tried on the validation split (Steck 2019 reports optima in the hundreds for MovieLens-sized
#: catalogs; the grid spans two orders of magnitude around that).
DEFAULT_L2_GRID = [10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]


class EASEConfig(StrictConfig):
    """EASE: ``l2`` is the grid of L2 weights searched on validation (one value: no search)."""

    _config_name = "EASE config"

    l2: list[float] = Field(default_factory=lambda: list(DEFAULT_L2_GRID), min_length=1)
    validation_k: int = Field(default=10, ge=1, description="the validation metric is NDCG at this cut-off")

    @model_validator(mode="after")
    def _positive(self) -> EASEConfig:
        if any(value <= 0 for value in self.l2):
            raise ValueError(f"l2 weights must be positive, got {self.l2}")
        self.l2 = sorted(set(self.l2))
        return self


class SASRecConfig(StrictConfig):
    """SASRec (Kang & McAuley 2018) trained with a full-softmax cross-entropy loss over every item at every position
    (the "SASRec+CE" of Klenitskiy & Vasilev 2023), early-stopped on validation NDCG@``validation_k``.

    ``seed`` ``None`` takes the evaluation run's seed. ``threads`` fixes torch's CPU thread count while training and
    scoring: the same seed and thread count give identical scores.
    """

    _config_name = "SASRec config"

    hidden: int = Field(default=64, ge=1)
    blocks: int = Field(default=2, ge=1)
    heads: int = Field(default=1, ge=1)
    max_length: int = Field(default=50, ge=2, description="most recent events the model reads")
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    epochs: int = Field(default=200, ge=1, description="most epochs")
    patience: int = Field(default=10, ge=1, description="epochs without a better validation NDCG before stopping")
    validation_k: int = Field(default=10, ge=1)
    seed: int | None = None
    threads: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> SASRecConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class HybridConfig(StrictConfig):
    """The LightFM-style hybrid yardstick (:mod:`zsgen.baselines.hybrid`): BPR, early-stopped on validation NDCG."""

    _config_name = "hybrid config"

    factors: int = Field(default=64, ge=1)
    lr: float = Field(default=5e-3, gt=0.0)
    l2: float = Field(default=1e-6, ge=0.0, description="Adam weight decay")
    batch_size: int = Field(default=1024, ge=1)
    epochs: int = Field(default=60, ge=1, description="most epochs")
    patience: int = Field(default=5, ge=1, description="epochs without a better validation NDCG before stopping")
    validation_k: int = Field(default=10, ge=1)
    seed: int | None = None
    threads: int = Field(default=1, ge=1)


def model_config(
    kind: str, table: Mapping[str, Any] | None, *, what: str = "", prefix: str = ""
) -> EASEConfig | SASRecConfig | HybridConfig:
    """The validated hyper-parameters of a trained ranker ``kind`` from its (optional) ``model`` table."""
    models: dict[str, type[EASEConfig] | type[SASRecConfig] | type[HybridConfig]] = {
        "ease": EASEConfig,
        "sasrec": SASRecConfig,
        "hybrid": HybridConfig,
    }
    if kind not in models:
        raise ConfigError(f"no trained baseline of kind {kind!r}; expected one of {sorted(models)}")
    return validate_config(models[kind], dict(table or {}), what=what or f"invalid {kind} model table", prefix=prefix)
