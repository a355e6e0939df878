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
