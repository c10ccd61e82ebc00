"""The package layers: who may import whom, no import cycles, the CLI owns click, rich and the probes.

Every ``import`` / ``from ... import`` of every module under ``planner/`` and ``probes/`` is read with
:mod:`ast`, including imports inside functions (a function-local import still ties two modules
together; it only hides the cycle until the call). Imports under ``if TYPE_CHECKING:`` and
``from __future__`` are not dependencies and are skipped. Importing ``a.b.c`` also runs the parent
packages' ``__init__``; those implicit edges are not counted (every package would otherwise be in a
cycle with the modules it re-exports).

The layer of a module is the longest entry of :data:`LAYERS` that is the module's name or a package
prefix of it, so modules added later to a listed package are covered; a module no entry covers fails
:func:`test_every_module_has_a_layer` (add it to the table).

``python -m tests.test_layers [ROOT]`` prints the counts (modules, edges, cycles, upward imports) for
the tree at ROOT (default: this checkout).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("planner", "probes")

LAYERS: dict[str, int] = {
    "planner.errors": 0,
    "planner.inputs": 0,
    "planner.specs": 0,
    "planner.results": 1,
    "planner.catalog": 2,
    "planner.calibration": 2,
    "planner.model": 3,
    "planner.stack": 4,
    "planner.memory": 5,
    "planner.parallel": 6,
    "planner.estimator": 7,
    "planner.time": 8,
    "planner.recommender": 9,
    "planner.explain": 9,
    "planner.sweep": 9,
    "planner.matrix": 9,
    "planner.dataset": 9,
    "planner.serve": 9,  # serving memory: reuses model shapes, NF4 storage and the estimator's GPU budget  # the user's data: uses planner.time for the epoch time
    "planner": 10,  # exactly the package facade (planner/__init__.py: lazy re-exports)
    "probes": 11,  # may use every planner layer except the CLI
    "planner.cli": 12,
    "planner.__main__": 12,
}
"""Module name or package prefix -> layer; a module may import its own layer and those below."""
EXACT_ONLY = frozenset({"planner"})
"""Entries that name one module, not a package prefix (``planner`` would otherwise cover everything)."""

UI_LIBRARIES = ("click", "rich")
"""Only ``planner.cli`` (commands and ``planner.cli.render``) talks to the terminal."""

KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {
}
"""(importer, imported) pairs that break a rule today in code another branch is changing; delete on merge."""


@dataclass(frozen=True)
class Edge:
    """One import statement from ``importer`` of ``imported`` (a module, or an external top-level name)."""

    importer: str
    imported: str
    line: int
    local: bool
    """Inside a function body (a deferred import)."""


# --------------------------------------------------------------------------- reading the tree


def discover(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Module name -> file for every ``.py`` under the given top-level packages of ``root``."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import node with whether it sits inside a function; ``if TYPE_CHECKING:`` bodies skipped."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, local = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, local
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children: list[ast.AST] = list(node.orelse)
        else:
            children = list(ast.iter_child_nodes(node))
        inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in reversed(children))


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: Mapping[str, Path]
             ) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.module == "__future__":
        return
    source = _resolve_from(node, module, is_package)
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        yield sub if sub in known else source  # ``from pkg import submodule`` imports the submodule


def imports(modules: Mapping[str, Path]) -> list[Edge]:
    """Every import edge of ``modules`` (targets outside ``modules`` keep their full dotted name)."""
    edges: list[Edge] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, local in _import_nodes(tree):
            for target in dict.fromkeys(_targets(node, name, is_package, modules)):  # one edge per statement
                if target != name:
                    edges.append(Edge(name, target, node.lineno, local))
    return edges


# --------------------------------------------------------------------------- the rules


def layer_of(module: str, layers: Mapping[str, int] = LAYERS) -> int | None:
    """The layer of the longest matching entry, or None when no entry covers ``module``."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in layers and (n == len(parts) or prefix not in EXACT_ONLY):
            return layers[prefix]
    return None


