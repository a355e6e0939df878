"""aioflow.Executor: a concurrent.futures Executor whose calls take futures as arguments.

The tests taking the ``executor`` fixture hold no state of this process:
tests/clusters/test_shared_apis.py runs the same functions on the cluster
pools, with an ``executor`` fixture of its own. Their task functions are
module-level here, so the cluster workers import them by name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import operator
import os
import threading
import time
from collections import namedtuple
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import aioflow
from aioflow import DependencyError, Executor

if TYPE_CHECKING:
    from collections.abc import Iterator

# Every behaviour on threads and on worker processes (fork: fast to start; the
# process pools' start methods are covered by the pool tests).
POOLS = [
    pytest.param({"pool_type": "thread", "max_workers": 2}, id="thread"),
    pytest.param({"pool_type": "process", "max_workers": 2, "context": "fork"}, id="process"),
]

Point = namedtuple("Point", "x y")


def inc(x: int) -> int:
    return x + 1


def total(*values: Any, **named: Any) -> Any:
    return sum(values) + sum(named.values())


def fail(message: str = "boom") -> None:
    raise ValueError(message)


def sleep(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def describe(value: Any) -> str:
    return repr(value)


def pid() -> int:
    return os.getpid()


# Generous: only a deadlock reaches it.
GATE_DEADLINE = 60.0


def wait_for_file(path: str, *_: Any) -> bool:
    """Block until ``path`` exists: a gate any worker, in any process, sees open."""
    deadline = time.monotonic() + GATE_DEADLINE
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return True


def touch(path: str, *_: Any) -> str:
    """Create ``path``: the record, in any process, that a call ran."""
    Path(path).touch()
    return path


@pytest.fixture(params=POOLS)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    with Executor(**request.param) as ex:
        yield ex


def test_submit_returns_the_result(executor: Executor) -> None:
    assert executor.submit(operator.add, 2, 3).result(timeout=30) == 5


def test_a_chain_of_futures_runs_in_order(executor: Executor) -> None:
    """Each call gets the previous call's future and sees its result."""
    future: concurrent.futures.Future[int] = executor.submit(inc, 0)
    for _ in range(49):
        future = executor.submit(inc, future)
    assert future.result(timeout=60) == 50


def test_dependencies_wait_in_the_parent_not_in_a_worker() -> None:
    """With one worker, a call whose dependency is still queued does not block that worker."""
    with Executor("thread", max_workers=1) as ex:
        first = ex.submit(sleep, 0.2, 1)
        second = ex.submit(inc, first)  # would deadlock if it waited inside the only worker
        third = ex.submit(total, first, second)
        assert third.result(timeout=30) == 3


def test_futures_inside_containers_are_resolved(executor: Executor) -> None:
    """Lists, tuples (named ones keep their type) and dict values, one level deep."""
    a = executor.submit(inc, 1)
    b = executor.submit(inc, 2)
    assert executor.submit(total, *[a, b], extra=b).result(timeout=30) == 8
    assert executor.submit(describe, [a, 10]).result(timeout=30) == "[2, 10]"
    assert executor.submit(describe, (b,)).result(timeout=30) == "(3,)"
    assert executor.submit(describe, Point(a, b)).result(timeout=30) == "Point(x=2, y=3)"
    assert executor.submit(describe, {"k": a, "n": 1}).result(timeout=30) == "{'k': 2, 'n': 1}"


def test_futures_deeper_down_are_left_alone() -> None:
    """Only one level inside containers is searched: a future deeper down is passed as it is."""
    with Executor("thread", max_workers=1) as ex:
        a = ex.submit(inc, 1)
        a.result(timeout=30)
        assert ex.submit(describe, ([a],)).result(timeout=30).startswith("([<ChainedFuture")


def test_any_concurrent_future_is_a_dependency(executor: Executor) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as other:
        outside = other.submit(sleep, 0.1, 41)
        assert executor.submit(inc, outside).result(timeout=30) == 42


def test_a_failed_dependency_fails_its_dependents(executor: Executor) -> None:
    """DependencyError, whose cause is the dependency's own error, down the whole chain."""
    bad = executor.submit(fail, "broken input")
    child = executor.submit(inc, bad)
    grandchild = executor.submit(inc, child)
    with pytest.raises(DependencyError) as info:
        child.result(timeout=30)
    assert "task inc did not run: a future among its arguments failed (ValueError: broken input)" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(DependencyError) as deeper:
        grandchild.result(timeout=30)
    assert isinstance(deeper.value.__cause__, DependencyError)
    assert isinstance(deeper.value.__cause__.__cause__, ValueError)


