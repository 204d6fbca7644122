"""Public datasets by name: where they live on this machine and how to fetch the GroupLens MovieLens archives.

A *data directory* holds one folder per dataset (``ml-100k/``, ``ml-1m/``, ``ml-latest-small/``, or any folder a
loader reads, such as the RecBole ``ml-100k`` files). It is, in order: the directory given explicitly (``--dir``,
``--data-dir``), ``$ZSGEN_DATA_DIR``, else the user data dir: ``$XDG_DATA_HOME/zsgen/datasets`` (default
``~/.local/share/zsgen/datasets``) on Linux, ``~/Library/Application Support/zsgen/datasets`` on macOS,
``%LOCALAPPDATA%\\zsgen\\datasets`` on Windows.

:func:`download_dataset` fetches an archive with the standard library only (no extra dependency for a one-off
download), writes it to a temporary file, checks it against a sha256 pinned here *and* the MD5 GroupLens publishes
beside each archive (``<name>.zip.md5``), and unpacks it member by member into a temporary folder that is renamed into
place last: a folder under its final name is always complete, so an interrupted download is simply redone. Member
names that would land outside the data directory (zip-slip) are refused, and nothing but plain files is written.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from zsgen.errors import ConfigError, ZsgenError

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_MIRROR",
    "KNOWN_DATASETS",
    "MIRROR_ENV",
    "DownloadError",
    "KnownDataset",
    "data_dir",
    "dataset_path",
    "default_data_dir",
    "download_dataset",
]

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ZSGEN_DATA_DIR"
MIRROR_ENV = "ZSGEN_DATA_MIRROR"
DEFAULT_MIRROR = "https://files.grouplens.org/datasets/movielens"
#: Seconds without a byte before a download gives up; generous, a slow link must not fail a 6 MB download.
TIMEOUT_S = 60.0
_CHUNK = 1 << 16
_MD5 = re.compile(r"\b[0-9a-fA-F]{32}\b")


class DownloadError(ZsgenError):
    """A dataset could not be fetched or unpacked: network failure, checksum mismatch or a bad archive."""


@dataclass(frozen=True)
class KnownDataset:
    """A GroupLens archive: its name (also the folder inside the zip), a file that proves the folder is complete,
    and the sha256 of the published archive."""

    name: str
    marker: str
    sha256: str
    description: str


# sha256 of the archives as GroupLens serves them; the same values are pinned by TensorFlow Datasets and many
# projects (ml-latest-small is the 2018-09-26 release, the one served since). The MD5 is not pinned: it is read from
# GroupLens's own ``.md5`` file, so a mirror must serve both.
KNOWN_DATASETS: dict[str, KnownDataset] = {
    "ml-100k": KnownDataset(
        "ml-100k",
        "u.data",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies (4.9 MB)",
    ),
    "ml-1m": KnownDataset(
        "ml-1m",
        "ratings.dat",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        "MovieLens 1M: 1,000,209 ratings, 6,040 users, 3,706 movies (5.9 MB)",
    ),
    "ml-latest-small": KnownDataset(
        "ml-latest-small",
        "ratings.csv",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        "MovieLens latest small: 100,836 ratings, 610 users, 9,742 movies (1 MB)",
    ),
}


def default_data_dir() -> Path:
    """``$ZSGEN_DATA_DIR``, else the platform's user data dir (see the module docstring). Not created here."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "zsgen" / "datasets"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: ``explicit`` if given, else :func:`default_data_dir`."""
    return Path(explicit).expanduser() if explicit else default_data_dir()


