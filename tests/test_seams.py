"""The seams between the engine and what it runs: the task-kind registry, and a scheduler that names no kind."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest

import aioflow
from aioflow._kinds import KINDS, resolve, task_kind
from aioflow.graph import TASK_TYPES

SCHEDULER = Path(aioflow.__file__).parent / "scheduler"


def test_every_task_type_a_graph_can_hold_has_a_kind() -> None:
    """Each task_type the loader accepts (subgraphs aside: they are flattened) is registered, under its own name."""
    assert set(KINDS) == set(TASK_TYPES) - {"graph"}
    assert all(kind.task_type == name for name, kind in KINDS.items())


def test_every_path_of_the_registry_resolves() -> None:
    """Each kind's runner names a function, its hooks a class; a kind's extra names an installed package here."""
    for kind in KINDS.values():
        assert callable(resolve(kind.runner)), kind
        if kind.hooks is not None:
            assert isinstance(resolve(kind.hooks), type), kind
        if kind.extra is not None:
            assert importlib.util.find_spec(kind.extra.package) is not None, kind


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="task_type 'nope' cannot run in a worker"):
        task_kind("nope")


def named_in(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each string constant of ``source`` that is one of ``names``."""
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and node.value in names
    ]


def test_the_scheduler_names_no_task_kind_no_pool_and_no_extra() -> None:
    """No string constant in aioflow/scheduler/ is a task_type, a pool name, or a kind's extra or package.

    What the engine needs to know of a kind, it asks the registry (`aioflow._kinds`); of a pool, the pool.
    """
    names = set(KINDS) | set(aioflow.available_pools())
    names |= {part for kind in KINDS.values() if kind.extra is not None for part in kind.extra}
    found = {
        path.name: named
        for path in sorted(SCHEDULER.glob("*.py"))
        if (named := named_in(path.read_text(encoding="utf-8"), names))
    }
    assert not found


def test_the_check_finds_a_kind_compared_by_name() -> None:
    source = 'def f(node):\n    """Not the class kind."""\n    return node.task_type in ("class", "method")\n'
    assert named_in(source, set(KINDS)) == [(3, "class"), (3, "method")]


def test_the_faces_keep_their_documented_signatures() -> None:
    """docs/api.md: the public doors take the Ewoks options and the journal; the engine below takes hooks instead."""
    documented = {
        "graph": inspect.Parameter.empty,
        "inputs": None,
        "outputs": None,
        "merge_outputs": True,
        "raise_on_error": True,
        "timeout": None,
        "pool_type": None,
        "max_workers": None,
        "scaling_workers": True,
        "context": None,
        "idle_timeout": 60.0,
        "pool_options": None,
        "pool": None,
        "max_iterations": None,
        "on_event": None,
        "trace": None,
        "startargs": None,
        "load_options": None,
        "varinfo": None,
        "execinfo": None,
        "task_options": None,
        "journal": None,
        "resume": None,
        "cache": False,
        "node_defaults": None,
        "pools": None,
        "default_pool": None,
        "display": None,
    }
    face = inspect.signature(aioflow.execute_graph_async).parameters
    assert {name: p.default for name, p in face.items()} == documented
    assert list(inspect.signature(aioflow.execute_graph).parameters) == ["graph", "uvloop", "options"]
    engine = inspect.signature(aioflow.scheduler.execute_graph_async).parameters
    faces_only = {"varinfo", "execinfo", "task_options", "journal", "resume", "cache", "trace", "display"}
    assert set(engine) == set(documented) - faces_only | {"hooks", "steering"}
