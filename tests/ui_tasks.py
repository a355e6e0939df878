"""Task functions for the live web view's tests: tasks that wait until the test lets them go.

Importable by name from every worker. A task ``name`` says it runs by
writing ``directory/name.started`` (with its pid), then waits until the
test creates ``directory/name.go``; the test so decides when each node ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

#: Seconds a task waits for its release at most: only a broken test reaches it.
RELEASE_DEADLINE = 60.0


def _say(directory: str, name: str) -> None:
    tmp = Path(directory) / f".{name}.tmp"
    tmp.write_text(str(os.getpid()), encoding="utf-8")
    tmp.rename(Path(directory) / f"{name}.started")


def _wait(directory: str, name: str) -> None:
    release = Path(directory) / f"{name}.go"
    deadline = time.monotonic() + RELEASE_DEADLINE
    while not release.exists():
        if time.monotonic() > deadline:
            msg = f"{name}: never released ({release} was not created)"
            raise TimeoutError(msg)
        time.sleep(0.02)


def step(directory: str, name: str, x: int = 0) -> int:
    """Say that it runs, wait for its release, and return ``x + 1``."""
    _say(directory, name)
    _wait(directory, name)
    return x + 1


def fail_when_released(directory: str, name: str, x: int = 0) -> int:
    """Say that it runs, wait for its release, then raise a ValueError naming ``name``."""
    _say(directory, name)
    _wait(directory, name)
    return _explode(name, x)


def _explode(name: str, x: int) -> int:
    msg = f"{name} cannot take {x} (failed on purpose)"
    raise ValueError(msg)


def add(x: int = 0) -> int:
    """Return ``x + 1`` at once."""
    return x + 1


def fail(x: int = 0) -> int:
    """Raise a ValueError at once."""
    return _explode("fail", x)


def pause(seconds: float = 0.2, **inputs: object) -> float:
    """Work for ``seconds`` (sleep), whatever the inputs; return the time taken (docs/images/make_screenshots.py)."""
    time.sleep(seconds)
    return seconds


def fit_peaks(seconds: float = 0.2, **inputs: object) -> float:
    """Work for ``seconds``, then fail the way a fit that does not converge fails."""
    time.sleep(seconds)
    return _least_squares(max_iterations=200, residual=371.4)


def _least_squares(max_iterations: int, residual: float) -> float:
    msg = f"least-squares fit did not converge after {max_iterations} iterations (residual {residual:.1f})"
    raise RuntimeError(msg)
