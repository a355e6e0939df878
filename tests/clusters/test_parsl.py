"""The ``parsl`` pool on a real local HighThroughputExecutor: graphs, Executor, parallel maps, ownership and cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

import aioflow
import aioflow.parallel as par
from aioflow import NodeError, OptionError, WorkerLostError
from aioflow.parsl import ParslPoolExecutor
from aioflow.pools._parsl import LABEL, _current_dfk

from .parsl_fixtures import (
    WORKERS,
    assert_no_parsl_processes,
    make_config,
    parsl_dfk,
    parsl_processes,
    parsl_run_dir,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["parsl_dfk", "parsl_run_dir"]  # module-scoped fixtures, used by name

import tasks
from graphs import COUNTING_LOOP, failing_before_a_chain, method_node, return_value_link

from clusters import dask_tasks

CRASH = "cli_tasks.die"


def on(dfk: Any, **options: Any) -> dict[str, Any]:
    """execute_graph options for the shared DFK."""
    return {"pool_type": "parsl", "pool_options": {"dfk": dfk}, **options}


def chain(n: int) -> dict[str, Any]:
    nodes = [method_node(0, "tasks.inc", x=0), *(method_node(i, "tasks.inc") for i in range(1, n))]
    return {"graph": {"id": "chain"}, "nodes": nodes, "links": [return_value_link(i, i + 1, "x") for i in range(n - 1)]}


def fan(n: int) -> dict[str, Any]:
    nodes = [method_node("start", "tasks.inc", x=0), *(method_node(i, "tasks.pid") for i in range(n))]
    links = [{"source": "start", "target": i} for i in range(n)]
    return {"graph": {"id": "fan"}, "nodes": nodes, "links": links}


def route(d: int) -> dict[str, Any]:
    def ppf(node_id: str, identifier: str, **inputs: Any) -> dict[str, Any]:
        return {**method_node(node_id, identifier, **inputs), "task_type": "ppfmethod"}

    return {
        "graph": {"id": "route"},
        "nodes": [ppf("route", "tasks.ppf_route", d=d), ppf("small", "tasks.ppf_add", a=100)],
        "links": [
            {
                "source": "route",
                "target": "small",
                "map_all_data": True,
                "conditions": [{"source_output": "d", "value": 7}],
            }
        ],
    }


# --------------------------------------------------------------------------- graphs on a user's DFK


def test_chain_runs_on_parsl_workers(parsl_dfk: Any) -> None:
    """A chain of 20 dependent nodes passes each result to the next through Parsl's workers."""
    assert aioflow.execute_graph(chain(20), **on(parsl_dfk)) == {"return_value": 20}


def test_fan_runs_every_branch_in_worker_processes(parsl_dfk: Any) -> None:
    """Every branch of a fan-out runs in a Parsl worker process, not in the test process."""
    results = aioflow.execute_graph(fan(8), **on(parsl_dfk), outputs=[{"all": True}], merge_outputs=False)
    pids = {results[i]["return_value"] for i in range(8)}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2  # the DFK's two workers


def test_condition_routes_on_parsl(parsl_dfk: Any) -> None:
    """A conditional link fires only when the upstream output matches."""
    taken = aioflow.execute_graph(route(7), **on(parsl_dfk))
    assert taken == {"_ppfdict": {"a": 100, "d": 7}}
    assert taken.executions == {"route": 1, "small": 1}
    skipped = aioflow.execute_graph(route(8), **on(parsl_dfk))
    assert skipped.executions == {"route": 1}


async def test_loop_until_condition_on_parsl(parsl_dfk: Any) -> None:
    """A loop closed by a conditional link runs on Parsl until the condition stops holding."""
    results = await aioflow.execute_graph_async(COUNTING_LOOP, **on(parsl_dfk))
    assert results == {"_ppfdict": {"value": 4, "limit": 4, "small": False}}
    assert results.executions == {"start": 1, "again": 3, "end": 1}


def test_on_error_link_handles_a_remote_failure(parsl_dfk: Any) -> None:
    """An exception raised on a Parsl worker reaches the on_error handler as the original exception."""
    graph = {
        "nodes": [method_node("a", "tasks.inc", x=0), method_node("b", "tasks.fail"), method_node("h", "tasks.echo")],
        "links": [
            return_value_link("a", "b", "x"),
            {"source": "b", "target": "h", "on_error": True, "map_all_data": True},
        ],
    }
    kwargs = aioflow.execute_graph(graph, **on(parsl_dfk))["return_value"]["kwargs"]
    assert isinstance(kwargs["WorkflowExceptionInstance"], ValueError)
    assert "failed on purpose" in kwargs["WorkflowException"]["errorMessage"]


