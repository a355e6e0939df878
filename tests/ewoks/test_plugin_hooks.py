"""The Ewoks plug-in through the engine's seams: the hooks the registry names, and the face that adds the others."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

import aioflow
from aioflow.ewoks._hooks import EwoksRun, EwoksTasks
from aioflow.scheduler import execute_graph_async

if TYPE_CHECKING:
    from aioflow.graph import Graph

pytestmark = pytest.mark.parametrize("pool_config", [{"pool_type": "thread", "max_workers": 2}], ids=["thread"])


def triangle() -> dict[str, Any]:
    """ewokscore's triangle1: a loop of class nodes with no start node."""
    from ewokscore.tests.examples.graphs import get_graph

    graph, _ = get_graph("triangle1")
    return dict(graph)


async def test_the_registry_adds_the_hooks_of_ewokscores_kinds(pool_config: dict[str, Any]) -> None:
    """Without any Ewoks option, a run of class nodes gets ewokscore's fallback start nodes from EwoksTasks."""
    results = await execute_graph_async(triangle(), outputs=[{"id": "task2"}], **pool_config)
    assert results == {"result": 10, "too_small": False}
    assert results.executions == {"task1": 5, "task2": 5, "task3": 4}


async def test_hooks_of_the_kinds_class_given_replace_the_registrys(pool_config: dict[str, Any]) -> None:
    prepared: list[str] = []

    class Counting(EwoksTasks):
        def prepare(self, graph: Graph) -> Graph:
            prepared.append(graph.id)
            return super().prepare(graph)

    results = await execute_graph_async(triangle(), hooks=[Counting()], outputs=[{"id": "task2"}], **pool_config)
    assert results == {"result": 10, "too_small": False}
    assert prepared == ["triangle1"]  # one EwoksTasks: the given one


async def test_ewoks_options_are_checked_when_the_run_starts(pool_config: dict[str, Any]) -> None:
    graph = {"nodes": [{"id": "a", "task_type": "method", "task_identifier": "tasks.inc"}]}
    with pytest.raises(aioflow.OptionError, match="varinfo"):
        await execute_graph_async(
            graph, hooks=[EwoksRun(varinfo="here", execinfo=None, task_options=None)], **pool_config
        )


def test_the_face_imports_the_plugin_only_for_ewoks_options(pool_config: dict[str, Any]) -> None:
    """aioflow.execute_graph runs a plain graph without aioflow.ewoks; varinfo brings it in."""
    code = (
        "import sys, aioflow\n"
        "graph = {'nodes': [{'id': 'a', 'task_type': 'method', 'task_identifier': 'tasks.inc'}]}\n"
        "print(dict(aioflow.execute_graph(graph, pool_type='thread')), 'aioflow.ewoks' in sys.modules)\n"
        "print(dict(aioflow.execute_graph(graph, pool_type='thread', varinfo={})), 'aioflow.ewoks._hooks' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["{'return_value': 1} False", "{'return_value': 1} True"]