def dataset_path(name: str, directory: str | Path | None = None) -> Path:
    """The folder of dataset ``name`` in the data directory; it must exist (any layout the loaders read)."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise ConfigError(f"dataset name {name!r} must be a plain folder name such as 'ml-100k'")
    root = data_dir(directory)
    path = root / name
    if not path.is_dir():
        hint = f"run `zsgen data download {name}`" if name in KNOWN_DATASETS else "put the dataset folder there"
        raise ConfigError(
            f"dataset {name!r} not found in the data directory {root} ({hint}, or choose the directory with "
            f"--data-dir or ${DATA_DIR_ENV})"
        )
    return path


def _mirror(mirror: str | None) -> str:
    return (mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")


def download_dataset(
    name: str,
    directory: str | Path | None = None,
    *,
    mirror: str | None = None,
    sha256: str | None = None,
    progress: bool | None = None,
) -> Path:
    """Fetch, verify and unpack GroupLens dataset ``name`` into the data directory; returns its folder.

    A folder already there is kept as it is (no download). ``mirror`` is the base URL holding ``<name>.zip`` and
    ``<name>.zip.md5`` (default ``$ZSGEN_DATA_MIRROR``, else GroupLens over HTTPS). ``sha256`` replaces the pinned
    digest, for a mirror serving another release. ``progress``: a byte progress bar (default: when stderr is a
    terminal). Raises :class:`DownloadError` on a network failure, a checksum mismatch or a bad archive.
    """
    if name not in KNOWN_DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; zsgen can download {', '.join(KNOWN_DATASETS)}")
    known = KNOWN_DATASETS[name]
    root = data_dir(directory)
    target = root / name
    if target.is_dir():
        logger.info("%s is already present at %s; nothing downloaded", name, target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    base = _mirror(mirror)
    url = f"{base}/{name}.zip"
    expected_md5 = _published_md5(f"{url}.md5")
    expected_sha256 = (sha256 or known.sha256).lower()
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}.") as scratch:
        archive = Path(scratch) / f"{name}.zip"
        digests = _fetch(url, archive, progress=progress)
        if digests["md5"] != expected_md5:
            raise DownloadError(
                f"{url}: MD5 {digests['md5']} does not match the published {expected_md5} (corrupt or tampered "
                "download)"
            )
        if digests["sha256"] != expected_sha256:
            raise DownloadError(
                f"{url}: sha256 {digests['sha256']} does not match the expected {expected_sha256} (another release? "
                "pass --sha256 to accept it)"
            )
        unpacked = Path(scratch) / "unpacked"
        _extract(archive, unpacked)
        folder = unpacked / name
        if not (folder / known.marker).is_file():
            raise DownloadError(f"{url}: the archive holds no {name}/{known.marker}; not the {name} dataset")
        os.replace(folder, target)  # the last step: a folder under its final name is complete
    logger.info("%s downloaded and unpacked to %s", name, target)
    return target


def _open(url: str) -> http.client.HTTPResponse:
    if not url.lower().startswith(("https://", "http://")):
        raise ConfigError(f"mirror URL must be http(s), got {url!r}")
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DownloadError(f"{url}: cannot download ({reason})") from None
    return response


def _published_md5(url: str) -> str:
    """The MD5 in GroupLens's ``.md5`` file (``MD5 (x.zip) = HEX`` or ``HEX  x.zip``: any 32-hex token)."""
    try:
        with _open(url) as response:
            text = response.read(4096).decode("ascii", "replace")
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{url}: cannot download ({exc})") from None
    match = _MD5.search(text)
    if match is None:
        raise DownloadError(f"{url}: no MD5 checksum in the file")
    return match.group().lower()


def _fetch(url: str, path: Path, *, progress: bool | None) -> dict[str, str]:
    """Stream ``url`` into ``path``, hashing on the way; a short body (fewer bytes than announced) is an error."""
    from tqdm.auto import tqdm

    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    received = 0
    show = sys.stderr.isatty() if progress is None else progress
    with _open(url) as response:
        length = response.getheader("Content-Length")
        total = int(length) if length and length.isdigit() else None
        try:
            with (
                path.open("wb") as handle,
                tqdm(total=total, unit="B", unit_scale=True, desc=path.name, disable=not show, leave=False) as bar,
            ):
                while block := response.read(_CHUNK):
                    handle.write(block)
                    md5.update(block)
                    sha.update(block)
                    received += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"{url}: download interrupted after {received} bytes ({exc!r})") from None
    if total is not None and received != total:
        raise DownloadError(f"{url}: download truncated: {received} of {total} bytes")
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _extract(archive: Path, dest: Path) -> None:
    """Unpack plain files and folders only, each checked to stay inside ``dest`` (no zip-slip, no links)."""
    dest.mkdir()
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if not parts or member.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                    raise DownloadError(f"{archive.name}: unsafe member name {member.filename!r}; refusing the archive")
                target = root.joinpath(*parts).resolve()
                if not target.is_relative_to(root):
                    raise DownloadError(f"{archive.name}: member {member.filename!r} would land outside the folder")
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                mode = member.external_attr >> 16
                if mode and (mode & 0o170000) not in (0, 0o100000):  # a symlink or device: never created
                    raise DownloadError(f"{archive.name}: member {member.filename!r} is not a plain file")
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive.name}: not a valid zip archive ({exc})") from None
    except (zipfile.LargeZipFile, EOFError) as exc:
        raise DownloadError(f"{archive.name}: cannot unpack ({exc})") from None
