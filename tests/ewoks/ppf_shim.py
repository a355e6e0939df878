"""A pytest plugin that runs ewoksppf's own test suite through the Ewoks door, on aioflow.

Loaded with ``-p ppf_shim`` (this folder on ``PYTHONPATH``) by
``test_reference_workflows.py``. ewoksppf's tests reach the engine through
``ewoksppf.execute_graph`` (``from ewoksppf import execute_graph``),
``ewoksppf.bindings.execute_graph`` (``from ..bindings import execute_graph``)
and the ``engine`` fixture, whose ``PpfWorkflowEngine.execute_graph`` calls
``bindings.execute_graph``. A ``-p`` plugin is imported before any test module,
so replacing the two module attributes here sends every one of those calls to
``ewoks.execute_graph(graph, engine="aioflow", ...)``: the ewoks front end
loads the graph with ewokscore and hands it to aioflow's engine, as
``ewoks execute --engine aioflow`` does. Nothing else changes: the graphs, the
keywords and the expected results are ewoksppf's own.
"""

from __future__ import annotations

from typing import Any

import ewoksppf
import ewoksppf.bindings
from ewoks.bindings import execute_graph as ewoks_execute_graph


def execute_graph(graph: Any, **kwargs: Any) -> Any:
    """``ewoks.execute_graph(graph, engine="aioflow", ...)``, on the thread pool unless the test asks for another."""
    # ewoksppf's conftest sets its actors' SLEEP_TIME to 0 in this process only:
    # workers started by spawn would import them again with a 1 s sleep per task.
    # ewoksppf's own tests that share state with the test ask for threads too.
    if kwargs.get("pool_type") is None:
        kwargs["pool_type"] = "thread"
    return ewoks_execute_graph(graph, engine="aioflow", **kwargs)


ewoksppf.execute_graph = execute_graph
ewoksppf.bindings.execute_graph = execute_graph
