"""The process pool: workers never outlive their parent (one worker for every node: tests/test_pool_behaviour.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

TESTS = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys, aioflow
graph = {"nodes": [
    {"id": "a", "task_type": "method", "task_identifier": "tasks.sleep", "default_inputs": [{"name": "seconds", "value": 3600}]},
    {"id": "b", "task_type": "method", "task_identifier": "tasks.sleep", "default_inputs": [{"name": "seconds", "value": 3600}]},
]}
if __name__ == "__main__":
    aioflow.execute_graph(graph, pool_type="process", max_workers=2, context=sys.argv[1])
"""

# Generous: only a failure to stop reaches it.
DEADLINE = 30.0


def _wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("context", ["spawn", "fork", "forkserver"])
def test_workers_exit_when_their_parent_is_killed(context: str, tmp_path: Path) -> None:
    """A SIGKILLed parent leaves no worker running its task."""
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    parent = subprocess.Popen([sys.executable, str(script), context], env=env, start_new_session=True)
    try:
        me = psutil.Process(parent.pid)

        def workers() -> list[psutil.Process]:
            """The pool's workers: not the resource tracker, not the fork server itself."""
            found = []
            for p in me.children(recursive=True):
                try:
                    cmd = " ".join(p.cmdline())
                    is_server = p.ppid() == me.pid and "forkserver" in cmd
                except psutil.Error:
                    continue
                if "resource_tracker" not in cmd and not is_server:
                    found.append(p)
            return found

        _wait_for(lambda: len(workers()) >= 2, "two workers")
        busy = workers()
        # Let both tasks start, then kill the parent without warning.
        time.sleep(0.5)
        parent.kill()
        parent.wait()
        _wait_for(lambda: not any(_alive(p) for p in busy), "workers to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
