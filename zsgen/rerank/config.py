"""The reranker's settings: what it asks, of whom, and how often. Secrets are not part of it."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from zsgen.configbase import StrictConfig
from zsgen.rerank.methods import METHODS

__all__ = ["BackendName", "RerankConfig"]

BackendName = Literal["openai", "local", "verbalizer"]


class RerankConfig(StrictConfig):
    """Everything that decides what the reranker asks and of whom; invalid settings raise ``ConfigError``.

    ``method`` names a class in :data:`zsgen.rerank.methods.METHODS`, which also says which backends fit it.
    """

    _config_name: ClassVar[str | None] = "RerankConfig"

    method: str = Field(default="listwise", description=f"one of {', '.join(METHODS)}")
    backend: BackendName = "local"
    model: str | None = None
    base_url: str | None = None
    structured: Literal["json_schema", "json_object", "none"] = Field(
        default="none",
        description="openai: send each call's answer schema (the shown labels as an enum, exactly `picks` of them) "
        "as response_format json_schema (OpenAI, vLLM, SGLang) or json_object with the schema (llama.cpp)",
    )
    restrict_labels: bool = Field(
        default=True,
        description="verbalizer/pointwise over openai: restrict the scored token to the labels with vLLM's "
        "structured_outputs choice, so every label's log-probability comes back (a server that rejects it is asked "
        "without it, logged once)",
    )
    top_logprobs: int = Field(
        default=20,
        ge=1,
        description="verbalizer/pointwise over openai: top_logprobs asked for (server cap: 20 on "
        "OpenAI, --max-logprobs on vLLM)",
    )
    structured_choice: bool = Field(
        default=False,
        description="openai: a one-label answer (picks = 1) is constrained by vLLM's structured_outputs choice",
    )
    on_schema_rejected: Literal["fallback", "unconstrained"] = Field(
        default="fallback",
        description="openai: once the server rejects the constraint (HTTP 400), later calls fall back (flagged, "
        "reason schema_rejected) or are sent without it (flagged as a repair)",
    )
    picks: int | None = Field(
        default=None, ge=1, description="labels the model names, best first (default: every shown candidate)"
    )
    template: str | None = Field(default=None, description="override the (last) template the method renders")
    template_dir: Path | None = None
    candidates: int = Field(default=20, ge=1)
    history_length: int = Field(default=10, ge=1)
    bootstrap: int = Field(default=1, ge=1, le=64)
    shuffle: bool = Field(default=False, description="show candidates shuffled even when bootstrap is 1")
    seed: int = 0
    fuse_cosine: float | None = Field(default=None, ge=0.0, le=1.0)
    label_style: Literal["letters", "numbers"] = "letters"
    window: int = Field(default=20, ge=2, description="verbalizer listwise window (labels per forward pass)")
    max_tokens: int = Field(default=256, ge=1)
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    concurrency: int = Field(default=8, ge=1)
    cache: Path | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r} (known: {', '.join(METHODS)})")
        return value

    @model_validator(mode="after")
    def _backend_fits_method(self) -> RerankConfig:
        fits = METHODS[self.method].backends
        if self.backend not in fits:
            if self.backend == "verbalizer":
                raise ValueError(
                    f"backend 'verbalizer' supports methods "
                    f"{', '.join(repr(m.name) for m in METHODS.values() if 'verbalizer' in m.backends)}, "
                    f"not {self.method!r}"
                )
            raise ValueError(f"method {self.method!r} needs backend {' or '.join(repr(b) for b in fits)}")
        return self
