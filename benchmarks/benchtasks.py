"""Task functions called by the benchmark graphs.

Every graph node is a ``method`` task whose ``task_identifier`` is
``benchtasks.<name>``. Worker processes import this module by name, so the
``benchmarks/`` directory must be on ``sys.path`` (``bench.py`` puts it on the
``PYTHONPATH`` of every process it starts).
"""

from __future__ import annotations

import time
from typing import Any


def inc(x: int = 0) -> int:
    """Return ``x + 1``: the near-zero-cost task of chains and fans.

    Args:
        x: the upstream value.

    Returns:
        ``x + 1``.
    """
    return x + 1


def add(**values: Any) -> int:
    """Return the sum of every input plus one: the join task of lattices and random DAGs.

    Not ``**inputs``: Parsl reads a parameter of that name as its own
    ``inputs`` keyword (a list of futures), and its apps then fail.

    Args:
        **values: the upstream values, under any names.

    Returns:
        ``sum(values.values()) + 1``.
    """
    total: int = sum(values.values()) + 1
    return total


def cpu(n: int = 1_000_000) -> int:
    """Run a pure-Python loop of ``n`` steps, holding the GIL throughout.

    Args:
        n: the number of loop steps (``bench.py`` calibrates it to a duration).

    Returns:
        A checksum of the loop, so that the work cannot be skipped.
    """
    s = 0
    for i in range(n):
        s += i & 7
    return s


def sleep(seconds: float = 0.05) -> int:
    """Sleep ``seconds`` with `time.sleep` and return 1: the I/O-bound task of sleep fans.

    `time.sleep` releases the GIL, so threads overlap; in a process gevent has
    monkey-patched, it yields to the hub, so greenlets overlap.

    Args:
        seconds: how long to sleep.

    Returns:
        1, so that a fan's checksum is its number of tasks.
    """
    time.sleep(seconds)
    return 1


def calibrate_cpu(target_s: float, repeats: int = 3) -> tuple[int, float]:
    """Find the `cpu` loop count that takes about ``target_s`` seconds on this machine.

    Args:
        target_s: the wanted duration of one `cpu` call, in seconds.
        repeats: timed calls of the final count; their median is returned.

    Returns:
        ``(n, seconds)``: the loop count and the median measured duration.
    """
    n = 20_000
    while True:
        t0 = time.perf_counter()
        cpu(n)
        dt = time.perf_counter() - t0
        # 20 ms is long enough for the timer and short enough to stay cheap.
        if dt > 0.02:
            break
        n *= 2
    n = max(1, int(n * target_s / dt))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cpu(n)
        times.append(time.perf_counter() - t0)
    times.sort()
    return n, times[len(times) // 2]


def marked_spin(path: str, seconds: float = 30.0) -> str:
    """Write ``time.monotonic()`` to ``path`` as the task starts, then run Python code for ``seconds``.

    The clock is the machine's (``CLOCK_MONOTONIC``): the driver compares it
    with its own to time how long after a node's deadline it fails. Interruptible
    between bytecodes, so a thread pool can stop it too.

    Args:
        path: where to write the start time.
        seconds: how long to run.

    Returns:
        ``path``.
    """
    with open(path, "w") as f:
        f.write(repr(time.monotonic()))
    spin(seconds)
    return path


def fail_first(failures: int, x: int = 0) -> int:
    """Fail with ``OSError`` on the first ``failures`` attempts of the firing, then return ``x + 1``.

    Args:
        failures: how many attempts fail.
        x: the upstream value.

    Returns:
        ``x + 1``.
    """
    import aioflow  # here: only the tasks that retry read their attempt

    attempt = aioflow.current_attempt()
    if attempt <= failures:
        msg = f"attempt {attempt} of {failures + 1}"
        raise OSError(msg)
    return x + 1


def spin(seconds: float, x: int = 0) -> int:
    """Run Python code for ``seconds`` (a thread pool can interrupt it), then return ``x + 1``.

    Args:
        seconds: how long to run.
        x: the upstream value.

    Returns:
        ``x + 1``.
    """
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.002)
    return x + 1
