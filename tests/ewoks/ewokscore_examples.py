"""ewokscore's example graphs in ewokscore's three persistence schemes, through the Ewoks door.

Run with ewoksppf's suite by ``test_reference_workflows.py``, in its
subprocess (the file name keeps it out of this project's own collection).
Everything but the call comes from the installed ewokscore: the graphs and
their expected results (``ewokscore.tests.examples.graphs``), the persistence
schemes its own ``test_examples.py`` runs them in, and the assertion it and
ewoksppf use (``assert_execute_graph_default_result``). The test body is
ewoksppf's ``test_examples.py``, without its skip of ``self_trigger`` and on
ewokscore's three schemes: ewokscore's own test of these graphs calls the
sequential ``core`` engine, which refuses cycles and returns task objects,
so only the reference engine's test applies as written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from ewoks.bindings import execute_graph
from ewokscore import load_graph
from ewokscore.tests import test_examples as ewokscore_test_examples
from ewokscore.tests.examples.graphs import get_graph, graph_names
from ewokscore.tests.utils.results import assert_execute_graph_default_result

if TYPE_CHECKING:
    from pathlib import Path


def schemes() -> tuple[Any, ...]:
    """The ``scheme`` values ewokscore's own ``test_execute_graph`` is parametrized with."""
    for mark in ewokscore_test_examples.test_execute_graph.pytestmark:
        if mark.name == "parametrize" and mark.args[0] == "scheme":
            return tuple(mark.args[1])
    raise LookupError("ewokscore's test_examples.test_execute_graph has no 'scheme' parameter")


@pytest.mark.parametrize("graph_name", graph_names())
@pytest.mark.parametrize("scheme", schemes())
def test_execute_graph(graph_name: str, scheme: str | None, tmp_path: Path) -> None:
    graph, expected = get_graph(graph_name)
    varinfo = {"root_uri": str(tmp_path), "scheme": scheme} if scheme else None
    ewoksgraph = load_graph(graph)
    result = execute_graph(graph, engine="aioflow", varinfo=varinfo)
    assert_execute_graph_default_result(ewoksgraph, result, expected, varinfo)
