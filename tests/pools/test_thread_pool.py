"""The thread pool: interruption that never disturbs the normal path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
