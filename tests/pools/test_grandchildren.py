"""No process a task starts outlives its worker, daemons included, on every process pool.

A daemon forks twice: ``sh -c "sleep 600 &"`` starts the ``sleep`` and exits,
so the ``sleep`` is re-parented away from the worker that ran the task. Each
test waits until the task has started one (and checks that it runs), then
ends the execution a different way (a timeout, a cancellation, a failed
sibling node, success and the pool's close, a worker retired when idle) and
checks that the daemon is gone shortly after.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import anyio
import lifetime_tasks
import psutil
import pytest
from graphs import method_node

import aioflow
import aioflow.parallel as par

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Generous: only a daemon that survives (or a hang) reaches it.
DEADLINE = 30.0

# Every process pool, and every start method of each pool that has its own
# worker bootstrap (process and billiard) or its own exit hook (multiprocessing).
POOLS = [
    pytest.param("process", "fork", id="process-fork"),
    pytest.param("process", "spawn", id="process-spawn"),
    pytest.param("process", "forkserver", id="process-forkserver"),
    pytest.param("ndprocess", "spawn", id="ndprocess-spawn"),
    pytest.param("multiprocessing", "fork", id="multiprocessing-fork"),
    pytest.param("ndmultiprocessing", "forkserver", id="ndmultiprocessing-forkserver"),
    pytest.param("billiard", "fork", id="billiard-fork"),
    pytest.param("billiard", "spawn", id="billiard-spawn"),
]
# One start method per pool type: the ways of stopping tasks differ by pool, not by start method.
ONE_PER_POOL = [POOLS[2], POOLS[3], POOLS[4], POOLS[5], POOLS[7]]


pytestmark = pytest.mark.usefixtures("billiard_singletons")


@pytest.fixture
def daemons() -> Iterator[list[psutil.Process]]:
    """The daemons a test saw; whatever the outcome, none outlives it."""
    seen: list[psutil.Process] = []
    yield seen
    for daemon in seen:
        try:
            daemon.kill()  # psutil checks that the pid still names the same process
        except psutil.NoSuchProcess:
            pass


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def assert_gone(daemon: psutil.Process) -> None:
    """Wait until ``daemon`` has ended (a zombie has); fail at the deadline."""
    end = time.monotonic() + DEADLINE
    while _running(daemon):
        assert time.monotonic() < end, f"the daemon {daemon.pid} outlived the execution"
        time.sleep(0.02)


async def daemon_of(marker: Path, execution: asyncio.Task[Any], daemons: list[psutil.Process]) -> psutil.Process:
    """Wait until the task has written ``marker``; return its daemon, checked to be running."""
    end = time.monotonic() + DEADLINE
    path = anyio.Path(marker)
    while not await path.exists():
        assert not execution.done(), f"the execution ended before the task started its daemon: {execution!r}"
        assert time.monotonic() < end, "the task did not start"
        await asyncio.sleep(0.01)
    _, pid = map(int, (await path.read_text()).split())
    daemon = psutil.Process(pid)
    daemons.append(daemon)
    assert daemon.name() == "sleep"
    assert _running(daemon)
    return daemon


def daemon_node(node_id: str, markers: Path, **inputs: Any) -> dict[str, Any]:
    """A node whose task starts a daemon and marks it in ``markers/<node_id>``, then sleeps."""
    return method_node(node_id, "lifetime_tasks.daemon_then_sleep", marker_dir=str(markers), name=node_id, **inputs)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


# --------------------------------------------------------------------------- stopped executions


@pytest.mark.parametrize(("pool_type", "context"), ONE_PER_POOL)
def test_timeout_kills_the_daemon(pool_type: str, context: str, markers: Path, daemons: list[psutil.Process]) -> None:
    """A timeout kills the daemon a running task started."""
    graph = {"graph": {"id": "timeout"}, "nodes": [daemon_node("d", markers)]}

    async def scenario(pool: aioflow.pools.Pool) -> psutil.Process:
        # The worker is warm: the task starts its daemon long before the timeout.
        await aioflow.execute_graph_async({"nodes": [method_node("warm", "tasks.pid")]}, pool=pool)
        execution = asyncio.ensure_future(aioflow.execute_graph_async(graph, pool=pool, timeout=3))
        daemon = await daemon_of(markers / "d", execution, daemons)
        with pytest.raises(aioflow.ExecutionTimeoutError):
            await execution
        return daemon

    with aioflow.open_pool(pool_type, max_workers=1, context=context) as pool:
        assert_gone(asyncio.run(scenario(pool)))


@pytest.mark.parametrize(("pool_type", "context"), [POOLS[1], POOLS[4]])
def test_cancellation_kills_the_daemon(
    pool_type: str, context: str, markers: Path, daemons: list[psutil.Process]
) -> None:
    """Cancelling the execution kills the daemon a running task started."""
    graph = {"graph": {"id": "cancelled"}, "nodes": [daemon_node("d", markers)]}

    async def scenario() -> psutil.Process:
        execution = asyncio.ensure_future(aioflow.execute_graph_async(graph, pool_type=pool_type, context=context))
        daemon = await daemon_of(markers / "d", execution, daemons)
        execution.cancel()
        with pytest.raises(asyncio.CancelledError):
            await execution
        return daemon

    assert_gone(asyncio.run(scenario()))


@pytest.mark.parametrize(("pool_type", "context"), [POOLS[0], POOLS[7]])
def test_failed_sibling_kills_the_daemon(
    pool_type: str, context: str, markers: Path, daemons: list[psutil.Process]
) -> None:
    """A node that fails stops its running sibling, whose daemon is killed with it."""
    # It fails once the test has seen the daemon running (not once the daemon
    # exists: the failure could then kill it before the test looks).
    failing = method_node("bad", "lifetime_tasks.fail_when", path=str(markers / "seen"))
    graph = {"graph": {"id": "sibling"}, "nodes": [daemon_node("d", markers), failing]}

    async def scenario() -> psutil.Process:
        execution = asyncio.ensure_future(
            aioflow.execute_graph_async(graph, pool_type=pool_type, context=context, max_workers=2)
        )
        daemon = await daemon_of(markers / "d", execution, daemons)
        (markers / "seen").touch()
        with pytest.raises(aioflow.NodeError) as info:
            await execution
        assert info.value.node_id == "bad"
        return daemon

    assert_gone(asyncio.run(scenario()))


# --------------------------------------------------------------------------- workers that exit cleanly


@pytest.mark.parametrize(("pool_type", "context"), POOLS)
def test_success_and_close_kill_the_daemon(
    pool_type: str, context: str, markers: Path, daemons: list[psutil.Process]
) -> None:
    """A task that returns leaving a daemon: the daemon ends when the execution's pool closes."""
    go = markers.parent / "go"
    task = method_node("d", "lifetime_tasks.daemon_then_return", marker_dir=str(markers), name="d", go=str(go))
    graph = {"graph": {"id": "success"}, "nodes": [task]}

    async def scenario() -> psutil.Process:
        execution = asyncio.ensure_future(aioflow.execute_graph_async(graph, pool_type=pool_type, context=context))
        daemon = await daemon_of(markers / "d", execution, daemons)
        go.touch()
        assert dict(await execution) == {"return_value": "d"}
        return daemon

    assert_gone(asyncio.run(scenario()))


