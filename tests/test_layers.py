"""The package's layers, as docs/how-it-works.md lists them, top to bottom: no module
imports from a layer above its own.

Every import counts, wherever it is written: at the top, inside a function (fetcher imports
lazily, so most cross-layer imports are in functions), and under ``if TYPE_CHECKING:``. A type
annotation is a dependency too: a reader follows it, mypy checks it, and a module that names a
class of a layer above it is coupled to that layer whether or not the import runs. Where a lower
layer needs a shape from above it, it declares a Protocol instead (``transports.base.Deadline``).

Two modules are outside the layers: ``fetcher/__init__.py``, the facade that names the public API
(``fetch``, ``Fetcher``, ``Task``, ``Result``) and loads it lazily, and which any module may import
for ``__version__``; and ``fetcher/__main__.py``, which only runs the CLI.
"""

from __future__ import annotations

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "fetcher")
OUTSIDE = {"fetcher", "fetcher.__main__"}


def readme_layers() -> list[list[str]]:
    """The layer table of docs/how-it-works.md: each row's module names, as dotted prefixes."""
    with open(os.path.join(ROOT, "docs", "how-it-works.md"), encoding="utf-8") as handle:
        text = handle.read()
    table = text.split("<!-- layers -->", 1)[1].split("<!-- /layers -->", 1)[0]
    layers = []
    for row in table.splitlines():
        if not row.startswith("|") or row.startswith("|--") or "layer" in row.split("|")[1]:
            continue
        names = re.findall(r"`([\w/.]+)`", row.split("|")[2])
        layers.append(["fetcher." + name.removesuffix("/").removesuffix(".py").replace("/", ".")
                       for name in names])
    return layers


LAYERS = readme_layers()


def layer_of(module: str) -> int | None:
    """The index of ``module``'s layer (0: the top), or None outside the layers."""
    if module in OUTSIDE:
        return None
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer of docs/how-it-works.md's table: add it there")


def modules() -> dict[str, str]:
    """Every module of the package: dotted name -> path."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports_of(module: str, path: str) -> list[tuple[str, int]]:
    """(imported fetcher module, line) for every import in the file, however deep it is written."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # "from fetcher.x import y" may import the module fetcher.x.y: count the deepest that exists.
            found += [(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, node.lineno)
                      for alias in node.names]
    return [(name, line) for name, line in found if name == "fetcher" or name.startswith("fetcher.")]


MODULES = modules()


def test_the_readme_table_names_every_subpackage_once():
    named = [prefix for prefixes in LAYERS for prefix in prefixes]
    assert len(named) == len(set(named)), named
    tops = {name.split(".")[1] for name in MODULES if name.count(".") >= 1}
    assert {prefix.split(".")[1] for prefix in named} == tops - {"__main__"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_it(module):
    own = layer_of(module)
    if own is None:
        return
    upward = [f"line {line}: {name} (layer {layer_of(name) + 1}: {', '.join(LAYERS[layer_of(name)])})"
              for name, line in imports_of(module, MODULES[module])
              if (target := layer_of(name)) is not None and target < own]
    assert not upward, f"{module} (layer {own + 1}) imports from above it:\n" + "\n".join(upward)


def third_party_imports(root: str) -> set[tuple[str, str]]:
    """(module, top-level third-party package) for every module under ``root``."""
    found = set()
    for module, path in MODULES.items():
        if not module.startswith(root):
            continue
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {(module, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add((module, node.module.split(".")[0]))
    return found


def test_libcurl_is_used_in_transports_curl_only():
    users = {module for module, package in third_party_imports("fetcher") if package == "pycurl"}
    assert users and all(module.startswith("fetcher.transports.curl.") for module in users), users


def test_gevent_is_imported_by_the_gevent_backends_only():
    users = {module for module, package in third_party_imports("fetcher") if package == "gevent"}
    allowed = {"fetcher.backends.gevent", "fetcher.backends.gevent_curl",
               "fetcher.backends.registry"}  # registry: prepare_process monkey-patches for --backend gevent
    assert users and users <= allowed, users
