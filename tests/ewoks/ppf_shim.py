"""A pytest plugin that runs ewoksppf's own test suite on aioflow.

Loaded with ``-p ppf_shim`` (this folder on ``PYTHONPATH``) by
``test_reference_workflows.py``. ewoksppf's tests reach the engine through
``ewoksppf.execute_graph`` (``from ewoksppf import execute_graph``),
``ewoksppf.bindings.execute_graph`` (``from ..bindings import execute_graph``)
and the ``engine`` fixture, whose ``PpfWorkflowEngine.execute_graph`` calls
``bindings.execute_graph``. A ``-p`` plugin is imported before any test module,
so replacing the two module attributes here redirects every one of those calls.
Nothing else changes: the graphs and the expected results are ewoksppf's own.
"""

from __future__ import annotations

from typing import Any

import ewoksppf
import ewoksppf.bindings

# ewoksppf's options that configure pypushflow itself (signals, its database,
# importing before start) or that aioflow does not support yet.
_PPF_ONLY = ("pre_import", "stop_on_signals", "forced_interruption", "stop_signals", "db_options")
_UNSUPPORTED = ("varinfo", "execinfo", "task_options")


def execute_graph(graph: Any, **kwargs: Any) -> dict[Any, Any]:
    """Run ``graph`` on aioflow with ewoksppf's keyword arguments."""
    import aioflow

    for name in _PPF_ONLY + _UNSUPPORTED:
        kwargs.pop(name, None)
    # ewoksppf's conftest sets the actors' SLEEP_TIME to 0 in this process only:
    # workers started by spawn would import them again with a 1 s sleep per task.
    # ewoksppf's own tests that need shared state ask for the thread pool too.
    if kwargs.get("pool_type") is None:
        kwargs["pool_type"] = "thread"
    if kwargs.get("merge_outputs") is None:
        kwargs["merge_outputs"] = True
    if kwargs.get("raise_on_error") is None:
        kwargs["raise_on_error"] = True
    return aioflow.execute_graph(graph, **kwargs)


ewoksppf.execute_graph = execute_graph
ewoksppf.bindings.execute_graph = execute_graph
