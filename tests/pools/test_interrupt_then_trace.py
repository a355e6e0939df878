"""An interrupted thread-pool task leaves the interpreter fit for profilers, tracers and debuggers.

The thread pool stops a running task by raising `aioflow.TaskInterrupted` in
its thread. Clearing such an exception with ``PyThreadState_SetAsyncExc(id,
NULL)`` leaves CPython 3.11's interpreter-wide "asynchronous exception
pending" flag set; every frame entered under cProfile or ``sys.settrace``
then loops forever (the thread spins at 100 % CPU). So, after an execution
whose timeout interrupted a task, each script below runs a profiled or
traced call in a new thread and in the main thread, and must end. Each runs
in a subprocess of its own: the failure is a hang that nothing inside the
process could end.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent

# Only a hang reaches it: the script takes about INTERRUPT_GRACE at most.
DEADLINE = 120

_RUN_AND_INTERRUPT = """
import sys, threading
sys.path.insert(0, {tests!r})
import aioflow

SLOW = {{
    "graph": {{"id": "interrupted"}},
    "nodes": [{{"id": "slow", "task_type": "method", "task_identifier": "tasks.sleep_python",
                "default_inputs": [{{"name": "seconds", "value": 3600}}]}}],
    "links": [],
}}
try:
    aioflow.execute_graph(SLOW, pool_type="thread", max_workers=1, timeout=0.5)
except aioflow.ExecutionTimeoutError as exc:
    assert exc.running == ("slow",), exc.running
else:
    raise AssertionError("the execution did not time out")

def work():
    return sum(range(100))

def in_new_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]

def profiled():
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return work()
    finally:
        profiler.disable()
"""

_PROFILE = """
assert in_new_thread(profiled) == 4950
assert profiled() == 4950
print("ended")
"""

_TRACE = """
calls = []

def tracer(frame, event, arg):
    calls.append(frame.f_code.co_name)
    return None

def traced():
    sys.settrace(tracer)
    try:
        return work()
    finally:
        sys.settrace(None)

assert in_new_thread(traced) == 4950
assert traced() == 4950
assert "work" in calls, calls
print("ended")
"""

# And the pool itself, run again, under a profiler: the next task's thread is profiled.
_POOL_AGAIN = """
with aioflow.Executor("thread", max_workers=1) as executor:
    assert executor.submit(profiled).result(timeout=60) == 4950
print("ended")
"""


@pytest.mark.parametrize("after", [_PROFILE, _TRACE, _POOL_AGAIN], ids=["cprofile", "settrace", "pool-task-profiled"])
def test_profilers_and_tracers_run_after_an_interrupted_task(after: str) -> None:
    script = textwrap.dedent(_RUN_AND_INTERRUPT.format(tests=str(TESTS))) + textwrap.dedent(after)
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"a profiled or traced call never returned after an interrupted task ({DEADLINE} s)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ended"
