"""The one TOML writer: what it writes reads back, nulls are handled on purpose, and files are replaced whole."""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path

import pytest

from zsgen.errors import ConfigError
from zsgen.tomlio import dumps, write_text_atomic, write_toml


def test_writer_escapes_and_nests() -> None:
    data = {
        "s": 'quote " back\\ new\nline ü',
        "f": 0.1,
        "b": True,
        "l": [1, 2],
        "t": {"x": 1, "deep": {"y": "z"}},
        "arr": [{"a": 1, "sub": {"b": 2}}, {"a": 3}],
        "odd key.with dots": "k",
        "empty": {},
        "skip": None,
    }
    text = dumps(data, header="hello\n\nsecond line")
    assert text.startswith("# hello\n#\n# second line\n\n")
    back = tomllib.loads(text)
    expected = {k: v for k, v in data.items() if v is not None}
    assert back == expected


def test_none_in_a_table_is_left_out_at_every_depth() -> None:
    data = {"a": None, "t": {"x": None, "y": 1}, "arr": [{"a": None, "b": 2}]}
    assert tomllib.loads(dumps(data)) == {"t": {"y": 1}, "arr": [{"b": 2}]}


def test_paths_tuples_and_non_finite_floats_read_back() -> None:
    back = tomllib.loads(dumps({"p": Path("/a/b"), "t": (1, 2), "f": [math.inf, -math.inf]}))
    assert back == {"p": "/a/b", "t": [1, 2], "f": [math.inf, -math.inf]}
    assert math.isnan(tomllib.loads(dumps({"n": math.nan}))["n"])


@pytest.mark.parametrize(
    ("data", "where"),
    [({"l": [1, None]}, "l"), ({"t": {"x": object()}}, "t.x"), ({"t": [{"a": {1: 2}}]}, "t.0.a")],
)
def test_unwritable_values_name_their_key(data: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{where}: "):
        dumps(data)


def test_write_toml_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.toml"
    write_toml(path, {"a": 1}, header="first")
    write_toml(path, {"a": 2, "t": {"b": "c"}})
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {"a": 2, "t": {"b": "c"}}
    assert [p.name for p in tmp_path.iterdir()] == ["out.toml"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like a plain open(), not mkstemp's 0o600


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.toml"
    write_toml(path, {"a": 1})
    with pytest.raises(ConfigError):  # the data is checked before anything touches the disk
        write_toml(path, {"a": [None]})

    def killed(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # as if the run were stopped between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, "a = 2\n")
    monkeypatch.undo()
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.toml"]
