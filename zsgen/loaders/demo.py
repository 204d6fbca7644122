"""The small catalog and sample user that ship inside the package, so ``zsgen recommend --demo`` needs no data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from zsgen.errors import DataError
from zsgen.interactions import Dataset
from zsgen.loaders.jsonl import load_jsonl_catalog
from zsgen.paths import data_dir
from zsgen.types import Profile

DEMO_CATALOG = "demo_catalog.jsonl"
DEMO_USER = "demo_user.json"


@dataclass(frozen=True)
class DemoUser:
    """A sample user: catalog ids watched (oldest first) and the same taste written as a free-text profile."""

    history: list[str]
    profile: str


def demo_catalog_path() -> Path:
    return data_dir() / DEMO_CATALOG


def load_demo() -> Dataset:
    """~300 invented films across clearly different genres; no interaction log."""
    return Dataset(catalog=load_jsonl_catalog(demo_catalog_path()))


def load_demo_user() -> DemoUser:
    path = data_dir() / DEMO_USER
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        history = [str(item_id) for item_id in raw["history"]]
        profile = Profile(text=raw["profile"]).text
    except FileNotFoundError:
        raise DataError("packaged demo user is missing (broken installation?)", path=path) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
        raise DataError(f"packaged demo user is malformed: {exc}", path=path) from None
    return DemoUser(history=history, profile=profile)
