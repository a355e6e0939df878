"""A worker that dies fails its own node with WorkerLostError: node, pid, and what ended it, as fields."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import psutil
import pytest
from graphs import method_node

import aioflow

if TYPE_CHECKING:
    from pathlib import Path

POOLS = [
    pytest.param("process", "fork", id="process-fork"),
    pytest.param("process", "spawn", id="process-spawn"),
    pytest.param("ndprocess", "forkserver", id="ndprocess-forkserver"),
    *(
        pytest.param(pool_type, context, id=f"{pool_type}-{context}")
        for pool_type in ("multiprocessing", "ndmultiprocessing", "billiard")
        for context in ("fork", "spawn", "forkserver")
    ),
]

HOW = [("SIGKILL", -9, "SIGKILL"), ("SIGTERM", -15, "SIGTERM"), ("exit3", 3, None)]


@pytest.mark.parametrize(("pool_type", "context"), POOLS)
@pytest.mark.parametrize(("how", "exitcode", "signal"), HOW)
def test_lost_worker_is_named_by_node_pid_and_exit(
    tmp_path: Path, pool_type: str, context: str, how: str, exitcode: int, signal: str | None
) -> None:
    pid_file = tmp_path / "pid"
    graph = {
        "graph": {"id": "deaths"},
        "nodes": [
            method_node("victim", "remote_error_tasks.die", pid_file=str(pid_file), how=how),
            method_node("healthy", "remote_error_tasks.value", x=4),
        ],
    }
    results = aioflow.execute_graph(
        graph,
        pool_type=pool_type,
        context=context,
        max_workers=2,
        raise_on_error=False,
        outputs=[{"all": True}],
        merge_outputs=False,
        timeout=60,
    )
    assert results["healthy"]["return_value"] == 4
    error = results.errors["victim"]
    assert isinstance(error, aioflow.WorkerLostError), repr(error)
    pid = int(pid_file.read_text())
    assert (error.node_id, error.pid, error.exitcode, error.signal) == ("victim", pid, exitcode, signal)
    assert f"pid {pid}" in str(error)
    assert (signal or f"exit code {exitcode}") in str(error)


def _new_idle_workers(before: set[int]) -> list[psutil.Process]:
    """The processes below this one started since ``before``, but the fork server and the trackers."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.pid in before or proc.children() or "_tracker" in " ".join(proc.cmdline()):
                continue
        except psutil.Error:
            continue
        found.append(proc)
    return found


@pytest.mark.parametrize(("pool_type", "context"), POOLS)
def test_workers_killed_while_idle_do_not_fail_the_next_execution(pool_type: str, context: str) -> None:
    """Every worker of an open pool SIGKILLed between two executions: the second one still runs in full."""
    graph = {"nodes": [method_node(f"n{i}", "remote_error_tasks.value", x=i) for i in range(6)]}
    expected = {f"n{i}": {"return_value": i} for i in range(6)}
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with aioflow.open_pool(pool_type, context=context, max_workers=2) as pool:
        assert aioflow.execute_graph(graph, pool=pool, merge_outputs=False, timeout=60) == expected
        victims = _new_idle_workers(before)
        assert victims
        for victim in victims:
            victim.kill()
        # Until they are reaped, and gone from the pool's list of workers that
        # take calls where it has one (the process pools): those hand a call to
        # an idle worker whose death they have not read yet, and fail it.
        # Generous: only a hang reaches it.
        listed = getattr(pool.executor, "worker_pids", list)
        deadline = time.monotonic() + 30
        while any(psutil.pid_exists(v.pid) or v.pid in listed() for v in victims):
            assert time.monotonic() < deadline, "the killed workers were never reaped"
            time.sleep(0.01)
        assert aioflow.execute_graph(graph, pool=pool, merge_outputs=False, timeout=60) == expected


def test_a_stop_signal_to_an_idle_worker_is_not_a_warning() -> None:
    """``kill`` of the whole process group ends idle workers too: that is a stop, not a loss."""
    import logging
    import signal as signals

    from aioflow.pools._outcomes import idle_exit_level

    for stop in (signals.SIGTERM, signals.SIGINT, signals.SIGHUP):
        assert idle_exit_level(-stop) == logging.INFO
    for lost in (-signals.SIGKILL, -signals.SIGSEGV, 1, None):
        assert idle_exit_level(lost) == logging.WARNING
