"""Parallel map over worker processes, with the API of ``scinexus.parallel``: ``imap``, ``map``, ``as_completed``.

Not imported by ``import aioflow``; ``import aioflow.parallel`` imports
neither mpi4py, loky nor cloudpickle (each is imported when first needed).

    import aioflow.parallel as parallel

    squares = parallel.map(square, range(1000))             # warm worker processes, results in order
    for result in parallel.as_completed(fit, scans, max_workers=4):
        ...
    parallel.set_parallel_backend("loky")                   # or "mpi", "thread", "process", "billiard", ...

    class RayBackend(parallel.Parallel): ...                # another engine: scinexus's interface

See docs/parallel.md.
"""

from __future__ import annotations

from .._errors import SerialExecutionError as SerialExecutionError
from .._errors import SerialExecutionWarning as SerialExecutionWarning
from .._errors import UnsendableFunctionError as UnsendableFunctionError
from ._api import BACKEND_TYPES as BACKEND_TYPES
from ._api import DEFAULT_BACKEND as DEFAULT_BACKEND
from ._api import as_completed as as_completed
from ._api import available_backends as available_backends
from ._api import get_parallel_backend as get_parallel_backend
from ._api import get_rank as get_rank
from ._api import get_size as get_size
from ._api import imap as imap
from ._api import is_master_process as is_master_process
from ._api import map as map
from ._api import set_parallel_backend as set_parallel_backend
from ._api import shutdown as shutdown
from ._backends import Backend as Backend
from ._backends import ExecutorBackend as ExecutorBackend
from ._backends import LokyBackend as LokyBackend
from ._backends import MPIBackend as MPIBackend
from ._backends import MPIUnavailableError as MPIUnavailableError
from ._backends import Parallel as Parallel
from ._backends import PoolBackend as PoolBackend
from ._backends import Session as Session
from ._backends import ThreadBackend as ThreadBackend
from ._chunks import UNSIZED_CHUNKSIZE as UNSIZED_CHUNKSIZE
from ._chunks import PicklableAndCallable as PicklableAndCallable
from ._chunks import get_default_chunksize as get_default_chunksize
from ._chunks import run_chunk as run_chunk
from ._multiprocess import MultiprocessBackend as MultiprocessBackend
from ._options import IF_SERIAL_CHOICES as IF_SERIAL_CHOICES
from ._options import ParallelOptionError as ParallelOptionError
from ._options import ParallelOptionTypeError as ParallelOptionTypeError

__all__ = [
    "BACKEND_TYPES",
    "DEFAULT_BACKEND",
    "IF_SERIAL_CHOICES",
    "UNSIZED_CHUNKSIZE",
    "Backend",
    "ExecutorBackend",
    "LokyBackend",
    "MPIBackend",
    "MPIUnavailableError",
    "MultiprocessBackend",
    "Parallel",
    "ParallelOptionError",
    "ParallelOptionTypeError",
    "PicklableAndCallable",
    "PoolBackend",
    "SerialExecutionError",
    "SerialExecutionWarning",
    "Session",
    "ThreadBackend",
    "UnsendableFunctionError",
    "as_completed",
    "available_backends",
    "get_default_chunksize",
    "get_parallel_backend",
    "get_rank",
    "get_size",
    "imap",
    "is_master_process",
    "map",
    "run_chunk",
    "set_parallel_backend",
    "shutdown",
]


def __getattr__(name: str) -> int:
    """``SIZE``, scinexus's constant (`_maps.worker_budget`), worked out when first read.

    Not at import: in an MPI job that asks MPI, and importing this module never initialises MPI.
    """
    if name == "SIZE":
        from ._maps import worker_budget

        return worker_budget()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


# Show the public path in reprs and tracebacks (aioflow.parallel.SerialExecutionError).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and getattr(_obj, "__module__", "").startswith("aioflow.parallel."):
        try:
            _obj.__module__ = "aioflow.parallel"
        except (AttributeError, TypeError):
            pass
del _name, _obj
