"""The ``dask`` pool an execution opens for itself lives on the execution's event loop: no thread of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import aioflow
from aioflow import ExecutionTimeoutError, NodeError

from .test_dask import chain, dask_threads

if TYPE_CHECKING:
    from aioflow.events import Event

from graphs import COUNTING_LOOP, method_node, return_value_link


class ThreadsSeen:
    """An ``on_event`` hook: the ``aioflow-dask`` threads alive at every event of the run."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def __call__(self, event: Event) -> None:
        self.seen.append(dask_threads())


def _address(local_cluster: Any) -> dict[str, Any]:
    return {"pool_type": "dask", "pool_options": {"address": local_cluster.scheduler_address}}


async def test_owned_pool_runs_on_the_execution_loop(local_cluster: Any) -> None:
    """No pool given: the pool the execution opens keeps its client on the execution's loop."""
    hook = ThreadsSeen()
    results = await aioflow.execute_graph_async(chain(5), on_event=hook, **_address(local_cluster))
    assert results == {"return_value": 5}
    assert len(hook.seen) == 2 + 3 * 5  # graph started/finished, each node queued/started/finished
    assert all(threads == [] for threads in hook.seen)
    assert dask_threads() == []


def test_sync_facade_with_owned_pool(local_cluster: Any) -> None:
    """execute_graph runs its own loop: the owned pool lives and is closed on it."""
    hook = ThreadsSeen()
    results = aioflow.execute_graph(COUNTING_LOOP, on_event=hook, **_address(local_cluster))
    assert results.executions == {"start": 1, "again": 3, "end": 1}
    assert hook.seen
    assert all(threads == [] for threads in hook.seen)


def test_owned_local_cluster_starts_and_stops_on_the_execution_loop() -> None:
    """No address: the LocalCluster the pool starts runs on the execution's loop and is stopped before it ends."""
    hook = ThreadsSeen()
    graph = {
        "nodes": [method_node("a", "tasks.inc", x=1), method_node("b", "tasks.inc"), method_node("c", "tasks.inc")],
        "links": [return_value_link("a", "b", "x"), return_value_link("a", "c", "x")],
    }
    results = aioflow.execute_graph(
        graph, pool_type="dask", max_workers=1, outputs=[{"all": True}], merge_outputs=False, on_event=hook
    )
    assert {nid: r["return_value"] for nid, r in results.items()} == {"a": 2, "b": 3, "c": 3}
    assert hook.seen
    assert all(threads == [] for threads in hook.seen)
    # The leak check (tests/conftest.py) verifies the cluster's processes are gone.


async def test_failed_node_with_owned_pool(local_cluster: Any) -> None:
    """A failure stops the execution and closes the owned pool on its loop."""
    graph = {
        "nodes": [method_node("a", "tasks.inc", x=0), method_node("b", "tasks.fail")],
        "links": [return_value_link("a", "b", "x")],
    }
    with pytest.raises(NodeError) as caught:
        await aioflow.execute_graph_async(graph, **_address(local_cluster))
    assert caught.value.node_id == "b"
    assert dask_threads() == []


async def test_timeout_with_owned_pool(local_cluster: Any) -> None:
    """A timeout aborts the calls from the execution's own loop, then closes the pool without a hang."""
    graph = {"nodes": [method_node(i, "tasks.sleep", seconds=1.0) for i in range(2)]}
    with pytest.raises(ExecutionTimeoutError):
        await aioflow.execute_graph_async(graph, timeout=0.2, **_address(local_cluster))
    assert dask_threads() == []


def test_given_pool_keeps_its_own_loop(local_cluster: Any) -> None:
    """A pool passed by the caller is left as it is: its home loop thread serves every execution."""
    hook = ThreadsSeen()
    with aioflow.open_pool("dask", pool_options={"address": local_cluster.scheduler_address}) as pool:
        assert aioflow.execute_graph(chain(3), pool=pool) == {"return_value": 3}
        assert aioflow.execute_graph(chain(4), pool=pool, on_event=hook) == {"return_value": 4}  # a later loop
    assert hook.seen
    assert all(threads == ["aioflow-dask"] for threads in hook.seen)
    assert dask_threads() == []


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"pool_type": "thread", "max_workers": 2}, id="thread"),
        pytest.param({"pool_type": "process", "max_workers": 2, "context": "spawn"}, id="process"),
    ],
)
async def test_local_pools_ignore_the_hook(options: dict[str, Any]) -> None:
    """Thread and process pools run as before, owned or given (the hook does nothing for them)."""
    assert await aioflow.execute_graph_async(chain(4), **options) == {"return_value": 4}
    async with aioflow.open_pool(**options) as pool:
        pool.scope_to_running_loop()
        assert await aioflow.execute_graph_async(chain(3), pool=pool) == {"return_value": 3}
