"""zsgen's sub-packages import each other without cycles (issue 22 point 5).

A cycle between packages means neither can be understood, tested or moved
without the other; the layering in DESIGN.md §3 only holds if the graph of
package-level imports stays acyclic.  The graph is read from the source with
``ast`` (module-level *and* function-level imports, including those under
``TYPE_CHECKING``), so a lazy import inside a function cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zsgen

ROOT = Path(zsgen.__file__).resolve().parent


def _node(module: str) -> str | None:
    """The graph node of a dotted module name: ``zsgen.<first part>``."""
    parts = module.split(".")
    if parts[0] != "zsgen":
        return None
    if len(parts) == 1:
        return "zsgen"
    return f"zsgen.{parts[1]}"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every absolute module name that ``path`` imports, at any depth."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from zsgen import metrics`` imports the sub-package itself.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    """Edges between zsgen's sub-packages (top-level modules are nodes too)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        source = _node(_module_name(path))
        assert source is not None
        edges = graph.setdefault(source, set())
        for imported in _imports(path):
            target = _node(imported)
            # ``zsgen`` itself (the public facade) re-exports everything; an
            # import of the bare package from inside is a facade use, and
            # ``from zsgen import x`` is resolved to ``zsgen.x`` above.
            if target is None or target == source or target == "zsgen":
                continue
            if (ROOT / target.split(".")[1]).exists() or (ROOT / f"{target.split('.')[1]}.py").exists():
                edges.add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in ``graph`` as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_function_level_imports() -> None:
    graph = package_graph()
    # zsgen.cli imports most of the library, much of it inside functions.
    assert "zsgen.recommender" in graph["zsgen.cli"]
    assert len(graph) > 20


def test_sub_packages_import_each_other_without_cycles() -> None:
    cycle = find_cycle(package_graph())
    assert cycle is None, "package import cycle: " + " -> ".join(cycle or [])
