"""Task functions that leave a daemon behind, for the tests that no process outlives an execution.

Importable by name from every worker (the tests put this directory on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

# Long enough that a daemon that is gone was killed: it never ends by itself during a test.
DAEMON_SECONDS = 600

# How long a task waits for a file the test writes: only a broken test reaches it.
WAIT_DEADLINE = 120.0


def start_daemon(seconds: float = DAEMON_SECONDS) -> int:
    """Start ``sleep`` the way a daemon starts, and return its pid.

    ``sh`` starts it in the background and exits at once, so the ``sleep``
    is re-parented away from this process (to init, or to the nearest
    subreaper above it). Its output goes to /dev/null, so it holds no pipe
    of ours, and as a background job of a non-interactive shell it ignores
    SIGINT: Ctrl-C to the process group does not end it.
    """
    script = f"sleep {seconds} </dev/null >/dev/null 2>&1 & echo $!"
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    return int(done.stdout)


def mark(marker_dir: str, name: str, pids: list[int]) -> None:
    """Write ``pids`` to ``marker_dir/name``, atomically."""
    tmp = Path(marker_dir) / f".{name}.tmp"
    tmp.write_text(" ".join(map(str, pids)), encoding="utf-8")
    tmp.rename(Path(marker_dir) / name)


def wait_for_file(path: str) -> None:
    """Wait until ``path`` exists."""
    deadline = time.monotonic() + WAIT_DEADLINE
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            msg = f"{path} did not appear within {WAIT_DEADLINE} s"
            raise TimeoutError(msg)
        time.sleep(0.01)


def daemon_then_sleep(marker_dir: str, name: str, seconds: float = DAEMON_SECONDS) -> str:
    """Start a daemon, write ``[this process, the daemon]`` to ``marker_dir/name``, then sleep (until stopped)."""
    mark(marker_dir, name, [os.getpid(), start_daemon()])
    time.sleep(seconds)
    return name


def daemon_then_return(marker_dir: str, name: str, go: str) -> str:
    """Start a daemon, write ``[this process, the daemon]`` to ``marker_dir/name``, and return once ``go`` exists."""
    mark(marker_dir, name, [os.getpid(), start_daemon()])
    wait_for_file(go)
    return name


def fail_when(path: str) -> None:
    """Fail once ``path`` exists."""
    wait_for_file(path)
    msg = f"failed on purpose once {os.path.basename(path)} existed"
    raise RuntimeError(msg)
