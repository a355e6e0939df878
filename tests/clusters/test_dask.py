"""The ``dask`` pool on real Dask clusters: graphs, Executor, parallel maps, lost workers, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest

import aioflow
import aioflow.parallel as par
from aioflow import NodeError, OptionError, PoolError, WorkerLostError
from aioflow.parallel import PoolBackend
from aioflow.pools._dask import DaskTaskLost

if TYPE_CHECKING:
    from pathlib import Path

from graphs import COUNTING_LOOP, NB_DIAMOND, failing_before_a_chain, method_node, return_value_link

# Generous: only a deadlock reaches it.
DEADLINE = 60.0


def chain(n: int) -> dict[str, Any]:
    """inc(0) -> inc -> ... (n nodes): the last returns n."""
    nodes = [method_node(0, "tasks.inc", x=0)] + [method_node(i, "tasks.inc") for i in range(1, n)]
    links = [return_value_link(i - 1, i, "x") for i in range(1, n)]
    return {"graph": {"id": f"chain{n}"}, "nodes": nodes, "links": links}


def dask_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "aioflow-dask"]


@pytest.fixture(params=["address", "client"])
def on_cluster(request: pytest.FixtureRequest, local_cluster: Any) -> dict[str, Any]:
    """The session LocalCluster, reached by its scheduler address or through a user's client."""
    if request.param == "address":
        return {"pool_type": "dask", "pool_options": {"address": local_cluster.scheduler_address}}
    client = request.getfixturevalue("dask_client")
    return {"pool_type": "dask", "pool_options": {"client": client}}


# --------------------------------------------------------------------------- graph semantics


def test_chain_runs_on_cluster_workers(on_cluster: dict[str, Any]) -> None:
    """A chain gives the same result as on any pool, and its tasks run in Dask worker processes."""
    assert aioflow.execute_graph(chain(5), **on_cluster) == {"return_value": 5}
    graph = {"nodes": [method_node(i, "clusters.dask_tasks.worker_pid", x=i) for i in range(4)]}
    results = aioflow.execute_graph(graph, outputs=[{"all": True}], merge_outputs=False, **on_cluster)
    pids = {results[i]["return_value"] for i in range(4)}
    assert os.getpid() not in pids
    assert pids <= {p.pid for p in psutil.Process().children(recursive=True)}


def test_fan_out_and_in(on_cluster: dict[str, Any]) -> None:
    """A diamond joins both branches."""
    assert aioflow.execute_graph(NB_DIAMOND, **on_cluster) == {"return_value": 7}


def test_conditions_and_a_loop(on_cluster: dict[str, Any]) -> None:
    """Conditional links and a cycle are decided by the driver exactly as on local pools."""
    results = aioflow.execute_graph(COUNTING_LOOP, **on_cluster)
    assert results == {"_ppfdict": {"value": 4, "limit": 4, "small": False}}
    assert results.executions == {"start": 1, "again": 3, "end": 1}


def test_on_error_link_gets_the_remote_exception(on_cluster: dict[str, Any]) -> None:
    """An exception raised on a Dask worker reaches the on_error handler as the original exception."""
    graph = {
        "nodes": [method_node("a", "tasks.inc", x=0), method_node("b", "tasks.fail"), method_node("h", "tasks.echo")],
        "links": [
            return_value_link("a", "b", "x"),
            {"source": "b", "target": "h", "on_error": True, "map_all_data": True},
        ],
    }
    kwargs = aioflow.execute_graph(graph, **on_cluster)["return_value"]["kwargs"]
    assert isinstance(kwargs["WorkflowExceptionInstance"], ValueError)
    assert kwargs["x"] == 1


def test_failed_node_raises_node_error_with_finished_results(on_cluster: dict[str, Any]) -> None:
    """Without an error link, a remote failure is a NodeError that keeps what finished."""
    graph = {
        "nodes": [method_node("a", "tasks.inc", x=0), method_node("b", "tasks.fail")],
        "links": [return_value_link("a", "b", "x")],
    }
    with pytest.raises(NodeError) as info:
        aioflow.execute_graph(graph, outputs=[{"all": True}], merge_outputs=False, **on_cluster)
    assert isinstance(info.value.error, ValueError)
    assert info.value.results["a"] == {"return_value": 1}


# --------------------------------------------------------------------------- data on the workers


