"""The public surface of ``import zsgen``: every exported name resolves, every error is exported, and the import
itself stays light (names load their modules lazily)."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import zsgen
import zsgen.errors

ROOT = Path(__file__).resolve().parent.parent

# Modules that must not be imported by ``import zsgen`` alone: the ML stack, the HTTP clients, and the scientific
# stack zsgen itself is built on.
HEAVY = ("torch", "transformers", "openai", "httpx", "numpy", "scipy", "jinja2", "matplotlib", "tqdm", "pydantic")


def modules_after(code: str) -> set[str]:
    """Top-level packages and zsgen submodules imported by running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120, cwd=ROOT
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_import_zsgen_loads_nothing_heavy() -> None:
    loaded = modules_after("import zsgen")
    assert not {name for name in loaded if name.split(".")[0] in HEAVY}
    assert sorted(name for name in loaded if name.startswith("zsgen.")) == []  # not even zsgen.errors


def test_the_core_api_loads_no_model_stack() -> None:
    """The pipeline's names import what they need (numpy, pydantic, jinja2), but no torch or HTTP client: those
    load when a local model or a server is actually used."""
    loaded = modules_after(
        "from zsgen import Recommender, Request, RerankConfig, Reranker, Retriever, load_dataset, Catalog, History, "
        "Ranking, ZsgenError"
    )
    assert "zsgen.recommender" in loaded and "numpy" in loaded  # the names did resolve
    assert not {name for name in loaded if name.split(".")[0] in ("torch", "transformers", "openai", "matplotlib")}


@pytest.mark.parametrize("name", zsgen.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    value = getattr(zsgen, name)
    assert getattr(value, "__name__", None) == name  # a class or function of that name, not a module or a stray
    assert value.__module__.startswith("zsgen.")
    assert name in dir(zsgen)


def test_all_is_sorted_and_lists_every_lazy_name() -> None:
    assert zsgen.__all__ == sorted(set(zsgen.__all__))
    assert set(zsgen.__all__) == set(zsgen._HOMES)


def test_every_error_class_is_exported() -> None:
    errors = {
        name
        for name, value in vars(zsgen.errors).items()
        if inspect.isclass(value) and issubclass(value, zsgen.errors.ZsgenError)
    }
    assert errors <= set(zsgen.__all__)
    assert zsgen.ConfigError is zsgen.errors.ConfigError


def test_the_short_imports_are_the_real_classes() -> None:
    from zsgen import Recommender, RerankConfig, load_dataset
    from zsgen.loaders import load_dataset as deep_load_dataset
    from zsgen.recommender import Recommender as DeepRecommender

    assert Recommender is DeepRecommender and load_dataset is deep_load_dataset
    assert RerankConfig(method="listwise", backend="local").method == "listwise"


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Recomender'"):
        _ = zsgen.Recomender  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from zsgen import Recomender")


def test_version_comes_from_the_package_metadata() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    try:
        installed = importlib.metadata.version("zsgen")
    except importlib.metadata.PackageNotFoundError:
        installed = declared
    assert zsgen.__version__ == installed
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", zsgen.__version__)
    assert "__version__" in dir(zsgen)


def test_version_falls_back_to_pyproject_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    assert zsgen._version() == declared
