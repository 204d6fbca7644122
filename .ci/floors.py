"""The declared dependency floors of pyproject.toml as exact pins, so that `make test-min` can test them.

pyproject.toml is the one place where a floor is written (``name>=X``); this script turns the direct dependencies and
the runtime extras into ``name==X`` lines for ``pip install --constraint``, so the floors that are declared and the
floors that are tested can never drift apart. ``--check`` then compares what is installed with those pins and prints
the installed versions, so a run shows the environment it really tested.

    python .ci/floors.py --exclude torch > floors.txt      # pins for pip install -c floors.txt
    python .ci/floors.py --exclude torch --check           # after installing: every pin met exactly

Only the standard library is used: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

#: The extras whose floors are part of zsgen's promise to users (``dev`` holds tools, installed unpinned beside them).
RUNTIME_EXTRAS = ("local", "eval", "faiss", "serve")

#: ``name[extras]>=version`` with an optional upper bound after it; anything else has no floor to test.
_FLOOR = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(?:,\s*<[^;]*)?$"
)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def floors(pyproject: Path, extras: tuple[str, ...] = RUNTIME_EXTRAS) -> dict[str, str]:
    """Each direct dependency (base and ``extras``) mapped to its declared floor; raises if one declares none."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    found: dict[str, str] = {}
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: {requirement!r} declares no `>=` floor, so it cannot be tested at one")
        name, version = _normalise(match.group(1)), match.group(2)
        if found.get(name, version) != version:
            raise SystemExit(f"{pyproject}: {name} declared with two floors, {found[name]} and {version}")
        found[name] = version
    return found


def _release(version: str) -> tuple[int, ...]:
    """``1.11`` and ``1.11.0`` are the same release (PEP 440); local labels such as ``+cpu`` are ignored."""
    parts = [int(p) for p in re.findall(r"\d+", version.split("+")[0])]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def check(pins: dict[str, str]) -> list[str]:
    """Problems: a pinned package that is missing or installed at another version than its floor."""
    problems: list[str] = []
    for name, floor in sorted(pins.items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed (floor {floor})")
            continue
        print(f"{name}=={installed}")
        if _release(installed) != _release(floor):
            problems.append(f"{name}: {installed} installed, floor is {floor}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    parser.add_argument("--exclude", action="append", default=[], help="a package to leave unpinned (repeatable)")
    parser.add_argument("--check", action="store_true", help="compare the installed versions with the floors")
    args = parser.parse_args(argv)
    excluded = {_normalise(name) for name in args.exclude}
    pins = {name: v for name, v in floors(args.pyproject).items() if name not in excluded}
    if not args.check:
        print("\n".join(f"{name}=={version}" for name, version in sorted(pins.items())))
        return 0
    print(f"python=={sys.version.split()[0]}")
    problems = check(pins)
    for problem in problems:
        print(f"floors.py: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