def test_outputs_go_from_worker_to_worker(on_cluster: dict[str, Any]) -> None:
    """Outputs only the next node reads never reach the driver: they cannot even be unpickled here."""
    me = os.getpid()
    graph = {
        "nodes": [
            method_node("make", "clusters.dask_tasks.make_forbidden", driver_pid=me, payload=40),
            method_node("bump", "clusters.dask_tasks.bump_forbidden"),
            method_node("read", "clusters.dask_tasks.read_forbidden"),
        ],
        "links": [return_value_link("make", "bump", "value"), return_value_link("bump", "read", "value")],
    }
    results = aioflow.execute_graph(graph, **on_cluster)
    assert results == {"return_value": 41}
    assert results.executions == {"make": 1, "bump": 1, "read": 1}


def test_selected_outputs_kept_on_the_workers_are_fetched_at_the_end(on_cluster: dict[str, Any]) -> None:
    """Asking for an intermediate node's outputs brings them back, whatever stayed on the workers."""
    results = aioflow.execute_graph(chain(4), outputs=[{"all": True}], merge_outputs=False, **on_cluster)
    assert results == {i: {"return_value": i + 1} for i in range(4)}


def test_successors_reach_the_scheduler_before_their_predecessor_finishes(local_cluster: Any) -> None:
    """A chain is handed to Dask ahead: while its first node runs, the scheduler already knows the next ones."""
    graph = {
        "nodes": [
            method_node(
                "first",
                "clusters.dask_tasks.count_scheduler_tasks",
                prefix="clusters.dask_tasks.inc_ahead",
                seconds=0.5,
            ),
            *(method_node(i, "clusters.dask_tasks.inc_ahead") for i in range(3)),
        ],
        "links": [return_value_link("first", 0, "x"), return_value_link(0, 1, "x"), return_value_link(1, 2, "x")],
    }
    pool_options = {"address": local_cluster.scheduler_address}
    results = aioflow.execute_graph(
        graph, outputs=[{"all": True}], merge_outputs=False, pool_type="dask", pool_options=pool_options
    )
    assert results["first"] == {"return_value": 3}  # the three inc nodes were on the scheduler
    assert results[2] == {"return_value": 6}


def test_failure_drops_the_nodes_sent_ahead_after_it(on_cluster: dict[str, Any]) -> None:
    """Nodes sent ahead behind a node that fails never count as run; the error link still fires."""
    graph = failing_before_a_chain(method_node("bad", "clusters.dask_tasks.fail_after", seconds=0.3))
    events: list[Any] = []
    results = aioflow.execute_graph(
        graph, on_event=events.append, outputs=[{"all": True}], merge_outputs=False, **on_cluster
    )
    assert results.executions == {"bad": 1, "handler": 1}
    assert results.errors == {}
    assert set(results) == {"bad", "handler"}  # a node whose execution failed gives {}
    assert results["bad"] == {}
    assert isinstance(results["handler"]["return_value"]["kwargs"]["WorkflowExceptionInstance"], ValueError)
    started = [e.node_id for e in events if e.kind == "node.started"]
    assert sorted(map(str, started)) == ["bad", "handler"]


def test_failure_without_handler_keeps_finished_outputs_kept_on_the_workers(on_cluster: dict[str, Any]) -> None:
    """raise_on_error=False: the outputs of the nodes that finished are fetched; those behind the failure never ran."""
    graph = {
        "nodes": [
            method_node("a", "tasks.inc", x=0),
            method_node("b", "tasks.inc"),
            method_node("bad", "clusters.dask_tasks.fail_after", seconds=0.0),
            method_node("after", "tasks.inc"),
        ],
        "links": [
            return_value_link("a", "b", "x"),
            return_value_link("b", "bad", "x"),
            return_value_link("bad", "after", "x"),
        ],
    }
    results = aioflow.execute_graph(
        graph, raise_on_error=False, outputs=[{"all": True}], merge_outputs=False, **on_cluster
    )
    assert results == {"a": {"return_value": 1}, "b": {"return_value": 2}, "bad": {}}
    assert set(results.errors) == {"bad"}
    assert results.executions == {"a": 1, "b": 1, "bad": 1}


def test_given_client_is_left_open(dask_client: Any) -> None:
    """A client passed in pool_options is used, and still connected after the pool closes."""
    with aioflow.open_pool("dask", pool_options={"client": dask_client}) as pool:
        assert aioflow.execute_graph(chain(2), pool=pool) == {"return_value": 2}
    assert dask_client.status == "running"
    assert dask_client.submit(sum, [1, 2]).result() == 3