def test_failed_node_raises_node_error_with_the_remote_cause(parsl_dfk: Any) -> None:
    """A task that raises on a worker fails its node with NodeError, the worker's exception as cause."""
    graph = {"graph": {"id": "g"}, "nodes": [method_node("a", "tasks.fail")]}
    with pytest.raises(NodeError) as info:
        aioflow.execute_graph(graph, **on(parsl_dfk))
    assert info.value.node_id == "a"
    assert isinstance(info.value.__cause__, ValueError)


def test_successors_run_while_the_driver_is_busy(parsl_dfk: Any, tmp_path: Path) -> None:
    """Nodes sent ahead start when their predecessor finishes, without the driver's event loop.

    The driver's loop is blocked for 2 s right after the first node's
    outcome reaches it; the three nodes after it still run meanwhile.
    """
    stamps = [tmp_path / f"stamp{i}" for i in range(3)]
    graph = {
        "nodes": [
            method_node("first", "tasks.inc", x=0),
            *(method_node(i, "clusters.dask_tasks.stamp", path=str(stamps[i])) for i in range(3)),
        ],
        "links": [return_value_link("first", 0, "x"), return_value_link(0, 1, "x"), return_value_link(1, 2, "x")],
    }
    unblocked: list[float] = []

    def block_the_loop(event: Any) -> None:
        if event.kind == "node.finished" and event.node_id == "first":
            time.sleep(2.0)
            unblocked.append(time.time())

    results = aioflow.execute_graph(graph, on_event=block_the_loop, **on(parsl_dfk))
    assert results == {"return_value": 4}
    ran_at = [float(path.read_text()) for path in stamps]
    assert max(ran_at) < unblocked[0]


def test_a_config_with_retries_goes_through_the_dfk(tmp_path: Path) -> None:
    """With Parsl retries configured, calls go through the DataFlowKernel, which retries a failed task."""
    config = make_config(tmp_path / "run")
    config.retries = 1
    marker = tmp_path / "failed-once"
    graph = {"nodes": [method_node("flaky", "clusters.dask_tasks.fail_once", marker=str(marker))]}
    with aioflow.open_pool("parsl", pool_options={"config": config}) as pool:
        assert aioflow.execute_graph(graph, pool=pool) == {"return_value": 1}
    assert marker.exists()  # it did fail once
    assert_no_parsl_processes(tmp_path / "run")


def test_calls_skip_the_dfk_when_it_adds_nothing(parsl_dfk: Any) -> None:
    """Without retries, monitoring or checkpoints, calls go to the HTEX directly: the DFK records no task."""
    before = parsl_dfk.task_count
    assert aioflow.execute_graph(chain(3), **on(parsl_dfk)) == {"return_value": 3}
    assert parsl_dfk.task_count == before