def test_task_errors_carry_the_worker_traceback() -> None:
    with Executor("process", max_workers=1, context="fork") as ex, pytest.raises(ValueError, match="boom") as info:
        ex.submit(fail).result(timeout=30)
    assert "in fail" in str(info.value.__cause__)


def test_cancel_a_waiting_call_cancels_its_dependents_and_never_runs_it() -> None:
    ran: list[str] = []

    def record(name: str, *_: Any) -> str:
        ran.append(name)
        return name

    with Executor("thread", max_workers=1) as ex:
        gate = threading.Event()
        blocker = ex.submit(gate.wait, 30)
        waiting = ex.submit(record, "waiting", blocker)
        dependent = ex.submit(record, "dependent", waiting)
        assert waiting.cancel()
        assert waiting.cancelled()
        assert dependent.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            dependent.result(timeout=0)
        gate.set()
        assert blocker.result(timeout=30) is True
    assert ran == []


def test_cancelling_a_waiting_call_cascades_and_it_never_runs(executor: Executor, tmp_path: Path) -> None:
    """The same, on any pool: the gate and the record of what ran are files."""
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    blocker = executor.submit(wait_for_file, str(gate))
    waiting = executor.submit(touch, str(ran / "waiting"), blocker)
    dependent = executor.submit(touch, str(ran / "dependent"), waiting)
    assert waiting.cancel()
    assert waiting.cancelled()
    assert dependent.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        dependent.result(timeout=0)
    ran.mkdir()
    gate.touch()
    assert blocker.result(timeout=60) is True
    executor.shutdown(wait=True)
    assert list(ran.iterdir()) == []


def test_cancel_a_queued_call_and_not_a_running_one() -> None:
    with Executor("thread", max_workers=1) as ex:
        gate = threading.Event()
        running = ex.submit(gate.wait, 30)
        queued = ex.submit(inc, 1)
        while not running.running():
            time.sleep(0.01)
        assert not running.cancel()
        assert queued.cancel()
        gate.set()
        assert running.result(timeout=30) is True
        assert queued.cancelled()


def test_shutdown_waits_for_chains_and_refuses_new_calls() -> None:
    ex = Executor("thread", max_workers=2)
    slow = ex.submit(sleep, 0.2, 1)
    after = ex.submit(inc, slow)
    ex.shutdown(wait=True)
    assert after.done()
    assert after.result() == 2
    assert ex.pool.closed
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(inc, 1)


def test_shutdown_can_cancel_what_has_not_started() -> None:
    ex = Executor("thread", max_workers=1)
    gate = threading.Event()
    running = ex.submit(gate.wait, 30)
    waiting = ex.submit(inc, ex.submit(inc, 1))
    while not running.running():
        time.sleep(0.01)
    threading.Timer(0.2, gate.set).start()
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result() is True
    assert waiting.cancelled()


def test_map_returns_results_in_order(executor: Executor) -> None:
    assert list(executor.map(pow, [2, 3, 4], [3, 2, 1])) == [8, 9, 4]
    assert list(executor.map(inc, range(100), chunksize=7)) == list(range(1, 101))
    assert list(executor.map(inc, [])) == []


def test_map_reads_a_long_generator_lazily(executor: Executor) -> None:
    """Only a bounded window of items is pulled ahead of the results consumed."""
    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield i

    results = executor.map(inc, numbers(), chunksize=10)
    first = [next(results) for _ in range(25)]
    assert first == list(range(1, 26))
    # The pool's workers (2 on local pools) x 4 chunks ahead x 10 items, plus the chunks consumed.
    assert pulled <= (executor.pool.capacity * 4 + 3) * 10
    results.close()  # cancels the calls not yet started


def test_map_raises_the_task_error(executor: Executor) -> None:
    with pytest.raises(ValueError, match="boom"):
        list(executor.map(fail, ["boom"]))
    assert list(executor.map(inc, [1, 2])) == [2, 3]  # the executor carries on


def test_map_raises_the_task_error_and_times_out() -> None:
    with Executor("thread", max_workers=2) as ex:
        with pytest.raises(ValueError, match="boom"):
            list(ex.map(fail, ["boom"]))
        results = ex.map(sleep, [5.0], timeout=0.1)
        with pytest.raises(TimeoutError):
            next(results)


