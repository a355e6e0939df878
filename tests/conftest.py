"""Shared fixtures: the pool matrix every scheduler test runs on, and the leak check."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psutil
import pytest

import aioflow

# Every scheduler test runs once per configuration (ids show in test names:
# test_chain[process-spawn]). Narrow with
# @pytest.mark.parametrize("pool_config", [...], indirect=True).
POOL_CONFIGS = [
    pytest.param({"pool_type": "thread", "max_workers": 2}, id="thread"),
    pytest.param({"pool_type": "process", "max_workers": 2, "context": "spawn"}, id="process-spawn"),
    pytest.param({"pool_type": "process", "max_workers": 2, "context": "fork"}, id="process-fork"),
    pytest.param({"pool_type": "process", "max_workers": 2, "context": "forkserver"}, id="process-forkserver"),
]

# Processes the stdlib (and billiard) start once per interpreter and keep on
# purpose: they are not workers of any pool, and they end with the interpreter.
STDLIB_SINGLETONS = (
    "multiprocessing.forkserver",
    "multiprocessing.resource_tracker",
    "billiard.semaphore_tracker",
    "billiard.forkserver",
    "loky.backend.resource_tracker",
)

# Generous: only a leak (or a deadlock) reaches it.
LEAK_DEADLINE = 10.0


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on the default asyncio loop and on uvloop."""
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=POOL_CONFIGS)
def pool_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments selecting one pool configuration."""
    return dict(request.param)


ExecuteFn = Callable[..., Awaitable[aioflow.Results]]


@pytest.fixture
def execute(pool_config: dict[str, Any]) -> ExecuteFn:
    """``await execute(graph, **options)``: execute_graph_async on this test's pool."""

    async def run(graph: Any, **options: Any) -> aioflow.Results:
        return await aioflow.execute_graph_async(graph, **{**pool_config, **options})

    return run


def _children() -> dict[int, str]:
    result = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(s in cmdline for s in STDLIB_SINGLETONS):
            continue
        result[proc.pid] = cmdline
    return result


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """No child process or thread started during a test outlives it."""
    procs_before = set(_children())
    threads_before = _threads()
    yield
    deadline = time.monotonic() + LEAK_DEADLINE
    while True:
        new_procs = {p: c for p, c in _children().items() if p not in procs_before}
        new_threads = [t for t in _threads() - threads_before if t.is_alive()]
        if not new_procs and not new_threads:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in new_procs:  # do not let one leak fail every later test
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    lines = [f"process {pid}: {cmd}" for pid, cmd in new_procs.items()]
    lines += [f"thread {t.name}" for t in new_threads]
    pytest.fail("leaked past the test:\n  " + "\n  ".join(lines))


@pytest.fixture(autouse=True)
def tests_dir_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Task modules in tests/ import by name in every worker (spawn re-imports by name)."""
    here = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
