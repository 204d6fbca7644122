"""What every ``zsgen`` subcommand shares: global flags, logging and environment set-up, the error contract, and the
catalog/encoder options of the commands that read a dataset.

The error contract is the CLI's promise to a user: a :class:`~zsgen.errors.ZsgenError` (or an OS error such as an
unreadable or unwritable path) becomes ONE line ``zsgen: error: ...`` on stderr and exit status 1, never a
traceback; argparse usage errors keep argparse's own message and exit status 2. It lives here, once, so that a
subcommand cannot forget it or word it differently.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsgen.errors import ZsgenError
from zsgen.redact import RedactingFilter, redact

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

logger = logging.getLogger("zsgen")

Handler = Callable[[argparse.Namespace], int]

# Global flags may be given before or after the subcommand (``zsgen -v recommend`` and ``zsgen recommend -v``). argparse
# parses a subcommand's options into a fresh namespace and copies it over the parent's, so each level of the parser
# tree gets its own destination (suppressed unless given) and :func:`verbosity` adds them up.
_VERBOSE, _QUIET = "verbose", "quiet"


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """Add ``-v``/``-q`` to ``parser`` and every parser below it (call once the tree is complete)."""
    _add_global_options(parser, depth=0)


def _add_global_options(parser: argparse.ArgumentParser, depth: int) -> None:
    suffix = f"_{depth}" if depth else ""
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        dest=_VERBOSE + suffix,
        action="count",
        default=argparse.SUPPRESS if depth else 0,
        help="more log output: -v for progress (INFO), -vv for debugging (DEBUG, with tracebacks)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        dest=_QUIET + suffix,
        action="store_true",
        default=argparse.SUPPRESS if depth else False,
        help="only errors: no warnings, no progress bar in encode and evaluate (wins over -v)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_global_options(child, depth + 1)


def verbosity(args: argparse.Namespace) -> int:
    """-1 for ``-q``, else the number of ``-v`` given anywhere on the command line."""
    values = vars(args)
    if any(v for key, v in values.items() if key == _QUIET or key.startswith(_QUIET + "_")):
        return -1
    return sum(int(v) for key, v in values.items() if key == _VERBOSE or key.startswith(_VERBOSE + "_"))


def set_up(level: int) -> None:
    """Logging at WARNING (``-q``: ERROR, ``-v``: INFO, ``-vv``: DEBUG); no model progress bars unless verbose.

    zsgen never downloads a model, so the Hugging Face hub is put offline unless the caller says otherwise.
    """
    if level <= 0:  # model-loading progress bars are noise on a one-shot command
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # Both libraries read these at import; a process that imported them already (a program calling main(), a
        # test run) would still draw its bars on stderr, around the one-line error.
        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and "transformers" in sys.modules:
            from transformers.utils import logging as transformers_logging

            disable: Callable[[], None] = transformers_logging.disable_progress_bar  # untyped in transformers
            disable()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log_level = logging.ERROR if level < 0 else logging.WARNING - 10 * min(level, 2)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(log_level)  # basicConfig is a no-op if a handler exists (embedding, tests)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            # The HTTP client logs full request URLs at INFO, a base URL's password included.
            handler.addFilter(RedactingFilter())


def run_handler(handler: Handler, args: argparse.Namespace) -> int:
    """Run a subcommand under the error contract (see the module docstring)."""
    try:
        return int(handler(args))
    except BrokenPipeError:  # the reader went away (``zsgen recommend ... | head``): not an error worth a message
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second failure when Python flushes
        return 1
    except (ZsgenError, OSError) as exc:
        logger.debug("zsgen: error details", exc_info=True)
        print(f"zsgen: error: {redact(_one_line(exc))}", file=sys.stderr)  # no password of a base URL, ever
        return 1
    except KeyboardInterrupt:
        print("zsgen: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- printing ----------------------------------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes.

    A lone surrogate is a valid ``str`` but no UTF-8 stream can write it, and one arrives easily: an LLM answer holding
    the JSON escape ``"\\ud800"``, or undecodable bytes on the command line (Python's surrogateescape). Printing one
    raised UnicodeEncodeError after all the work was done. Inside JSON the escape is exactly JSON's own, so the output
    still reads back to the same string.
    """
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def argv_text(text: str | None) -> str | None:
    """A command-line text with undecodable bytes as U+FFFD instead of lone surrogates.

    Python decodes argv with surrogateescape, so bytes that are not UTF-8 become lone surrogates, which the encoder's
    tokenizer and every UTF-8 writer refuse. The user meant text; the replacement character says where it was broken.
    """
    if text is None:
        return None
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (non-ASCII kept readable; lone surrogates escaped, see :func:`printable`)."""
    print(printable(json.dumps(data, indent=2, ensure_ascii=False)))


# --- dataset and encoder options (recommend, encode) --------------------------------------------------------------


def add_catalog_options(parser: argparse.ArgumentParser) -> None:
    """``--catalog``/``--demo``, ``--format`` and the encoder options of a command that embeds a catalog."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--catalog", type=Path, help="catalog file or dataset folder (JSONL, CSV, MovieLens, RecBole)")
    source.add_argument("--demo", action="store_true", help="use the demo catalog that ships with zsgen (default)")
    parser.add_argument(
        "--format", dest="data_format", metavar="FORMAT", help="force a loader: jsonl, csv, ml-100k, ml-1m, recbole"
    )
    parser.add_argument("--encoder", type=Path, help="local embedding model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--embedding-cache", type=Path, help="embedding cache file (default: in the zsgen cache dir)")
    parser.add_argument("--no-embedding-cache", action="store_true", help="encode without reading or writing a cache")


def load_dataset_from(args: argparse.Namespace) -> Any:
    """The dataset named by ``--catalog`` (with ``--format`` and ``--interactions``), or the demo one."""
    from zsgen.loaders import load_dataset, load_demo

    if args.catalog is None:
        return load_demo()
    return load_dataset(args.catalog, format=args.data_format, interactions=getattr(args, "interactions", None))


def encoder_from(args: argparse.Namespace) -> Any:
    """The encoder of ``--encoder``, behind the embedding cache unless ``--no-embedding-cache``."""
    from zsgen.embed import build_encoder

    return build_encoder(args.encoder, cache=False if args.no_embedding_cache else args.embedding_cache)
