"""The ``zsgen`` command: ``recommend | encode | prompts | evaluate | tune`` (see :mod:`zsgen.cli.app`)."""

from zsgen.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
