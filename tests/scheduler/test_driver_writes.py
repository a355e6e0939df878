"""The async driver changes the state machine only through its transitions (`aioflow.scheduler._state`)."""

from __future__ import annotations

import ast
from pathlib import Path

import aioflow.scheduler._run

DRIVER = Path(aioflow.scheduler._run.__file__)

# Methods that change a dict, list or set in place.
MUTATORS = frozenset(
    ("add", "append", "clear", "discard", "extend", "insert", "pop", "popitem", "remove", "setdefault", "update")
)


def state_field(expr: ast.expr) -> str | None:
    """``f`` if ``expr`` is ``<x>.state.f``, ``<x>.state.f[...]`` or ``state.f`` (so on), else ``None``."""
    while isinstance(expr, ast.Subscript):
        expr = expr.value
    if not isinstance(expr, ast.Attribute):
        return None
    owner = expr.value
    if (isinstance(owner, ast.Name) and owner.id == "state") or (
        isinstance(owner, ast.Attribute) and owner.attr == "state"
    ):
        return expr.attr
    return None


def writes_to_state(source: str) -> list[tuple[int, str]]:
    """(line, field) of each assignment, deletion or in-place change of a field of a ``state``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            targets = [node.func.value]
        found.extend((target.lineno, field) for target in unpacked(targets) if (field := state_field(target)))
    return sorted(found)


def unpacked(targets: list[ast.expr]) -> list[ast.expr]:
    """The targets, those of ``a, (b, *c) = ...`` one by one."""
    flat = []
    while targets:
        target = targets.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            targets.extend(target.elts)
        elif isinstance(target, ast.Starred):
            targets.append(target.value)
        else:
            flat.append(target)
    return flat


def test_the_driver_writes_no_field_of_the_state_machine() -> None:
    assert writes_to_state(DRIVER.read_text(encoding="utf-8")) == []


def test_the_check_finds_each_kind_of_write() -> None:
    source = (
        "def f(self, state, nid, v):\n"
        "    self.state.outputs[nid] = v\n"
        "    state.errors[nid] = v\n"
        "    self.state.order_matters = False\n"
        "    self.state.executions[nid] += 1\n"
        "    del self.state.finished[nid]\n"
        "    self.state.on_workers.add(nid)\n"
        "    self.state.errors.pop(nid)\n"
        "    a, (b, *self.state.outputs[nid]) = v\n"
        "    x = self.state.outputs[nid]\n"
        "    self.state.output_fetched(nid, v)\n"
    )
    assert writes_to_state(source) == [
        (2, "outputs"),
        (3, "errors"),
        (4, "order_matters"),
        (5, "executions"),
        (6, "finished"),
        (7, "on_workers"),
        (8, "errors"),
        (9, "outputs"),
    ]
