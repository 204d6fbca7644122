"""``python -m zsgen.evaluate --config ... --out ...``: the evaluate command without the rest of the CLI."""

from __future__ import annotations

import argparse
import logging
import sys

from zsgen.cli_evaluate import add_subparser
from zsgen.errors import ZsgenError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zsgen.evaluate")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ZsgenError as exc:
        print(f"zsgen: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
