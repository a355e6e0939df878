"""Real Dask clusters on loopback for the dask pool's tests, started and stopped by fixtures.

Starting Dask takes seconds, so the clusters are module-scoped: set up
before the first test of a module that asks for them, torn down after its
last one. Not session-scoped: a LocalCluster's worker processes are
multiprocessing children of the test process, and while they live, a
process forked later by another module's test (billiard's, say) fails at
exit trying to join them. The autouse
leak check (``no_leaks`` in tests/conftest.py, function-scoped) takes its
snapshot after higher-scoped fixtures are set up, so it accepts exactly the
processes and threads these clusters started, and still fails a test that
leaves anything of its own behind (a pool's home-loop thread, a client, a
LocalCluster the pool started). Each fixture checks on teardown that its
processes are gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

TESTS_DIR = Path(__file__).resolve().parent.parent

# Generous deadlines: a 2-core machine shared with other jobs starts a Dask
# worker process in two to ten seconds; only a broken setup reaches these.
START_DEADLINE = 90.0
STOP_DEADLINE = 30.0


def distributed() -> Any:
    """The ``distributed`` module, untyped (its calls are not annotated)."""
    import distributed

    return distributed


@pytest.fixture(scope="session")
def dask_runtime() -> None:
    """distributed's process-wide helper thread (``Dask-Offload``), started before any leak snapshot.

    distributed runs some message decoding on one thread it starts on first
    use and keeps until the interpreter exits: like the stdlib's singletons,
    it belongs to no pool.
    """
    import distributed.utils

    distributed.utils._offload_executor.submit(int).result()


def _env() -> dict[str, str]:
    """The environment of Dask processes: tests/ importable, for the task modules."""
    path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _descendants() -> set[int]:
    """Our descendant processes, but the stdlib's singletons (multiprocessing's resource tracker)."""
    from conftest import STDLIB_SINGLETONS

    pids = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if not any(s in " ".join(proc.cmdline()) for s in STDLIB_SINGLETONS):
                pids.add(proc.pid)
        except psutil.Error:
            continue
    return pids


def _wait_gone(pids: set[int], what: str) -> None:
    deadline = time.monotonic() + STOP_DEADLINE
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _running(p)}
        time.sleep(0.05)
    assert not alive, f"{what} left processes running: {sorted(alive)}"


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def local_cluster(dask_runtime: None) -> Iterator[Any]:
    """A `distributed.LocalCluster`: 2 single-threaded worker processes on 127.0.0.1.

    Like the one the pool starts itself, it allows no retry of a task whose
    worker died (``allowed_failures=0``).
    """
    Client, LocalCluster = distributed().Client, distributed().LocalCluster
    before = _descendants()
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"allowed_failures": 0, "dashboard_address": "127.0.0.1:0"},
    )
    started = _descendants() - before
    try:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=START_DEADLINE)
        yield cluster
    finally:
        cluster.close()
        _wait_gone(started, "the LocalCluster")


@pytest.fixture(scope="module")
def dask_client(local_cluster: Any) -> Iterator[Any]:
    """A synchronous `distributed.Client` of `local_cluster`, as a user would pass it."""
    client = distributed().Client(local_cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Dask closes gracefully), then SIGKILL of the whole tree past the deadline."""
    if process.poll() is None:
        tree = [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            for pid in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
            process.wait()


@pytest.fixture(scope="module")
def dask_processes(dask_runtime: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``dask scheduler`` and a ``dask worker`` (one process, one thread), started as commands; yields the address."""
    Client = distributed().Client
    logs = tmp_path_factory.mktemp("dask-logs")
    address = f"tcp://127.0.0.1:{_free_port()}"
    before = _descendants()
    common = ["--no-dashboard"]
    scheduler_cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
    scheduler_cmd += ["--port", address.rsplit(":", 1)[1], *common]
    worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1"]
    worker_cmd += ["--nthreads", "1", "--nworkers", "1", *common]
    processes: list[subprocess.Popen[bytes]] = []
    started: set[int] = set()
    try:
        for name, cmd in (("scheduler", scheduler_cmd), ("worker", worker_cmd)):
            with open(logs / f"{name}.log", "wb") as log:
                processes.append(subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT))
        with Client(address, timeout=START_DEADLINE, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=START_DEADLINE)
        started = _descendants() - before
        yield address
    finally:
        for process in reversed(processes):  # the worker first: it says goodbye to its scheduler
            _stop(process)
    _wait_gone(started, "dask scheduler/worker")
