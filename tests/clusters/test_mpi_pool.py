"""The ``mpi`` pool under a real ``mpiexec -n 3`` (MPICH from PyPI, Open MPI from the system), spawned workers, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from mpi_launch import MPI_ENV, Launcher, launchers, missing

import aioflow

SCRIPT = Path(__file__).with_name("mpi_pool_script.py")
TESTS_DIR = SCRIPT.parent.parent

# Generous: an MPI job of three processes starts in about a second; only a hang reaches it.
TIMEOUT = 180


def session_processes(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (what a launched job left running)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def run(command: list[str], launcher: Launcher | None = None) -> dict[str, Any]:
    """Run ``command`` in a session of its own; return its last JSON line. Nothing of the session may outlive it."""
    env = {
        **(launcher.environ() if launcher is not None else {**os.environ, **MPI_ENV}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    deadline = time.monotonic() + 30
    while (left := session_processes(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for leftover in left:
        leftover.kill()
    assert not left, f"processes outlived the MPI job: {[p.pid for p in left]}"
    assert proc.returncode == 0, out + err
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def check_work(report: dict[str, Any]) -> None:
    assert report["chain"] == 10
    assert report["journal"] == [5, 5, ["finished"]]  # the driver journals; a rerun comes from the cache
    assert report["failure"] == [0, "ValueError"]
    assert report["chained"] == 12
    assert report["dependency"] == ["DependencyError", "ValueError"]
    assert report["map"] == [x * x for x in range(10)]
    assert report["parallel"] == [x * x for x in range(20)]


def test_the_mpi_libraries_asked_for_are_installed() -> None:
    """Every MPI library the run asks for (AIOFLOW_TEST_MPI; MPICH by default) is there to launch the tests below."""
    assert not missing(), "MPI libraries asked for and not installed:\n" + "\n".join(missing())


@pytest.mark.parametrize("launcher", launchers(), ids=str)
def test_graphs_executor_and_parallel_on_the_worker_ranks(launcher: Launcher) -> None:
    """mpiexec -n 3 python -m mpi4py.futures: rank 0 runs graphs, Executor and parallel maps on ranks 1 and 2."""
    report = run([*launcher.command(3), sys.executable, "-m", "mpi4py.futures", str(SCRIPT), "ranks"], launcher)
    assert (report["rank"], report["size"]) == (0, 3)
    assert report["library"].startswith({"mpich": "MPICH", "openmpi": "Open MPI"}[launcher.name])
    assert set(report["fan"]) <= {1, 2}
    check_work(report)


def test_spawned_workers_without_a_launcher() -> None:
    """A plain python process: the pool spawns its two MPI workers, which run the tasks and end with the pool."""
    report = run([sys.executable, str(SCRIPT), "spawn"])
    assert (report["rank"], report["size"]) == (0, 1)
    assert 1 <= len(report["fan"]) <= 2
    assert report["pid"] not in report["fan"]
    check_work(report)


@pytest.mark.parametrize("launcher", launchers(), ids=str)
def test_every_rank_running_the_script_is_refused_with_the_launch_command(launcher: Launcher) -> None:
    """mpiexec -n 2 python script.py (no -m mpi4py.futures): PoolError naming the command to use, on every rank."""
    report = run([*launcher.command(2), sys.executable, str(SCRIPT), "refused"], launcher)
    assert report["refused"] == "PoolError"
    assert "started without '-m mpi4py.futures'" in report["message"]
    assert "mpiexec -n 2 python -m mpi4py.futures script.py" in report["message"]


@pytest.mark.parametrize("launcher", launchers(), ids=str)
def test_a_job_without_worker_ranks_is_refused(launcher: Launcher) -> None:
    """mpiexec -n 1 python -m mpi4py.futures: no worker ranks, PoolError instead of a wait."""
    report = run([*launcher.command(1), sys.executable, "-m", "mpi4py.futures", str(SCRIPT), "refused"], launcher)
    assert report["refused"] == "PoolError"
    assert "no worker ranks" in report["message"]


def test_invalid_pool_options_are_refused_before_mpi_starts() -> None:
    """An unknown pool option or a start method is an OptionError, and MPI is not initialised."""
    with pytest.raises(aioflow.OptionError, match=r"keys among initializer"):
        aioflow.open_pool("mpi", pool_options={"workers": 2})
    with pytest.raises(aioflow.OptionError, match=r"'context' must be None for the 'mpi' pool"):
        aioflow.open_pool("mpi", context="spawn")
    assert "mpi4py.MPI" not in sys.modules or os.environ.get("PMI_RANK") is not None


def test_missing_mpi4py_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mpi4py installed, opening the pool says which extra to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a))
    with pytest.raises(aioflow.MissingExtraError, match=r"pip install 'aioflow\[mpi\]'"):
        aioflow.open_pool("mpi")
