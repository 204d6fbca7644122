"""The checks of ``zsgen prompts check``: a template file's header, declared variables and a sample render with
made-up variables (:func:`sample_variables`), each problem located by file and line.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from pydantic import BaseModel, ConfigDict

from zsgen.errors import ConfigError, TemplateError
from zsgen.templates.defuse import _mark_roles
from zsgen.templates.header import KNOWN_VARIABLES, TEMPLATE_SUFFIX, _Header, _parse_header
from zsgen.templates.library import PromptTemplate
from zsgen.templates.sandbox import _ENV


class TemplateProblem(BaseModel):
    """One thing wrong with a template file, located as precisely as Jinja2 allows."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None = None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line is not None else f"{self.file}: {self.message}"


def _sample_item(i: int, title: str, genres: list[str]) -> dict[str, Any]:
    return {
        "id": f"sample-{i}",
        "title": title,
        "year": 1990 + i,
        "genres": genres,
        "description": f"A sample description of {title}.",
    }


def sample_variables(*, cold_start: bool = False) -> dict[str, Any]:
    """Made-up variables with every name the reranker supplies, for test renders.

    ``cold_start`` gives an empty history and a profile, which every template must also handle.
    """
    history = [
        _sample_item(1, "Sample Heist Picture", ["Crime", "Thriller"]),
        _sample_item(2, "Sample Space Opera", ["Sci-Fi", "Adventure"]),
        _sample_item(3, "Sample Courtroom Drama", ["Drama"]),
    ]
    titles = ["Candidate Film Alpha", "Candidate Film Bravo", "Candidate Film Charlie", "Candidate Film Delta"]
    labels = list(string.ascii_uppercase[: len(titles)])  # the reranker's default letter labels (zsgen.rerank.labels)
    candidates = [
        {"label": label, **_sample_item(10 + i, title, ["Comedy"] if i % 2 else ["Drama", "War"])}
        for i, (label, title) in enumerate(zip(labels, titles, strict=True))
    ]
    candidates[1]["year"] = None  # unknown years and descriptions occur in real catalogs
    candidates[2]["description"] = ""
    return {
        "history": [] if cold_start else history,
        "candidates": candidates,
        "candidate": candidates[0],
        "n": 3,
        "profile": "Sample profile: enjoys slow-burning mysteries and old westerns." if cold_start else None,
        "preferences": "Sample preferences: likes tense crime stories.",
        "representative": "Sample representative items: Sample Heist Picture.",
    }


def _first_use(ast: nodes.Template, name: str) -> int | None:
    lines = [node.lineno for node in ast.find_all(nodes.Name) if node.name == name and node.ctx == "load"]
    return min(lines) if lines else None


def _bare(exc: TemplateError) -> str:
    """The message without its "file:line: " prefix (a TemplateProblem carries those separately)."""
    where = exc.template or ""
    return str(exc).removeprefix(f"{where}:{exc.line}: ").removeprefix(f"{where}: ")


def check_template_file(path: Path) -> list[TemplateProblem]:
    """Everything wrong with one template file: header, syntax, variables, and a test render with sample data."""
    where = str(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [TemplateProblem(file=where, message=f"cannot read as UTF-8 text: {exc}")]
    problems: list[TemplateProblem] = []

    def add(message: str, line: int | None) -> None:
        problem = TemplateProblem(file=where, line=line, message=message)
        if problem not in problems:
            problems.append(problem)

    header: _Header | None = None
    try:
        header = _parse_header(source, where)
    except TemplateError as exc:
        add(_bare(exc), exc.line)
    try:
        ast = _ENV.parse(_mark_roles(source))
    except jinja2.TemplateSyntaxError as exc:
        add(f"syntax error: {exc.message}", exc.lineno)
        return problems
    if header is None:
        return problems

    declared = set(header.variables)
    for name in header.variables:
        if name not in KNOWN_VARIABLES:
            add(
                f"declares {name!r}, which the reranker never supplies (known: {', '.join(KNOWN_VARIABLES)})",
                header.line,
            )
    for name in sorted(meta.find_undeclared_variables(ast) - declared):
        add(f"uses variable {name!r}, which the header does not declare", _first_use(ast, name))
    needs = {"labels": "candidates", "label_logits": "candidates", "yes_no": "candidate"}.get(header.output)
    if needs is not None and needs not in declared:
        add(f"output {header.output!r} needs the variable {needs!r}", header.line)
    if problems:
        return problems

    try:
        template = PromptTemplate(path.name.removesuffix(TEMPLATE_SUFFIX), source, path)
    except TemplateError as exc:
        add(_bare(exc), exc.line)
        return problems
    for cold_start in (False, True):
        variables = sample_variables(cold_start=cold_start)
        scenario = "with an empty history and a profile" if cold_start else "with sample data"
        try:
            messages = template.render(**variables)
        except TemplateError as exc:
            add(f"fails to render {scenario}: {_bare(exc)}", exc.line)
            continue
        text = "\n".join(m["content"] for m in messages)
        if messages[-1]["role"] == "system":
            add(f"renders {scenario} a conversation that ends with a system message", None)
        shown: list[dict[str, Any]] = []
        if needs == "candidates":
            shown = variables["candidates"]
        elif needs == "candidate":
            shown = [variables["candidate"]]
        for item in shown:
            if item["title"] not in text:
                add(f"does not show candidate title {item['title']!r} when rendered {scenario}", None)
        if cold_start and "profile" in declared and variables["profile"] not in text:
            add("does not show the profile when the history is empty", None)
    return problems


def check_dir(directory: Path | str) -> list[TemplateProblem]:
    """Problems in every ``*.jinja`` file of ``directory`` (an empty list means all are usable)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"template directory {folder} does not exist or is not a directory")
    files = sorted(p for p in folder.glob(f"*{TEMPLATE_SUFFIX}") if p.is_file())
    if not files:
        return [TemplateProblem(file=str(folder), message=f"no *{TEMPLATE_SUFFIX} templates found")]
    problems: list[TemplateProblem] = []
    for path in files:
        problems.extend(check_template_file(path))
    return problems
