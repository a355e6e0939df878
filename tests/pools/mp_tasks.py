"""Task functions for the multiprocessing pool tests, called as ``"<this file>::name"``."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def nested_pool(values: list[int]) -> list[int]:
    """Map ``abs`` over ``values`` in a `multiprocessing.Pool` started by the task itself."""
    with multiprocessing.Pool(2) as pool:
        return pool.map(abs, values)


def _record(directory: str, children: list[int]) -> None:
    """Write this worker's pid and the pids it started to ``directory``, atomically."""
    target = Path(directory) / f"{os.getpid()}-{time.monotonic_ns()}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"worker": os.getpid(), "children": children}))
    tmp.rename(target)


def sleep_with_subprocess(directory: str, seconds: float = 3600) -> None:
    """Start a sleeping subprocess (allowed in daemonic workers), record both pids, then sleep."""
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    _record(directory, [child.pid])
    time.sleep(seconds)


def sleep_with_process(directory: str, seconds: float = 3600) -> None:
    """Start a sleeping `multiprocessing.Process` (non-daemonic workers only), record both pids, then sleep."""
    child = multiprocessing.Process(target=time.sleep, args=(seconds,))
    child.start()
    _record(directory, [child.pid] if child.pid is not None else [])
    time.sleep(seconds)


def exit_worker(code: int = 3) -> None:
    """End the worker process at once, skipping every cleanup."""
    os._exit(code)


def kill_worker() -> None:
    """SIGKILL the worker process."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


def inc_slowly(x: int = 0, seconds: float = 0.01) -> int:
    """``x + 1`` after ``seconds``: a healthy node that keeps its worker busy for a while."""
    time.sleep(seconds)
    return x + 1


def kill_worker_after(seconds: float) -> None:
    """SIGKILL the worker process after ``seconds``, while the other calls are queued or running."""
    time.sleep(seconds)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


class Point:
    """A class the caller cannot import when this file is loaded by path in a worker (``"<file>::make_point"``)."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


def make_point(x: int = 1, y: int = 2) -> Point:
    return Point(x, y)


def _load_elsewhere() -> None:
    msg = "No module named 'only_in_the_worker'"
    raise ModuleNotFoundError(msg)


class LoadsOnlyInTheWorker:
    """Pickles in the worker; loading it in the caller fails as for a class the caller cannot import."""

    def __reduce__(self) -> tuple[object, ...]:
        return _load_elsewhere, ()


def make_unloadable() -> LoadsOnlyInTheWorker:
    return LoadsOnlyInTheWorker()


def die_once_at_start(marker: str) -> None:
    """A pool initializer: the first worker to run it SIGKILLs itself, the others start normally."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


def die_at_start(code: int = 4) -> None:
    """A pool initializer that ends every worker at once."""
    os._exit(code)


def die_holding_the_task_lock() -> None:
    """Die as a worker killed in the middle of reading a task would: holding the task queue's read lock.

    The lock is the one the pool's worker loop reads its tasks with (found in
    its frame), and the worker's state cell says it is taking a task.
    """
    import sys

    from aioflow.pools import _mp_internals, _multiprocessing

    frame = sys._getframe()
    while frame.f_code.co_name != "worker" or "inqueue" not in frame.f_locals:
        assert frame.f_back is not None, "not called from a multiprocessing.Pool worker"
        frame = frame.f_back
    frame.f_locals["inqueue"]._rlock.acquire()
    _multiprocessing._link().state.value = _mp_internals.TAKING
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached
