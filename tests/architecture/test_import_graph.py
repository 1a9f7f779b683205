"""The layering, checked on the source: no import cycles, and the edges stay at the edge.

Every `import` in configcenter/ counts, also those inside functions (a lazy
import is still a dependency); imports under `if TYPE_CHECKING:` do not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "configcenter"

#: Layers that must not reach the platform client, processes or adapters directly:
#: they go through ports and `configcenter.wiring` (the registry's openers).
INNER = ("configcenter.core", "configcenter.usecases", "configcenter.serve")
FORBIDDEN = ("kubernetes", "subprocess", "configcenter.adapters")

#: Known breaks of the rule above, each to be moved behind a port; the test fails
#: when one is fixed (remove it here) or a new one appears.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    if isinstance(node, ast.If) and _type_checking_only(node):
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports_in(child)


def imported(module: str) -> set[str]:
    """Every module `module` imports (configcenter modules resolved to module files)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            found.add(candidate if candidate in MODULES else base)
    return found


GRAPH = {module: {m for m in imported(module) if m in MODULES} for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(GRAPH[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return found


def test_configcenter_has_no_import_cycles() -> None:
    assert _cycles() == []


def test_core_usecases_and_serve_reach_adapters_only_through_ports_and_wiring() -> None:
    breaks = {
        (module, name)
        for module in MODULES
        if module.startswith(INNER)
        for name in imported(module)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert sorted(breaks - ALLOWED) == [], "new direct imports of an adapter, kubernetes or git"
    assert sorted(ALLOWED - breaks) == [], "fixed: remove these from ALLOWED"


def test_the_core_imports_only_the_core() -> None:
    outside = {
        (module, name)
        for module in MODULES
        if module.startswith("configcenter.core")
        for name in GRAPH[module]
        if not name.startswith("configcenter.core")
    }
    assert sorted(outside) == []
