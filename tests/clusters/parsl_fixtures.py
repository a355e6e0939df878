"""A real Parsl DataFlowKernel (local HighThroughputExecutor on loopback) for the parsl pool's tests, and their tasks.

Tasks come from the top-level task modules of ``tests/`` (``tasks``,
``cli_tasks``, ``nb_tasks``), which every worker imports by name.

Starting Parsl takes seconds, so one DFK serves a whole test module
(`parsl_dfk`, module-scoped). It is started, and warmed up until its
workers answer, before any test of the module runs: the autouse leak check
(``tests/conftest.py``, function-scoped) takes its snapshot after
higher-scoped fixtures are set up, so it accepts exactly what this DFK
started, and still catches anything a test leaves behind. Its worker block
is not a child of the test process (Parsl's LocalProvider detaches it), so
`parsl_processes` finds such processes by their run directory, and the
fixture checks on teardown that none outlives the DFK.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Generous: only a leak reaches it (Parsl's cleanup takes well under a second).
GONE_DEADLINE = 30.0

# The DFK's workers: two, as the CI machine has two cores.
WORKERS = 2


def make_config(run_dir: Path, workers: int = WORKERS) -> Any:
    """A local HighThroughputExecutor config on loopback, as a user would write it, its run_dir under ``run_dir``."""
    from aioflow.pools._parsl import default_config

    return default_config(workers, str(run_dir))


def parsl_processes(run_dir: Path | str) -> list[psutil.Process]:
    """Live processes (anywhere on the machine) started for the Parsl run in ``run_dir``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if str(run_dir) in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_no_parsl_processes(run_dir: Path | str) -> None:
    """Every process of the Parsl run in ``run_dir`` is gone (waits up to `GONE_DEADLINE` for them)."""
    deadline = time.monotonic() + GONE_DEADLINE
    while True:
        left = parsl_processes(run_dir)
        if not left:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for proc in left:  # do not let one orphan block every later test
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    lines = []
    for proc in left:
        try:
            lines.append(f"process {proc.pid}: {' '.join(proc.cmdline())}")
        except psutil.Error:
            lines.append(f"process {proc.pid}")
    pytest.fail("Parsl processes outlived their DFK:\n  " + "\n  ".join(lines))


@pytest.fixture(scope="module")
def parsl_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parsl-run")


@pytest.fixture(scope="module")
def parsl_dfk(parsl_run_dir: Path) -> Iterator[Any]:
    """A started DFK of the caller's, its workers up; cleaned up after the module's tests.

    Started as ``parsl.load`` starts one, but not made Parsl's current DFK:
    the tests that load one of their own, or that check which DFK is
    current, run the same whatever module-scoped DFK is up.
    """
    import parsl
    from parsl.dataflow.dflow import DataFlowKernel

    dfk = DataFlowKernel(make_config(parsl_run_dir))
    try:
        # Warm up: the worker block is running and the DFK's launch thread exists.
        import tasks

        app = parsl.python_app(tasks.inc, data_flow_kernel=dfk)
        futures = [app(x) for x in range(2 * WORKERS)]
        assert [f.result(timeout=120) for f in futures] == [x + 1 for x in range(2 * WORKERS)]
        yield dfk
    finally:
        dfk.cleanup()
    assert_no_parsl_processes(parsl_run_dir)
