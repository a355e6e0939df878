"""Task functions of the parallel-map tests (spawn workers import them by name)."""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import aioflow
import aioflow.parallel

# Generous: only a deadlock reaches it.
DEADLINE = 30.0


def inc(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


def pid(x: Any) -> int:
    return os.getpid()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def die_on_two(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def wait_for_file(arg: tuple[int, str]) -> int:
    """Item 0 waits until the caller has created the flag file (after it received another result)."""
    x, flag = arg
    if x == 1:
        return x
    deadline = time.monotonic() + DEADLINE
    while not Path(flag).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(flag)
        time.sleep(0.001)
    return x


def block_until_file(arg: tuple[int, str]) -> int:
    """Blocks until the flag file exists (never, in the tests that abandon the map)."""
    x, flag = arg
    if x == 0:
        return x
    deadline = time.monotonic() + DEADLINE
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def nested_map(x: int) -> list[int]:
    """A map inside a task: serial, so it obeys if_serial."""
    return aioflow.parallel.map(inc, [x, x], max_workers=2, if_serial="raise")


def nested_map_ignore(x: int) -> tuple[list[int], bool]:
    """A nested map with if_serial='IGNORE' (any letter case): it runs here, in silence."""
    return aioflow.parallel.map(inc, [x, x], max_workers=2, if_serial="IGNORE"), aioflow.parallel.is_master_process()


def nested_map_warn(x: int) -> tuple[list[int], list[int], list[str]]:
    """A nested map with if_serial='warn': its results, the pids that computed them, the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = aioflow.parallel.map(inc, [x, x], max_workers=2, if_serial="warn")
        pids = aioflow.parallel.map(pid, [x, x], max_workers=2, if_serial="ignore")
    return results, pids, [str(w.message) for w in caught if issubclass(w.category, aioflow.SerialExecutionWarning)]
