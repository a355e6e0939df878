"""Tasks for the cluster pools' tests (Dask, Parsl), imported by name on their workers."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_pid_then_sleep(path: str, seconds: float = 600.0) -> int:
    """Write this worker's pid to ``path``, then sleep (until a test kills the worker)."""
    tmp = Path(path + ".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.rename(path)  # the test never reads a half-written pid
    time.sleep(seconds)
    return os.getpid()


def worker_pid(x: int = 0) -> int:
    """The pid of the process that runs the task."""
    return os.getpid()


class DriverForbidden:
    """A value that refuses to be unpickled in the process whose pid it carries (the test's driver).

    An output of this type that reaches the driver breaks the execution: a
    graph that passes it from node to node proves the data went from worker
    to worker.
    """

    def __init__(self, driver_pid: int, payload: int) -> None:
        self.driver_pid = driver_pid
        self.payload = payload

    def __reduce__(self) -> tuple[object, tuple[int, int]]:
        return (_rebuild, (self.driver_pid, self.payload))


def _rebuild(driver_pid: int, payload: int) -> DriverForbidden:
    if os.getpid() == driver_pid:
        msg = "a value meant to stay on the workers was unpickled in the driver"
        raise RuntimeError(msg)
    return DriverForbidden(driver_pid, payload)


def make_forbidden(driver_pid: int, payload: int) -> DriverForbidden:
    return DriverForbidden(driver_pid, payload)


def bump_forbidden(value: DriverForbidden) -> DriverForbidden:
    return DriverForbidden(value.driver_pid, value.payload + 1)


def read_forbidden(value: DriverForbidden) -> int:
    return value.payload


def count_scheduler_tasks(prefix: str, seconds: float = 0.0, x: int = 0) -> int:
    """On a worker: how many tasks whose key starts with ``prefix`` the scheduler knows now."""
    import distributed

    time.sleep(seconds)
    client = distributed.get_client()

    def count(dask_scheduler: distributed.Scheduler) -> int:
        return sum(1 for key in dask_scheduler.tasks if str(key).startswith(prefix))

    found: int = client.run_on_scheduler(count)  # type: ignore[no-untyped-call]
    return found


def fail_after(seconds: float, x: int = 0) -> int:
    time.sleep(seconds)
    msg = "failed on purpose"
    raise ValueError(msg)


def inc_ahead(x: int) -> int:
    """``x + 1``, under a name of its own: its Dask keys are counted by one test only."""
    return x + 1


def wait_for_file(path: str, timeout: float = 60.0) -> int:
    """Wait until ``path`` exists (a test creates it once it has seen what it waits for); return 0."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            msg = f"{path} never appeared"
            raise TimeoutError(msg)
        time.sleep(0.01)
    return 0


def stamp(path: str, x: int) -> int:
    """Write the time this task ran to ``path``; return ``x + 1``."""
    Path(path).write_text(repr(time.time()))
    return x + 1


def fail_once(marker: str) -> int:
    """Fail the first time (creating ``marker``), succeed the next: a task worth one retry."""
    if not Path(marker).exists():
        Path(marker).touch()
        msg = "failed on purpose, the first time only"
        raise RuntimeError(msg)
    return 1
