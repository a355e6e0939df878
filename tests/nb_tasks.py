"""Task functions for the notebook and sync-facade tests. Importable by name from every worker."""

from __future__ import annotations

import os
import time
from pathlib import Path


def square(x: int = 0) -> int:
    """Return ``x * x``."""
    return x * x


def worker_pid() -> int:
    """Return the id of the process the task runs in."""
    return os.getpid()


def mark_and_sleep(path: str, seconds: float = 3600.0) -> None:
    """Create the file ``path`` (the sign that the task is running), then sleep.

    Args:
        path: the file to create.
        seconds: how long to sleep; the default outlasts any test, so only an
            interruption ends the task.
    """
    Path(path).touch()
    time.sleep(seconds)