def test_one_pool_serves_executions_on_different_loops(local_cluster: Any) -> None:
    """An open pool outlives the event loop of each synchronous execute_graph that uses it."""
    with aioflow.open_pool("dask", pool_options={"address": local_cluster.scheduler_address}) as pool:
        assert aioflow.execute_graph(chain(3), pool=pool) == {"return_value": 3}
        assert aioflow.execute_graph(chain(4), pool=pool) == {"return_value": 4}
        assert len(dask_threads()) == 1  # one home loop for the pool, whatever the caller's loop
    assert dask_threads() == []


async def test_pool_scoped_to_the_running_loop_starts_no_thread(local_cluster: Any) -> None:
    """scope_to_running_loop: the client lives on the caller's loop; no thread of the pool's own."""
    async with aioflow.open_pool("dask", pool_options={"address": local_cluster.scheduler_address}) as pool:
        assert isinstance(pool, aioflow.pools.Pool)
        pool.scope_to_running_loop()
        results = await aioflow.execute_graph_async(COUNTING_LOOP, pool=pool)
        assert results.executions == {"start": 1, "again": 3, "end": 1}
        assert dask_threads() == []


async def test_timeout_cancels_the_dask_futures(local_cluster: Any) -> None:
    """A timeout stops the execution; calls still queued on the cluster are cancelled, not run."""
    from .conftest import distributed

    Client = distributed().Client
    options = {"address": local_cluster.scheduler_address}
    graph = {"nodes": [method_node(i, "tasks.sleep", seconds=0.5) for i in range(8)]}
    with pytest.raises(aioflow.ExecutionTimeoutError):
        await aioflow.execute_graph_async(graph, pool_type="dask", pool_options=options, timeout=0.3)
    async with Client(local_cluster.scheduler_address, asynchronous=True, set_as_default=False) as client:
        # No task is left to run on the scheduler: the queued ones never run.
        deadline = time.monotonic() + DEADLINE
        # Polled: the scheduler state is in another process, with nothing to await on.
        while await client.run_on_scheduler(_task_count) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert await client.run_on_scheduler(_task_count) == 0, await client.run_on_scheduler(_task_states)


def _task_count(dask_scheduler: Any) -> int:
    """Tasks still to run or running (erred ones of earlier tests may still be referenced)."""
    return sum(ts.state in ("waiting", "queued", "processing", "no-worker") for ts in dask_scheduler.tasks.values())


def _task_states(dask_scheduler: Any) -> dict[str, str]:
    return {str(k): f"{ts.state} wanted by {ts.who_wants}" for k, ts in dask_scheduler.tasks.items()}


# --------------------------------------------------------------------------- the address path, for real


def test_address_of_a_scheduler_started_as_a_command(dask_processes: str) -> None:
    """A `dask scheduler` + `dask worker` started as commands: tasks run in that worker."""
    graph = {"nodes": [method_node("p", "clusters.dask_tasks.worker_pid")]}
    options: dict[str, Any] = {"pool_type": "dask", "pool_options": {"address": dask_processes}}
    pid = aioflow.execute_graph(graph, **options)["return_value"]
    assert pid != os.getpid()
    assert aioflow.execute_graph(chain(3), **options) == {"return_value": 3}


def test_unreachable_address_is_a_pool_error() -> None:
    """A scheduler that does not answer fails the node with a PoolError naming the address."""
    from .conftest import _free_port

    address = f"tcp://127.0.0.1:{_free_port()}"  # nobody listens there
    pool_options = {"address": address, "connect_timeout": 1.0}
    with pytest.raises(NodeError) as info:
        aioflow.execute_graph(chain(1), pool_type="dask", pool_options=pool_options)
    assert isinstance(info.value.error, PoolError)
    assert f"could not connect to the Dask scheduler at {address!r}" in str(info.value.error)


# --------------------------------------------------------------------------- a pool's own LocalCluster; lost workers


