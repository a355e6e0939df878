"""The ``dask`` pool names the Dask worker process that ran each call in the run's events."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import psutil
import pytest

import aioflow
from aioflow import NodeError

from .conftest import distributed

if TYPE_CHECKING:
    from aioflow.events import Event

from graphs import COUNTING_LOOP, method_node, return_value_link


@pytest.fixture(scope="module")
def worker_pids(local_cluster: Any) -> set[int]:
    """The pids of `local_cluster`'s two worker processes, as the workers themselves tell them."""
    with distributed().Client(local_cluster, set_as_default=False) as client:
        pids: dict[str, int] = client.run(os.getpid)
    assert len(set(pids.values())) == 2
    return set(pids.values())


def _on(local_cluster: Any) -> dict[str, Any]:
    return {"pool_type": "dask", "pool_options": {"address": local_cluster.scheduler_address}}


# Every node's outputs among the run's results (as they are named by node).
ALL_OUTPUTS: dict[str, Any] = {"outputs": [{"all": True}], "merge_outputs": False}


def _finished(seen: list[Event]) -> dict[Any, Event]:
    finished = {e.node_id: e for e in seen if e.kind == "node.finished"}
    assert len(finished) == len([e for e in seen if e.kind == "node.finished"])  # one firing per node
    return finished


def _assert_only_end_events_name_workers(seen: list[Event]) -> None:
    for event in seen:
        if event.kind not in ("node.finished", "node.failed"):
            assert (event.worker_pid, event.worker_host) == (None, None), event


@pytest.mark.parametrize("reached_by", ["address", "client"])
def test_a_chain_names_the_worker_that_ran_each_node(
    request: pytest.FixtureRequest, local_cluster: Any, worker_pids: set[int], reached_by: str
) -> None:
    """A chain whose intermediate results stay on the cluster: each finished event names a worker of the cluster.

    Only the last node's output is asked for, so the others' results are
    kept on the workers and never fetched; the last node returns the pid of
    the process that ran it, which its event names. The cluster is reached
    by its address (the pool's own client) or through a user's synchronous
    client (its loop is the pool's home loop).
    """
    options = _on(local_cluster)
    if reached_by == "client":
        options["pool_options"] = {"client": request.getfixturevalue("dask_client")}
    n = 5
    nodes = [method_node(0, "tasks.inc", x=0)] + [method_node(i, "tasks.inc") for i in range(1, n - 1)]
    nodes.append(method_node(n - 1, "clusters.dask_tasks.worker_pid"))
    links = [return_value_link(i - 1, i, "x") for i in range(1, n)]
    seen: list[Event] = []
    results = aioflow.execute_graph({"nodes": nodes, "links": links}, on_event=seen.append, **options)
    ran_last = results["return_value"]
    assert ran_last in worker_pids
    finished = _finished(seen)
    assert sorted(finished) == list(range(n))
    assert {e.worker_pid for e in finished.values()} <= worker_pids
    assert {e.worker_host for e in finished.values()} == {socket.gethostname()}
    assert finished[n - 1].worker_pid == ran_last
    _assert_only_end_events_name_workers(seen)


@pytest.mark.parametrize("results", ["kept", "fetched"])
def test_a_fan_out_names_the_worker_that_ran_each_node(local_cluster: Any, worker_pids: set[int], results: str) -> None:
    """Each node of a fan returns its worker's pid: its finished event names that same process.

    ``kept``: the results stay on the workers until the end (one request
    for them all); ``fetched``: a conditional link (never true) after each
    node makes the scheduler read its result as soon as it is done.
    """
    graph: dict[str, Any] = {
        "nodes": [method_node("root", "tasks.inc", x=0)]
        + [method_node(i, "clusters.dask_tasks.worker_pid") for i in range(8)],
        "links": [return_value_link("root", i, "x") for i in range(8)],
    }
    if results == "fetched":
        for i in range(8):
            graph["nodes"].append(method_node(f"never{i}", "tasks.inc"))
            never = {
                **return_value_link(i, f"never{i}", "x"),
                "conditions": [{"source_output": "return_value", "value": -1}],
            }
            graph["links"].append(never)
    seen: list[Event] = []
    outputs = aioflow.execute_graph(graph, on_event=seen.append, **ALL_OUTPUTS, **_on(local_cluster))
    finished = _finished(seen)
    assert sorted(finished, key=str) == sorted(["root", *range(8)], key=str)
    assert outputs["root"]["return_value"] == 1
    for i in range(8):
        assert finished[i].worker_pid == outputs[i]["return_value"]
    assert finished["root"].worker_pid in worker_pids
    assert {e.worker_host for e in finished.values()} == {socket.gethostname()}
    _assert_only_end_events_name_workers(seen)


