"""The template being edited: compiled in the sandbox, checked with line numbers, listed, loaded and saved.

The page sends template *text*; it is compiled as a :class:`~zsgen.templates.PromptTemplate` in memory (the same
immutable sandbox with ``StrictUndefined`` and render limits every template gets) and never written anywhere except by
"save". Checking reuses :func:`zsgen.templates.check_template_file`, the checks of ``zsgen prompts check``, on a copy
in a private temporary folder, and adds the one thing only the playground knows: whether the method being run can
read the template's ``output:``.

Saving is the only write. The name must be a plain ``[A-Za-z0-9_-]+.jinja`` file name, matched whole (so nothing
outside the template folder can be named, and no trailing newline slips through), and must not be a packaged
template's name (a saved ``listwise.jinja`` would silently replace the packaged one for every request at the next
start). An existing file is replaced only when asked, and a template that does not compile is refused. The file is
written to a temporary name beside it and renamed into place, so a reader never sees half.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from zsgen.errors import ConfigError, TemplateError
from zsgen.rerank import RerankConfig, method_class
from zsgen.templates import TEMPLATE_SUFFIX, PromptLibrary, PromptTemplate, check_template_file

__all__ = [
    "EDIT_NAME",
    "MAX_TEMPLATE_CHARS",
    "Problem",
    "SaveConflict",
    "TemplateSource",
    "check_source",
    "compile_source",
    "last_step_name",
    "load_template",
    "save_template",
    "template_names",
]

#: The name an edited template carries in messages and results (its hash tells edits apart).
EDIT_NAME = "playground"
#: The longest template text accepted (packaged templates are about 3,000 characters).
MAX_TEMPLATE_CHARS = 100_000
_SAVE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}\.jinja")  # matched whole (fullmatch): no "$" before a newline


class SaveConflict(ConfigError):
    """A template of that name exists and overwriting was not asked for."""


class Problem(BaseModel):
    """One thing wrong with the edited template: a line in the page's text (None when not tied to one)."""

    line: int | None = None
    message: str


def _bounded(source: str) -> str:
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template text is {len(source):,} characters; at most {MAX_TEMPLATE_CHARS:,} accepted")
    return source


def compile_source(source: str) -> PromptTemplate:
    """The page's text as a template; a :class:`TemplateError` with the line for a header or syntax fault."""
    return PromptTemplate(EDIT_NAME, _bounded(source))


def last_step_name(config: RerankConfig | None) -> str:
    """The template the page starts from: the one the configured method renders last (``listwise`` by default)."""
    if config is None:
        return "listwise"
    return method_class(config.method).template_names(config.template)[-1]


def check_source(source: str, config: RerankConfig | None) -> list[Problem]:
    """Everything ``zsgen prompts check`` finds in the text, plus a method that cannot read its ``output:``."""
    _bounded(source)
    with tempfile.TemporaryDirectory(prefix="zsgen-playground-") as folder:
        path = Path(folder) / f"{EDIT_NAME}{TEMPLATE_SUFFIX}"
        path.write_text(source, encoding="utf-8")
        problems = [Problem(line=p.line, message=p.message) for p in check_template_file(path)]
    if problems or config is None:
        return problems
    template = compile_source(source)
    wanted = method_class(config.method).steps[-1].output
    if template.output != wanted:
        lines = source.splitlines()
        line = next((i for i, text in enumerate(lines, 1) if text.startswith("output:")), template.header_line)
        problems.append(
            Problem(
                line=line,
                message=f"declares output: {template.output}, but method {config.method!r} reads output: {wanted}",
            )
        )
    return problems


@dataclass(frozen=True)
class TemplateSource:
    """A template's text and whether it came from the template folder (``user``) or the package."""

    name: str
    origin: str
    source: str


def template_names(template_dir: Path) -> list[str]:
    """The packaged templates and those in the template folder (which override packaged ones of the same name)."""
    return _library(template_dir).names()


def load_template(template_dir: Path, name: str) -> TemplateSource:
    """One template's text by name, from the template folder first, then the packaged ones."""
    library = _library(template_dir)
    if name not in library.names():
        raise TemplateError(f"no template named {name!r}")
    path = library.path(name)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template {name!r}: {exc}") from None
    return TemplateSource(name=name, origin=library.origin(name), source=source)


def _library(template_dir: Path) -> PromptLibrary:
    return PromptLibrary(template_dir if template_dir.is_dir() else None)


def save_template(template_dir: Path, filename: str, source: str, *, overwrite: bool = False) -> tuple[Path, bool]:
    """Write ``source`` as ``template_dir/filename`` after checking the name and that it compiles; return the path
    and whether an existing file was replaced.

    Raises :class:`ConfigError` for a bad name or a missing folder, :class:`SaveConflict` for an existing file
    without ``overwrite``, :class:`TemplateError` for text that does not compile.
    """
    if filename and not filename.endswith(TEMPLATE_SUFFIX):
        filename += TEMPLATE_SUFFIX  # requests name templates without the suffix: a save name may too
    if not _SAVE_NAME.fullmatch(filename):
        raise ConfigError(f"template file name must look like name or name{TEMPLATE_SUFFIX} (letters, digits, _ and -)")
    if filename.removesuffix(TEMPLATE_SUFFIX) in PromptLibrary().names():
        raise ConfigError(
            f"template file name {filename!r} is a packaged template's; a saved copy would replace it for every "
            "request at the next start, so save it under another name"
        )
    if not template_dir.is_dir():
        raise ConfigError("the template folder does not exist")
    PromptTemplate(filename.removesuffix(TEMPLATE_SUFFIX), _bounded(source))  # refuse what would not load
    target = template_dir / filename
    existed = target.exists()
    if existed and not overwrite:
        raise SaveConflict(f"{filename} exists; ask to overwrite it")
    handle, temporary = tempfile.mkstemp(prefix=f".{filename}.", dir=template_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(source)
        os.chmod(temporary, 0o644)
        if overwrite:
            os.replace(temporary, target)
        else:  # a link fails if the name appeared meanwhile: two saves cannot both "create" it
            try:
                os.link(temporary, target)
            except FileExistsError:
                raise SaveConflict(f"{filename} exists; ask to overwrite it") from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target, existed
