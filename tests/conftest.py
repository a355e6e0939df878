"""Shared fixtures: the pool every behaviour test runs on, the scheduler's pool matrix, and the leak check."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psutil
import pytest
from pool_capabilities import CAPABILITIES, LocalPool, local_pools

import aioflow
from aioflow._gevent_bridge import is_patched

# Every scheduler test runs once per configuration (ids show in test names:
# test_chain[process-spawn]): a pool in this process and one of worker
# processes, with every start method, for the scheduler's semantics do not
# depend on which process pool runs the tasks; what the pools themselves do
# runs on `local_pool`, every local pool. Narrow with
# @pytest.mark.parametrize("pool_config", [...], indirect=True).
POOL_CONFIGS = [
    pytest.param(pool.options(max_workers=2), id=pool.id)
    for pool in local_pools(every_start_method=True)
    if pool.pool_type in ("thread", "process")
]

#: Seconds a test body may take in a fresh gevent-patched interpreter, its start-up included.
PATCHED_TEST_LIMIT = 100.0

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*capabilities): the local_pool fixture leaves out (deselects) the pools that lack one "
        f"(tests/pool_capabilities.py); capabilities: {', '.join(sorted(CAPABILITIES))}",
    )
    config.addinivalue_line(
        "markers", "every_start_method(why): local_pool runs the test on each process pool with every start method"
    )
    config.addinivalue_line("markers", "left_out(reason): set by local_pool on a combination it deselects")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``local_pool`` runs once per local pool; those lacking what it needs are marked left_out.

    A coroutine test needs an event loop of its own, which the gevent pool
    does not serve.
    """
    if "local_pool" not in metafunc.fixturenames:
        return
    needs = [need for mark in metafunc.definition.iter_markers("needs") for need in mark.args]
    if inspect.iscoroutinefunction(metafunc.function):
        needs.append("event loop")
    every = metafunc.definition.get_closest_marker("every_start_method") is not None
    params = []
    for pool in local_pools(every_start_method=every):
        reason = pool.why_not(needs)
        marks = [] if reason is None else [pytest.mark.left_out(reason)]
        params.append(pytest.param(pool, id=pool.id, marks=marks))
    metafunc.parametrize("local_pool", params, indirect=True)


@pytest.fixture
def local_pool(request: pytest.FixtureRequest) -> LocalPool:
    """One local pool and start method; ``local_pool.options(...)`` are the keywords that select it."""
    pool: LocalPool = request.param
    return pool


LEFT_OUT = pytest.StashKey[list[tuple[str, str]]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the combinations local_pool marked left_out, and keep their reasons for the summary."""
    left_out = [item for item in items if item.get_closest_marker("left_out") is not None]
    if not left_out:
        return
    config.hook.pytest_deselected(items=left_out)
    items[:] = [item for item in items if item.get_closest_marker("left_out") is None]
    reasons = config.stash.setdefault(LEFT_OUT, [])
    for item in left_out:
        marker = item.get_closest_marker("left_out")
        assert marker is not None
        reasons.append((item.nodeid, marker.args[0]))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """How many combinations were left out, per reason (with -v, each one)."""
    reasons = config.stash.get(LEFT_OUT, [])
    if not reasons:
        return
    terminalreporter.section("pools left out: they cannot do what the test needs (deselected)")
    counts: dict[str, int] = {}
    for nodeid, reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
        if config.option.verbose > 0:
            terminalreporter.write_line(f"{nodeid}: {reason}")
    for reason, count in sorted(counts.items()):
        terminalreporter.write_line(f"{count:4d} x {reason}")


#: Run in a fresh interpreter: patch first, then run the one test given.
PATCHED_PYTEST = (
    "from gevent import monkey; monkey.patch_all()\nimport sys, pytest\nsys.exit(pytest.main(sys.argv[1:]))"
)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """On a pool that runs only in a gevent-patched interpreter, the test body runs in a fresh such interpreter.

    Patching is process-wide and cannot be undone, so this interpreter runs
    the same test id there, whose `local_pool` then runs the body itself.
    """
    pool = pyfuncitem.funcargs.get("local_pool")
    if not isinstance(pool, LocalPool) or not pool.patched_only or is_patched():
        return None
    # Only the plugins the suite's configuration needs: others import libraries
    # (trio) that fail in a patched process, and nothing here uses them.
    plugins = ["-p", "pytest_asyncio.plugin", "-p", "pytest_timeout", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-c", PATCHED_PYTEST, pyfuncitem.nodeid, "-q", *plugins],
        cwd=pyfuncitem.config.rootpath,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=PATCHED_TEST_LIMIT,
        check=False,
    )
    if done.returncode != 0 or "1 passed" not in done.stdout:
        pytest.fail(f"in a gevent-patched interpreter (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return True


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


@pytest.fixture(scope="module")
def billiard_singletons() -> None:
    """Start billiard's per-interpreter helper processes before any leak check takes its snapshot.

    Like multiprocessing's resource tracker and fork server, billiard's
    semaphore tracker and fork server start once, on first use, and live as
    long as the interpreter: they are not workers of any pool. A module whose
    tests run billiard pools uses this fixture
    (``pytestmark = pytest.mark.usefixtures("billiard_singletons")``).
    """
    import billiard.forkserver
    import billiard.semaphore_tracker

    billiard.semaphore_tracker.ensure_running()
    billiard.forkserver.ensure_running()


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
