"""The mpi backend under a real ``mpiexec``, and MPI rank/size without MPI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mpi_launch import Launcher, launchers

import aioflow
import aioflow.parallel as par

SCRIPT = Path(__file__).with_name("mpi_script.py")


@pytest.mark.parametrize("launcher", launchers(), ids=str)
def test_map_on_mpi_worker_ranks(launcher: Launcher) -> None:
    """mpiexec -n 3: rank 0 is the master of a job of size 3; ranks 1 and 2 compute every result."""
    command = [*launcher.command(3), sys.executable, "-m", "mpi4py.futures", str(SCRIPT)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=launcher.environ(), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["master"] == [0, 3, True]
    assert report["workers"] == [2, 2]  # scinexus's SIZE and the backend's get_size(): the ranks but the master
    expected = [x * x for x in range(12)]
    for key in ("imap", "as_completed"):
        rows = report[key]
        assert {rank for rank, _, _, _ in rows} <= {1, 2}, key
        assert {size for _, size, _, _ in rows} == {3}, key
        assert not any(master for _, _, master, _ in rows), key
    assert [value for *_, value in report["imap"]] == expected
    assert sorted(value for *_, value in report["as_completed"]) == expected
    assert report["default"] == "ok"


def test_use_mpi_outside_an_mpi_job_says_how_to_launch() -> None:
    """use_mpi=True in a process no MPI launcher started fails with the launch command, before any worker."""
    with pytest.raises(aioflow.PoolError, match=r"mpiexec -n 3 python -m mpi4py.futures"):
        par.map(abs, range(4), use_mpi=True)
    assert par.get_rank() == 0
    assert par.get_size() == 1
    assert par.SIZE == len(os.sched_getaffinity(0))  # the workers a map gets by default: the CPUs
