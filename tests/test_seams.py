"""The seams between the engine and what it runs: the task-kind registry."""

from __future__ import annotations

import importlib.util

import pytest

from aioflow._kinds import KINDS, resolve, task_kind
from aioflow.graph import TASK_TYPES


def test_every_task_type_a_graph_can_hold_has_a_kind() -> None:
    """Each task_type the loader accepts (subgraphs aside: they are flattened) is registered, under its own name."""
    assert set(KINDS) == set(TASK_TYPES) - {"graph"}
    assert all(kind.task_type == name for name, kind in KINDS.items())


def test_every_runner_and_extra_resolves() -> None:
    """Each kind's runner path names a function; a kind that needs an extra names an installed package here."""
    for kind in KINDS.values():
        assert callable(resolve(kind.runner)), kind
        if kind.extra is not None:
            assert importlib.util.find_spec(kind.extra.package) is not None, kind


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="task_type 'nope' cannot run in a worker"):
        task_kind("nope")