async def test_worker_killed_mid_task_is_a_worker_lost_error(tmp_path: Path, dask_runtime: None) -> None:
    """Without pool_options the pool starts (and stops) a LocalCluster; a worker killed mid-task fails its node."""
    pid_file = tmp_path / "pid"
    graph = {
        "graph": {"id": "dies"},
        "nodes": [
            method_node("first", "tasks.inc", x=1),
            method_node("victim", "clusters.dask_tasks.write_pid_then_sleep", path=str(pid_file)),
            method_node("after", "tasks.inc"),  # sent ahead behind the victim
        ],
        "links": [{"source": "first", "target": "victim"}, return_value_link("victim", "after", "x")],
    }
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    run = asyncio.ensure_future(
        aioflow.execute_graph_async(
            graph, pool_type="dask", max_workers=2, outputs=[{"all": True}], merge_outputs=False
        )
    )
    deadline = time.monotonic() + DEADLINE
    # Polled: the file is written by a Dask worker process, with nothing to await on.
    while not pid_file.exists() and not run.done() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    assert pid_file.exists(), run
    worker = int(pid_file.read_text())
    assert worker in {p.pid for p in psutil.Process().children(recursive=True)} - before
    os.kill(worker, signal.SIGKILL)
    with pytest.raises(NodeError) as info:
        await run
    error = info.value.error
    assert isinstance(error, WorkerLostError)
    assert "graph 'dies'" in str(error)
    assert "node 'victim' lost its worker" in str(error)
    from distributed import KilledWorker

    assert isinstance(error.__cause__, DaskTaskLost)
    assert isinstance(error.__cause__.__cause__, KilledWorker)
    assert info.value.results["first"] == {"return_value": 2}
    assert "victim" not in info.value.results or info.value.results["victim"] == {}
    assert "after" not in info.value.results
    assert info.value.results.executions == {"first": 1, "victim": 1}
    # The pool's LocalCluster is gone with the execution.
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before <= _stdlib_singletons()


def _stdlib_singletons() -> set[int]:
    from conftest import STDLIB_SINGLETONS

    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if any(s in " ".join(p.cmdline()) for s in STDLIB_SINGLETONS)
    }


# --------------------------------------------------------------------------- Executor and parallel


def test_executor_submit_chain_and_map(local_cluster: Any) -> None:
    """aioflow.Executor on Dask: submit, futures as arguments, map."""
    import tasks

    with aioflow.Executor("dask", pool_options={"address": local_cluster.scheduler_address}) as executor:
        first = executor.submit(tasks.inc, 1)
        second = executor.submit(tasks.add, first, b=first)
        assert second.result(DEADLINE) == 4
        assert list(executor.map(tasks.inc, range(6), chunksize=2)) == [1, 2, 3, 4, 5, 6]
        with pytest.raises(ValueError, match="failed on purpose"):
            executor.submit(tasks.fail).result(DEADLINE)
    assert dask_threads() == []


def test_unsendable_argument_fails_its_call_only(local_cluster: Any) -> None:
    """A call whose argument does not pickle fails with TransferError; calls sent with it still run."""
    import tasks

    with aioflow.Executor("dask", pool_options={"address": local_cluster.scheduler_address}) as executor:
        bad = executor.submit(tasks.identity, threading.Lock())
        good = executor.submit(tasks.inc, 1)
        with pytest.raises(aioflow.TransferError, match=r"_thread\.lock"):
            bad.result(DEADLINE)
        assert good.result(DEADLINE) == 2


def test_unpicklable_output_is_a_transfer_error(local_cluster: Any) -> None:
    """A task whose outputs cannot travel back fails its node with TransferError."""
    graph = {"nodes": [method_node("u", "tasks.unpicklable_output")]}
    with pytest.raises(NodeError) as info:
        aioflow.execute_graph(graph, pool_type="dask", pool_options={"address": local_cluster.scheduler_address})
    assert isinstance(info.value.error, aioflow.TransferError)


async def test_executor_asubmit(local_cluster: Any) -> None:
    """Executor.asubmit awaits a Dask call from async code."""
    import tasks

    async with aioflow.Executor("dask", pool_options={"address": local_cluster.scheduler_address}) as executor:
        assert await executor.asubmit(tasks.add, 2, b=3) == 5


def test_parallel_map_on_a_dask_backend(local_cluster: Any) -> None:
    """aioflow.parallel maps on a Dask backend give the results in order."""
    import tasks

    backend = PoolBackend("dask", pool_options={"address": local_cluster.scheduler_address})
    try:
        par.set_parallel_backend(backend)
        assert par.map(tasks.inc, range(20), max_workers=2) == list(range(1, 21))
        assert sorted(par.as_completed(tasks.inc, range(5), max_workers=2)) == [1, 2, 3, 4, 5]
    finally:
        par.set_parallel_backend(None)
        backend.shutdown()
    assert dask_threads() == []