@pytest.mark.parametrize("pool_type", ["process", "ndprocess", "billiard"])
def test_retired_worker_kills_the_daemon(pool_type: str, markers: Path, daemons: list[psutil.Process]) -> None:
    """A worker retired when idle takes the daemon its task left along, while the pool stays open."""
    go = markers.parent / "go"
    task = method_node("d", "lifetime_tasks.daemon_then_return", marker_dir=str(markers), name="d", go=str(go))
    graph = {"graph": {"id": "retired"}, "nodes": [task]}

    async def scenario(pool: aioflow.pools.Pool) -> psutil.Process:
        execution = asyncio.ensure_future(aioflow.execute_graph_async(graph, pool=pool))
        daemon = await daemon_of(markers / "d", execution, daemons)
        go.touch()
        await execution
        return daemon

    with aioflow.open_pool(pool_type, max_workers=1, context="forkserver", idle_timeout=0.2) as pool:
        assert_gone(asyncio.run(scenario(pool)))
        assert not pool.closed


def test_parallel_map_workers_take_their_daemons_along(daemons: list[psutil.Process]) -> None:
    """aioflow.parallel's warm workers, once shut down, leave no daemon of their tasks behind."""
    par.set_parallel_backend(par.MultiprocessBackend(context="fork"))
    try:
        pids = par.map(lifetime_tasks.start_daemon, [lifetime_tasks.DAEMON_SECONDS] * 2, max_workers=2, chunksize=1)
        daemons.extend(psutil.Process(pid) for pid in pids)
        assert all(_running(daemon) for daemon in daemons)
        par.shutdown()
        for daemon in daemons:
            assert_gone(daemon)
    finally:
        par.set_parallel_backend(None)
        par.shutdown()
