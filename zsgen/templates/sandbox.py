"""The limited sandbox every template renders in: Jinja2's immutable sandbox with ``StrictUndefined``, plus a
budget (:data:`LIMITS`) on CPU time, output, value sizes, loop iterations, integer sizes and format widths.

Prompt templates (:mod:`zsgen.templates.library`) and item-text templates (:mod:`zsgen.itemtext`) both render here,
so a user-edited template of either kind can neither reach Python internals nor spend without bound.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import (
    Namespace,
    _PassArg,  # how Jinja tells which first argument a filter takes
    generate_lorem_ipsum,
)
from jinja2.visitor import NodeTransformer

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


def make_environment(
    *, trim_blocks: bool = True, filters: Mapping[str, Callable[..., Any]] | None = None
) -> ImmutableSandboxedEnvironment:
    """A limited sandbox: Jinja2's immutable sandbox, ``StrictUndefined`` and the budget of :data:`LIMITS`.

    Prompt templates trim block lines (``trim_blocks``, ``lstrip_blocks``); item-text templates keep Jinja's
    defaults, because the text they render is embedded and must not change. ``filters`` are extra filters, guarded
    like Jinja's own. The budget only applies inside :func:`render_limited`.
    """
    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=trim_blocks,
        lstrip_blocks=trim_blocks,
        keep_trailing_newline=False,
    )
    for name, func in (filters or {}).items():
        env.filters[name] = _guard_filter(name, func)
    return env


def render_limited(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """``template`` rendered with ``context`` under a fresh budget; crossing a limit raises :class:`TemplateLimitError`.

    Rendered through the generator, so the text is counted as it grows, not after it filled the memory. Any other
    fault of the template propagates unchanged, for the caller to report with its file and line.
    """
    budget = _Budget()
    token = _BUDGET.set(budget)
    chunks: list[str] = []
    try:
        for chunk in template.generate(context):
            budget.output += len(chunk)
            if budget.output > MAX_OUTPUT_CHARS:
                raise TemplateLimitError("output size", "the rendered text grew too long")
            chunks.append(chunk)
    finally:
        _BUDGET.reset(token)
    return "".join(chunks)


_ENV = make_environment()


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
