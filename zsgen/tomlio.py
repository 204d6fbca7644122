"""Reading and writing TOML: the one reader of config files and the one writer for every file zsgen produces in that
format (resolved configs, tuned fusions).

Python's ``tomllib`` only reads; the writing is ``tomli_w``'s. What is added here is what zsgen's data needs
around it: TOML has no null, so ``None`` in a table means "not set" and the key is left out (reading the file back
then gives the model's default), while ``None`` inside a list has no such meaning and is refused; paths and tuples
become strings and lists; and files are replaced atomically, so a run killed while writing leaves either the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import tomli_w

from zsgen.errors import ConfigError

__all__ = ["dumps", "read_toml", "write_text_atomic", "write_toml"]


def read_toml(path: Path, *, what: str) -> dict[str, Any]:
    """The table in ``path``, a ``what`` ("serve config", ...); a missing file, bad TOML or text that is not UTF-8 is
    a one-line :class:`ConfigError` naming the file."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _plain(value: Any, where: str) -> Any:
    """``value`` as the types tomli_w writes, checked key by key so an error can say where it is."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where or 'TOML'}: keys must be strings, got {key!r}")
            if item is not None:  # TOML has no null: an unset value is an absent key
                out[key] = _plain(item, f"{where}.{key}" if where else key)
        return out
    if isinstance(value, list | tuple):
        if any(item is None for item in value):
            raise ConfigError(f"{where}: TOML cannot hold null inside a list")
        return [_plain(item, f"{where}.{number}") for number, item in enumerate(value)]
    raise ConfigError(f"{where}: cannot write {type(value).__name__} to TOML")


def dumps(data: Mapping[str, Any], *, header: str = "") -> str:
    """TOML text for nested mappings and lists of plain values, under ``header`` as ``#`` comment lines.

    ``None`` values of a table are omitted; a ``None`` inside a list, or a value TOML cannot hold, is a
    :class:`ConfigError` naming its dotted key. The text reads back (``tomllib.loads``) to ``data`` minus those
    omitted keys.
    """
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = tomli_w.dumps(_plain(data, ""))
    return comments + ("\n" if comments and body else "") + body


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) all at once.

    The text goes to a temporary file in the same folder, is flushed to disk, and is then renamed over ``path``:
    a rename within one file system is atomic, so readers and a crash see the old file or the new, never a part.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for a plain open(); mkstemp would force 0o600.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not possible on every platform
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def write_toml(path: str | Path, data: Mapping[str, Any], *, header: str = "") -> None:
    """:func:`dumps` ``data`` (with ``header`` comments) and write it to ``path`` atomically."""
    write_text_atomic(path, dumps(data, header=header))
