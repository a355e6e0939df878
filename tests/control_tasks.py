"""Tasks of the per-node control tests (tests/test_node_control.py), called as ``"<this file>::name"``.

Each records what it did in files of a directory the test gives: the
workers are processes, threads or greenlets, and the files are what they share.
"""

from __future__ import annotations

import builtins
import json
import os
import time
from pathlib import Path

import aioflow


def _append(directory: str, name: str, line: str) -> None:
    with Path(directory, name).open("a") as f:
        f.write(line + "\n")


def fails_until(directory: str, succeed_on: int, error: str = "OSError") -> int:
    """Fail with ``error`` (a builtin exception's name) before attempt ``succeed_on``; record every attempt."""
    attempt = aioflow.current_attempt()
    _append(directory, "attempts", f"{attempt} {os.getpid()}")
    if attempt < succeed_on:
        raise getattr(builtins, error)(f"attempt {attempt}")
    return attempt


def spin(directory: str, seconds: float, name: str = "spin") -> str:
    """Run Python code for ``seconds`` (a thread can be interrupted between its bytecodes); record start and end."""
    _append(directory, name, f"start {os.getpid()}")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.005)
    _append(directory, name, "end")
    return name


def slow_first(directory: str, seconds: float) -> int:
    """Spin ``seconds`` on the first attempt, return at once on the next ones."""
    attempt = aioflow.current_attempt()
    _append(directory, "attempts", str(attempt))
    if attempt == 1:
        spin(directory, seconds, "first")
    return attempt


def count(directory: str, name: str, value: int = 0) -> int:
    """Record one execution of node ``name``; return ``value + 1``."""
    _append(directory, "executions", name)
    return value + 1


def blocked_in_c(seconds: float) -> str:
    """Block in one C call (``time.sleep``): a thread cannot be interrupted in it."""
    time.sleep(seconds)
    return "woke"


def record(directory: str, name: str) -> str:
    """Note that node ``name`` started, with the time."""
    _append(directory, "order", json.dumps([name, time.monotonic()]))
    return name
