"""A billiard worker that dies fails only its own node, at once, on every start method.

Wherever the worker dies (its task ends it, it is killed from outside in the
middle of a task, other calls wait behind it, it dies as it starts), the
node it was running fails with `aioflow.WorkerLostError` naming the node,
the pid and the exit code or signal that ended that worker, and
every other node's result is there. Each execution has a ``timeout``: a hang
fails the test instead of stalling the suite. Workers killed while idle, and
deaths by signal or exit code 3, run on every process pool and start method in
tests/test_pool_behaviour.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from graphs import method_node

import aioflow

HERE = Path(__file__).resolve().parent
CONTEXTS = ["fork", "spawn", "forkserver"]

# Generous: only a hang reaches it.
DEADLINE = 60.0

#: How a task ends its worker: ``os._exit(0)`` (a SIGKILL, a SIGTERM and exit code 3 run on
#: every process pool and start method in tests/test_pool_behaviour.py).
SELF_DEATHS = [
    pytest.param(f"{HERE / 'nd_tasks.py'}::exit_worker", {"code": 0}, 0, None, id="exit0"),
]


def task(name: str) -> str:
    """The identifier of a task function of nd_tasks.py."""
    return f"{HERE / 'nd_tasks.py'}::{name}"


def healthy_nodes(count: int) -> list[dict[str, Any]]:
    return [method_node(f"ok{i}", "remote_error_tasks.value", x=i) for i in range(count)]


def assert_healthy(results: aioflow.Results, count: int) -> None:
    """Every healthy node ran, once, and has its result."""
    for i in range(count):
        assert results[f"ok{i}"] == {"return_value": i}, f"ok{i}: {results.errors.get(f'ok{i}')!r}"
        assert results.executions[f"ok{i}"] == 1


def assert_lost(results: aioflow.Results, node_id: str, pid: int, exitcode: int, signal_name: str | None) -> None:
    """``node_id`` failed with WorkerLostError naming it, ``pid``, and how that worker ended."""
    error = results.errors[node_id]
    assert isinstance(error, aioflow.WorkerLostError), repr(error)
    assert (error.node_id, error.pid, error.exitcode, error.signal) == (node_id, pid, exitcode, signal_name)
    assert f"pid {pid}" in str(error)
    assert (signal_name or f"exit code {exitcode}") in str(error)


def execute(graph: dict[str, Any], **options: Any) -> aioflow.Results:
    """Run ``graph`` on a billiard pool (``pool=``, or a new one) within `DEADLINE`, keeping every result and error."""
    if "pool" not in options:
        options["pool_type"] = "billiard"
    return aioflow.execute_graph(
        graph,
        raise_on_error=False,
        outputs=[{"all": True}],
        merge_outputs=False,
        timeout=DEADLINE,
        **options,
    )


def read_pid(pid_file: Path) -> int:
    """The pid a task wrote to ``pid_file``, once it is there."""
    deadline = time.monotonic() + DEADLINE
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the task never recorded its worker's pid"
        time.sleep(0.01)
    return int(pid_file.read_text())


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize(("identifier", "how", "exitcode", "signal_name"), SELF_DEATHS)
def test_a_task_that_ends_its_worker_fails_its_node_only(
    tmp_path: Path, context: str, identifier: str, how: dict[str, Any], exitcode: int, signal_name: str | None
) -> None:
    """os._exit(0): that node fails, naming its worker and how it ended."""
    pid_file = tmp_path / "pid"
    graph = {"nodes": [method_node("victim", identifier, pid_file=str(pid_file), **how), *healthy_nodes(6)]}
    results = execute(graph, max_workers=2, context=context)
    assert_lost(results, "victim", read_pid(pid_file), exitcode, signal_name)
    assert_healthy(results, 6)


def _kill_when_recorded(pid_file: Path, killed: list[int]) -> None:
    pid = read_pid(pid_file)
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_worker_killed_in_the_middle_of_a_task_fails_its_node_only(tmp_path: Path, context: str) -> None:
    """SIGKILL from outside while the task runs: its node fails with the worker's pid and SIGKILL."""
    pid_file = tmp_path / "pid"
    graph = {"nodes": [method_node("victim", task("wait_to_be_killed"), pid_file=str(pid_file)), *healthy_nodes(6)]}
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when_recorded, args=(pid_file, killed))
    killer.start()
    try:
        results = execute(graph, max_workers=2, context=context)
    finally:
        killer.join(DEADLINE)
    assert killed, "the worker was never killed"
    assert_lost(results, "victim", killed[0], -9, "SIGKILL")
    assert_healthy(results, 6)


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_death_with_calls_queued_behind_it_fails_its_node_only(tmp_path: Path, context: str) -> None:
    """One worker, a task that kills it, calls waiting for that worker: they run on its replacement."""
    pid_file = tmp_path / "pid"
    victim = method_node("victim", "remote_error_tasks.die", pid_file=str(pid_file), how="SIGKILL")
    queued = [method_node(f"q{i}", "tasks.pid") for i in range(6)]
    results = execute({"nodes": [victim, *queued]}, max_workers=1, context=context)
    pid = read_pid(pid_file)
    assert_lost(results, "victim", pid, -9, "SIGKILL")
    ran_on = {results[f"q{i}"]["return_value"] for i in range(6)}
    assert pid not in ran_on, "the calls should have been waiting behind the death"
    assert len(ran_on) == 1, "one worker at a time"


@pytest.mark.parametrize("context", CONTEXTS)
def test_workers_that_die_as_they_start_break_the_pool(context: str) -> None:
    """An initializer that ends every worker with exit code 0: the nodes fail, saying so, instead of waiting for ever.

    billiard restarts a worker that exits with 0 without counting it as a
    failed start (it counts the others: see test_ndprocess_billiard.py).
    """
    graph = {"nodes": healthy_nodes(2)}
    options = {"initializer": os._exit, "initargs": (0,)}
    results = execute(graph, max_workers=1, context=context, pool_options=options)
    assert set(results.errors) == {"ok0", "ok1"}
    for error in results.errors.values():
        assert isinstance(error, aioflow.WorkerLostError), repr(error)
        assert "the billiard pool is broken" in str(error)
        assert "keep dying before they take any job" in str(error)
        assert "exit code 0" in str(error)
        assert "initializer" in str(error)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize(("raiser", "type_name"), [("return_unloadable", "Unloadable"), ("raise_halt", "Halt")])
def test_an_outcome_the_caller_cannot_load_fails_its_node_only(context: str, raiser: str, type_name: str) -> None:
    """A result, or a BaseException, whose class the caller cannot import: a TransferError, not a lost worker."""
    graph = {"nodes": [method_node("bad", task(raiser)), *healthy_nodes(4)]}
    results = execute(graph, max_workers=1, context=context)
    error = results.errors["bad"]
    assert isinstance(error, aioflow.TransferError), repr(error)
    assert type_name in str(error)
    assert_healthy(results, 4)
