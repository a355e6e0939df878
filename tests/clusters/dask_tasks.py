"""Tasks for the dask pool's tests, imported by name on Dask workers."""

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
