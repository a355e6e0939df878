"""What every benchmark driver does the same way: run one measurement in a fresh interpreter, and take medians.

A measurement is a child process that prints one line ``<MARKER> {json}``,
whose JSON has an ``ok`` field (the result was right). The child runs in a
session of its own: at its timeout, and after it exits, its whole process
group is killed, so nothing a measurement started (workers, a cluster)
outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["fmt", "median", "run_child"]


def run_child(
    command: Sequence[str],
    marker: str,
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    wrong: str = "wrong result",
) -> dict[str, Any]:
    """Run one measurement; return its record with ``status`` and ``outer`` (seconds, process start to exit).

    ``status`` is ``ok``, ``wrong`` (the child said its result was wrong),
    ``timeout``, or ``crashed`` (with ``error``, the exception's name, and
    the end of ``stderr``).
    """
    prefix = marker + " "
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": "timeout", "outer": time.perf_counter() - start}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what the measurement started dies with it
        except ProcessLookupError:
            pass
    outer = time.perf_counter() - start
    lines = [line for line in out.splitlines() if line.startswith(prefix)]
    if proc.returncode != 0 or not lines:
        last = [line for line in err.splitlines() if line.strip()][-1:] or ["?"]
        return {"status": "crashed", "outer": outer, "error": last[0].split(":")[0].strip(), "stderr": err[-2000:]}
    record: dict[str, Any] = json.loads(lines[-1].removeprefix(prefix))
    record["status"] = "ok" if record.pop("ok") else wrong
    record["outer"] = outer
    return record


def median(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The median of ``key`` over the successful records (``None`` when there is none)."""
    values = [r[key] for r in records if r.get("status") == "ok" and key in r]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for a table: ``-`` when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"
