"""Fixtures shared across the suite. Heavy things (models, servers) are session-scoped: loaded once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access here; fail fast instead of hanging on the network


from zsgen.testing.servers import ScriptedServer, transformers_serve, vllm_serve

#: MovieLens 100K as RecBole atomic files, checked out beside the repository (never committed: GroupLens terms).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (holding ``ml-100k/``), or a skip saying why: the MovieLens files may not be redistributed,
    so a checkout without them (a fresh clone, a packaging build) cannot run these tests."""
    if not (SHARED_DATA / "ml-100k").is_dir():
        pytest.skip(
            f"MovieLens data not found at {SHARED_DATA / 'ml-100k'}: clone the shared data folder beside the "
            "repository (../shared/data/ml-100k) to run the tests that read the real dataset"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def local_model_dir() -> Path:
    """The packaged SmolLM2 as a plain HF folder (converted once into the zsgen cache on first use)."""
    from zsgen.llm.models import default_local_model_dir

    return default_local_model_dir()


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    """A fresh scripted OpenAI-compatible server on loopback for one test."""
    with ScriptedServer() as server:
        yield server


@pytest.fixture(scope="session")
def transformers_server(local_model_dir: Path) -> Iterator[str]:
    """A real ``transformers serve`` process with the local model; yields its OpenAI base URL."""
    with transformers_serve(local_model_dir) as base_url:
        yield base_url


#: Where ``make vllm-env`` builds vLLM's CPU build, in an environment of its own (3.5 GB; the main one stays small).
VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


def find_vllm_python() -> Path:
    """The Python of vLLM's own environment: ``$ZSGEN_VLLM_PYTHON`` or ``.venv-vllm`` (``make vllm-env``; ``.ci/run``
    builds it, so CI always runs the vLLM tests). Without it those tests skip and say how to get it."""
    python = Path(os.environ.get("ZSGEN_VLLM_PYTHON") or VLLM_PYTHON)
    if not python.is_file():
        pytest.skip(f"vLLM's CPU build not found at {python}: `make vllm-env` builds it (.ci/run does)")
    return python


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """:func:`find_vllm_python` as a fixture."""
    return find_vllm_python()


@pytest.fixture(scope="session")
def vllm_server(vllm_python: Path, local_model_dir: Path) -> Iterator[str]:
    """A real vLLM OpenAI server (CPU build, packaged SmolLM2) for the whole session; yields its base URL."""
    with vllm_serve(vllm_python, local_model_dir) as base_url:
        yield base_url


#: Where Debian's chromium package puts the browser (``make browser`` installs it; ``.ci/run`` calls that).
CHROMIUM = Path("/usr/bin/chromium")
#: Chromium's flags for the browser tests: headless, and nothing that reaches out to the network on its own (on a
#: closed network those attempts end in refused connections and slow start-ups).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """The Chromium the browser tests drive through Playwright: ``$ZSGEN_CHROMIUM`` or Debian's ``/usr/bin/chromium``
    (Playwright's own browser downloads are not used). Without it those tests skip and say how to get it."""
    path = Path(os.environ.get("ZSGEN_CHROMIUM") or CHROMIUM)
    if not path.is_file():
        pytest.skip(f"Chromium not found at {path}: `make browser` installs Debian's chromium (.ci/run does)")
    return path
