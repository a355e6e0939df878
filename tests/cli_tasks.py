"""Task functions for the CLI tests' graphs. Importable by name from every worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def _mark(marker_dir: str, name: str, pids: list[int]) -> None:
    """Write the pids that run a task to ``marker_dir/name``, atomically."""
    tmp = Path(marker_dir) / f".{name}.tmp"
    tmp.write_text(" ".join(map(str, pids)), encoding="utf-8")
    tmp.rename(Path(marker_dir) / name)


def sleep_marked(marker_dir: str, name: str, seconds: float = 600.0) -> str:
    """Say (with a marker file) that the task runs, then sleep for a long time."""
    _mark(marker_dir, name, [os.getpid()])
    time.sleep(seconds)
    return name


def child_sleep_marked(marker_dir: str, name: str, seconds: float = 600.0) -> str:
    """Start a child process that sleeps, say so with a marker file, and wait for the child."""
    code = f"import time; time.sleep({seconds!r})"
    with subprocess.Popen([sys.executable, "-c", code]) as child:
        _mark(marker_dir, name, [os.getpid(), child.pid])
        child.wait()
    return name


def pair(x: int = 0) -> dict[str, int]:
    """Return a dict, to check that outputs nest in the printed JSON."""
    return {"x": x, "double": 2 * x}


def tuple_keys() -> dict[tuple[str, int], int]:
    """Return a dict whose keys JSON cannot hold."""
    return {("a", 1): 1}


def die() -> None:
    """End the worker process at once, as a crash would."""
    os._exit(3)


def command_sleep_marked(marker_dir: str, name: str, seconds: float = 600.0) -> str:
    """Run ``sleep`` and wait for it (a blocking C call a thread cannot be interrupted in), marking its pid."""
    with subprocess.Popen(["sleep", str(seconds)]) as child:
        _mark(marker_dir, name, [child.pid])
        child.wait()
    return name