def _internal(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def upward_imports(edges: Iterable[Edge], layers: Mapping[str, int] = LAYERS) -> list[Edge]:
    """Imports of a module in a higher layer than the importer's."""
    out = []
    for e in edges:
        if not _internal(e.imported):
            continue
        low, high = layer_of(e.importer, layers), layer_of(e.imported, layers)
        if low is not None and high is not None and high > low:
            out.append(e)
    return out


def cycles(edges: Iterable[Edge], modules: Iterable[str]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    nodes = set(modules)
    graph: dict[str, set[str]] = {n: set() for n in nodes}
    for e in edges:
        if e.imported in nodes:
            graph[e.importer].add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def ui_imports(edges: Iterable[Edge]) -> list[Edge]:
    """click / rich imported outside ``planner.cli``."""
    return [e for e in edges if _under(e.importer, "planner") and not _under(e.importer, "planner.cli")
            and e.imported.split(".")[0] in UI_LIBRARIES]


def probe_imports(edges: Iterable[Edge]) -> list[Edge]:
    """``probes`` imported by planner outside ``planner.cli``, and ``planner.cli`` imported by ``probes``."""
    return [e for e in edges
            if (_under(e.importer, "planner") and not _under(e.importer, "planner.cli") and _under(e.imported, "probes"))
            or (_under(e.importer, "probes") and _under(e.imported, "planner.cli"))]


def _unexpected(found: Iterable[Edge]) -> list[str]:
    return [f"{e.importer}:{e.line} imports {e.imported}" for e in found
            if (e.importer, e.imported) not in KNOWN_VIOLATIONS]


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def tree() -> tuple[dict[str, Path], list[Edge]]:
    modules = discover(ROOT)
    return modules, imports(modules)


def test_every_module_has_a_layer(tree) -> None:
    modules, _ = tree
    assert [m for m in modules if layer_of(m) is None] == []


def test_no_module_imports_a_layer_above_it(tree) -> None:
    _, edges = tree
    assert _unexpected(upward_imports(edges)) == []


def test_no_import_cycles(tree) -> None:
    modules, edges = tree
    known = [e for e in edges if (e.importer, e.imported) not in KNOWN_VIOLATIONS]
    assert cycles(known, modules) == []


def test_only_the_cli_uses_click_and_rich(tree) -> None:
    _, edges = tree
    assert _unexpected(ui_imports(edges)) == []


def test_only_the_cli_imports_probes(tree) -> None:
    _, edges = tree
    assert _unexpected(probe_imports(edges)) == []


def test_known_violations_still_occur(tree) -> None:
    """A known violation that is gone must leave :data:`KNOWN_VIOLATIONS` too (so none comes back unseen)."""
    _, edges = tree
    present = {(e.importer, e.imported) for e in edges}
    assert [pair for pair in KNOWN_VIOLATIONS if pair not in present] == []


def test_the_graph_reader_sees_local_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "planner"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from planner.cli import x\n"
        "def f():\n    from .. import sub\n    import planner.sub.b\n"
    )
    modules = discover(tmp_path, ("planner",))
    edges = imports(modules)
    assert {(e.importer, e.imported, e.local) for e in edges if e.imported != "typing"} == {
        ("planner.sub", "planner.sub.b", False), ("planner.sub.b", "planner.sub", True),
    }
    assert cycles(edges, modules) == [["planner.sub", "planner.sub.b"]]


# --------------------------------------------------------------------------- metrics


def report(root: Path, layers: Mapping[str, int] = LAYERS) -> dict[str, object]:
    """Counts for the tree at ``root``: modules, internal edges, cycles, upward, UI and probe imports."""
    modules = discover(root)
    edges = imports(modules)
    internal = [e for e in edges if e.imported in modules]
    return {
        "modules": len(modules),
        "internal_edges": len(internal),
        "local_internal_edges": sum(e.local for e in internal),
        "cycles": cycles(edges, modules),
        "upward": [f"{e.importer} -> {e.imported}" for e in upward_imports(edges, layers)],
        "ui_outside_cli": [f"{e.importer} -> {e.imported}" for e in ui_imports(edges)],
        "probes_boundary": [f"{e.importer} -> {e.imported}" for e in probe_imports(edges)],
        "unlayered": [m for m in modules if layer_of(m, layers) is None],
    }


if __name__ == "__main__":
    for key, value in report(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT).items():
        print(f"{key}: {len(value) if isinstance(value, list) else value}")
        for item in value if isinstance(value, list) else ():
            print(f"    {item}")
