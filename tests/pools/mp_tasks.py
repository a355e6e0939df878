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
