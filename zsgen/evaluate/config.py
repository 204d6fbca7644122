"""What an evaluation run does, as a validated pydantic model read from TOML, and the resolved copy written beside it.

A config names the dataset, the protocol, the candidate generator, the rankers, the history length the prompt sees,
the user sample and the seed. A *protocol* is a named preset from the literature that fills in the candidate
generator and the history length; anything the file sets explicitly wins over the preset:

- ``full_catalog``: every item the user has not seen is a candidate.
- ``nir``: NIR's user-filtering candidates (12 neighbours including the user, top 19), history 8.
- ``llmrank``: LLMRank's target + 19 random unseen items, shuffled per user, history 50.
- ``custom``: no preset; the file must say which generator to use.
- ``cold_items`` / ``cold_users``: the cold-start protocols of :mod:`zsgen.evaluate.coldstart` (held-out items or
  users, several targets per user), set by the ``[cold]`` table; candidates are the full catalog (for cold items:
  every cold item).

Relative paths (the dataset, a template folder, a response cache) are resolved against the folder of the config
file first; if nothing exists there, against the current directory. The resolved config that a run writes names them
relative to its own folder (no machine paths in committed results; it still re-runs from anywhere), and the run's
provenance records the sha256 of the data files read.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SerializeAsAny, WrapValidator, field_validator, model_validator

from zsgen.configbase import StrictConfig, validate_config
from zsgen.errors import ConfigError
from zsgen.evaluate.ranker_config import (
    FusedRankerConfig,
    FusionOptions,
    LLMRankerConfig,
    RankerConfig,
    TrainedRankerConfig,
    check_fusion,
    legacy_form,
    validate_ranker,
)
from zsgen.loaders.spec import DatasetConfig, resolve_path
from zsgen.metrics.metrics import DEFAULT_KS
from zsgen.tomlio import read_toml, write_toml

GeneratorName = Literal["text", "user_filtering", "item_filtering", "popularity", "fused", "random", "full_catalog"]
#: Generators whose candidate recall at N the report can show (the score-based ones).
RecallGenerator = Literal["text", "user_filtering", "item_filtering", "popularity", "fused"]
#: A ``[[rankers]]`` table, validated by its kind's own model (:mod:`zsgen.evaluate.ranker_config`).
Ranker = Annotated[SerializeAsAny[RankerConfig], WrapValidator(validate_ranker)]

#: Presets; nested tables merge key by key under what the file says.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "full_catalog": {"history_length": 10, "candidates": {"generator": "full_catalog"}},
    "nir": {"history_length": 8, "candidates": {"generator": "user_filtering", "n": 19, "neighbours": 12}},
    "llmrank": {"history_length": 50, "candidates": {"generator": "random", "n": 20}},
    "custom": {},
    "cold_items": {"history_length": 10, "candidates": {"generator": "full_catalog"}},
    "cold_users": {"history_length": 10, "candidates": {"generator": "full_catalog"}},
    "mixed_items": {"history_length": 10, "candidates": {"generator": "full_catalog"}},
}
#: Protocols whose split is not leave-one-out (see zsgen.evaluate.coldstart).
COLD_PROTOCOLS: tuple[str, ...] = ("cold_items", "cold_users", "mixed_items")
#: Protocols whose fused scorers score items without interactions through their warm text neighbours, as the served
#: first stage does (zsgen.score.transfer.impute); elsewhere a fusion ranks exactly as its signals.
IMPUTING: tuple[str, ...] = ("cold_items", "mixed_items")

#: LLM rankers are for short lists; a longer one is almost surely a config mistake (e.g. full catalog).
MAX_LLM_CANDIDATES = 100


class CandidateConfig(FusionOptions):
    """The first stage. ``n`` is the length of the shown list (for ``random`` the target plus ``n - 1`` items)."""

    generator: GeneratorName
    n: int = Field(default=20, ge=1)
    neighbours: int = Field(default=12, ge=1, description="user/item filtering neighbourhood size")
    include_self: bool = Field(default=True, description="user filtering counts the user among the neighbours")
    user_vector: str | None = Field(default=None, description="embedding: how the history becomes a user vector")
    history_length: int | None = Field(
        default=None, ge=1, description="embedding: recent items in the user vector; item_filtering: items used"
    )

    @field_validator("generator", mode="before")
    @classmethod
    def _registered_name(cls, generator: Any) -> Any:
        return _registered_signal_name(generator)

    @model_validator(mode="after")
    def _fusion_only_for_fused(self) -> CandidateConfig:
        check_fusion(self.generator == "fused", self.fusion, "the fused generator", "candidates.fusion")
        return self


def _registered_signal_name(name: Any) -> Any:
    """A generator named by an old spelling of a signal kind (``embedding`` for ``text``) as the registry names it,
    with the registry's DeprecationWarning; other generator names (``random``, ``fused``, ...) are left as they are."""
    from zsgen.score.registry import canonical_kind

    if not isinstance(name, str):
        return name
    try:
        return canonical_kind(name)
    except ConfigError:
        return name


class ColdConfig(StrictConfig):
    """The cold-start protocols' options (see :mod:`zsgen.evaluate.coldstart`); ignored by the other protocols."""

    fraction: float = Field(default=0.2, gt=0, lt=1, description="share of items (or users) held out as cold")
    validation_fraction: float | None = Field(
        default=None, gt=0, lt=1, description="share of the warm items (users) forming the validation cold set"
    )
    history_events: int = Field(default=0, ge=0, description="cold_users: the first n events are the history")
    targets: int = Field(default=10, ge=0, description="cold_users: the next T events are the targets; 0: all")
    profile_fields: list[str] | None = Field(
        default=None, description="cold_users: user attributes in the profile text, in order; all when omitted"
    )


class MetricsConfig(StrictConfig):
    ks: list[int] = Field(default_factory=lambda: list(DEFAULT_KS))
    bootstrap: int = Field(default=1000, ge=0, description="bootstrap resamples for the 95% intervals (0: none)")
    baseline: str | None = Field(default=None, description="ranker the paired comparison is against")
    recall_at: list[int] = Field(
        default_factory=lambda: [10, 20, 50, 100, 200], description="list lengths N of the candidate recall table"
    )
    recall_generators: list[RecallGenerator] = Field(
        default_factory=list,
        description="generators whose recall at N the report shows, besides the run's own (fused: the candidates' "
        "fusion config, else the first fused ranker's)",
    )

    @field_validator("recall_generators", mode="before")
    @classmethod
    def _registered_names(cls, names: Any) -> Any:
        if not isinstance(names, list):
            return names
        return [_registered_signal_name(name) for name in names]

    @model_validator(mode="after")
    def _positive_ks(self) -> MetricsConfig:
        if not self.ks or any(k <= 0 for k in self.ks):
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")
        if not self.recall_at or any(n <= 0 for n in self.recall_at):
            raise ValueError(f"recall_at must be positive list lengths, got {self.recall_at}")
        self.ks = sorted(set(self.ks))
        self.recall_at = sorted(set(self.recall_at))
        return self


