"""Prompt templates: user-editable Jinja2 files that turn a user and candidates into chat messages.

A template file starts with a header comment that says what it is for, which variables it reads and what kind of
answer it asks for::

    {#- zsgen
    description: one listwise call; the model returns the best labels in order
    variables: history, candidates, n, profile
    output: labels
    answer: JSON object {"ranking": ["C", "A", ...]}
    -#}
    <<system>>
    ...
    <<user>>
    ...

Lines that hold only ``<<system>>``, ``<<user>>`` or ``<<assistant>>`` start a new chat message. They are recognised
in the template *source*, before rendering, and turned into a private separator that variables can never contain, so
an item description cannot open a message of its own however it is worded. Item text is further flattened to one line
and any role-marker look-alike in it is defused, so what the model sees cannot pass for a marker either. The same
holds for the role and control tokens of chat templates (``<|im_start|>``, ``[INST]``, ``<<SYS>>``, ``</s>``,
``<start_of_turn>``, ...; see :data:`CHAT_TOKEN`): in every variable they become inert text such as ``(im_start)``,
so catalog text or a profile cannot open a turn of its own in the messages sent to a server either. Local backends
also remove their own tokenizer's exact special tokens from the finished messages
(:func:`zsgen.llm.models.render_chat`).

Templates are user input: they render in Jinja2's immutable sandbox with ``StrictUndefined``, so a template can neither
reach Python internals nor silently print an unknown name as nothing. Every fault becomes a
:class:`~zsgen.errors.TemplateError` naming the file and line.

Rendering is also bounded in cost (:data:`LIMITS`), the same in ``zsgen prompts check``, ``zsgen prompts render`` and
real reranking, since all of them render through :meth:`PromptTemplate.render`: at most 1 s of CPU time per render,
1,000,000 characters of rendered text, 1,000,000 characters or elements in any one value (so no padding, repetition,
``replace``, join or format beyond that), 20,000,000 characters built per render in all, 100,000 loop iterations
per render, 10,000-bit integers, and format widths up to 10,000. Crossing one raises
:class:`TemplateLimitError`, a :class:`~zsgen.errors.TemplateError` whose message names the limit
("template limit exceeded: loop iterations ..."). Real prompts stay orders of magnitude below them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import jinja2

from zsgen.errors import ConfigError, TemplateError
from zsgen.paths import prompts_dir
from zsgen.templates.defuse import _mark_roles, _sanitise, _split_messages
from zsgen.templates.header import TEMPLATE_SUFFIX, OutputFormat, _parse_header
from zsgen.templates.sandbox import (
    _ENV,
    TemplateLimitError,
    _describe,
    _template_line,
    render_limited,
)


class PromptTemplate:
    """One parsed and compiled template file.

    ``hash`` is the first 16 hex digits of the SHA-256 of the file's source; results and caches record it so that
    an edited template is never confused with the original.
    """

    def __init__(self, name: str, source: str, path: Path | None = None, *, isolated: bool | None = None) -> None:
        self.name = name
        self.source = source
        self.path = path
        #: Whether :meth:`render` runs in a worker process killed at the limit (:mod:`zsgen.templates.worker`): by
        #: default every template but the packaged ones (a user's file, a playground draft).
        self.isolated = not _packaged(path) if isolated is None else isolated
        self.hash = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
        self._where = str(path) if path is not None else name
        header = _parse_header(source, self._where)
        self.description = header.description
        self.variables: tuple[str, ...] = header.variables
        self.output: OutputFormat = header.output
        self.answer = header.answer
        self.header_line = header.line
        self._filename = self._where if path is not None else f"<prompt {name}>"
        try:
            code = _ENV.compile(_mark_roles(source), name=name, filename=self._filename)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"syntax error: {exc.message}", template=self._where, line=exc.lineno) from None
        self._template = _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None))

    @classmethod
    def from_file(cls, path: Path) -> PromptTemplate:
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"cannot read template: {exc.strerror or exc}", template=str(path)) from None
        except UnicodeDecodeError:
            raise TemplateError("template is not UTF-8 text", template=str(path)) from None
        return cls(path.name.removesuffix(TEMPLATE_SUFFIX), source, path)

    def __repr__(self) -> str:
        return f"PromptTemplate({self.name!r}, output={self.output!r}, hash={self.hash!r})"

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Chat messages ``[{"role": ..., "content": ...}]`` for these variables.

        Only the variables the header declares are passed in (others are ignored), so a template cannot come to
        depend on a name that ``check_dir`` did not see; a declared one that is missing is an error. An isolated
        template renders in a worker process that is killed at the limit; this call then blocks its thread (never an
        event loop's: async callers run it in a worker thread) for at most that long.
        """
        missing = [name for name in self.variables if name not in variables]
        if missing:
            raise TemplateError(f"missing variables: {', '.join(missing)}", template=self._where)
        context = {name: _sanitise(variables[name], name) for name in self.variables}
        if self.isolated:
            from zsgen.templates.worker import render_isolated

            path = str(self.path) if self.path is not None else None
            text = render_isolated(name=self.name, source=self.source, path=path, context=context, where=self._where)
        else:
            text = self.render_text(context)
        return _split_messages(text, self._where)

    def render_text(self, context: dict[str, Any]) -> str:
        """The rendered text for an already sanitised ``context``, in this process, under the sandbox's budget."""
        try:
            return render_limited(self._template, context)
        except Exception as exc:  # any fault inside a user template is a template error
            limit = exc.limit if isinstance(exc, TemplateLimitError) else None
            raise TemplateError(
                _describe(exc), template=self._where, line=_template_line(exc, self._filename), limit=limit
            ) from exc


