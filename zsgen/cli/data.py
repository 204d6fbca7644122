"""``zsgen data download NAME [--dir DIR]`` and ``zsgen data list``: fetch the GroupLens MovieLens archives.

Downloads are verified (pinned sha256 and GroupLens's published MD5) and unpacked where ``[dataset] name = "..."`` in
an evaluation config, and ``--catalog DIR/NAME``, find them; see :mod:`zsgen.loaders.datasets` for the data directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from zsgen.loaders.datasets import DATA_DIR_ENV, KNOWN_DATASETS, MIRROR_ENV, data_dir, download_dataset

if TYPE_CHECKING:
    from zsgen.cli.common import Subparsers


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``data`` and its actions."""
    parser = subparsers.add_parser(
        "data",
        help="download public datasets (MovieLens) into the data directory",
        description=f"Public datasets in the data directory (--dir, else ${DATA_DIR_ENV}, else the user data dir).",
    )
    actions = parser.add_subparsers(
        dest="data_action", required=True, metavar="ACTION", title="actions", help="what to do with datasets"
    )
    p = actions.add_parser(
        "download",
        help="fetch, verify and unpack a GroupLens MovieLens archive",
        description="Fetch a GroupLens archive over HTTPS, check its sha256 and published MD5, and unpack it into "
        "the data directory. A dataset already there is not downloaded again.",
    )
    p.add_argument("name", choices=sorted(KNOWN_DATASETS), help="dataset to fetch")
    p.add_argument("--dir", type=Path, help=f"data directory (default: ${DATA_DIR_ENV}, else the user data dir)")
    p.add_argument(
        "--mirror", help=f"base URL holding NAME.zip and NAME.zip.md5 (default: ${MIRROR_ENV}, else GroupLens)"
    )
    p.add_argument("--sha256", help="expected sha256 of the archive (default: the pinned GroupLens release)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also with -q)")
    p.set_defaults(func=_cmd_download)
    p = actions.add_parser("list", help="the datasets zsgen can download, and which are in the data directory")
    p.add_argument("--dir", type=Path, help=f"data directory (default: ${DATA_DIR_ENV}, else the user data dir)")
    p.set_defaults(func=_cmd_list)


def _cmd_download(args: argparse.Namespace) -> int:
    progress = False if args.no_progress or args.verbosity < 0 else None
    path = download_dataset(args.name, args.dir, mirror=args.mirror, sha256=args.sha256, progress=progress)
    print(path)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    root = data_dir(args.dir)
    print(f"data directory: {root}")
    for name, known in KNOWN_DATASETS.items():
        state = "present" if (root / name).is_dir() else "not downloaded"
        print(f"  {name:<16} {state:<15} {known.description}")
    return 0
