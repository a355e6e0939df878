"""The layering of docs/design.md, checked on the source: who may import whom.

Every ``import`` in every module of the package counts: at the top, inside a
function (a function-level import is still a dependency, only a later one),
and under ``if TYPE_CHECKING:`` (a type a module names is knowledge it has).
The layers, from the bottom::

    top       aioflow (the package's lazy names), aioflow.__main__
    cli       aioflow.cli
    faces     aioflow._api, aioflow._handle, aioflow._executor, aioflow.parallel, aioflow.parsl
    plug-ins  aioflow.ewoks, aioflow.journal, aioflow.observe
    engine    aioflow.scheduler
    tasks     aioflow._tasks, _kinds    pools    aioflow.pools      (side by side: neither knows the other)
    model     aioflow.graph
    base      aioflow._errors, aioflow._lost, aioflow._results, aioflow.events,
              aioflow._version, aioflow._gevent_bridge

A module may import its own unit (its package, or itself), modules of its own
layer (base and faces only have several units), and the layers below its own.
Besides, the runtime imports (those outside ``TYPE_CHECKING``) between the
modules of the package form no cycle, function-level imports included.

`KNOWN_VIOLATIONS` lists the imports that break these rules today, each to be
removed; the test fails on any other, and on a listed one that no longer
exists, so the list only ever shrinks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import aioflow

PACKAGE = Path(aioflow.__file__).resolve().parent

#: (layer, rank, units). A higher rank may import a lower one; ties only within a layer.
LAYERS: list[tuple[str, int, tuple[str, ...]]] = [
    ("base", 0, ("_errors", "_broken", "_lost", "_results", "events", "_version", "_gevent_bridge")),
    ("model", 1, ("graph",)),
    ("tasks", 2, ("_tasks", "_kinds")),
    ("pools", 2, ("pools",)),
    ("engine", 3, ("scheduler",)),
    ("plug-ins", 4, ("ewoks", "journal", "observe")),
    ("faces", 5, ("_api", "_handle", "_executor", "parallel", "parsl")),
    ("cli", 6, ("cli",)),
    ("top", 7, ("", "__main__")),
]

#: "importer -> imported": the imports that break the layering today.
KNOWN_VIOLATIONS: set[str] = set()

#: Sets of modules that import each other at run time today, each to be broken.
KNOWN_CYCLES: list[set[str]] = []


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_checking: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _targets(importer: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of the package that ``node`` imports (``from . import x`` is module ``x`` when it is one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    return [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source for alias in node.names]


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def imports_in(module: str, source: str, *, is_package: bool = False) -> list[Import]:
    """Every import of the package in ``source`` (the text of ``module``), at any depth."""
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = _targets(module, is_package, child)
                found.extend(
                    Import(module, target, child.lineno, type_checking)
                    for target in targets
                    if target == "aioflow" or target.startswith("aioflow.")
                )
            inner = type_checking or (isinstance(child, ast.If) and _is_type_checking(child.test))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


ALL_IMPORTS: list[Import] = [
    imp
    for module, path in MODULES.items()
    for imp in imports_in(module, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")
]


def unit_of(module: str) -> tuple[str, int, str]:
    """(layer, rank, unit) of a module: the longest unit that contains it."""
    relative = module.removeprefix("aioflow").removeprefix(".")
    best: tuple[str, int, str] | None = None
    for layer, rank, units in LAYERS:
        for unit in units:
            inside = relative == unit or (unit != "" and relative.startswith(unit + "."))
            if inside and (best is None or len(unit) > len(best[2])):
                best = (layer, rank, unit)
    if best is None:
        msg = f"{module} is in no layer: add it to LAYERS (and to docs/design.md)"
        raise AssertionError(msg)
    return best


def breaks_layering(imp: Import) -> bool:
    layer, rank, unit = unit_of(imp.importer)
    target_layer, target_rank, target_unit = unit_of(imp.imported)
    if unit == target_unit or layer == target_layer:
        return False
    return target_rank >= rank


def runtime_cycles(imports: list[Import]) -> list[set[str]]:
    """The strongly connected components (of two modules or more) of the runtime import graph."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in imports:
        # A module that imports its own package (``from .. import x``) follows the package's lead: not an edge.
        own_package = imp.importer.startswith(imp.imported + ".")
        if not imp.type_checking and not own_package and imp.imported in graph and imp.imported != imp.importer:
            graph[imp.importer].add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    # Tarjan's algorithm, iteratively: (node, iterator over its successors).
    for root, successors_of_root in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(successors_of_root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        unit_of(module)


def test_imports_go_down_the_layers() -> None:
    found: dict[str, list[str]] = {}
    for imp in ALL_IMPORTS:
        if breaks_layering(imp):
            found.setdefault(f"{imp.importer} -> {imp.imported}", []).append(f"line {imp.line}")
    new = {edge: lines for edge, lines in found.items() if edge not in KNOWN_VIOLATIONS}
    fixed = KNOWN_VIOLATIONS - set(found)
    assert not new, f"imports against the layering of docs/design.md: {new}"
    assert not fixed, f"no longer imported: remove from KNOWN_VIOLATIONS: {sorted(fixed)}"


def test_no_import_cycles() -> None:
    cycles = runtime_cycles(ALL_IMPORTS)
    new = [cycle for cycle in cycles if cycle not in KNOWN_CYCLES]
    fixed = [cycle for cycle in KNOWN_CYCLES if cycle not in cycles]
    assert not new, f"modules that import each other at run time: {new}"
    assert not fixed, f"no longer a cycle: remove from KNOWN_CYCLES: {fixed}"


# --------------------------------------------------------------------------- the checker itself


def test_the_checker_sees_imports_at_any_depth_and_flags_the_wrong_direction_only() -> None:
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from .. import _errors\n"
        "if TYPE_CHECKING:\n"
        "    from ..graph import Graph\n"
        "def f():\n"
        "    from ..scheduler import _run\n"
    )
    found = {(imp.imported, imp.type_checking) for imp in imports_in("aioflow.pools._x", source)}
    assert found == {("aioflow._errors", False), ("aioflow.graph", True), ("aioflow.scheduler._run", False)}
    assert breaks_layering(Import("aioflow.graph._load", "aioflow.scheduler._run", 1, False))
    assert breaks_layering(Import("aioflow.pools._dask", "aioflow._tasks", 1, True))
    assert breaks_layering(Import("aioflow._tasks", "aioflow.pools", 1, False))
    assert not breaks_layering(Import("aioflow.scheduler._run", "aioflow.pools", 1, False))
    assert not breaks_layering(Import("aioflow._lost", "aioflow._errors", 1, False))
    assert not breaks_layering(Import("aioflow.cli", "aioflow.parallel", 1, False))


def test_the_checker_finds_cycles_through_function_level_imports_only_at_run_time() -> None:
    a, b, c = "aioflow.graph._model", "aioflow.graph._analysis", "aioflow.graph"
    loop = [Import(a, b, 1, False), Import(b, a, 9, False)]
    assert runtime_cycles(loop) == [{a, b}]
    assert runtime_cycles([Import(a, b, 1, False), Import(b, a, 9, True)]) == []
    assert runtime_cycles([Import(a, c, 1, False), Import(c, a, 1, False)]) == []  # a module and its package
