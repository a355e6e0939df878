"""Task functions used by the test graphs. Importable by name from every worker."""

from __future__ import annotations

import os
import threading
import time
from typing import Any


def inc(x: int = 0) -> int:
    return x + 1


def add(a: int = 0, b: int = 0) -> int:
    return a + b


def add_all(*args: int, **kwargs: int) -> int:
    return sum(args) + sum(v for v in kwargs.values() if isinstance(v, int))


def identity(value: Any = None) -> Any:
    return value


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return what the task was called with."""
    return {"args": list(args), "kwargs": kwargs}


def fail(**kwargs: Any) -> None:
    msg = f"failed on purpose with {sorted(kwargs)}"
    raise ValueError(msg)


def needs_x(x: int) -> int:
    return x * 10


def sleep(seconds: float = 0.05, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def sleep_python(seconds: float = 0.05, value: Any = None) -> Any:
    """Sleep in small steps, so an interruption between steps stops it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    return value


def pid() -> int:
    return os.getpid()


def thread_name() -> str:
    return threading.current_thread().name


def countdown(n: int) -> dict[str, Any]:
    """A loop body: the loop goes on while n > 0."""
    return {"n": n - 1, "done": n - 1 <= 0}


def below(x: int = 0, limit: int = 3) -> dict[str, Any]:
    return {"x": x + 1, "small": x + 1 < limit}


# ppfmethods: take and return dicts.
def ppf_add(a: int = 0, b: int = 0, **_: Any) -> dict[str, Any]:
    return {"a": a + b}


def ppf_inc_until(value: int = 0, limit: int = 3, **_: Any) -> dict[str, Any]:
    value += 1
    return {"value": value, "small": value < limit}


def ppf_route(d: int = 0, **_: Any) -> dict[str, Any]:
    return {"d": d}


def ppf_none(**_: Any) -> None:
    return None


def unpicklable_output() -> Any:
    return threading.Lock()


#: What `record_call` saw, in the order its calls ended: (sorted input names, start, end).
RECORDED: list[tuple[list[str], float, float]] = []


def record_call(**inputs: Any) -> int:
    """Record the inputs of this call and when it ran (in this process: thread pools only); return how many."""
    start = time.monotonic()
    time.sleep(0.05)  # long enough for a call running beside it to overlap
    RECORDED.append((sorted(inputs), start, time.monotonic()))
    return len(inputs)
