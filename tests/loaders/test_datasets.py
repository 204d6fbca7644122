"""``zsgen data download`` against a real loopback HTTP mirror serving archives built here (GroupLens is never called),
and datasets named in evaluation configs."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import socket
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zsgen.cli import main
from zsgen.errors import ConfigError
from zsgen.evaluate.config import load_config
from zsgen.loaders import load_dataset
from zsgen.loaders.datasets import DownloadError, dataset_path, default_data_dir, download_dataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "loaders"


@dataclass
class Response:
    body: bytes
    status: int = 200
    announced: int | None = None  # a Content-Length larger than the body: the server hangs up early


@dataclass
class Mirror:
    """A ``http.server`` on 127.0.0.1 in a thread; ``files`` maps a URL path to what it answers."""

    files: dict[str, Response] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def serve(self, name: str, archive: bytes, *, md5: str | None = None) -> None:
        """``name.zip`` and GroupLens's ``name.zip.md5`` (BSD ``md5`` output, as GroupLens publishes it)."""
        digest = md5 or hashlib.md5(archive).hexdigest()
        self.files[f"/{name}.zip"] = Response(archive)
        self.files[f"/{name}.zip.md5"] = Response(f"MD5 ({name}.zip) = {digest}\n".encode())


#: The mirror serves under the same base path as GroupLens, so the URL joining is tested as it runs for real.
BASE_PATH = "/datasets/movielens"


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    state = Mirror()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            answer = state.files.get(self.path.removeprefix(BASE_PATH))
            if answer is None or not self.path.startswith(BASE_PATH):
                self.send_error(404, "Not Found")
                return
            self.send_response(answer.status)
            self.send_header("Content-Length", str(answer.announced or len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
            self.close_connection = True  # a truncated body then ends at the hang-up

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # bound and listening before the tests run
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{BASE_PATH}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def build_archive(
    top: str = "ml-100k", source: Path = FIXTURES / "ml-100k", extra: dict[str, bytes] | None = None
) -> bytes:
    """A zip laid out like GroupLens's: one top folder holding the dataset files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(f"{top}/", b"")
        for file in sorted(source.iterdir()):
            bundle.write(file, f"{top}/{file.name}")
        for name, data in (extra or {}).items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# ---------------------------------------------------------------- downloads


def test_download_verifies_unpacks_and_loads(mirror: Mirror, tmp_path: Path) -> None:
    archive = build_archive()
    mirror.serve("ml-100k", archive)
    root = tmp_path / "data"
    folder = download_dataset("ml-100k", root, mirror=mirror.url, sha256=sha256(archive), progress=False)
    assert folder == root / "ml-100k"
    assert leftovers(root) == ["ml-100k"]  # no temporary file or folder left behind
    dataset = load_dataset(folder)
    assert dataset.interactions is not None and len(dataset.catalog) == len(load_dataset(FIXTURES / "ml-100k").catalog)
    assert mirror.requests == ["/datasets/movielens/ml-100k.zip.md5", "/datasets/movielens/ml-100k.zip"]


def test_rerun_finds_the_dataset_and_downloads_nothing(mirror: Mirror, tmp_path: Path) -> None:
    archive = build_archive()
    mirror.serve("ml-100k", archive)
    root = tmp_path / "data"
    first = download_dataset("ml-100k", root, mirror=mirror.url, sha256=sha256(archive), progress=False)
    seen = len(mirror.requests)
    assert download_dataset("ml-100k", root, mirror=mirror.url, sha256=sha256(archive)) == first
    assert len(mirror.requests) == seen


def test_ml_latest_small_downloads_and_loads(mirror: Mirror, tmp_path: Path) -> None:
    archive = build_archive("ml-latest-small", FIXTURES / "ml-latest-small")
    mirror.serve("ml-latest-small", archive)
    folder = download_dataset("ml-latest-small", tmp_path, mirror=mirror.url, sha256=sha256(archive), progress=False)
    dataset = load_dataset(folder)
    assert dataset.interactions is not None and len(dataset.interactions) == 4


def test_archive_other_than_the_pinned_release_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    mirror.serve("ml-100k", build_archive())  # the published MD5 matches, the pinned GroupLens sha256 cannot
    with pytest.raises(DownloadError, match=r"sha256 .* does not match the expected 50d2a982"):
        download_dataset("ml-100k", tmp_path, mirror=mirror.url, progress=False)
    assert leftovers(tmp_path) == []


def test_md5_mismatch_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    archive = build_archive()
    mirror.serve("ml-100k", archive, md5="0" * 32)
    with pytest.raises(DownloadError, match=r"MD5 .* does not match the published 0000"):
        download_dataset("ml-100k", tmp_path, mirror=mirror.url, sha256=sha256(archive), progress=False)
    assert leftovers(tmp_path) == []


def test_missing_archive_is_a_clear_error(mirror: Mirror, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"ml-1m\.zip\.md5: HTTP 404"):
        download_dataset("ml-1m", tmp_path, mirror=mirror.url, progress=False)
    mirror.files["/ml-1m.zip.md5"] = Response(b"MD5 (ml-1m.zip) = " + b"a" * 32)
    with pytest.raises(DownloadError, match=r"ml-1m\.zip: HTTP 404"):
        download_dataset("ml-1m", tmp_path, mirror=mirror.url, progress=False)
    assert leftovers(tmp_path) == []


def test_truncated_download_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    archive = build_archive()
    mirror.serve("ml-100k", archive)
    mirror.files["/ml-100k.zip"] = Response(archive[: len(archive) // 2], announced=len(archive))
    with pytest.raises(DownloadError, match=r"truncated|interrupted after \d+ bytes"):
        download_dataset("ml-100k", tmp_path, mirror=mirror.url, sha256=sha256(archive), progress=False)
    assert leftovers(tmp_path) == []


def test_unreachable_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot download"):
        download_dataset("ml-100k", tmp_path, mirror=f"http://127.0.0.1:{port}", progress=False)


@pytest.mark.parametrize("member", ["../evil.txt", "ml-100k/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt"])
def test_zip_slip_member_refuses_the_archive(mirror: Mirror, tmp_path: Path, member: str) -> None:
    archive = build_archive(extra={member: b"owned"})
    mirror.serve("ml-100k", archive)
    root = tmp_path / "deep" / "data"
    with pytest.raises(DownloadError, match=r"unsafe member|outside"):
        download_dataset("ml-100k", root, mirror=mirror.url, sha256=sha256(archive), progress=False)
    assert not list(tmp_path.rglob("evil.txt"))
    assert leftovers(root) == []


def test_symlink_member_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    link = zipfile.ZipInfo("ml-100k/passwd")
    link.external_attr = 0o120777 << 16  # a symlink, as `zip --symlinks` stores it
    buffer = io.BytesIO(build_archive())
    with zipfile.ZipFile(buffer, "a") as bundle:
        bundle.writestr(link, "/etc/passwd")
    archive = buffer.getvalue()
    mirror.serve("ml-100k", archive)
    with pytest.raises(DownloadError, match="not a plain file"):
        download_dataset("ml-100k", tmp_path, mirror=mirror.url, sha256=sha256(archive), progress=False)


def test_not_a_zip_or_not_the_dataset(mirror: Mirror, tmp_path: Path) -> None:
    junk = b"<html>maintenance</html>"
    mirror.serve("ml-100k", junk)
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_dataset("ml-100k", tmp_path, mirror=mirror.url, sha256=sha256(junk), progress=False)
    wrong = build_archive("ml-1m", FIXTURES / "ml-1m")
    mirror.serve("ml-100k", wrong)
    with pytest.raises(DownloadError, match=r"holds no ml-100k/u\.data"):
        download_dataset("ml-100k", tmp_path, mirror=mirror.url, sha256=sha256(wrong), progress=False)
    assert leftovers(tmp_path) == []


def test_cli_download_with_mirror_from_the_environment(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = build_archive()
    mirror.serve("ml-100k", archive)
    monkeypatch.setenv("ZSGEN_DATA_MIRROR", mirror.url)
    monkeypatch.setenv("ZSGEN_DATA_DIR", str(tmp_path / "env-dir"))
    assert main(["data", "download", "ml-100k", "--sha256", sha256(archive), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "env-dir" / "ml-100k")
    assert main(["data", "list"]) == 0
    assert "ml-100k          present" in capsys.readouterr().out


def test_cli_download_errors_are_one_line(mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = build_archive()
    mirror.serve("ml-100k", archive, md5="f" * 32)
    argv = ["data", "download", "ml-100k", "--dir", str(tmp_path), "--mirror", mirror.url, "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("zsgen: error: ") and "does not match the published" in err
    assert err.count("\n") == 1
    assert main(["data", "download", "ml-100k", "--dir", str(tmp_path), "--mirror", "ftp://x"]) == 1
    assert "must be http(s)" in capsys.readouterr().err


# ---------------------------------------------------------------- the data directory and configs


def test_data_dir_from_environment_or_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZSGEN_DATA_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"
    monkeypatch.delenv("ZSGEN_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform not in ("win32", "darwin"):
        assert default_data_dir() == tmp_path / "xdg" / "zsgen" / "datasets"
    assert default_data_dir().parts[-2:] == ("zsgen", "datasets")
    with pytest.raises(ConfigError, match="plain folder name"):
        dataset_path("../ml-100k", tmp_path)


CONFIG = """
name = "named"
protocol = "llmrank"
{dataset}
[[rankers]]
name = "pop"
kind = "popularity"
"""


def write_config(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(CONFIG.format(dataset=dataset), encoding="utf-8")
    return path


def test_config_names_a_dataset_in_the_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "ml-latest-small", data / "ml-latest-small")
    table = write_config(tmp_path, '[dataset]\nname = "ml-latest-small"')
    config = load_config(table, data_dir=data)
    assert (config.dataset.path, config.dataset.name) == (str((data / "ml-latest-small").resolve()), None)
    monkeypatch.setenv("ZSGEN_DATA_DIR", str(data))
    assert load_config(write_config(tmp_path, 'dataset = "ml-latest-small"')).dataset.path == config.dataset.path
    with pytest.raises(ConfigError, match=r"dataset\.name: dataset 'ml-1m' not found .* `zsgen data download ml-1m`"):
        load_config(write_config(tmp_path, 'dataset = "ml-1m"'))


@pytest.mark.parametrize(
    "table", ['[dataset]\nname = "ml-100k"\npath = "x"', '[dataset]\nformat = "csv"', '[dataset]\npath = ""']
)
def test_config_needs_exactly_one_of_path_and_name(tmp_path: Path, table: str) -> None:
    with pytest.raises(ConfigError, match=r"exactly one of `dataset\.path`"):
        load_config(write_config(tmp_path, table), data_dir=tmp_path)


@pytest.mark.data
def test_config_name_finds_the_shared_recbole_folder(shared_data: Path, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, 'dataset = "ml-100k"'), data_dir=shared_data)
    assert Path(config.dataset.path) == (shared_data / "ml-100k").resolve()
    assert len(load_dataset(config.dataset.path).catalog) == 1682


def test_cli_evaluate_data_dir_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "ml-latest-small", data / "ml-latest-small")
    config = write_config(tmp_path, 'dataset = "ml-latest-small"')
    argv = ["evaluate", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*argv, "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "not found in the data directory" in capsys.readouterr().err
    assert main([*argv, "--data-dir", str(data)]) == 0
    assert (tmp_path / "out" / "report.md").is_file()
    resolved = load_config(tmp_path / "out" / "config.toml")  # the run records the path the name resolved to
    assert Path(resolved.dataset.path) == (data / "ml-latest-small").resolve() and resolved.dataset.name is None
    assert main([*argv, "--data-dir", str(data)]) == 0  # and resumes into its folder: same fingerprint
