"""The ndprocess and billiard pools, on real processes: results, nested processes, stopping, lost workers."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from graphs import method_node

import aioflow
from aioflow.pools._billiard import BilliardExecutor
from aioflow.pools._mp_start import non_daemonic_context

HERE = Path(__file__).resolve().parent
CONTEXTS = multiprocessing.get_all_start_methods()

# Generous: only a failure to stop (or a hang) reaches it.
DEADLINE = 30.0


def task(name: str) -> str:
    """The identifier of a task function of nd_tasks.py."""
    return f"{HERE / 'nd_tasks.py'}::{name}"


node = method_node


pytestmark = pytest.mark.usefixtures("billiard_singletons")


# --------------------------------------------------------------------------- ndprocess


@pytest.mark.parametrize("method", CONTEXTS)
def test_ndprocess_context_processes_are_never_daemonic(method: str) -> None:
    """Processes of the ndprocess context stay non-daemonic even when asked to be daemonic."""
    context: Any = non_daemonic_context(method)
    proc = context.Process(target=abs, args=(1,), daemon=True)
    assert proc.daemon is False
    proc.daemon = True
    assert proc.daemon is False


# --------------------------------------------------------------------------- billiard


@pytest.mark.parametrize("scaling_workers", [True, False])
def test_billiard_runs_max_workers_at_once(scaling_workers: bool, tmp_path: Path) -> None:
    """The billiard pool runs max_workers tasks at once, growing to it when workers scale."""
    graph = {"nodes": [node(n, task("rendezvous"), directory=str(tmp_path)) for n in ("a", "b")]}
    results = aioflow.execute_graph(
        graph,
        pool_type="billiard",
        max_workers=2,
        scaling_workers=scaling_workers,
        context="fork",
        merge_outputs=False,
    )
    assert results["a"]["return_value"] != results["b"]["return_value"]


def test_billiard_failing_initializer_breaks_the_pool() -> None:
    """Workers that die before taking any task fail the pending nodes instead of restarting forever."""
    graph = {"nodes": [node("a", "tasks.pid")]}
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(
            graph,
            pool_type="billiard",
            max_workers=1,
            context="fork",
            pool_options={"initializer": os._exit, "initargs": (1,)},
        )
    assert isinstance(info.value.error, aioflow.WorkerLostError)
    assert "keep dying before they take any job (the last: pid" in str(info.value.error)
    assert "exit code 1" in str(info.value.error)


def test_a_worker_dead_before_the_pool_is_built_does_not_break_its_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    """billiard starts the supervisor before the result handler it reports worker exits to: it waits for it.

    The handler is made late here, so that the first worker (its initializer
    exits) is dead before it exists; the supervisor used to fail on it, and
    the pool broke with an AttributeError instead of saying why its workers die.
    """
    from aioflow.pools._billiard_internals import PipedPool

    create = PipedPool.create_result_handler

    def late(self: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return create(self, **kwargs)

    monkeypatch.setattr(PipedPool, "create_result_handler", late)
    test_billiard_failing_initializer_breaks_the_pool()


def test_billiard_missing_is_a_missing_extra_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without billiard installed, opening the pool names the extra to install."""
    monkeypatch.setitem(sys.modules, "billiard", None)
    with pytest.raises(aioflow.MissingExtraError, match=r"aioflow\[billiard\]"):
        aioflow.open_pool("billiard")


def test_billiard_unpicklable_argument_fails_its_future() -> None:
    """A call whose arguments cannot be pickled fails with the pickling error instead of hanging."""
    executor = BilliardExecutor(1, context="fork")
    try:
        lost = executor.submit(abs, threading.Lock())
        assert isinstance(lost.exception(timeout=DEADLINE), TypeError)
        assert executor.submit(abs, -2).result(timeout=DEADLINE) == 2
    finally:
        executor.shutdown()


@pytest.mark.parametrize("context", CONTEXTS)
def test_billiard_calls_and_results_larger_than_a_pipe_travel_whole(context: str) -> None:
    """Calls and results of 2 MiB (a pipe holds 64 KiB) cross each worker's own pipes whole, several at once."""
    executor = BilliardExecutor(2, context=context)
    try:
        payloads = [bytes([i]) * (2 << 20) for i in range(4)]
        futures = [executor.submit(bytes, payload) for payload in payloads]
        assert [future.result(timeout=DEADLINE) for future in futures] == payloads
    finally:
        executor.shutdown()


# --------------------------------------------------------------------------- billiard: idle workers retire


@pytest.mark.timeout(120, method="thread")
def test_billiard_jobs_submitted_while_workers_retire_all_run(tmp_path: Path) -> None:
    """Jobs submitted at every moment of a retirement (before, during, after a worker's exit) all run once."""
    executor = BilliardExecutor(2, context="fork", idle_timeout=0.05)
    pids = set()
    try:
        for i in range(30):
            # Gaps from 0 to 0.29 s: around the idle timeout, the supervisor's
            # round and the retiring worker's exit.
            time.sleep((i * 0.07) % 0.3)
            futures = [executor.submit(os.getpid) for _ in range(1 + i % 2)]
            pids |= {future.result(timeout=DEADLINE) for future in futures}
    finally:
        executor.shutdown()
    assert len(pids) > 2, "workers retired and new ones started"
