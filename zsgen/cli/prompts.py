"""``zsgen prompts list | show | render | check``: look at, try out and validate prompt templates.

Rendering a template against real catalog items before a run is the cheapest way to see what the model will be
asked, and ``check`` is meant for CI on a folder of edited templates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from zsgen.catalog import Catalog
from zsgen.cli.common import print_json, printable
from zsgen.errors import ConfigError, ZsgenError
from zsgen.templates import PromptLibrary, check_dir

if TYPE_CHECKING:
    from zsgen.cli.common import Subparsers


def add_subparser(subparsers: Subparsers) -> None:
    """Register ``prompts`` and its actions; each action sets ``args.func``."""
    parser = subparsers.add_parser(
        "prompts",
        help="list, show, render and check prompt templates",
        description="Look at, try out and validate the Jinja2 prompt templates the LLM rerankers render.",
    )
    actions = parser.add_subparsers(
        dest="prompts_action", required=True, metavar="ACTION", title="actions", help="what to do with templates"
    )

    def with_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--template-dir", type=Path, help="folder whose *.jinja files override packaged templates")

    p = actions.add_parser("list", help="templates with their output format and description")
    with_dir(p)
    p.set_defaults(func=_cmd_list)

    p = actions.add_parser("show", help="print a template's source")
    p.add_argument("name", help="template name, e.g. listwise (see zsgen prompts list)")
    with_dir(p)
    p.set_defaults(func=_cmd_show)

    p = actions.add_parser("render", help="render a template with catalog items and print the chat messages")
    p.add_argument("name", help="template name, e.g. listwise (see zsgen prompts list)")
    p.add_argument("--history", nargs="*", default=[], metavar="ID", help="history item ids or titles, oldest first")
    p.add_argument(
        "--candidates",
        nargs="+",
        required=True,
        metavar="ID",
        help="candidate item ids or titles (a pointwise template shows the first)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--catalog", type=Path, help="catalog file or dataset folder")
    source.add_argument("--demo", action="store_true", help="use the packaged demo catalog")
    p.add_argument("--profile", help="free-text profile (cold-start users)")
    p.add_argument("--n", type=int, help="how many labels to ask for (default: all candidates)")
    p.add_argument("--labels", choices=("letters", "numbers"), default="letters", help="label style")
    p.add_argument("--preferences", default="(the answer of NIR step 1)", help="text for NIR's `preferences`")
    p.add_argument("--representative", default="(the answer of NIR step 2)", help="text for NIR's `representative`")
    p.add_argument("--json", action="store_true", help="print the messages as JSON")
    with_dir(p)
    p.set_defaults(func=_cmd_render)

    p = actions.add_parser("check", help="validate every *.jinja file in a folder (exit 1 on any problem)")
    p.add_argument("directory", type=Path, help="folder of *.jinja templates to validate")
    p.set_defaults(func=_cmd_check)


def _cmd_list(args: argparse.Namespace) -> int:
    library = PromptLibrary(args.template_dir)
    rows: list[tuple[str, str, str]] = []
    for name in library.names():
        marker = "*" if library.origin(name) == "user" else " "
        try:
            template = library.get(name)
            rows.append((f"{marker}{name}", template.output, _first_sentence(template.description)))
        except ZsgenError as exc:
            rows.append((f"{marker}{name}", "BROKEN", str(exc)))
    width = max(len(r[0]) for r in rows)
    for name, output, description in rows:
        print(f"{name.ljust(width)}  {output.ljust(12)}  {description}")
    if any(r[0].startswith("*") for r in rows):
        print(f"(* = from {library.user_dir}, overriding or adding to the packaged templates)")
    return 0


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + dot.strip()


def _cmd_show(args: argparse.Namespace) -> int:
    library = PromptLibrary(args.template_dir)
    template = library.get(args.name)
    print(f"# {template.path}  (hash {template.hash})")
    sys.stdout.write(template.source if template.source.endswith("\n") else template.source + "\n")
    return 0


def _load_catalog(args: argparse.Namespace) -> Catalog:
    from zsgen.loaders import load_dataset, load_demo

    return load_demo().catalog if args.demo else load_dataset(args.catalog).catalog


def _cmd_render(args: argparse.Namespace) -> int:
    from zsgen.rerank import build_messages  # the reranker's own prompt builder, so the render matches a real run
    from zsgen.types import History, Profile

    template = PromptLibrary(args.template_dir).get(args.name)
    catalog = _load_catalog(args)
    if args.profile is not None and not args.profile.strip():
        raise ConfigError("--profile is blank: give a profile text, or leave the option out")
    n = len(args.candidates) if args.n is None else args.n
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    messages = build_messages(
        template,
        catalog,
        History.from_ids([catalog.resolve(key) for key in args.history]),
        Profile(text=args.profile) if args.profile else None,
        [catalog.resolve(key) for key in args.candidates],
        label_style=args.labels,
        n=n,
        chain={"preferences": args.preferences, "representative": args.representative},
    )
    if args.json:
        print_json(messages)
    else:
        for message in messages:
            print(f"----- {message['role']} -----")
            print(printable(message["content"]))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    problems = check_dir(args.directory)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args.directory}: all templates OK")
    return 1 if problems else 0
