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
from aioflow.pools import _thread
from aioflow.pools._thread import THREAD_CAP

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


def test_no_task_is_stranded_while_threads_retire() -> None:
    """Submissions racing with retirements (a 1 ms idle timeout) all run: none waits for a thread that left."""
    with aioflow.open_pool("thread", max_workers=2, idle_timeout=0.001) as pool:
        for round_ in range(300):
            futures = [pool.executor.submit(abs, -n) for n in range(round_ % 3 + 1)]
            assert [f.result(timeout=30) for f in futures] == list(range(round_ % 3 + 1))
            time.sleep(0.001 * (round_ % 4))


# ------------------------------------------------------- growth while threads wait

BASE = min(32, (os.cpu_count() or 1) + 4)


def _threads_used(pool: aioflow.Pool, calls: int, fn: Callable[[], int]) -> set[int]:
    futures = [pool.executor.submit(fn) for _ in range(calls)]
    return {f.result(timeout=60) for f in futures}


def _sleep_then_ident() -> int:
    time.sleep(0.3)
    return threading.get_ident()


def test_a_default_scaling_pool_grows_while_its_threads_wait() -> None:
    """Calls that sleep (wait, not compute) get more threads than the stdlib's default, up to the cap."""
    calls = BASE + 20
    with aioflow.open_pool("thread") as pool:
        used = _threads_used(pool, calls, _sleep_then_ident)
    assert BASE < len(used) <= min(calls, THREAD_CAP)


@pytest.mark.parametrize(
    "options", [{"max_workers": 2}, {"scaling_workers": False}, {"max_workers": BASE, "scaling_workers": True}]
)
def test_a_pool_given_a_size_or_fixed_keeps_to_it(options: dict[str, Any]) -> None:
    size = options.get("max_workers", BASE)
    with aioflow.open_pool("thread", **options) as pool:
        used = _threads_used(pool, size + 10, _sleep_then_ident)
    assert len(used) == size


def test_the_grower_ends_with_the_queue_and_the_pool() -> None:
    with aioflow.open_pool("thread") as pool:
        _threads_used(pool, BASE + 5, _sleep_then_ident)
        deadline = time.monotonic() + 10
        while any(t.name.endswith("-grow") for t in threading.enumerate()) and time.monotonic() < deadline:
            time.sleep(0.01)  # it looks every GROW_INTERVAL: with no call queued, it ends
        assert not any(t.name.endswith("-grow") for t in threading.enumerate())
    # The autouse leak check verifies that every thread of the pool has ended.


@pytest.mark.parametrize(("rate", "grows"), [(0.0, True), (0.1, True), (1.0, False), (2.0, False)])
def test_it_grows_only_while_the_busy_threads_use_less_than_half_a_cpu(
    monkeypatch: pytest.MonkeyPatch, rate: float, grows: bool
) -> None:
    """The decision, with each busy thread's CPU clock replaced by one that runs at ``rate`` of wall time per thread."""
    workers = 4
    origin = time.monotonic()

    def fake_cpu(thread: threading.Thread | None) -> float:
        return (time.monotonic() - origin) * rate / workers  # the busy threads use `rate` CPUs together

    monkeypatch.setattr(_thread, "_thread_cpu", fake_cpu)
    release = threading.Event()
    executor = _thread._ThreadExecutor(max_workers=workers, grow_to=workers * 4)
    monkeypatch.setattr(time, "thread_time", lambda: 0.0)  # each call starts at CPU 0 of the fake clock
    try:
        futures = [executor.submit(release.wait, 30) for _ in range(workers * 3)]
        time.sleep(30 * _thread.GROW_INTERVAL)
        started = len(executor._threads)
    finally:
        release.set()
        executor.shutdown(wait=True)
    assert all(f.result(timeout=30) for f in futures)
    assert started == (workers * 3 if grows else workers)
