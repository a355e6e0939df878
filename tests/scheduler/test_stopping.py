"""Timeouts, cancellation and shared pools: every worker stops, nothing hangs."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import psutil
import pytest
from conftest import STDLIB_SINGLETONS, ExecuteFn

import aioflow
from aioflow import ExecutionTimeoutError, OptionError


def node(nid: Any, func: str = "tasks.inc", **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": func, **attrs}


def slow_graph(seconds: float = 60) -> dict[str, Any]:
    """A fast node, then two long ones in parallel (sleeping in small steps)."""
    sleeper = {"default_inputs": [{"name": "seconds", "value": seconds}]}
    return {
        "graph": {"id": "slow"},
        "nodes": [
            node("quick"),
            node("long1", "tasks.sleep_python", **sleeper),
            node("long2", "tasks.sleep_python", **sleeper),
        ],
        "links": [{"source": "quick", "target": "long1"}, {"source": "quick", "target": "long2"}],
    }


async def test_timeout_stops_running_tasks_and_keeps_results(execute: ExecuteFn) -> None:
    """timeout= raises ExecutionTimeoutError naming the running nodes, with finished results."""
    with pytest.raises(ExecutionTimeoutError) as info:
        await execute(slow_graph(), timeout=1.0, outputs=[{"all": True}], merge_outputs=False)
    err = info.value
    assert isinstance(err, TimeoutError)
    assert sorted(err.running) == ["long1", "long2"]
    assert err.results == {"quick": {"return_value": 1}}
    assert "graph 'slow': timed out after 1 s (nodes still running: " in str(err)
    # The autouse leak check verifies that the workers are gone.


async def test_cancellation_stops_running_tasks(execute: ExecuteFn) -> None:
    """Cancelling the caller stops the workers before the cancellation propagates."""
    started = anyio.Event()

    def on_event(event: aioflow.Event) -> None:
        if event.kind == "node.started" and event.node_id == "long1":
            started.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await execute(slow_graph(), on_event=on_event)

            tg.start_soon(run)
            with anyio.fail_after(60):
                await started.wait()
            await anyio.sleep(0.2)  # let the task reach its worker
            scope.cancel()
    assert scope.cancelled_caught


async def test_an_enclosing_asyncio_timeout_stops_running_tasks(execute: ExecuteFn) -> None:
    """A native cancellation (the caller's ``asyncio.timeout``) stops the workers before it propagates."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TimeoutError) as info:
        async with asyncio.timeout(1.0):
            await execute(slow_graph())
    assert not isinstance(info.value, ExecutionTimeoutError)  # the caller's timeout, not the execution's
    assert loop.time() - t0 < 30  # the 60 s nodes were stopped
    # The autouse leak check verifies that the workers are gone.


def test_open_pool_as_a_sync_context_manager() -> None:
    """The sync facade accepts an open pool too, and the pool outlives each execution."""
    graph = {"nodes": [node("p", "tasks.pid")]}
    with aioflow.open_pool("process", max_workers=1, context="spawn") as pool:
        first = aioflow.execute_graph(graph, pool=pool)
        second = aioflow.execute_graph(graph, pool=pool)
        workers = psutil.Process().children()
        assert any(w.pid == first["return_value"] for w in workers)
    assert first == second


async def test_shared_pool_recovers_after_a_timeout() -> None:
    """After a timeout aborted its workers, an open pool runs the next execution on fresh ones."""
    async with aioflow.open_pool("process", max_workers=2, context="fork") as pool:
        with pytest.raises(ExecutionTimeoutError):
            await aioflow.execute_graph_async(slow_graph(), pool=pool, timeout=0.5)
        assert await aioflow.execute_graph_async({"nodes": [node("a")]}, pool=pool) == {"return_value": 1}


async def test_pool_and_pool_options_are_exclusive() -> None:
    """Passing an open pool and pool options is refused."""
    async with aioflow.open_pool("thread") as pool:
        with pytest.raises(OptionError, match="'pool' must be given without pool_type, max_workers"):
            await aioflow.execute_graph_async({"nodes": [node("a")]}, pool=pool, max_workers=3)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"pool_type": "threads"}, "; did you mean 'thread'? (got 'threads'"),
        ({"max_workers": 0}, "max_workers must be greater than 0: an int >= 1, or None (got 0 of type int)"),
        ({"pool_type": "process", "context": "spoon"}, "'context' must be one of"),
        ({"pool_type": "thread", "context": "spawn"}, "'context' must be None for the 'thread' pool"),
        ({"timeout": -1}, "'timeout' must be a number of seconds > 0"),
        ({"max_iterations": 0}, "'max_iterations' must be an int >= 1"),
        ({"merge_outputs": "yes"}, "'merge_outputs' must be True or False"),
    ],
)
async def test_invalid_options_fail_before_any_worker_starts(options: dict[str, Any], words: str) -> None:
    """Option errors name the option and the value; no process is started."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(OptionError) as info:
        await aioflow.execute_graph_async({"nodes": [node("a")]}, **options)
    assert words in str(info.value)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


@pytest.mark.parametrize("pool_type", ["thread", "process"])
async def test_stopping_one_execution_spares_others_on_a_shared_pool(pool_type: str) -> None:
    """A timeout in one execution does not stop the tasks of another sharing the pool."""
    patient = {
        "nodes": [
            node(
                "p",
                "tasks.sleep_python",
                default_inputs=[{"name": "seconds", "value": 1.5}, {"name": "value", "value": "ok"}],
            )
        ]
    }
    hasty = slow_graph(seconds=3)
    outcome: dict[str, Any] = {}

    async def run_patient() -> None:
        outcome["patient"] = await aioflow.execute_graph_async(patient, pool=pool)

    async def run_hasty() -> None:
        with pytest.raises(ExecutionTimeoutError):
            await aioflow.execute_graph_async(hasty, pool=pool, timeout=0.5)
        outcome["hasty"] = "timed out"

    async with aioflow.open_pool(pool_type, max_workers=4) as pool, anyio.create_task_group() as tg:
        tg.start_soon(run_patient)
        tg.start_soon(run_hasty)
    assert outcome == {"patient": {"return_value": "ok"}, "hasty": "timed out"}


@pytest.mark.parametrize(("scaling", "expected"), [(True, 1), (False, 3)])
def test_scaling_workers_starts_workers_on_demand(scaling: bool, expected: int) -> None:
    """scaling_workers=True starts workers as tasks need them; False starts max_workers at once."""
    graph = {"nodes": [node("a")]}
    with aioflow.open_pool("process", max_workers=3, context="spawn", scaling_workers=scaling) as pool:
        aioflow.execute_graph(graph, pool=pool)
        workers = [
            p for p in psutil.Process().children() if not any(s in " ".join(p.cmdline()) for s in STDLIB_SINGLETONS)
        ]
        assert len(workers) == expected


@pytest.mark.parametrize(("scaling", "expected"), [(True, 1), (False, 3)])
def test_scaling_thread_workers(scaling: bool, expected: int) -> None:
    """The thread pool follows scaling_workers the same way."""
    import threading

    graph = {"nodes": [node("a")]}
    with aioflow.open_pool("thread", max_workers=3, scaling_workers=scaling) as pool:
        aioflow.execute_graph(graph, pool=pool)
        assert sum(t.name.startswith("aioflow-thread") for t in threading.enumerate()) == expected


async def test_unpicklable_values_are_fine_on_the_thread_pool() -> None:
    """The thread pool passes values as they are."""
    import threading

    lock = threading.Lock()
    graph = {"nodes": [node("i", "tasks.identity")]}
    results = await aioflow.execute_graph_async(graph, pool_type="thread", startargs={"value": lock})
    assert results["return_value"] is lock