def test_every_firing_of_a_loop_names_its_worker(local_cluster: Any, worker_pids: set[int]) -> None:
    """A node that fires again and again (its results are fetched, for its conditions): each firing's event names one."""
    seen: list[Event] = []
    outputs = aioflow.execute_graph(COUNTING_LOOP, on_event=seen.append, **_on(local_cluster))
    assert outputs.executions == {"start": 1, "again": 3, "end": 1}
    finished = [e for e in seen if e.kind == "node.finished"]
    assert [e.node_id for e in finished] == ["start", "again", "again", "again", "end"]
    for event in finished:
        assert event.worker_pid in worker_pids
        assert event.worker_host == socket.gethostname()
    _assert_only_end_events_name_workers(seen)


def test_slow_calls_spread_over_both_workers_and_the_events_say_so(local_cluster: Any, worker_pids: set[int]) -> None:
    """Six 0.2 s calls on two single-threaded workers: both run some, and the events name both; results unchanged."""
    graph = {"nodes": [method_node(i, "tasks.sleep", seconds=0.2, value=i * 10) for i in range(6)]}
    seen: list[Event] = []
    results = aioflow.execute_graph(graph, on_event=seen.append, **ALL_OUTPUTS, **_on(local_cluster))
    assert {i: results[i]["return_value"] for i in range(6)} == {i: i * 10 for i in range(6)}
    finished = _finished(seen)
    assert sorted(finished) == list(range(6))
    assert {e.worker_pid for e in finished.values()} == worker_pids
    assert {e.worker_host for e in finished.values()} == {socket.gethostname()}


def test_a_failed_call_names_no_worker(local_cluster: Any, worker_pids: set[int]) -> None:
    """A node that raises on a worker: its failed event names no process, its predecessor's finished one does.

    Dask keeps no result of an erred task on any worker (``who_has`` lists
    none), so the pool cannot tell which worker ran it.
    """
    graph = {
        "nodes": [method_node("a", "tasks.inc", x=0), method_node("b", "tasks.fail")],
        "links": [return_value_link("a", "b", "x")],
    }
    seen: list[Event] = []
    with pytest.raises(NodeError) as caught:
        aioflow.execute_graph(graph, on_event=seen.append, **_on(local_cluster))
    assert caught.value.node_id == "b"
    assert isinstance(caught.value.__cause__, ValueError)
    (failed,) = [e for e in seen if e.kind == "node.failed"]
    assert failed.node_id == "b"
    assert isinstance(failed.error, ValueError)
    assert "failed on purpose" in str(failed.error)
    assert (failed.worker_pid, failed.worker_host) == (None, None)
    assert _finished(seen)["a"].worker_pid in worker_pids


def test_the_pool_s_own_local_cluster_names_its_workers(worker_pids: set[int]) -> None:
    """No address: the LocalCluster the pool starts runs the calls, and the events name its worker processes.

    Those are children of this process while the run lasts, and not the
    workers of this module's other cluster (``worker_pids``).
    """
    children: set[int] = set()
    seen: list[Event] = []

    def on_event(event: Event) -> None:
        if event.kind == "node.finished":  # while the pool's cluster runs: its workers are our children
            children.update(p.pid for p in psutil.Process().children(recursive=True))
        seen.append(event)

    graph = {"nodes": [method_node(i, "clusters.dask_tasks.worker_pid") for i in range(4)]}
    results = aioflow.execute_graph(graph, pool_type="dask", max_workers=2, on_event=on_event, **ALL_OUTPUTS)
    finished = _finished(seen)
    assert sorted(finished) == list(range(4))
    for i in range(4):
        assert finished[i].worker_pid == results[i]["return_value"]
        assert finished[i].worker_pid in children - worker_pids
        assert finished[i].worker_pid != os.getpid()
    assert {e.worker_host for e in finished.values()} == {socket.gethostname()}
