"""The ``mpi`` pool: tasks run on MPI processes through ``mpi4py.futures.MPIPoolExecutor`` (``pip install 'aioflow[mpi]'``).

Two ways to get the workers, chosen when the pool is first used:

- *The job's ranks* (clusters; the way to use a batch allocation): the
  program is started as ``mpiexec -n N python -m mpi4py.futures script.py``.
  Rank 0 runs the script and the scheduler; ranks 1 to N-1 are the workers
  (``max_workers`` does not change their number). ``srun`` works the same way
  in place of ``mpiexec``.
- *Spawned workers* (one machine): the program is started as a plain
  ``python script.py``; the pool spawns ``max_workers`` worker processes with
  ``MPI_Comm_spawn``. MPICH, including the wheel from PyPI that
  ``aioflow[mpi]`` brings, supports this from a singleton process. Like
  multiprocessing's spawn, the workers import the main module, so the
  script keeps its work under ``if __name__ == "__main__":``.

Anything else is refused with `aioflow.PoolError` saying how to launch,
instead of running the graph once per rank or waiting for workers that never
come: a job of several ranks started without ``-m mpi4py.futures`` (every
rank would run the whole script), and a ``-m mpi4py.futures`` job of one
rank (no worker ranks).

Data flow: the scheduler's ``run_in_executor`` submits to the
``MPIPoolExecutor``; mpi4py's manager thread pickles the call to an idle
worker rank and resolves the future with its outcome. ``mpi4py.MPI`` (which
initialises MPI) is imported only when the pool is first used.

Stopping: MPI cannot interrupt a rank. `MPIPool.abort` cancels the queued
calls and lets running ones finish; closing the pool waits for them. A rank
that dies usually ends the whole MPI job (the launcher kills the others), so
there is no lost worker to report: the program ends with the launcher's
error.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import TYPE_CHECKING

from .._errors import MissingExtraError, OptionError, PoolError
from ._base import Pool

if TYPE_CHECKING:
    import concurrent.futures

    from ._options import PoolOptions

__all__ = ["MPIPool", "launch_command"]

logger = logging.getLogger("aioflow.pools")

# MPIPoolExecutor keyword arguments the pool passes on (the spawn options, and the initializer).
_OPTIONS = ("initializer", "initargs", "python_exe", "python_args", "mpi_info", "main", "path", "wdir", "env")


def launch_command(workers: int = 2) -> str:
    """The command that starts a script on ``workers`` MPI worker ranks."""
    return f"mpiexec -n {workers + 1} python -m mpi4py.futures script.py"


def _shared_pool_active() -> bool:
    """Whether this process is rank 0 of ``python -m mpi4py.futures`` (the job's other ranks serve it)."""
    core = sys.modules.get("mpi4py.futures._core")
    return core is not None and getattr(core, "SharedPool", None) is not None


class MPIPool(Pool):
    """Tasks run on MPI processes: the worker ranks of ``mpiexec -n N python -m mpi4py.futures``, or spawned ones.

    ``pool_options`` go to ``MPIPoolExecutor``: ``initializer``, ``initargs``,
    and for spawned workers ``python_exe``, ``python_args``, ``mpi_info``,
    ``main``, ``path``, ``wdir``, ``env``. ``scaling_workers`` and
    ``idle_timeout`` do not apply: MPI workers live as long as the pool.
    """

    name = "mpi"
    workers_elsewhere = True

    def _validate(self, options: PoolOptions) -> None:
        if importlib.util.find_spec("mpi4py") is None:
            raise MissingExtraError("the 'mpi' pool", "mpi4py", "mpi")
        if options.context is not None:
            raise OptionError("context", "None for the 'mpi' pool (MPI starts its workers)", options.context)
        unknown = set(options.extra) - set(_OPTIONS)
        if unknown:
            raise OptionError("pool_options", f"a dict with keys among {', '.join(_OPTIONS)}", options.extra)

    def _default_max_workers(self) -> int:
        if _shared_pool_active():
            from mpi4py import MPI  # imported already by mpi4py.futures

            return max(1, int(MPI.COMM_WORLD.Get_size()) - 1)
        return os.cpu_count() or 1

    def _create_executor(self) -> concurrent.futures.Executor:
        from mpi4py import MPI
        from mpi4py.futures import MPIPoolExecutor

        world = MPI.COMM_WORLD
        size, rank = int(world.Get_size()), int(world.Get_rank())
        options = dict(self.options.extra)
        if _shared_pool_active():
            if size < 2:
                msg = (
                    "the 'mpi' pool has no worker ranks: the MPI job has a single process. "
                    f"Start it with more, for example: {launch_command(2)}"
                )
                raise PoolError(msg)
            if self.options.max_workers is not None and self.options.max_workers != size - 1:
                logger.warning(
                    "max_workers=%d is ignored by the 'mpi' pool: the MPI job has %d worker ranks",
                    self.options.max_workers,
                    size - 1,
                )
            executor: concurrent.futures.Executor = MPIPoolExecutor(**options)
            return executor
        if size > 1:
            msg = (
                f"the 'mpi' pool runs in rank {rank} of an MPI job of {size} processes that was started without "
                "'-m mpi4py.futures', so every rank runs the whole script. "
                f"Start it as: {launch_command(size - 1)} (rank 0 runs the script, the others are the workers), "
                "or as a plain 'python script.py' to spawn the workers"
            )
            raise PoolError(msg)
        executor = MPIPoolExecutor(max_workers=self.capacity, **options)
        return executor

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        # MPI cannot interrupt a rank: the running calls finish there, unobserved.
        executor.shutdown(wait=False, cancel_futures=True)