class EvalConfig(StrictConfig):
    """A whole run. See the module docstring for protocols and path resolution."""

    _config_name = "evaluation config"

    name: str = Field(min_length=1)
    description: str = ""
    protocol: Literal["full_catalog", "nir", "llmrank", "custom", "cold_items", "cold_users", "mixed_items"]
    dataset: DatasetConfig
    split: Literal["test", "validation"] = "test"
    history_length: int = Field(ge=1, description="most recent history items the prompt sees")
    min_history: int = Field(default=1, ge=0, description="users with fewer earlier events are not evaluated")
    users: int | None = Field(default=None, ge=1, description="seeded sample size; all users when omitted")
    seed: int = 0
    batch_users: int = Field(default=32, ge=1, description="users scored together between writes to the log")
    candidates: CandidateConfig
    rankers: list[Ranker] = Field(min_length=1)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    cold: ColdConfig = Field(default_factory=ColdConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_protocol(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        protocol = data.get("protocol")
        if protocol is None:
            raise ValueError(f"protocol is required; one of {sorted(PROTOCOLS)}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
        return _merge(PROTOCOLS[protocol], data)

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        names = [r.name for r in self.rankers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"ranker names must be unique; repeated: {duplicates}")
        if self.metrics.baseline is not None and self.metrics.baseline not in names:
            raise ValueError(f"metrics.baseline {self.metrics.baseline!r} is not a ranker; rankers are {names}")
        llm = [r.name for r in self.rankers if r.kind == "llm"]
        if llm and self.candidates.generator == "full_catalog":
            raise ValueError(f"LLM rankers {llm} cannot rank the full catalog; use a candidate generator")
        if llm and self.candidates.n > MAX_LLM_CANDIDATES:
            raise ValueError(f"LLM rankers {llm} get at most {MAX_LLM_CANDIDATES} candidates, n is {self.candidates.n}")
        if self.candidates.generator == "random" and self.candidates.n < 2:
            raise ValueError("the random generator needs n >= 2 (the target and at least one other item)")
        if self.protocol == "mixed_items" and self.candidates.generator != "full_catalog":
            raise ValueError("protocol mixed_items ranks the full catalog (candidates.generator = full_catalog)")
        if self.protocol == "cold_users" and self.candidates.generator != "full_catalog":
            raise ValueError("protocol cold_users ranks the full catalog (candidates.generator = full_catalog)")
        if self.protocol == "cold_items" and self.candidates.generator == "random":
            raise ValueError(
                "protocol cold_items lists every cold item (full_catalog) or a score-based shortlist of them"
            )
        if self.protocol in COLD_PROTOCOLS and self.split != "test":
            raise ValueError(f"protocol {self.protocol} evaluates the test split; its validation split tunes")
        if "fused" in self.metrics.recall_generators and self.fusion_source() is None:
            raise ValueError("metrics.recall_generators lists fused, but no generator or ranker names a fusion config")
        return self

    def fusion_source(self) -> str | None:
        """Whose fusion config a recall row ``fused`` uses: ``candidates``, else the first fused ranker's name."""
        if self.candidates.generator == "fused":
            return "candidates"
        return next((r.name for r in self.rankers if r.kind == "fused"), None)

    def recall_generators(self) -> list[str]:
        """Generators of the candidate recall table: the run's own (if score-based) and the configured extra ones."""
        own = [self.candidates.generator] if self.candidates.generator not in ("random", "full_catalog") else []
        return list(dict.fromkeys([*own, *self.metrics.recall_generators]))

    @property
    def baseline(self) -> str | None:
        """The paired-comparison baseline: the configured one, else the first cosine-order ranker."""
        if self.metrics.baseline is not None:
            return self.metrics.baseline
        return next((r.name for r in self.rankers if r.kind == "text"), None)

    def fingerprint(self) -> str:
        """A digest of everything that decides the results, to refuse resuming into another run's folder.

        File paths are left out: where the data or a fusion file lies on this machine does not decide the results,
        their contents do, and the runner adds those hashes. A run therefore resumes after it, or its data, moved.
        """
        portable = without_credentials(rewrite_paths(self, lambda _: "<path>"))  # a password decides nothing either
        payload = json.dumps(_fingerprint_form(portable), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _fingerprint_form(config: EvalConfig) -> dict[str, Any]:
    """The config as the digest sees it: in the form zsgen wrote before each ranker kind had its own model and the
    text signal one name (rankers flat with every key; ``cosine`` rankers, ``embedding`` generators). A run folder
    written then still resumes; the same settings spelt either way give the same digest."""
    data = config.model_dump(mode="json")
    data["rankers"] = [legacy_form(r, lambda kind: "cosine" if kind == "text" else kind) for r in config.rankers]
    old = {"text": "embedding"}
    data["candidates"]["generator"] = old.get(config.candidates.generator, config.candidates.generator)
    data["metrics"]["recall_generators"] = [old.get(name, name) for name in config.metrics.recall_generators]
    return data


def without_credentials(config: EvalConfig) -> EvalConfig:
    """A copy of ``config`` whose rerank tables' ``base_url`` has its password and secret query values masked."""
    from zsgen.redact import redact_url

    out = config.model_copy(deep=True)
    for ranker in out.rankers:
        if isinstance(ranker, LLMRankerConfig) and isinstance(ranker.rerank.get("base_url"), str):
            ranker.rerank["base_url"] = redact_url(ranker.rerank["base_url"])
    return out


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def rewrite_paths(config: EvalConfig, rewrite: Callable[[str], str]) -> EvalConfig:
    """A copy of ``config`` with every file setting (dataset, interaction log, fusion configs, rerank template folder
    and cache) passed through ``rewrite``."""
    out = config.model_copy(deep=True)
    out.dataset.path = rewrite(out.dataset.path)
    if out.dataset.interactions is not None:
        out.dataset.interactions = rewrite(out.dataset.interactions)
    if out.candidates.fusion is not None:
        out.candidates.fusion = rewrite(out.candidates.fusion)
    for ranker in out.rankers:
        if isinstance(ranker, FusedRankerConfig) and ranker.fusion is not None:
            ranker.fusion = rewrite(ranker.fusion)
        for key in ("template_dir", "cache"):
            if isinstance(ranker, LLMRankerConfig) and ranker.rerank.get(key):
                ranker.rerank[key] = rewrite(str(ranker.rerank[key]))
    return out


def config_from_dict(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    source: str = "<config>",
    data_dir: str | Path | None = None,
) -> EvalConfig:
    """Validate a config given as a dict (the Python form of the TOML file); relative paths resolve as documented.

    A ``dataset.name`` is looked up in ``data_dir`` (default: ``$ZSGEN_DATA_DIR``, else the user data dir).
    """
    data = {k: v for k, v in data.items() if k != "provenance"}  # a resolved config reads back as it ran
    try:
        config = EvalConfig.model_validate(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    _check_rerank_tables(config, source)
    if config.dataset.name is not None:
        from zsgen.loaders.datasets import dataset_path

        try:
            config.dataset.path = str(dataset_path(config.dataset.name, data_dir).resolve())
        except ConfigError as exc:
            raise ConfigError(f"{source}: dataset.name: {exc}") from None
        config.dataset.name = None
    config.dataset.path = str(resolve_path(config.dataset.path, base_dir))
    if config.dataset.interactions is not None:
        config.dataset.interactions = str(resolve_path(config.dataset.interactions, base_dir))
    if config.candidates.fusion is not None:
        config.candidates.fusion = str(resolve_path(config.candidates.fusion, base_dir))
    for ranker in config.rankers:
        if isinstance(ranker, FusedRankerConfig) and ranker.fusion is not None:
            ranker.fusion = str(resolve_path(ranker.fusion, base_dir))
        if not isinstance(ranker, LLMRankerConfig):
            continue
        for key in ("template_dir", "cache"):
            if ranker.rerank.get(key):
                ranker.rerank[key] = str(resolve_path(str(ranker.rerank[key]), base_dir))
    return config


def _check_rerank_tables(config: EvalConfig, source: str) -> None:
    """Validate LLM rankers' rerank tables (and trained baselines' model tables) now, so a typo fails before the
    dataset and models are loaded."""
    from zsgen.rerank import RerankConfig

    for number, ranker in enumerate(config.rankers):
        if isinstance(ranker, LLMRankerConfig):
            what = f"{source}: invalid rerank table of ranker {ranker.name!r}"
            validate_config(RerankConfig, ranker.rerank, what=what, prefix=f"rankers.{number}.rerank.")
        if isinstance(ranker, TrainedRankerConfig):
            from zsgen.baselines.config import model_config

            what = f"{source}: invalid model table of ranker {ranker.name!r}"
            model_config(ranker.kind, ranker.model, what=what, prefix=f"rankers.{number}.model.")


def load_config(
    path: str | Path, overrides: Mapping[str, Any] | None = None, *, data_dir: str | Path | None = None
) -> EvalConfig:
    """Read and validate a TOML config; ``overrides`` replace top-level keys (nested tables merge) before validation.
    ``data_dir`` is where a ``dataset.name`` is looked up (see :func:`config_from_dict`)."""
    path = Path(path)
    data = read_toml(path, what="evaluation config")
    if overrides:
        data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(data, base_dir=path.resolve().parent, source=str(path), data_dir=data_dir)


def write_resolved(config: EvalConfig, path: Path, provenance: Mapping[str, Any]) -> None:
    """The config as run (presets applied, paths absolute) plus a ``[provenance]`` table (versions, models, hashes).

    Written atomically: a run killed meanwhile leaves no half file that a resume would misread. A password or key in
    a base URL is written as ``***`` (:func:`zsgen.redact.redact_url`): results folders get shared, secrets must not
    be; re-running the file then needs the credentials given again (in the URL or the environment).
    """
    data = without_credentials(config).model_dump(mode="json")
    data["provenance"] = dict(provenance)
    write_toml(path, data, header="Resolved evaluation config, written by zsgen evaluate.\nRe-run it as is.")
