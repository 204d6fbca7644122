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

import contextvars
import functools
import hashlib
import re
import string
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import (
    Namespace,
    _PassArg,  # how Jinja tells which first argument a filter takes
    generate_lorem_ipsum,
)
from jinja2.visitor import NodeTransformer
from pydantic import BaseModel, ConfigDict

from zsgen.errors import ConfigError, TemplateError
from zsgen.paths import prompts_dir

#: What the model is asked to produce, so the reranker knows how to read it.
#: ``labels``: a ranked list of candidate labels; ``text``: free text that feeds a later chain step;
#: ``label_logits``: one label, read from the next-token logits; ``yes_no``: "Yes"/"No" about one candidate.
OutputFormat = Literal["labels", "text", "label_logits", "yes_no"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

#: The variables the reranker can supply. A template declares the subset it reads.
KNOWN_VARIABLES: dict[str, str] = {
    "history": "list of items the user consumed, oldest first: {id, title, year, genres, description}",
    "candidates": "list of items to rank, in shown order: {label, id, title, year, genres, description}",
    "candidate": "one item of the same shape (pointwise templates)",
    "n": "how many labels to ask for",
    "profile": "free text about the user, or None (cold-start users have only this)",
    "preferences": "NIR step 1's answer",
    "representative": "NIR step 2's answer",
}

ROLES: tuple[str, ...] = ("system", "user", "assistant")
TEMPLATE_SUFFIX = ".jinja"

_HEADER = re.compile(r"\A\ufeff?\s*\{#-?[ \t]*zsgen[ \t]*:?[ \t]*\n(?P<body>.*?)-?#\}", re.DOTALL)
_HEADER_KEYS = ("description", "variables", "output", "answer")
_REQUIRED_KEYS = ("description", "variables", "output")
_MARKER_LINE = re.compile(r"^[ \t]*<<(system|user|assistant)>>[ \t]*$", re.MULTILINE)
# A private-use character: variables never keep it (_clean_text strips it), so only the template source can produce
# the separator. It must not be whitespace, or Jinja's "-%}" / "-#}" trimming would eat it.
_SEP = "\ue000"
_SPLIT = re.compile(f"{_SEP}{_SEP}(system|user|assistant){_SEP}{_SEP}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\x85]")
_MARKER_LOOKALIKE = re.compile(r"<<\s*(system|user|assistant)\s*>>", re.IGNORECASE)
# Role and control tokens of common chat templates, in any case: ChatML and Llama 3 style ``<|im_start|>`` (and
# DeepSeek's full-width ``<｜...｜>``), Llama 2 ``[INST]``/``<<SYS>>``/``<s>``, Mistral's bracketed control words,
# Gemma's ``<start_of_turn>``. A server renders messages through its own template, so item text holding these could
# open turns of its own there; a local backend also removes its tokenizer's exact special tokens (zsgen.llm.models).
CHAT_TOKEN = re.compile(
    r"<[|\uff5c][^<>|\uff5c\s]{0,64}[|\uff5c]>"
    r"|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|THINK)\]"
    r"|<</?SYS>>"
    r"|</?s>"
    r"|<(?:start_of_turn|end_of_turn|bos|eos|pad|unk)>",
    re.IGNORECASE,
)
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# -- resource limits ----------------------------------------------------------------------------------------------
#
# The sandbox stops a template from reaching Python internals, not from spending: nested loops, huge paddings and
# formats, big integer powers and repeated doubling would run for minutes or exhaust memory in `zsgen prompts check`,
# `render` and real reranking alike. Every render therefore runs under these limits; crossing one raises
# TemplateLimitError (a TemplateError naming the limit). The checks sit where a template spends: every loop iteration
# (each `for` is rewritten to iterate through a counting guard), every call, attribute and item access, the
# operators `* ** + %` and `~`, every filter, every printed value and the rendered text itself (rendered through a
# generator, counted as it grows). Operations whose size is known beforehand (padding, repetition, powers, joins,
# formats) are refused before they run, so no gadget gets to allocate first.

#: CPU seconds one render may take (thread CPU time, so a busy machine does not make good templates fail).
MAX_RENDER_SECONDS = 1.0
#: Characters of rendered text.
MAX_OUTPUT_CHARS = 1_000_000
#: Characters (or elements) of any one value a template builds: a string, list, padding or format.
MAX_VALUE_CHARS = 1_000_000
#: Characters built in one render by all expressions, filters, calls, printed values and loop text together.
MAX_BUILT_CHARS = 20_000_000
#: Iterations of all ``for`` loops of one render together.
MAX_LOOP_ITERATIONS = 100_000
#: Bits of any integer a template computes (about 3,000 decimal digits).
MAX_INT_BITS = 10_000
#: Width or precision in a ``%`` or ``str.format`` format specification.
MAX_FORMAT_WIDTH = 10_000

LIMITS: dict[str, str] = {
    "time": f"{MAX_RENDER_SECONDS:g} s of CPU time per render",
    "output size": f"{MAX_OUTPUT_CHARS:,} characters of rendered text",
    "value size": f"{MAX_VALUE_CHARS:,} characters or elements in any one value",
    "work": f"{MAX_BUILT_CHARS:,} characters built per render",
    "loop iterations": f"{MAX_LOOP_ITERATIONS:,} loop iterations per render",
    "integer size": f"{MAX_INT_BITS:,}-bit integers",
    "format width": f"{MAX_FORMAT_WIDTH:,} as a format width or precision",
}


class TemplateLimitError(SecurityError):
    """A render crossed one of the :data:`LIMITS` (``limit`` is its key)."""

    def __init__(self, limit: str, detail: str) -> None:
        self.limit = limit
        super().__init__(f"template limit exceeded: {limit} (at most {LIMITS[limit]}): {detail}")


class _Budget:
    """What one render has spent so far; lives in a context variable while the render runs."""

    __slots__ = ("built", "deadline", "iterations", "output")

    def __init__(self) -> None:
        self.deadline = time.thread_time() + MAX_RENDER_SECONDS
        self.iterations = 0
        self.built = 0
        self.output = 0

    def tick(self) -> None:
        if time.thread_time() > self.deadline:
            raise TemplateLimitError("time", "the render was stopped")

    def iterate(self, chars: int) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise TemplateLimitError("loop iterations", "the loops ran on")
        self.charge(chars)
        self.tick()

    def charge(self, chars: int) -> None:
        self.built += chars
        if self.built > MAX_BUILT_CHARS:
            raise TemplateLimitError("work", "the template built too much text")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("zsgen_template_budget", default=None)


def _tick() -> _Budget | None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()
    return budget


def _size(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters ``str(value)`` has, found without building it; stops counting past ``limit``."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if value is None or isinstance(value, bool | float):
        return 8
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, list | tuple | set | frozenset):
        total = 2
        for element in value:
            total += _size(element, limit - total) + 2
            if total > limit:
                break
        return total
    return 64  # macros, Undefined, namespaces, loop objects: short representations


def _check_size(chars: int, what: str) -> None:
    if chars > MAX_VALUE_CHARS:
        raise TemplateLimitError("value size", f"{what} would be about {chars:,} characters or elements")


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError("integer size", f"{what} has {value.bit_length():,} bits")


def _built(value: Any, what: str) -> Any:
    """Check and charge a value an operation just built; returns it."""
    _check_int(value, what)
    if isinstance(value, str | bytes | list | tuple):
        _check_size(len(value), what)
        budget = _BUDGET.get()
        if budget is not None:
            budget.charge(len(value))
    return value


def _width(value: Any, what: str) -> int:
    """An int argument that sets a size (a padding width, a count), checked against the value size limit."""
    if isinstance(value, int) and not isinstance(value, bool):
        _check_size(value, what)
        return max(value, 0)
    return 0


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def _check_percent_format(fmt: str, args: Any) -> None:
    """``fmt % args``: literal widths only, none too wide, and the arguments not too big to print."""
    for match in _PERCENT_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise TemplateLimitError("format width", "'*' widths are not allowed in templates")
            if number is not None and int(number) > MAX_FORMAT_WIDTH:
                raise TemplateLimitError("format width", f"width or precision {int(number):,}")
    _check_size(len(fmt) + _size(args, MAX_VALUE_CHARS + 1), "the formatted string")


def _check_brace_format(fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """``fmt.format(...)``: literal widths only, and every field's value counted each time it is used."""
    fields = 0
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        fields += 1
        if spec and "{" in spec:
            raise TemplateLimitError("format width", "nested '{...}' format specifications are not allowed")
        for number in _NUMBER.findall(spec or ""):
            if int(number) > MAX_FORMAT_WIDTH:
                raise TemplateLimitError("format width", f"width or precision {int(number):,}")
    largest = max([_size(a) for a in args] + [_size(v) for v in kwargs.values()] + [0])
    _check_size(len(fmt) + fields * largest, "the formatted string")


def _check_join(items: Any, separator: Any) -> list[Any]:
    """The items of a join, materialised while their printed size is counted (a generator could be endless)."""
    budget = _BUDGET.get()
    out: list[Any] = []
    total = 0
    sep = _size(separator)
    for item in items:
        if budget is not None:
            budget.tick()
        total += _size(item, MAX_VALUE_CHARS + 1) + (sep if out else 0)
        _check_size(total, "the joined string")
        out.append(item)
    return out


def _check_str_method(text: Any, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Refuse a str/bytes method call whose result would be too big; may return the arguments materialised."""
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _width(args[0], f"{name}() padding")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        _check_size(len(text) + text.count("\t" if isinstance(text, str) else b"\t") * _width(tab, "tab size"), name)
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = text.count(old) if old else len(text) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        _check_size(len(text) + count * len(new), "the replaced string")
    elif name == "join" and args:
        return (_check_join(args[0], text), *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max([_size(v) for v in args[0].values()] + [1])
        _check_size(len(text) * longest, "the translated string")
    return args


class _LoopGuard:
    """Iterates like its iterable while charging each step to the render's budget."""

    __slots__ = ("_budget", "_chars", "_iterator")

    def __init__(self, iterable: Any, chars: int, budget: _Budget | None) -> None:
        self._iterator = iter(iterable)
        self._chars = chars
        self._budget = budget

    def __iter__(self) -> _LoopGuard:
        return self

    def __next__(self) -> Any:
        value = next(self._iterator)
        if self._budget is not None:
            self._budget.iterate(self._chars)
        return value


@jinja2.pass_context
def _loop_filter(context: jinja2.runtime.Context, iterable: Any, chars: int) -> Any:
    """Inserted around every ``for`` loop's iterable (see :class:`_Guards`); ``chars`` is its body's literal text."""
    if isinstance(iterable, jinja2.Undefined):
        return iterable  # iterating it raises the usual undefined error
    return _LoopGuard(iterable, chars, _tick())


def _concat_filter(parts: list[Any]) -> str:
    """Inserted for every ``~`` (see :class:`_Guards`): Jinja's own str_join, after a size check."""
    _tick()
    _check_size(sum(_size(p, MAX_VALUE_CHARS + 1) for p in parts), "the concatenated string")
    return _built("".join(map(str, parts)), "the concatenated string")  # type: ignore[no-any-return]


class _Guards(NodeTransformer):
    """Rewrites a parsed template so its loops and ``~`` concatenations pass through the budget checks.

    Neither has a sandbox hook: a loop over a name, or ``{% set s = s ~ s %}`` written thirty times, would otherwise
    run or grow without ever giving control back.
    """

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        chars = 0
        for child in node.body:
            chars += len(child.data) if isinstance(child, nodes.TemplateData) else 0
            chars += sum(len(data.data) for data in child.find_all(nodes.TemplateData))
        node.iter = nodes.Filter(
            node.iter, "_zsgen_loop", [nodes.Const(chars, lineno=node.lineno)], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(
            nodes.List(node.nodes, lineno=node.lineno), "_zsgen_concat", [], [], None, None, lineno=node.lineno
        )


class _Namespace(Namespace):
    """``namespace()`` whose attributes are checked as they are set (``{% set ns.s = ns.s ~ ns.s %}``)."""

    def __setitem__(self, name: str, value: Any) -> None:
        _tick()
        _check_size(_size(value, MAX_VALUE_CHARS + 1), f"namespace attribute {name!r}")
        _check_int(value, f"namespace attribute {name!r}")
        super().__setitem__(name, value)


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its size-setting arguments checked first and its result checked and charged after."""
    skip = 1 if _PassArg.from_obj(func) is not None else 0  # the context, eval context or environment

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        value, rest = (args[skip], args[skip + 1 :]) if len(args) > skip else (None, ())
        if name in _STRINGIFYING:
            _check_size(_size(value, MAX_VALUE_CHARS + 1), f"the input of the {name!r} filter")
        if name == "center" and rest:
            _width(rest[0], "center() width")
        elif name == "indent":
            width = rest[0] if rest else kwargs.get("width", 4)
            lines = str(value).count("\n") + 1
            per_line = len(width) if isinstance(width, str) else _width(width, "indent() width")
            _check_size(_size(value) + lines * per_line, "the indented string")
        elif name == "wordwrap":
            width = rest[0] if rest else kwargs.get("width", 79)
            wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring")
            breaks = _size(value) // max(width if isinstance(width, int) else 1, 1) + 1
            _check_size(_size(value) + breaks * len(wrap or "\n"), "the wrapped string")
        elif name == "replace" and len(rest) >= 2 and isinstance(value, str):
            _check_str_method(value, "replace", tuple(rest), {})
        elif name == "format" and isinstance(value, str):
            _check_percent_format(value, kwargs or rest)
        elif name == "join":
            separator = rest[0] if rest else kwargs.get("d", "")
            args = (*args[:skip], _check_join(value, separator), *rest)
        elif name in ("batch", "slice") and rest:
            _width(rest[0], f"{name}() count")
        return _built(func(*args, **kwargs), f"the result of the {name!r} filter")

    return guarded


# Filters whose work or result grows with the printed size of their input (sum: a list of lists concatenates).
_STRINGIFYING = frozenset(
    {"string", "tojson", "pprint", "e", "escape", "forceescape", "safe", "urlize", "urlencode", "striptags", "title",
     "upper", "lower", "capitalize", "trim", "truncate", "center", "indent", "wordwrap", "replace", "format",
     "xmlattr", "list", "wordcount", "sum"}
)  # fmt: skip


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # Jinja's own parameter names
    _check_size(_width(n, "lipsum() paragraphs") * _width(max, "lipsum() words") * 12, "lipsum() text")
    return _built(generate_lorem_ipsum(n=n, html=html, min=min, max=max), "lipsum() text")  # type: ignore[no-any-return]


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the resource limits above (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _guard_filter(name, func) for name, func in self.filters.items()}
        self.filters["_zsgen_loop"] = _loop_filter
        self.filters["_zsgen_concat"] = _concat_filter
        self.globals["namespace"] = _Namespace
        self.globals["lipsum"] = _lipsum
        self.finalize = _finalize

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _Guards().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree  # type: ignore[no-any-return]

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        _tick()
        for operand in (left, right):
            _check_int(operand, f"an operand of {op!r}")
        if op == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int):
                    _check_size(len(seq) * max(count, 0), "the repetition")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise TemplateLimitError("integer size", "the product would be too large")
        elif op == "**":
            big = isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0
            if big and left.bit_length() * right > MAX_INT_BITS + left.bit_length():
                raise TemplateLimitError("integer size", f"{left.bit_length()}-bit number to the power {right:,}")
        elif op == "+":
            if isinstance(left, str | bytes | list | tuple) and isinstance(right, str | bytes | list | tuple):
                _check_size(len(left) + len(right), "the sum")
        elif op == "%" and isinstance(left, str):
            _check_percent_format(left, right)
        return _built(super().call_binop(context, op, left, right), f"the result of {op!r}")

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes) and isinstance(getattr(__obj, "__name__", None), str):
            args = _check_str_method(owner, __obj.__name__, args, kwargs)
        elif isinstance(owner, int) and getattr(__obj, "__name__", None) == "to_bytes":
            _width(args[0] if args else kwargs.get("length", 1), "to_bytes() length")
        for arg in (*args, *kwargs.values()):  # macros called with a doubled string, and the like
            if isinstance(arg, str | bytes):
                _check_size(len(arg), "an argument")
        return _built(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            _tick()
            if is_map and len(args) == 1 and isinstance(args[0], Mapping):
                _check_brace_format(fmt, (), args[0])
            else:
                _check_brace_format(fmt, args, kwargs)
            return _built(wrapped(*args, **kwargs), "the formatted string")  # type: ignore[no-any-return]

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)


def _finalize(value: Any) -> Any:
    """Every printed ``{{ ... }}`` value: sized before Jinja turns it into text, then charged."""
    chars = _size(value, MAX_VALUE_CHARS + 1)
    _check_size(chars, "a printed value")
    budget = _tick()
    if budget is not None:
        budget.charge(chars)
    return value


def _environment() -> _Sandbox:
    return _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


_ENV = _environment()


class TemplateProblem(BaseModel):
    """One thing wrong with a template file, located as precisely as Jinja2 allows."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None = None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line is not None else f"{self.file}: {self.message}"


class _Header(BaseModel):
    description: str
    variables: tuple[str, ...]
    output: OutputFormat
    answer: str | None = None
    line: int  # where the header starts (for messages)


def _parse_header(source: str, where: str) -> _Header:
    """Read the ``{#- zsgen ... -#}`` comment that must open every template."""
    match = _HEADER.match(source)
    if not match:
        raise TemplateError(
            "missing header: the file must start with a '{#- zsgen' comment whose following lines give "
            "description, variables and output",
            template=where,
            line=1,
        )
    first_line = source.count("\n", 0, match.start("body")) + 1
    fields: dict[str, str] = {}
    lines: dict[str, int] = {}
    current: str | None = None
    for offset, raw in enumerate(match.group("body").splitlines()):
        line_no = first_line + offset
        if not raw.strip():
            continue
        if raw[:1] in (" ", "\t") and current is not None:  # continuation of the previous value
            fields[current] = f"{fields[current]} {raw.strip()}".strip()
            continue
        key, sep, value = raw.partition(":")
        key = key.strip()
        if not sep or not _VARIABLE_NAME.match(key):
            raise TemplateError(f"header line is not 'key: value': {raw.strip()!r}", template=where, line=line_no)
        if key not in _HEADER_KEYS:
            raise TemplateError(
                f"unknown header key {key!r} (known: {', '.join(_HEADER_KEYS)})", template=where, line=line_no
            )
        if key in fields:
            raise TemplateError(f"header key {key!r} given twice", template=where, line=line_no)
        fields[key] = value.strip()
        lines[key] = line_no
        current = key
    for key in _REQUIRED_KEYS:
        if not fields.get(key):
            raise TemplateError(f"header lacks {key!r}", template=where, line=first_line)
    output = fields["output"]
    if output not in OUTPUT_FORMATS:
        raise TemplateError(
            f"output {output!r} is not one of {', '.join(OUTPUT_FORMATS)}", template=where, line=lines["output"]
        )
    names = [v for v in re.split(r"[\s,]+", fields["variables"].strip().strip("[]")) if v]
    for name in names:
        if not _VARIABLE_NAME.match(name):
            raise TemplateError(f"bad variable name {name!r} in header", template=where, line=lines["variables"])
    if len(set(names)) != len(names):
        raise TemplateError("a variable is listed twice in the header", template=where, line=lines["variables"])
    return _Header(
        description=fields["description"],
        variables=tuple(names),
        output=output,  # checked against OUTPUT_FORMATS above; pydantic validates it again
        answer=fields.get("answer"),
        line=first_line,
    )


def _mark_roles(source: str) -> str:
    """Replace role-marker lines by the private separator; the line count stays the same, so line numbers hold."""
    return _MARKER_LINE.sub(lambda m: f"{_SEP}{_SEP}{m.group(1)}{_SEP}{_SEP}", source)


def defuse_chat_token(token: str) -> str:
    """A visible, inert stand-in for a chat-template token: ``<|im_start|>`` becomes ``(im_start)``.

    The word stays readable (a description that quotes a token still says what it quoted) but no tokenizer or
    server template reads it as a control token any more.
    """
    core = token.strip("<>[]|\uff5c")
    return f"({core})" if core else "(token)"


def _clean_text(text: str, *, flatten: bool) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub(" ", text).replace(_SEP, "")
    text = _MARKER_LOOKALIKE.sub(lambda m: f"[{m.group(1).lower()}]", text)
    text = CHAT_TOKEN.sub(lambda m: defuse_chat_token(m.group()), text)
    if flatten:
        text = " ".join(text.split())
    return text


def _sanitise(value: Any, name: str, depth: int = 0) -> Any:
    """A plain-data copy of a variable with every string made safe to embed.

    Strings inside items (depth > 0) are flattened to one line: an item can then never start a line of the prompt,
    so it cannot pose as another candidate's line or as a marker. Top-level texts (profile, earlier chain answers)
    keep their line breaks but lose control characters and role-marker look-alikes.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _clean_text(value, flatten=depth > 0)
    if isinstance(value, BaseModel):
        return _sanitise(value.model_dump(), name, depth)
    if isinstance(value, Mapping):
        return {str(k): _sanitise(v, name, depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence):  # str was handled above
        return [_sanitise(v, name, depth + 1) for v in value]
    raise TemplateError(f"variable {name!r} holds a {type(value).__name__}; templates only get plain data")


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The template line of a runtime error: Jinja2 rewrites tracebacks so template frames carry template lines."""
    line = getattr(exc, "lineno", None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line if isinstance(line, int) else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateLimitError):
        return str(exc)
    if isinstance(exc, SecurityError):
        return f"unsafe operation blocked by the sandbox: {exc}"
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined: {exc}"
    if isinstance(exc, jinja2.TemplateError):
        return str(exc.message or exc)
    return f"{type(exc).__name__}: {exc}"


def _split_messages(text: str, where: str) -> list[dict[str, str]]:
    parts = _SPLIT.split(text)
    if len(parts) == 1:
        content = text.strip()
        if not content:
            raise TemplateError("the template rendered no text", template=where)
        return [{"role": "user", "content": content}]
    if parts[0].strip():
        raise TemplateError(f"text before the first role marker: {parts[0].strip()[:60]!r}", template=where)
    messages: list[dict[str, str]] = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        content = content.strip()
        if not content:
            continue
        if messages and messages[-1]["role"] == role:  # many chat templates reject two turns of one role in a row
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{content}"
        else:
            messages.append({"role": role, "content": content})
    if not messages:
        raise TemplateError("the template rendered only empty messages", template=where)
    return messages


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
        budget = _Budget()
        token = _BUDGET.set(budget)
        chunks: list[str] = []
        try:
            # Rendered through the generator so the text is counted as it grows, not after it filled the memory.
            for chunk in self._template.generate(context):
                budget.output += len(chunk)
                if budget.output > MAX_OUTPUT_CHARS:
                    raise TemplateLimitError("output size", "the rendered text grew too long")
                chunks.append(chunk)
        except Exception as exc:  # any fault inside a user template is a template error
            limit = exc.limit if isinstance(exc, TemplateLimitError) else None
            raise TemplateError(
                _describe(exc), template=self._where, line=_template_line(exc, self._filename), limit=limit
            ) from exc
        finally:
            _BUDGET.reset(token)
        return "".join(chunks)


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
    from zsgen.rerank.labels import make_labels  # imported here: the rerank package itself builds on this module

    history = [
        _sample_item(1, "Sample Heist Picture", ["Crime", "Thriller"]),
        _sample_item(2, "Sample Space Opera", ["Sci-Fi", "Adventure"]),
        _sample_item(3, "Sample Courtroom Drama", ["Drama"]),
    ]
    titles = ["Candidate Film Alpha", "Candidate Film Bravo", "Candidate Film Charlie", "Candidate Film Delta"]
    labels = make_labels(len(titles))
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