def test_parallel_backend_by_name_starts_and_stops_its_cluster() -> None:
    """set_parallel_backend("dask"): a LocalCluster of max_workers workers, stopped by shutdown()."""
    import tasks

    try:
        par.set_parallel_backend("dask")
        assert par.map(tasks.inc, range(10), max_workers=2) == list(range(1, 11))
    finally:
        par.set_parallel_backend(None)
        par.shutdown()


# --------------------------------------------------------------------------- options and imports


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"pool_options": {"address": "tcp://127.0.0.1:1", "client": object()}}, "'address' or 'client', not both"),
        ({"pool_options": {"adress": "tcp://127.0.0.1:1"}}, "keys among address, client"),
        ({"pool_options": {"address": 8786}}, "a scheduler address"),
        ({"pool_options": {"client": "tcp://127.0.0.1:1"}}, "a distributed.Client"),
        ({"context": "spawn"}, "Dask starts its own workers"),
    ],
)
def test_invalid_options_are_refused_before_anything_starts(kwargs: dict[str, Any], words: str) -> None:
    """Each invalid option is named, and nothing is started."""
    with pytest.raises(OptionError, match=words):
        aioflow.open_pool("dask", **kwargs)
    assert dask_threads() == []


def test_missing_extra_names_the_dask_extra() -> None:
    """Without distributed installed, opening the pool says what to install; import aioflow never imports dask."""
    code = (
        "import sys\n"
        "import aioflow\n"
        "assert 'dask' not in sys.modules and 'distributed' not in sys.modules, 'import aioflow imported dask'\n"
        "sys.modules['distributed'] = None\n"
        "try:\n"
        "    aioflow.open_pool('dask')\n"
        "except aioflow.MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE, check=True)
    assert out.stdout.strip() == "pool 'dask' needs the 'distributed' package: pip install 'aioflow[dask]'"


# --------------------------------------------------------------------------- several pools


def test_a_dask_pool_beside_a_local_pool_in_one_execution(local_cluster: Any) -> None:
    """Nodes naming the cluster pool run on Dask workers, the others in this process; data crosses through the driver."""

    def on(pool: str | None, node: dict[str, Any]) -> dict[str, Any]:
        if pool is not None:
            node["aioflow"] = {"pool": pool}
        return node

    graph = {
        "graph": {"id": "mixed"},
        "nodes": [
            on("cluster", method_node("a", "tasks.inc", x=1)),
            on(None, method_node("b", "tasks.inc")),
            on("cluster", method_node("c", "tasks.inc")),
            on("cluster", method_node("remote_pid", "clusters.dask_tasks.worker_pid")),
            on(None, method_node("local_pid", "clusters.dask_tasks.worker_pid")),
        ],
        "links": [return_value_link("a", "b", "x"), return_value_link("b", "c", "x")],
    }
    results = aioflow.execute_graph(
        graph,
        pools={"cluster": {"pool_type": "dask", "pool_options": {"address": local_cluster.scheduler_address}}},
        pool_type="thread",
        outputs=[{"all": True}],
        merge_outputs=False,
        timeout=DEADLINE,
    )
    assert results["c"] == {"return_value": 4}
    assert results["local_pid"]["return_value"] == os.getpid()
    remote = results["remote_pid"]["return_value"]
    assert remote != os.getpid()
    assert remote in {p.pid for p in psutil.Process().children(recursive=True)}


def test_outputs_stay_on_the_cluster_between_its_nodes_beside_a_local_pool(local_cluster: Any) -> None:
    """With the cluster as the default pool, its nodes' outputs go from worker to worker; a local node's go through the driver."""
    me = os.getpid()
    local = method_node("local", "tasks.inc")
    local["aioflow"] = {"pool": "local"}
    graph = {
        "nodes": [
            method_node("make", "clusters.dask_tasks.make_forbidden", driver_pid=me, payload=40),
            method_node("bump", "clusters.dask_tasks.bump_forbidden"),
            method_node("read", "clusters.dask_tasks.read_forbidden"),
            local,
        ],
        "links": [
            return_value_link("make", "bump", "value"),
            return_value_link("bump", "read", "value"),
            return_value_link("read", "local", "x"),
        ],
    }
    results = aioflow.execute_graph(
        graph,
        pools={
            "cluster": {"pool_type": "dask", "pool_options": {"address": local_cluster.scheduler_address}},
            "local": {"pool_type": "thread"},
        },
        default_pool="cluster",
        timeout=DEADLINE,
    )
    assert results == {"return_value": 42}
    assert results.executions == {"make": 1, "bump": 1, "read": 1, "local": 1}
