"""MPI rank and size, without paying for ``MPI_Init`` when the process was not launched by MPI.

``from mpi4py import MPI`` initialises MPI, which costs about 350 ms even in a
process no launcher started. So `mpi4py.MPI` is imported only when the
process is part of an MPI job: a launcher's environment variables are set
(OpenMPI's ``OMPI_COMM_WORLD_SIZE``, PMI's ``PMI_SIZE``, PMIx's
``PMIX_RANK``), or mpi4py's ``MPI`` is imported already (``python -m
mpi4py.futures`` imports it). Otherwise this is a job of one process: rank 0,
size 1.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["get_rank", "get_size", "launched_by_mpi"]

# (rank, size) environment variables of the launchers: OpenMPI, MPICH/Intel MPI (PMI), PMIx.
_LAUNCHER_VARIABLES = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI_RANK", "PMI_SIZE"),
    ("PMIX_RANK", "PMIX_SIZE"),
)


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (``mpiexec``, ``srun``) started this process."""
    return any(rank in os.environ for rank, _ in _LAUNCHER_VARIABLES)


def _comm_world() -> Any:
    if "mpi4py.MPI" not in sys.modules and not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


def _from_environment(which: int) -> int | None:
    for names in _LAUNCHER_VARIABLES:
        value = os.environ.get(names[which])
        if value is not None and value.isdigit():
            return int(value)
    return None


def get_rank() -> int:
    """This process's rank in the MPI job: 0 for the master, and for a process not launched by MPI."""
    comm = _comm_world()
    if comm is not None:
        return int(comm.Get_rank())
    return _from_environment(0) or 0


def get_size() -> int:
    """The number of processes in the MPI job: 1 for a process not launched by MPI."""
    comm = _comm_world()
    if comm is not None:
        return int(comm.Get_size())
    return _from_environment(1) or 1
