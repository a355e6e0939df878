"""How the tests launch a real MPI job: the interpreter's own ``mpiexec`` (MPICH from PyPI), else PATH's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

INSTALL = (
    "pip install -e '.[test]' (it brings MPICH's mpiexec), or install an MPI library and pip install 'aioflow[mpi]'"
)

# OpenMPI refuses to run as root unless told twice; CI containers run as root.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def mpiexec(n: int) -> list[str]:
    """The launcher of the MPI library mpi4py loads, for ``n`` processes (fails the test when there is none)."""
    own = Path(sys.executable).with_name("mpiexec")
    found = str(own) if own.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.fail(f"mpiexec is neither next to {sys.executable} nor on PATH: {INSTALL}")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60, check=False)
    # Open MPI needs --oversubscribe to start more processes than cores (the CI machine has 2).
    open_mpi = "Open MPI" in version.stdout + version.stderr or "OpenRTE" in version.stdout + version.stderr
    return [found, "-n", str(n), *(["--oversubscribe"] if open_mpi else [])]