def test_calls_reach_the_htex_as_pickled_payloads(parsl_dfk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the direct path, Parsl's serializer never touches a call: the pickled call is the task's payload."""
    import parsl.executors.high_throughput.executor as htex

    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("Parsl's serializer was asked to pack a call")

    monkeypatch.setattr(htex, "pack_apply_message", refuse)
    assert aioflow.execute_graph(chain(4), **on(parsl_dfk)) == {"return_value": 4}
    fanned = aioflow.execute_graph(fan(3), **on(parsl_dfk), outputs=[{"all": True}], merge_outputs=False)
    assert sorted(map(str, fanned)) == ["0", "1", "2", "start"]


def test_executors_that_submit_their_own_way_keep_their_submit() -> None:
    """Only a plain HighThroughputExecutor takes payloads; a subclass with its own submit, or another kind, does not."""
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor

    from aioflow.pools._parsl import _takes_payloads

    class OwnSubmit(HighThroughputExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    class SameSubmit(HighThroughputExecutor):
        pass

    assert _takes_payloads(object.__new__(HighThroughputExecutor))
    assert _takes_payloads(object.__new__(SameSubmit))
    assert not _takes_payloads(object.__new__(OwnSubmit))
    assert not _takes_payloads(object.__new__(ThreadPoolExecutor))


def test_a_chained_call_is_sent_before_the_other_callbacks_of_its_dependency(
    parsl_dfk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a call finishes, the calls waiting for it go out first, then the callbacks its caller added."""
    from aioflow.pools._parsl import ParslExecutor

    order: list[str] = []
    with aioflow.open_pool("parsl", pool_options={"dfk": parsl_dfk}) as pool:
        executor = pool.executor
        assert isinstance(executor, ParslExecutor)
        send = executor._send

        def recording_send(*args: Any) -> None:
            order.append("send")
            send(*args)

        monkeypatch.setattr(executor, "_send", recording_send)
        gate = tmp_path / "gate"
        first = executor.submit(dask_tasks.wait_for_file, str(gate))
        order.clear()  # the first call's own send
        first.add_done_callback(lambda _: order.append("callback"))
        second = executor.submit(tasks.inc, first)
        gate.touch()  # only now can the first call finish
        assert second.result(timeout=60) == 1
    assert order == ["send", "callback"]


def test_without_retries_a_failure_is_final(parsl_dfk: Any, tmp_path: Path) -> None:
    """Calls that skip the DataFlowKernel are not retried: the node fails at its first error."""
    graph = {"nodes": [method_node("flaky", "clusters.dask_tasks.fail_once", marker=str(tmp_path / "m"))]}
    with pytest.raises(NodeError) as info:
        aioflow.execute_graph(graph, **on(parsl_dfk))
    assert "first time only" in str(info.value.error)


def test_failure_drops_the_nodes_sent_ahead_after_it(parsl_dfk: Any) -> None:
    """Nodes sent ahead behind a node that fails never count as run; the error link still fires."""
    graph = failing_before_a_chain(method_node("bad", "tasks.fail"))
    events: list[Any] = []
    results = aioflow.execute_graph(graph, on_event=events.append, **on(parsl_dfk))
    assert results.executions == {"bad": 1, "handler": 1}
    assert isinstance(results["return_value"]["kwargs"]["WorkflowExceptionInstance"], ValueError)
    assert sorted(str(e.node_id) for e in events if e.kind == "node.started") == ["bad", "handler"]


def test_dead_worker_is_worker_lost_error_and_the_pool_carries_on(parsl_dfk: Any) -> None:
    """A worker process that dies fails its node with WorkerLostError; the next execution runs normally."""
    graph = {"graph": {"id": "g"}, "nodes": [method_node("boom", CRASH)]}
    with pytest.raises(NodeError, match=r"node 'boom' lost its Parsl worker") as info:
        aioflow.execute_graph(graph, **on(parsl_dfk))
    lost = info.value.error
    assert isinstance(lost, WorkerLostError)
    assert type(lost.__cause__).__name__ == "WorkerLost"
    assert aioflow.execute_graph(chain(3), **on(parsl_dfk)) == {"return_value": 3}


def test_a_users_dfk_keeps_running_after_the_pool_closes(parsl_dfk: Any) -> None:
    """Closing a pool opened on the caller's DFK leaves that DFK usable."""
    with aioflow.open_pool("parsl", pool_options={"dfk": parsl_dfk}) as pool:
        assert aioflow.execute_graph(chain(2), pool=pool) == {"return_value": 2}
    import parsl

    assert parsl.python_app(tasks.inc, data_flow_kernel=parsl_dfk)(41).result(timeout=60) == 42


# --------------------------------------------------------------------------- Executor and parallel


def test_executor_submit_chains_and_maps_on_parsl(parsl_dfk: Any) -> None:
    """aioflow.Executor on Parsl: a future as an argument waits for its result; map keeps input order."""
    with aioflow.Executor(pool_type="parsl", pool_options={"dfk": parsl_dfk}) as executor:
        first = executor.submit(tasks.inc, 1)
        second = executor.submit(tasks.add, first, 10)
        assert second.result(timeout=60) == 12
        assert list(executor.map(tasks.inc, range(20))) == list(range(1, 21))


def test_executor_reports_a_lost_worker(parsl_dfk: Any) -> None:
    """A task whose worker dies fails its future with WorkerLostError."""
    import cli_tasks

    with (
        aioflow.Executor(pool_type="parsl", pool_options={"dfk": parsl_dfk}) as executor,
        pytest.raises(WorkerLostError),
    ):
        executor.submit(cli_tasks.die).result(timeout=120)


def test_parallel_map_on_the_parsl_pool(parsl_dfk: Any) -> None:
    """aioflow.parallel maps on the parsl pool, results in input order (and in completion order)."""
    import nb_tasks

    backend = par.PoolBackend("parsl", pool_options={"dfk": parsl_dfk})
    try:
        par.set_parallel_backend(backend)
        results = par.map(nb_tasks.square, range(30), max_workers=2, chunksize=3)
        completed = sorted(par.as_completed(nb_tasks.square, range(10), max_workers=2))
    finally:
        par.set_parallel_backend(None)
        backend.shutdown()
    assert results == [x * x for x in range(30)]
    assert completed == [x * x for x in range(10)]


def test_parallel_backend_by_name_is_the_parsl_pool() -> None:
    """set_parallel_backend('parsl') selects the parsl pool (nothing starts before a map)."""
    par.set_parallel_backend("parsl")
    try:
        backend = par.get_parallel_backend()
        assert isinstance(backend, par.PoolBackend)
        assert backend.name == "parsl"
    finally:
        par.set_parallel_backend(None)


# --------------------------------------------------------------------------- DFKs the pool owns


def test_config_dfk_is_cleaned_up_at_close(tmp_path: Path) -> None:
    """With a Config, the pool loads its own DFK as it opens and cleans it up at close: no process remains."""
    with aioflow.open_pool("parsl", pool_options={"config": make_config(tmp_path, workers=1)}) as pool:
        assert aioflow.execute_graph(chain(3), pool=pool) == {"return_value": 3}
        with aioflow.Executor(pool=pool) as executor:
            assert executor.submit(tasks.add, 1, 2).result(timeout=60) == 3
        assert parsl_processes(tmp_path)  # the worker block runs while the pool is open
    assert_no_parsl_processes(tmp_path)


def test_default_config_starts_and_removes_everything() -> None:
    """Without config or dfk: a local HTEX with max_workers workers, its run_dir removed and workers gone at close."""
    import aioflow.pools._parsl as parsl_pool

    pool = aioflow.open_pool("parsl", max_workers=1)
    try:
        assert aioflow.execute_graph(chain(3), pool=pool) == {"return_value": 3}
        run_dir = pool._kernel._run_dir  # type: ignore[attr-defined]
        assert run_dir is not None
        assert os.path.isdir(run_dir)
        assert parsl_processes(run_dir)
    finally:
        pool.close()
    assert not os.path.exists(run_dir)
    assert_no_parsl_processes(run_dir)
    assert parsl_pool.LABEL == "aioflow_htex"


def test_a_config_that_cannot_start_fails_with_pool_error(tmp_path: Path) -> None:
    """A Parsl config that cannot start fails the first node with PoolError naming Parsl's error, instead of hanging."""
    from parsl.config import Config
    from parsl.executors.threads import ThreadPoolExecutor

    # A run_dir that is a file: Parsl cannot create its run directory there.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    bad = Config(executors=[ThreadPoolExecutor(label="threads")], run_dir=str(blocker), initialize_logging=False)
    with pytest.raises(NodeError, match=r"could not start Parsl: NotADirectoryError") as info:
        aioflow.execute_graph(chain(2), pool_type="parsl", pool_options={"config": bad})
    assert isinstance(info.value.error, aioflow.PoolError)


# --------------------------------------------------------------------------- Parsl's apps beside the pool


def test_executor_futures_are_inputs_of_parsl_apps(tmp_path: Path) -> None:
    """As with ParslPoolExecutor(config): a @python_app takes the executor's futures, and the executor takes the app's.

    While the executor is open, its DFK is Parsl's current one (apps
    without data_flow_kernel= run there); closing it clears that and stops
    its workers.
    """
    import parsl

    app = parsl.python_app(tasks.inc)
    with aioflow.Executor("parsl", pool_options={"config": make_config(tmp_path, workers=1)}) as executor:
        first = executor.submit(tasks.inc, 1)
        from_app = app(first)
        assert from_app.result(timeout=60) == 3
        assert executor.submit(tasks.add, from_app, 10).result(timeout=60) == 13
        assert str(_current_dfk().run_dir).startswith(str(tmp_path))
    assert _current_dfk() is None
    assert_no_parsl_processes(tmp_path)


def test_a_config_executor_serves_apps_as_soon_as_it_exists(tmp_path: Path) -> None:
    """As ParslPoolExecutor(config) does, the executor loads its DFK as it is made: an app runs there before any submit."""
    import parsl

    with aioflow.Executor("parsl", pool_options={"config": make_config(tmp_path, workers=1)}):
        assert str(_current_dfk().run_dir).startswith(str(tmp_path))
        assert parsl.python_app(tasks.inc)(41).result(timeout=60) == 42
    assert _current_dfk() is None
    assert_no_parsl_processes(tmp_path)


def test_the_default_configs_dfk_serves_apps_once_a_call_is_submitted() -> None:
    """Without options, the DFK loads on the first submit, which returns once it is up: an app takes that future."""
    import parsl

    with aioflow.Executor("parsl", max_workers=1) as executor:
        assert _current_dfk() is None  # opening it started nothing
        first = executor.submit(tasks.inc, 1)
        assert parsl.python_app(tasks.inc)(first).result(timeout=60) == 3
        run_dir = executor.pool._kernel._run_dir  # type: ignore[attr-defined]
        assert _current_dfk().run_dir.startswith(run_dir)
    assert _current_dfk() is None
    assert_no_parsl_processes(run_dir)


def test_a_current_dfk_of_the_callers_stays_current(tmp_path: Path) -> None:
    """The pool does not take the current slot from a DFK the caller loaded: apps run there, on the pool's futures."""
    import parsl
    from parsl.config import Config
    from parsl.executors.threads import ThreadPoolExecutor

    callers = Config(
        executors=[ThreadPoolExecutor(label="callers")], run_dir=str(tmp_path / "callers"), initialize_logging=False
    )
    with parsl.load(callers) as dfk:
        with aioflow.Executor("parsl", pool_options={"config": make_config(tmp_path / "pool", workers=1)}) as executor:
            assert _current_dfk() is dfk
            from_app = parsl.python_app(tasks.inc)(executor.submit(tasks.inc, 1))
            assert from_app.result(timeout=60) == 3
            assert from_app.task_record["dfk"] is dfk
        assert _current_dfk() is dfk
    assert_no_parsl_processes(tmp_path / "pool")


def test_an_executions_own_pool_keeps_its_dfk_private(tmp_path: Path) -> None:
    """A graph execution's own parsl pool never becomes Parsl's current DFK: nobody else has its futures."""
    current: list[Any] = []

    def record(event: Any) -> None:
        if event.kind == "node.finished":
            current.append(_current_dfk())

    options = {"config": make_config(tmp_path, workers=1)}
    results = aioflow.execute_graph(chain(2), pool_type="parsl", pool_options=options, on_event=record)
    assert results == {"return_value": 2}
    assert current == [None, None]
    assert_no_parsl_processes(tmp_path)


@pytest.mark.parametrize("private", [False, True], ids=["a-users-pool", "an-executions-own-pool"])
def test_a_call_waits_for_the_dfk_to_load_unless_the_pool_is_private(
    monkeypatch: pytest.MonkeyPatch, private: bool
) -> None:
    """A call made while the DFK loads returns once it is up (apps then find it), but on an execution's own pool.

    That pool's calls come from its event loop, which never waits for Parsl
    to start. Parsl itself is replaced by a DFK that starts only once the
    caller waits for it (a user's pool) or once the test lets it (an
    execution's own pool), so the order is certain either way.
    """
    import parsl
    import parsl.dataflow.dflow

    from aioflow.pools._parsl import _Kernel

    kernel = _Kernel(config=object())
    if private:
        kernel.make_private()
    caller_waits, release = threading.Event(), threading.Event()
    loaded_wait = kernel._loaded.wait

    def wait(timeout: float | None = None) -> bool:
        caller_waits.set()
        return loaded_wait(timeout)

    class FakeDFK:
        def __init__(self, config: Any) -> None:
            (release if private else caller_waits).wait(timeout=60)

        def cleanup(self) -> None:
            pass

    monkeypatch.setattr(kernel._loaded, "wait", wait)
    monkeypatch.setattr(parsl, "load", FakeDFK)
    monkeypatch.setattr(parsl.dataflow.dflow, "DataFlowKernel", FakeDFK)
    sent: list[tuple[Any, BaseException | None]] = []
    try:
        kernel.when_ready(lambda dfk, error: sent.append((dfk, error)))
        assert caller_waits.is_set() is not private
        assert kernel._loaded.is_set() is not private  # returned once the DFK was up, or at once
        release.set()
    finally:
        kernel.close()
    [(dfk, error)] = sent
    assert isinstance(dfk, FakeDFK)
    assert error is None


def test_a_parsl_app_given_to_the_pool_runs_as_that_app(parsl_dfk: Any) -> None:
    """A Parsl app given to submit in place of a function is called as an app: its DFK records the task."""
    import parsl

    app = parsl.python_app(tasks.add, data_flow_kernel=parsl_dfk)
    before = parsl_dfk.task_count
    with aioflow.Executor("parsl", pool_options={"dfk": parsl_dfk}) as executor:
        assert executor.submit(app, executor.submit(tasks.inc, 1), 10).result(timeout=60) == 12
    assert parsl_dfk.task_count == before + 1  # the app's call; tasks.inc went to the HTEX directly


# --------------------------------------------------------------------------- the drop-in for Parsl's ParslPoolExecutor


def test_drop_in_takes_exactly_one_of_config_and_dfk(parsl_dfk: Any, tmp_path: Path) -> None:
    """As Parsl's class: both, or neither, is a ValueError in Parsl's words, and nothing starts."""
    with pytest.raises(ValueError, match=r"^Specify only one of config or dfk$"):
        ParslPoolExecutor(config=make_config(tmp_path), dfk=parsl_dfk)
    with pytest.raises(ValueError, match=r"^Must specify one of config or dfk$"):
        ParslPoolExecutor()
    assert _current_dfk() is None
    assert not parsl_processes(tmp_path)


def test_drop_in_sends_every_call_through_one_app_per_function(parsl_dfk: Any) -> None:
    """submit and map make one Parsl app per function, on the executor's DFK and executors, and call through it."""
    with ParslPoolExecutor(dfk=parsl_dfk, executors=[LABEL]) as executor:
        before = parsl_dfk.task_count
        assert executor.submit(tasks.inc, 1).result(timeout=60) == 2
        assert list(executor.map(tasks.add, [1, 2], [10, 20], timeout=60)) == [11, 22]
        assert executor.submit(tasks.inc, executor.submit(tasks.inc, 5)).result(timeout=60) == 7
        assert parsl_dfk.task_count == before + 5  # each call is a task of its app
        assert executor.app_count == 2
        app = executor.get_app(tasks.inc)
        assert app is executor.get_app(tasks.inc)
        assert app(3).result(timeout=60) == 4  # inc's app
        assert app.executors == [LABEL]
        assert app.data_flow_kernel is parsl_dfk
        assert executor.app_count == 2


def test_drop_in_futures_and_parsl_app_futures_are_each_others_inputs(tmp_path: Path) -> None:
    """With a config: an app takes the executor's futures and the executor the app's; the DFK is cleaned up after.

    The DFK the executor loads is Parsl's current one while it is open: an
    app without data_flow_kernel= runs there. Leaving the block cleans it up:
    it is no longer current, and its workers are gone.
    """
    import parsl

    app = parsl.python_app(tasks.inc)
    with ParslPoolExecutor(config=make_config(tmp_path, workers=1)) as executor:
        from_app = app(executor.submit(tasks.inc, 1))
        assert from_app.result(timeout=60) == 3
        assert executor.submit(tasks.add, from_app, 10).result(timeout=60) == 13
        assert parsl_processes(tmp_path)  # the executor's own worker block
    assert _current_dfk() is None
    assert_no_parsl_processes(tmp_path)


def test_drop_in_leaves_a_borrowed_dfk_running_and_refuses_calls_once_shut_down(parsl_dfk: Any) -> None:
    """With dfk=, the DFK stays the caller's and runs on after the executor; a later submit is refused, as Parsl's."""
    import parsl

    with ParslPoolExecutor(dfk=parsl_dfk) as executor:
        assert executor.submit(tasks.inc, 1).result(timeout=60) == 2
    with pytest.raises(RuntimeError, match=r"shut down"):
        executor.submit(tasks.add, 1, 2)
    assert executor.app_count == 1  # a refused call makes no app
    assert parsl.python_app(tasks.inc, data_flow_kernel=parsl_dfk)(41).result(timeout=60) == 42


def test_drop_in_cancels_only_the_calls_waiting_for_dependencies(parsl_dfk: Any, tmp_path: Path) -> None:
    """shutdown(cancel_futures=True) warns that Parsl cannot cancel; it cancels a call waiting for its dependency.

    The calls handed to Parsl (more than it has workers) count as running and
    run to their end: cancel fails on each.
    """
    gate = tmp_path / "gate"
    executor = ParslPoolExecutor(dfk=parsl_dfk)
    try:
        handed = [executor.submit(dask_tasks.wait_for_file, str(gate)) for _ in range(WORKERS + 1)]
        waiting = executor.submit(tasks.inc, handed[0])
        with pytest.warns(UserWarning, match=r"Parsl cannot cancel the calls it has been handed"):
            executor.shutdown(wait=False, cancel_futures=True)
        assert waiting.cancelled()
        assert not any(future.cancel() for future in handed)
        assert all(future.running() for future in handed)
    finally:
        gate.touch()
        executor.shutdown(wait=True)
    assert [future.result(timeout=60) for future in handed] == [0] * (WORKERS + 1)


def test_drop_in_reports_a_lost_worker(parsl_dfk: Any) -> None:
    """Through Parsl's app, a task whose worker dies still fails with WorkerLostError, Parsl's WorkerLost as cause."""
    import cli_tasks

    with ParslPoolExecutor(dfk=parsl_dfk) as executor:
        with pytest.raises(WorkerLostError, match=r"task die lost its Parsl worker") as info:
            executor.submit(cli_tasks.die).result(timeout=120)
        assert type(info.value.__cause__).__name__ == "WorkerLost"
        assert executor.submit(tasks.inc, 1).result(timeout=60) == 2


# --------------------------------------------------------------------------- options and imports


@pytest.mark.parametrize(
    ("pool_options", "match"),
    [
        ({"config": object()}, r"pool_options\['config'\]. must be a parsl.config.Config"),
        ({"dfk": "dfk"}, r"pool_options\['dfk'\]. must be a parsl DataFlowKernel"),
        ({"executors": "htex"}, r"'all' or a list of executor labels"),
        ({"workers": 2}, r"keys among config, dfk, executors"),
    ],
)
def test_invalid_pool_options_fail_before_anything_starts(pool_options: dict[str, Any], match: str) -> None:
    """A wrong pool_options value is an OptionError naming the key, raised when the pool is opened."""
    with pytest.raises(OptionError, match=match):
        aioflow.open_pool("parsl", pool_options=pool_options)


def test_config_and_dfk_together_are_refused(parsl_dfk: Any, tmp_path: Path) -> None:
    """Passing both a Config and a DFK is an OptionError."""
    with pytest.raises(OptionError, match=r"'config' or 'dfk', not both"):
        aioflow.open_pool("parsl", pool_options={"config": make_config(tmp_path), "dfk": parsl_dfk})


def test_start_method_is_refused() -> None:
    """context= (a multiprocessing start method) does not apply to Parsl."""
    with pytest.raises(OptionError, match=r"'context' must be None for the 'parsl' pool"):
        aioflow.open_pool("parsl", context="spawn")


def test_opening_the_pool_imports_no_parsl() -> None:
    """import aioflow, import aioflow.parsl and opening (not using) the parsl pool do not import parsl."""
    code = (
        "import sys, aioflow, aioflow.parsl; aioflow.open_pool('parsl').close(); "
        "assert 'parsl' not in sys.modules, 'imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_missing_parsl_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without parsl installed, opening the pool, or making the drop-in executor, says which extra to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "parsl" else real(name, *a))
    with pytest.raises(aioflow.MissingExtraError, match=r"pip install 'aioflow\[parsl\]'"):
        aioflow.open_pool("parsl")
    with pytest.raises(
        aioflow.MissingExtraError,
        match=r"aioflow.parsl.ParslPoolExecutor needs the 'parsl' package: pip install 'aioflow\[parsl\]'",
    ):
        ParslPoolExecutor()


def test_a_parsl_run_is_journaled_and_a_second_one_comes_from_the_cache(parsl_dfk: Any, tmp_path: Path) -> None:
    """The driver journals what the parsl pool runs: every firing, its outputs, and the cache answers a rerun."""
    from aioflow.journal import JournalRun, run_firings

    path = tmp_path / "runs.sqlite"
    graph = chain(4)
    first = aioflow.execute_graph(graph, journal=JournalRun(path, run_id="one", cache=True), **on(parsl_dfk))
    assert first == {"return_value": 4}
    assert [(f.node_id, f.status, f.outputs) for f in run_firings(path, "one")] == [
        (i, "finished", {"return_value": i + 1}) for i in range(4)
    ]
    again = JournalRun(path, run_id="two", cache=True)
    assert aioflow.execute_graph(graph, journal=again, **on(parsl_dfk)) == first
    assert again.reused == 4
