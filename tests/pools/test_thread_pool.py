"""The thread pool: interruption that never disturbs the normal path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import aioflow

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


def test_no_task_is_stranded_while_threads_retire() -> None:
    """Submissions racing with retirements (a 1 ms idle timeout) all run: none waits for a thread that left."""
    with aioflow.open_pool("thread", max_workers=2, idle_timeout=0.001) as pool:
        for round_ in range(300):
            futures = [pool.executor.submit(abs, -n) for n in range(round_ % 3 + 1)]
            assert [f.result(timeout=30) for f in futures] == list(range(round_ % 3 + 1))
            time.sleep(0.001 * (round_ % 4))
