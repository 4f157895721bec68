"""Figures of the package's shape (issue 25): the largest classes, signatures, modules and functions,
and import cycles. ``python tests/code_figures.py`` prints them; tests/test_code_figures.py holds the limits.

- fields of a class: its annotated class attributes (a dataclass's fields) plus every distinct
  ``self.NAME`` it assigns in any method;
- parameters of a def: all of them, but ``self``/``cls``, ``*args`` and ``**kwargs``;
- lines of a function: from its ``def`` (decorators excluded) to its last line, docstring included;
- import cycles: every ``import`` of a fetcher module, at the top or inside a function, except
  those under ``if TYPE_CHECKING:`` (they never run).
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "fetcher")


def modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def _tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as handle:
        return ast.parse(handle.read(), path)


def module_lines() -> dict[str, int]:
    counts = {}
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as handle:
            counts[module] = sum(1 for _ in handle)
    return counts


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def function_lines() -> dict[str, int]:
    return {f"{module}:{node.lineno} {node.name}": (node.end_lineno or node.lineno) - node.lineno + 1
            for module, path in MODULES.items() for node in _functions(_tree(path))}


def parameters() -> dict[str, int]:
    found = {}
    for module, path in MODULES.items():
        for node in _functions(_tree(path)):
            args = node.args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            found[f"{module}:{node.lineno} {node.name}"] = len([n for n in names if n not in ("self", "cls")])
    return found


def class_fields() -> dict[str, int]:
    found = {}
    for module, path in MODULES.items():
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.ClassDef):
                continue
            names = {item.target.id for item in node.body
                     if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
            for method in node.body:
                if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for sub in ast.walk(method):
                        targets = (sub.targets if isinstance(sub, ast.Assign)
                                   else [sub.target] if isinstance(sub, (ast.AnnAssign, ast.AugAssign)) else [])
                        for target in targets:
                            for leaf in ast.walk(target):
                                if (isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name)
                                        and leaf.value.id == "self"):
                                    names.add(leaf.attr)
            found[f"{module}:{node.lineno} {node.name}"] = len(names)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: str) -> set[str]:
    """The fetcher modules ``module`` imports at run time (anything but ``if TYPE_CHECKING:``)."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(_tree(path))
    return {name for name in found if name in MODULES and name != module}


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted; the package's
    ``__init__`` modules that only name submodules lazily are ordinary nodes here."""
    graph = {module: _imports(module, path) for module, path in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return cycles


def _top(figures: dict[str, int], n: int = 5) -> str:
    return ", ".join(f"{name} ({value})" for name, value in sorted(figures.items(), key=lambda kv: -kv[1])[:n])


def report() -> str:
    cycles = import_cycles()
    return "\n".join([
        f"largest classes (fields): {_top(class_fields())}",
        f"most parameters (self, *args, **kwargs aside): {_top(parameters())}",
        f"longest modules (lines): {_top(module_lines())}",
        f"longest functions (lines): {_top(function_lines())}",
        f"import cycles outside TYPE_CHECKING: {len(cycles)}" + "".join(f"\n  {' -> '.join(c)}" for c in cycles),
    ])


if __name__ == "__main__":
    print(report())
