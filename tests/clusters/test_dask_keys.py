"""Dask key prefixes: a node's call is named after the task it runs, any other call after its function.

Each call here asks the scheduler, while it runs, how many of its tasks
have keys with the expected prefix: its own key among them.
"""

from __future__ import annotations

from typing import Any

import aioflow
from aioflow._tasks import ChainedCall, TaskCall
from aioflow.pools._dask import _key_name

PROBE = "clusters.dask_tasks.count_scheduler_tasks"


def test_a_nodes_key_is_named_after_its_task(local_cluster: Any) -> None:
    graph = {"nodes": [{"id": "probe", "task_type": "method", "task_identifier": PROBE}]}
    pool_options = {"address": local_cluster.scheduler_address}
    inputs = [{"id": "probe", "name": "prefix", "value": f"{PROBE}-"}]
    results = aioflow.execute_graph(graph, inputs=inputs, pool_type="dask", pool_options=pool_options)
    assert results == {"return_value": 1}


def test_an_executor_calls_key_is_named_after_its_function(local_cluster: Any) -> None:
    from clusters.dask_tasks import count_scheduler_tasks

    with aioflow.Executor("dask", pool_options={"address": local_cluster.scheduler_address}) as executor:
        assert executor.submit(count_scheduler_tasks, "count_scheduler_tasks-").result(timeout=120) == 1


def test_key_names_of_calls_and_chained_calls() -> None:
    """A chained call is named as its call; a file path keeps its function's name; a task naming none is a call."""
    call = TaskCall("n", "label", "method", "/path/to/tasks.py::fit-peaks", {})
    assert _key_name(object, (call,)) == "fit_peaks"
    assert _key_name(object, (ChainedCall(call, ()),)) == "fit_peaks"
    assert _key_name(object, (TaskCall("n", "label", "ppfport", None, {}),)) == "call"
    assert _key_name(len, (1, 2)) == "len"
