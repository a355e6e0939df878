"""The thread pool: interruption that never disturbs the normal path."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import aioflow

if TYPE_CHECKING:
    from collections.abc import Callable

TESTS = Path(__file__).resolve().parent.parent

PROFILED = """
import sys, aioflow
sys.setprofile(lambda *args: None)
graph = {"nodes": [{"id": i, "task_type": "method", "task_identifier": "tasks.inc"} for i in range(5)]}
print(len(aioflow.execute_graph(graph, pool_type="thread", merge_outputs=False)))
"""


def test_runs_under_a_profiler() -> None:
    """A profile function (cProfile, coverage, a debugger) does not stall thread-pool tasks."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    done = subprocess.run(
        [sys.executable, "-c", PROFILED], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"


def _pool_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30.0
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_idle_threads_retire_and_new_ones_start_on_demand() -> None:
    """After a burst, threads idle for idle_timeout exit; the next task starts a fresh one."""
    prefix = "retiring-pool"
    with aioflow.open_pool(
        "thread", max_workers=3, idle_timeout=0.2, pool_options={"thread_name_prefix": prefix}
    ) as pool:
        barrier = threading.Barrier(3, timeout=30)
        futures = [pool.executor.submit(barrier.wait) for _ in range(3)]
        assert sorted(f.result(timeout=30) for f in futures) == [0, 1, 2]
        assert len(_pool_threads(prefix)) == 3
        _wait_for(lambda: not _pool_threads(prefix), "idle threads to retire")
        assert pool.executor.submit(threading.current_thread).result(timeout=30).name.startswith(prefix)


@pytest.mark.parametrize(
    "options", [{"idle_timeout": None}, {"scaling_workers": False, "idle_timeout": 0.1}], ids=["never", "fixed"]
)
def test_threads_stay_without_idle_timeout_or_scaling(options: dict[str, Any]) -> None:
    prefix = "staying-pool"
    with aioflow.open_pool("thread", max_workers=2, pool_options={"thread_name_prefix": prefix}, **options) as pool:
        barrier = threading.Barrier(2, timeout=30)
        for future in [pool.executor.submit(barrier.wait) for _ in range(2)]:
            future.result(timeout=30)
        time.sleep(0.5)  # five times the idle timeout of the "fixed" case
        assert len(_pool_threads(prefix)) == 2


def test_no_task_is_stranded_while_threads_retire() -> None:
    """Submissions racing with retirements (a 1 ms idle timeout) all run: none waits for a thread that left."""
    with aioflow.open_pool("thread", max_workers=2, idle_timeout=0.001) as pool:
        for round_ in range(300):
            futures = [pool.executor.submit(abs, -n) for n in range(round_ % 3 + 1)]
            assert [f.result(timeout=30) for f in futures] == list(range(round_ % 3 + 1))
            time.sleep(0.001 * (round_ % 4))
