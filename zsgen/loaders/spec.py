"""Where a dataset is: the ``[dataset]`` table of an evaluation or service config, and how relative paths in a config
resolve.

Evaluation (:mod:`zsgen.evaluate.config`) and the service (:mod:`zsgen.serve.config`) read the same table and resolve
paths by the same rule, so it lives with the loaders that read the data, not with either of its users. A ``name`` is
looked up in the data directory (:mod:`zsgen.loaders.datasets`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from zsgen.configbase import StrictConfig

_PATH_OR_NAME = (
    "give exactly one of `dataset.path` (a folder or file) and `dataset.name` (a folder in the data directory)"
)


class DatasetConfig(StrictConfig):
    """The dataset, loaded with :func:`zsgen.loaders.load_dataset`: a ``path`` (folder or file) or the ``name`` of a
    folder in the data directory (``name = "ml-100k"``, or just ``dataset = "ml-100k"``; see
    :mod:`zsgen.loaders.datasets`), exactly one of the two.

    A name is resolved to a path when the config is loaded, so the rest of the run (and the resolved config it
    writes) only ever sees ``path``.
    """

    path: str = ""
    name: str | None = Field(default=None, description="a dataset folder in the data directory, e.g. ml-100k")
    format: str | None = None
    interactions: str | None = Field(default=None, description="separate log for a JSONL/CSV catalog")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}  # `dataset = "ml-100k"` reads as the name
        if isinstance(data, dict) and not data.get("path") and not data.get("name"):
            # Checked before the fields, so a misspelt key (`file = ...`) is named next to what was expected.
            found = f"; found {', '.join(f'`{key}`' for key in data)}" if data else ""
            raise ValueError(f"{_PATH_OR_NAME}{found}")
        return data

    @model_validator(mode="after")
    def _path_or_name(self) -> DatasetConfig:
        if bool(self.path) == bool(self.name):
            raise ValueError(_PATH_OR_NAME)
        return self


def resolve_path(value: str | Path, base_dir: Path | None) -> Path:
    """``value`` as an absolute path: against ``base_dir`` (the config's folder) if it exists there, else the cwd."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    if base_dir is not None:
        beside = (base_dir / path).resolve()
        if beside.exists() or not (Path.cwd() / path).exists():
            return beside
    return (Path.cwd() / path).resolve()


def relative_path(value: str | Path, base_dir: Path) -> str:
    """``value`` relative to ``base_dir`` (the inverse of :func:`resolve_path`): how a file written in ``base_dir``
    names it without a machine path, so that file still resolves when read from anywhere."""
    return Path(os.path.relpath(Path(value).resolve(), base_dir.resolve())).as_posix()
