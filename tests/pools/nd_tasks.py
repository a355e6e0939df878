"""Task functions for the ndprocess and billiard pool tests, called as ``"<this file>::name"``.

Processes these tasks start run built-in functions only (``abs``,
``time.sleep``): a spawned grandchild imports its target by module name, and
this file is loaded by path.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def worker_info() -> dict[str, Any]:
    """The worker's pid and whether multiprocessing sees it as daemonic."""
    return {"pid": os.getpid(), "daemon": multiprocessing.current_process().daemon}


def nested_pool(values: list[int], method: str = "fork") -> list[int]:
    """Map ``abs`` over ``values`` in a `multiprocessing.Pool` the task starts itself."""
    with multiprocessing.get_context(method).Pool(2) as pool:
        return pool.map(abs, values)


def nested_process(method: str = "fork") -> int:
    """Start a `multiprocessing.Process`, wait for it, and return its exit code."""
    context: Any = multiprocessing.get_context(method)
    child = context.Process(target=time.sleep, args=(0.01,))
    child.start()
    child.join()
    return -1 if child.exitcode is None else child.exitcode


def sleep_with_children(directory: str, seconds: float = 3600, with_process: bool = True) -> None:
    """Start sleeping children (a subprocess, and a `multiprocessing.Process` if asked), record pids, sleep.

    The record is ``<directory>/<worker pid>.json``: ``{"worker": pid, "children": [pids]}``.
    """
    children = [subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"]).pid]
    if with_process:
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(seconds,))
        child.start()
        assert child.pid is not None
        children.append(child.pid)
    target = Path(directory) / f"{os.getpid()}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"worker": os.getpid(), "children": children}))
    tmp.rename(target)
    time.sleep(seconds)


def record_pid(pid_file: str) -> int:
    """Write this worker's pid to ``pid_file`` (whole, or not at all: a reader may be waiting for it); return it."""
    target = Path(pid_file)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.rename(target)
    return os.getpid()


def exit_worker(code: int = 3, pid_file: str | None = None) -> None:
    """End the worker process at once, skipping every cleanup (its pid first written to ``pid_file``, if given)."""
    if pid_file is not None:
        record_pid(pid_file)
    os._exit(code)


def wait_to_be_killed(pid_file: str, seconds: float = 120.0) -> None:
    """Write this worker's pid to ``pid_file``, then sleep: the test kills the worker meanwhile."""
    record_pid(pid_file)
    time.sleep(seconds)


def unpicklable() -> Any:
    """Return a value that cannot be pickled (a lock)."""
    import threading

    return threading.Lock()


def rendezvous(directory: str, count: int = 2, deadline: float = 60.0) -> int:
    """Wait until ``count`` tasks have arrived in ``directory``; return this worker's pid.

    Only workers running at the same time get past it: the tasks of one worker
    would wait for each other until ``deadline`` and raise.
    """
    Path(directory, f"{os.getpid()}-{time.monotonic_ns()}").touch()
    end = time.monotonic() + deadline
    while len(list(Path(directory).iterdir())) < count:
        if time.monotonic() > end:
            msg = f"only {len(list(Path(directory).iterdir()))} of {count} tasks ran at the same time"
            raise TimeoutError(msg)
        time.sleep(0.01)
    return os.getpid()


class Unloadable:
    """Defined in this file, which workers load by path: the calling process cannot import it."""

    def __init__(self, value: int) -> None:
        self.value = value


def return_unloadable() -> Unloadable:
    """Return an instance of a class the calling process cannot import."""
    return Unloadable(1)


class Halt(BaseException):
    """A `BaseException` (not an `Exception`) defined in this file: the calling process cannot import it."""


def raise_halt() -> None:
    """Raise `Halt`, which billiard's worker loop sends back itself (it is not an `Exception`)."""
    raise Halt("halted on purpose")
