"""The item journal never loses an acknowledged edit: every append starts on a line boundary, an unterminated last
line (a write that never completed, so never acknowledged) is dropped with a warning, and any other damage is one
DataError naming the file and line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zsgen.errors import DataError
from zsgen.serve.items import Edit, ItemStore
from zsgen.types import Item


def put(item_id: str, title: str = "A title") -> Edit:
    return Edit(op="put", item=Item(id=item_id, title=title))


def ids(store: ItemStore, known: tuple[str, ...] = ()) -> list[str]:
    return [edit.item_id for edit in store.replay(known=known)]


def test_an_append_after_a_torn_line_starts_on_a_fresh_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ItemStore(tmp_path / "items.jsonl")
    store.append(put("a"))
    with store.path.open("ab") as out:  # what a write that failed half-way (disk full) leaves behind
        out.write(b'{"op": "put", "item": {"id": "b", "ti')
    with caplog.at_level(logging.WARNING, logger="zsgen.serve.items"):
        store.append(put("c"))
    assert ids(store) == ["a", "c"]  # c is not glued onto the torn b
    assert store.path.read_bytes().endswith(b"\n") and "unterminated" in caplog.text


def test_a_journal_without_its_final_newline_is_appended_to_safely(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(put("a").to_json().encode() + b"\n" + put("b").to_json().encode())  # no final newline
    store = ItemStore(path)
    store.append(put("c"))
    assert ids(store) == ["a", "c"]


def test_a_torn_last_line_is_dropped_with_a_warning_at_replay(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "items.jsonl"
    good = put("a", "Café").to_json().encode()
    torn = put("b", "Crème brûlée").to_json().encode()
    cut = torn.index("è".encode()) + 1  # inside a two-byte UTF-8 character
    path.write_bytes(good + b"\n" + torn[:cut])
    with caplog.at_level(logging.WARNING, logger="zsgen.serve.items"):
        assert ids(ItemStore(path)) == ["a"]
    assert "items.jsonl:2" in caplog.text and "unterminated" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"op": "put", "item": {"id": "a", "title": "x"}}\n\xff\xfe junk\n', r"items.jsonl:2.*not UTF-8"),
        (b'{"op": "put", "item": {"id": "a", "title": "x"}}{"op": "retire", "id": "a"}\n', r"items.jsonl:1.*not JSON"),
        (b'{"op": "retire", "id": "nobody"}\n', r"items.jsonl:1.*retires 'nobody'.*neither in the dataset"),
    ],
)
def test_other_damage_is_one_located_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        ids(ItemStore(path), known=("m001",))


def test_a_retire_of_a_dataset_item_or_an_earlier_put_replays(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    lines = ['{"op": "retire", "id": "m001"}', put("n").to_json(), '{"op": "retire", "id": "n"}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert ids(ItemStore(path), known=("m001",)) == ["m001", "n", "n"]


_FULL_DISK = """
import resource, sys
from zsgen.serve.items import Edit, ItemStore
from zsgen.types import Item
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
store = ItemStore(sys.argv[1])
try:
    store.append(Edit(op="put", item=Item(id="big", title="x" * 4000)))
except OSError as exc:
    print("refused", type(exc).__name__)
"""


def _ignore_sigxfsz() -> None:
    """Past RLIMIT_FSIZE a write fails with EFBIG instead of killing the child."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_write_that_fails_for_a_full_disk_is_not_acknowledged_and_leaves_no_tear(tmp_path: Path) -> None:
    """A real failed write: the file-size limit stands in for a full disk (EFBIG, as ENOSPC would), in a child."""
    store = ItemStore(tmp_path / "items.jsonl")
    store.append(put("a"))
    limit = store.path.stat().st_size + 100  # room for part of the next line only
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(store.path), str(limit)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_ignore_sigxfsz,
        check=False,
    )
    assert "refused" in done.stdout, done.stderr
    store.append(put("c"))  # the next acknowledged edit
    assert ids(store) == ["a", "c"]
