"""``serve.toml``: what the service loads, what a request may change, and the limits that keep it responsive.

One TOML file, validated whole before anything loads (a typo is a one-line :class:`~zsgen.errors.ConfigError`, not
a server that starts and fails later). Relative paths resolve against the file's folder, as evaluation configs do.
The bearer token is deliberately not in it: the file names the environment variable that holds it
(``token_env``), so the secret never sits in a file that gets committed or logged.

Example (``examples/serve-ml100k.toml``)::

    dataset = { name = "ml-100k" }
    first_stage = "fused"
    per_request = ["candidates", "bootstrap", "fuse_cosine"]
    deadline_s = 10

    [rerank]
    method = "listwise"
    backend = "openai"
    base_url = "http://127.0.0.1:8000/v1"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from zsgen.configbase import StrictConfig
from zsgen.errors import ConfigError
from zsgen.loaders.spec import DatasetConfig, resolve_path
from zsgen.rerank import RerankConfig
from zsgen.tomlio import read_toml

__all__ = ["PER_REQUEST_OPTIONS", "PlaygroundSettings", "ServeConfig", "load_serve_config"]

#: Rerank options a config may let each request set. They change what is asked, not whom: every variant shares the
#: one backend (HTTP client, concurrency bound, loaded model) the configured reranker built.
PER_REQUEST_OPTIONS: tuple[str, ...] = (
    "candidates",
    "bootstrap",
    "fuse_cosine",
    "picks",
    "seed",
    "shuffle",
    "history_length",
    "template",
    "label_style",
)


class PlaygroundSettings(StrictConfig):
    """``[playground]``: the prompt playground at ``/playground`` (see :mod:`zsgen.serve.playground`)."""

    _config_name: ClassVar[str | None] = "playground"

    enabled: bool = True
    template_dir: str | None = Field(
        default=None,
        description="where 'save' writes templates; the service's rerank.template_dir (the same folder), if unset",
    )
    max_try_users: int = Field(default=50, ge=1, le=500, description="most users one 'try on N users' may run")
    default_try_users: int = Field(default=10, ge=1)
    resamples: int = Field(default=1000, ge=100, description="bootstrap resamples of the 'try' interval")
    seed: int = 0


class ServeConfig(StrictConfig):
    """Everything ``zsgen serve`` needs; see the module docstring for the file and :mod:`zsgen.serve.app` for how
    each limit is applied."""

    _config_name: ClassVar[str | None] = "serve config"

    dataset: DatasetConfig
    first_stage: Literal["cosine", "fused"] | None = Field(
        default=None, description="default: fused when the dataset has an interaction log, else cosine"
    )
    fusion: str | None = Field(default=None, description="a tuned fusion-NAME.toml for the fused first stage")
    index: str | None = Field(default=None, description="cosine first stage's index: numpy, faiss, ann[:FACTORY]")
    encoder: str | None = Field(default=None, description="encoder model folder (default: the packaged MiniLM)")
    embedding_cache: str | None = Field(
        default=None, description="SQLite embedding cache (default: the zsgen cache folder's embeddings.sqlite)"
    )
    rerank: RerankConfig | None = Field(default=None, description="the LLM reranker; none: first-stage order")
    per_request: list[str] = Field(default_factory=list, description="rerank options a request may set")
    deadline_s: float = Field(default=30.0, gt=0, description="per request: the rerank's deadline, then fallback")
    max_batch: int = Field(default=32, ge=1, description="requests retrieved together (1: no micro-batching)")
    max_wait_ms: float = Field(default=2.0, ge=0, description="how long a batch waits to fill")
    max_body_bytes: int = Field(default=1 << 20, ge=256)
    k_default: int = Field(default=10, ge=1)
    k_max: int = Field(default=100, ge=1)
    max_candidates: int = Field(default=100, ge=2, description="most candidates a request may ask to rerank")
    max_history: int = Field(default=1000, ge=1, description="most history items per user")
    max_batch_users: int = Field(default=256, ge=1, description="most users in one :batch call")
    store: str | None = Field(default=None, description="JSONL log of runtime item edits, replayed at start")
    token_env: str = Field(default="ZSGEN_SERVE_TOKEN", min_length=1)
    playground: PlaygroundSettings | None = Field(default=None, description="the prompt playground; none: not served")
    host: str = "127.0.0.1"
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="names a request's Host (and a browser's Origin) may give besides the loopback names and host; "
        "['*']: any (behind a proxy that checks them)",
    )
    allow_public_without_token: bool = Field(
        default=False, description="listen beyond loopback without a bearer token (refused unless true)"
    )
    port: int = Field(default=8080, ge=0, le=65535)

    @field_validator("per_request")
    @classmethod
    def _known_options(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in PER_REQUEST_OPTIONS]
        if unknown:
            raise ValueError(f"unknown per-request options {unknown} (allowed: {', '.join(PER_REQUEST_OPTIONS)})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        if self.per_request and self.rerank is None:
            raise ValueError("per_request names rerank options, but there is no [rerank] table")
        if self.k_default > self.k_max:
            raise ValueError(f"k_default ({self.k_default}) is larger than k_max ({self.k_max})")
        if self.first_stage == "cosine" and self.fusion is not None:
            raise ValueError("first_stage 'cosine' contradicts fusion (a fused first stage): give one or the other")
        if self.playground is not None and self.playground.enabled:
            rerank_dir = self.rerank.template_dir if self.rerank is not None else None
            if self.playground.template_dir is None and rerank_dir is None:
                raise ValueError(
                    "playground: give template_dir (the folder 'save' writes to), here or as rerank.template_dir"
                )
        return self


def load_serve_config(path: str | Path, *, data_dir: str | Path | None = None) -> ServeConfig:
    """Read and validate ``path``; relative paths resolve against its folder and ``dataset.name`` against the data
    directory (``data_dir``, else ``$ZSGEN_DATA_DIR`` or the user data dir). Every problem is a one-line
    :class:`~zsgen.errors.ConfigError` naming the file."""
    path = Path(path)
    data = read_toml(path, what="serve config")
    return config_from_dict(data, base_dir=path.resolve().parent, source=str(path), data_dir=data_dir)


def config_from_dict(
    data: dict[str, Any],
    *,
    base_dir: Path | None = None,
    source: str = "<serve config>",
    data_dir: str | Path | None = None,
) -> ServeConfig:
    """:func:`load_serve_config` for a dict (tests, Python callers)."""
    try:
        config = ServeConfig.model_validate(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if config.dataset.name is not None:
        from zsgen.loaders.datasets import dataset_path

        try:
            config.dataset.path = str(dataset_path(config.dataset.name, data_dir).resolve())
        except ConfigError as exc:
            raise ConfigError(f"{source}: dataset.name: {exc}") from None
        config.dataset.name = None
    config.dataset.path = str(resolve_path(config.dataset.path, base_dir))
    if not Path(config.dataset.path).exists():
        raise ConfigError(f"{source}: dataset.path: {config.dataset.path} does not exist")
    if config.dataset.interactions is not None:
        config.dataset.interactions = str(resolve_path(config.dataset.interactions, base_dir))
    for key in ("fusion", "embedding_cache", "store"):
        value = getattr(config, key)
        if value is not None:
            setattr(config, key, str(resolve_path(value, base_dir)))
    if config.encoder is not None and base_dir is not None and (base_dir / config.encoder).exists():
        config.encoder = str((base_dir / config.encoder).resolve())  # a folder beside the file; else a model name
    if config.playground is not None and config.playground.template_dir is not None:
        # Always beside the file (never a same-named folder in the working directory): it is created if missing,
        # and a save must not land in some other project's folder.
        folder = Path(config.playground.template_dir).expanduser()
        config.playground.template_dir = str(folder if folder.is_absolute() else ((base_dir or Path.cwd()) / folder))
    if config.rerank is not None:
        updates = {
            key: resolve_path(value, base_dir)
            for key in ("template_dir", "cache")
            if (value := getattr(config.rerank, key)) is not None
        }
        if updates:
            config.rerank = config.rerank.model_copy(update=updates)
    _share_template_dir(config, source)
    return config


def _share_template_dir(config: ServeConfig, source: str) -> None:
    """The playground saves where the service reads: one template folder for both.

    Given only as ``playground.template_dir``, it becomes the reranker's too, so a saved template can be named by
    ``rerank.template`` (or a request's ``template`` option); given both ways, the two must be the same folder."""
    playground, rerank = config.playground, config.rerank
    if playground is None or not playground.enabled or rerank is None or playground.template_dir is None:
        return
    if rerank.template_dir is None:
        config.rerank = rerank.model_copy(update={"template_dir": Path(playground.template_dir)})
    elif Path(rerank.template_dir).resolve() != Path(playground.template_dir).resolve():
        raise ConfigError(
            f"{source}: playground.template_dir ({playground.template_dir}) and rerank.template_dir "
            f"({rerank.template_dir}) differ: templates saved in the playground would not be the ones served"
        )