def test_map_refuses_a_bad_chunksize() -> None:
    with Executor("thread") as ex, pytest.raises(aioflow.OptionError, match="chunksize"):
        ex.map(inc, [1], chunksize=0)


async def test_async_use_with_asyncio_futures() -> None:
    """asubmit awaits without blocking the loop; asyncio futures are dependencies too."""
    loop = asyncio.get_running_loop()
    with Executor("thread", max_workers=2) as ex:
        assert await ex.asubmit(inc, 1) == 2
        pending: asyncio.Future[int] = loop.create_future()
        dependent = ex.submit(inc, pending)
        loop.call_later(0.05, pending.set_result, 9)
        assert await asyncio.wrap_future(dependent) == 10


async def test_cancelling_the_awaiting_task_cancels_the_call() -> None:
    with Executor("thread", max_workers=1) as ex:
        gate = threading.Event()
        try:
            blocker = ex.submit(gate.wait, 30)
            task = asyncio.create_task(ex.asubmit(inc, blocker))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)  # asyncio passes the cancellation on in a callback
            # The waiting call was cancelled (so forgotten): only the blocker is left.
            assert ex._unfinished == {blocker}
        finally:
            gate.set()
        assert blocker.result(timeout=30) is True


async def test_cancelling_a_queued_asubmit_keeps_it_from_running() -> None:
    """A call awaited with asubmit (no future among its arguments) that has not started does not run once cancelled."""
    ran: list[int] = []
    with Executor("thread", max_workers=1) as ex:
        gate = threading.Event()
        try:
            blocker = asyncio.ensure_future(ex.asubmit(gate.wait, 30))
            queued = asyncio.ensure_future(ex.asubmit(ran.append, 1))
            await asyncio.sleep(0.05)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert len(ex._unfinished) == 1  # the cancelled call was forgotten
        finally:
            gate.set()
        assert await blocker is True
    assert ran == []


async def test_asubmit_errors_are_the_call_s_and_the_pool_s() -> None:
    """asubmit raises the task's exception, and a pool failure translated as submit's is."""
    with Executor("thread", max_workers=1) as ex:
        with pytest.raises(ZeroDivisionError):
            await ex.asubmit(operator.truediv, 1, 0)
        assert await ex.asubmit(operator.add, 1, 2) == 3
    with pytest.raises(RuntimeError, match="after shutdown"):
        await ex.asubmit(inc, 1)
    with Executor("process", max_workers=1, context="fork") as ex, pytest.raises(aioflow.TransferError) as info:
        await ex.asubmit(describe, threading.Lock())
    assert "lock" in str(info.value)


async def test_shutdown_cancel_futures_cancels_queued_asubmits() -> None:
    with Executor("thread", max_workers=1) as ex:
        gate = threading.Event()
        blocker = asyncio.ensure_future(ex.asubmit(gate.wait, 30))
        queued = asyncio.ensure_future(ex.asubmit(inc, 1))
        await asyncio.sleep(0.05)
        ex.shutdown(wait=False, cancel_futures=True)
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await blocker is True


def test_a_lost_worker_fails_only_its_call() -> None:
    with Executor("process", max_workers=2, context="fork") as ex:
        lives = ex.submit(sleep, 0.5, "done")
        dies = ex.submit(os._exit, 9)
        with pytest.raises(aioflow.WorkerLostError, match=r"task _exit lost its worker process \(pid \d+, exit code 9"):
            dies.result(timeout=30)
        assert lives.result(timeout=30) == "done"
        assert ex.submit(inc, 1).result(timeout=30) == 2


def test_an_unpicklable_argument_is_a_transfer_error() -> None:
    with Executor("process", max_workers=1, context="fork") as ex, pytest.raises(aioflow.TransferError) as info:
        ex.submit(describe, threading.Lock()).result(timeout=30)
    assert "lock" in str(info.value)


def test_warm_workers_are_reused_across_calls() -> None:
    with Executor("process", max_workers=2, context="fork") as ex:
        pids = {ex.submit(pid).result(timeout=30) for _ in range(20)}
        assert len(pids) == 1  # one call at a time stays on one warm worker


def test_shared_pool_stays_open() -> None:
    with aioflow.open_pool("thread", max_workers=2) as pool:
        with Executor(pool=pool) as ex:
            assert ex.submit(inc, 1).result(timeout=30) == 2
        assert not pool.closed
        graph = {"nodes": [{"id": "a", "task_type": "method", "task_identifier": "tasks.inc"}]}
        assert aioflow.execute_graph(graph, pool=pool) == {"return_value": 1}
