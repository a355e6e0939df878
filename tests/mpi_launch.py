"""How the tests launch a real MPI job: with every MPI library this machine has, each with its own ``mpiexec``.

- ``mpich``: MPICH from PyPI (the ``test`` extra installs the ``mpich`` wheel,
  whose ``mpiexec`` lies next to the interpreter), else an MPICH ``mpiexec``
  on PATH;
- ``openmpi``: Open MPI from the system's packages (Debian's ``openmpi-bin``:
  ``mpiexec.openmpi``, ``libmpi.so.40``), as a cluster provides it.

mpi4py's wheel loads whichever library it is told to (``MPI4PY_LIBMPI``), so
the same installation runs under both. ``AIOFLOW_TEST_MPI`` names the
libraries a run must have (default ``mpich``; ``.ci/run`` asks for both):
`test_the_mpi_libraries_asked_for_are_installed` fails when one is missing,
so that a test parametrized over `launchers` cannot silently lose a case.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

INSTALL = {
    "mpich": "pip install -e '.[test]' (it brings MPICH's mpiexec)",
    "openmpi": "apt-get install -y openmpi-bin openssh-client (Debian's Open MPI: mpiexec.openmpi, libmpi.so.40)",
}

# OpenMPI refuses to run as root unless told twice; CI containers run as root.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@dataclass(frozen=True)
class Launcher:
    """One MPI library: its ``mpiexec`` and what the launched processes need in their environment."""

    name: str
    mpiexec: str
    env: dict[str, str] = field(default_factory=dict)

    def command(self, n: int) -> list[str]:
        """``mpiexec -n N`` (Open MPI needs ``--oversubscribe`` for more processes than cores: CI has 2)."""
        return [self.mpiexec, "-n", str(n), *(["--oversubscribe"] if self.name == "openmpi" else [])]

    def environ(self) -> dict[str, str]:
        return {**os.environ, **MPI_ENV, **self.env}

    def __str__(self) -> str:
        return self.name


def _version(mpiexec: str) -> str:
    try:
        done = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return ""
    return done.stdout + done.stderr


def _is_open_mpi(mpiexec: str) -> bool:
    version = _version(mpiexec)
    return "Open MPI" in version or "OpenRTE" in version


def _mpich() -> Launcher | None:
    own = Path(sys.executable).with_name("mpiexec")
    if own.exists():
        return Launcher("mpich", str(own))
    found = shutil.which("mpiexec")
    if found is not None and "HYDRA" in _version(found):  # MPICH's process manager
        return Launcher("mpich", found)
    return None


def _open_mpi() -> Launcher | None:
    for candidate in ("mpiexec.openmpi", "mpiexec"):
        found = shutil.which(candidate)
        if found is not None and _is_open_mpi(found):
            # mpi4py loads Open MPI's library, not the MPICH wheel's it would find first.
            return Launcher("openmpi", found, {"MPI4PY_LIBMPI": "libmpi.so.40"})
    return None


@functools.cache
def launchers() -> list[Launcher]:
    """The MPI libraries installed here, each as a `Launcher` (looked up once per test run)."""
    return [launcher for launcher in (_mpich(), _open_mpi()) if launcher is not None]


def required() -> list[str]:
    """The MPI libraries this run must have (``AIOFLOW_TEST_MPI``, comma-separated; default ``mpich``)."""
    names = [name.strip() for name in os.environ.get("AIOFLOW_TEST_MPI", "mpich").split(",") if name.strip()]
    unknown = set(names) - set(INSTALL)
    if unknown:
        msg = f"AIOFLOW_TEST_MPI names unknown MPI libraries {sorted(unknown)}; known: {sorted(INSTALL)}"
        raise ValueError(msg)
    return names


def missing() -> list[str]:
    """A line per MPI library asked for and not installed, with how to install it."""
    have = {launcher.name for launcher in launchers()}
    return [f"{name}: {INSTALL[name]}" for name in required() if name not in have]
