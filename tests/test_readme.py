"""The README's examples run as written, from the repository root of a clone with ``../shared`` beside it.

The Python block of "Using it from Python" runs whole in a subprocess; the commands of "Command line" run one by one,
except those that need what a test machine lacks or that take minutes: an OpenAI-compatible server (``--backend
openai``, ``serve``, ``batch``), a whole evaluation or tuning run (``evaluate``, ``tune``: the committed runs have
their own test, tests/evaluate/test_committed_results.py),
a tuned file that only ``tune`` writes (``--fusion``), and the
prompts line, which lists alternatives (``list | show NAME | ...``) rather than one command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SKIP = ("--backend openai", "zsgen serve", "zsgen batch", "zsgen evaluate", "zsgen tune", "--fusion", " | ")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _commands() -> list[str]:
    block = _section("Command line").split("\n\n")[1]  # the indented block right under the heading
    joined = re.sub(r"\\\n\s+", " ", block)
    lines = [line.strip() for line in joined.splitlines() if line.strip().startswith("zsgen ")]
    return [re.sub(r"\s+#.*$", "", line) for line in lines]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def test_the_command_block_is_found() -> None:
    commands = _commands()
    assert "zsgen recommend --demo -k 10" in commands and "zsgen --version" in commands
    assert not any("items.jsonl" in c for c in commands)  # no file a clone does not have


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("command", [c for c in _commands() if not any(s in c for s in SKIP)])
def test_readme_command_runs(command: str, shared_data: Path, tmp_path: Path) -> None:
    args = command.split()[1:]
    if "--out" in args:  # written into a scratch folder, not the checkout
        args[args.index("--out") + 1] = str(tmp_path / args[args.index("--out") + 1])
    args = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', " ".join(args))]
    done = subprocess.run(
        [sys.executable, "-m", "zsgen", *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


@pytest.mark.slow
@pytest.mark.data
def test_readme_python_example_runs(shared_data: Path) -> None:
    code = re.search(r"```python\n(.*?)```", _section("Using it from Python"), re.S)
    assert code is not None
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("False None ok")  # the LLM answered and its answer was used
    assert len(lines) == 11 and all(line.split()[-1] == "llm" for line in lines[1:])


@pytest.mark.slow  # a subprocess that loads the encoder, as the other README examples
def test_readme_async_example_runs() -> None:
    """The Async API block runs as written: it awaits one user and a batch with per-user k and prints their ids."""
    section = _section("Using it from Python")
    code = re.search(r"```python\n(.*?)```", section[section.index("### Async API") :], re.S)
    assert code is not None and "await rec.arecommend(" in code.group(1)
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    one, many = done.stdout.strip().split("] [[")
    assert len(one.strip("[]").split(", ")) == 5
    assert [len(ids.split(", ")) for ids in many.strip("]").split("], [")] == [3, 5]
