"""Tasks of the timeline tests (tests/observe/test_trace.py), called as ``"<this file>::name"`` from any worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

# Generous: only a pool that never runs the others at the same time reaches it.
MEET_DEADLINE = 60.0


def meet(directory: str, name: str, count: int) -> int:
    """Arrive in ``directory`` as ``name``, wait until ``count`` tasks have arrived; return this process's pid.

    The tasks that meet run at the same time: on a process pool, in as many
    worker processes.
    """
    Path(directory, name).touch()
    deadline = time.monotonic() + MEET_DEADLINE
    while len(os.listdir(directory)) < count:
        if time.monotonic() > deadline:
            msg = f"{name}: only {sorted(os.listdir(directory))} arrived in {MEET_DEADLINE} s"
            raise TimeoutError(msg)
        time.sleep(0.005)
    return os.getpid()
