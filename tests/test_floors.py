""".ci/floors.py, which turns pyproject's `>=` floors into the exact pins `make test-min` installs and checks."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "floors.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def test_every_runtime_dependency_is_pinned_at_its_declared_floor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project["dependencies"])
    for extra in ("local", "eval", "faiss", "serve"):
        declared += project["optional-dependencies"][extra]
    result = _run()
    assert result.returncode == 0, result.stderr
    pins = dict(line.split("==") for line in result.stdout.splitlines())
    expected = {}
    for requirement in declared:
        name, floor = re.split(r"\s*>=\s*", requirement)
        expected[re.sub(r"[-_.]+", "-", name).lower()] = floor
    assert pins == expected


def test_excluded_packages_are_left_unpinned() -> None:
    result = _run("--exclude", "torch")
    assert result.returncode == 0, result.stderr
    assert "torch==" not in result.stdout
    assert "transformers==" in result.stdout


def test_a_dependency_without_a_floor_is_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["numpy>=1.26", "scipy"]\n'
        "[project.optional-dependencies]\nlocal = []\neval = []\nfaiss = []\nserve = []\n",
        encoding="utf-8",
    )
    result = _run("--pyproject", str(pyproject))
    assert result.returncode != 0
    assert "'scipy' declares no `>=` floor" in result.stderr


def test_check_reports_a_version_that_is_not_the_floor(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["pytest>=0.1"]\n'
        "[project.optional-dependencies]\nlocal = []\neval = []\nfaiss = []\nserve = []\n",
        encoding="utf-8",
    )
    result = _run("--pyproject", str(pyproject), "--check")
    assert result.returncode == 1
    assert "pytest:" in result.stderr and "floor is 0.1" in result.stderr
