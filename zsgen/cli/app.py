"""The ``zsgen`` command line: one parser tree, one module per subcommand, one error contract.

Each subcommand module (``recommend``, ``encode``, ``prompts``, ``evaluate``, ``tune``, ``batch``, ``data``,
``serve``) has
``add_subparser`` to register itself and a ``run(args) -> int`` (set as ``args.func``); the shared set-up and error
handling are in :mod:`zsgen.cli.common`. ``python -m zsgen`` and the ``zsgen`` console script both call :func:`main`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from zsgen.cli import batch, data, encode, evaluate, prompts, recommend, serve, tune
from zsgen.cli.common import add_global_options, run_handler, set_up, verbosity

SUBCOMMANDS = (recommend, encode, prompts, evaluate, tune, batch, data, serve)


def _version() -> str:
    import zsgen

    return f"zsgen {zsgen.__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The whole parser tree, global flags (``-v``, ``-q``) included at every level."""
    parser = argparse.ArgumentParser(
        prog="zsgen",
        description="Zero-shot next-item recommendation with LLMs: embedding retrieval, LLM reranking with a "
        "cosine fallback, offline evaluation.",
        epilog="Run 'zsgen COMMAND --help' for a command's options. Errors print one line 'zsgen: error: ...' and "
        "exit with status 1.",
    )
    parser.add_argument("--version", action="version", version=_version(), help="print zsgen's version and exit")
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands", help="what to do"
    )
    for module in SUBCOMMANDS:
        module.add_subparser(subparsers)
    add_global_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), set up logging and run the subcommand; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.verbosity = verbosity(args)
    set_up(args.verbosity)
    return run_handler(args.func, args)