def _packaged(path: Path | None) -> bool:
    """Whether ``path`` is one of the templates shipped with zsgen."""
    if path is None:
        return False
    try:
        return path.resolve().parent == prompts_dir().resolve()
    except (OSError, ConfigError):
        return False


class PromptLibrary:
    """Templates by name: the files in ``user_dir`` override the packaged defaults of the same name."""

    def __init__(self, user_dir: Path | str | None = None) -> None:
        self.packaged_dir = prompts_dir()
        self.user_dir = Path(user_dir) if user_dir is not None else None
        if self.user_dir is not None and not self.user_dir.is_dir():
            raise ConfigError(f"template directory {self.user_dir} does not exist or is not a directory")
        self._cache: dict[Path, tuple[tuple[int, int], PromptTemplate]] = {}

    def _files(self, folder: Path | None) -> dict[str, Path]:
        if folder is None:
            return {}
        found = sorted(p for p in folder.glob(f"*{TEMPLATE_SUFFIX}") if p.is_file())
        return {p.name.removesuffix(TEMPLATE_SUFFIX): p for p in found}

    def names(self) -> list[str]:
        return sorted({*self._files(self.packaged_dir), *self._files(self.user_dir)})

    def path(self, name: str) -> Path:
        found = self._files(self.user_dir).get(name) or self._files(self.packaged_dir).get(name)
        if found is None:
            raise TemplateError(f"no template named {name!r}; available: {', '.join(self.names())}")
        return found

    def origin(self, name: str) -> Literal["user", "packaged"]:
        self.path(name)  # unknown names raise, listing the available ones
        return "user" if name in self._files(self.user_dir) else "packaged"

    def overrides(self, name: str) -> bool:
        """Whether a user file hides a packaged template of the same name."""
        return name in self._files(self.user_dir) and name in self._files(self.packaged_dir)

    def get(self, name: str) -> PromptTemplate:
        path = self.path(name)
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)  # an edited file is read again
        cached = self._cache.get(path)
        if cached is None or cached[0] != version:
            cached = (version, PromptTemplate.from_file(path))
            self._cache[path] = cached
        return cached[1]


# -- validation ---------------------------------------------------------------------------------------------------
