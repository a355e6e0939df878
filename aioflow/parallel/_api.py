"""The public functions: ``imap``, ``map``, ``as_completed``, the backend choice, ranks and size, ``shutdown``.

`imap`, `map` and `as_completed` validate their arguments and pick the
backend. A `Parallel` of another engine gets the call as scinexus makes
it; an aioflow `Backend` goes through the map driver,
`aioflow.parallel._maps.run_map`, which also holds the ranks and `shutdown`.

Module state (under ``_lock``): the default backend, and the backends made
from names (so one name always means the same warm workers).
"""

from __future__ import annotations

import sys
import threading
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from .._errors import OptionError
from ._backends import Backend, LokyBackend, MPIBackend, Parallel, PoolBackend, ThreadBackend
from ._chunks import in_worker
from ._maps import get_rank, run_map, shutdown
from ._mpi import get_size
from ._multiprocess import MultiprocessBackend
from ._options import ParallelOptionError, ParallelOptionTypeError, check_if_serial

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable

__all__ = [
    "BACKEND_TYPES",
    "DEFAULT_BACKEND",
    "as_completed",
    "available_backends",
    "get_parallel_backend",
    "get_rank",
    "get_size",
    "imap",
    "is_master_process",
    "map",
    "set_parallel_backend",
    "shutdown",
]

T = TypeVar("T")
R = TypeVar("R")

#: The backend used when `set_parallel_backend` was not called: warm worker
#: processes, the fastest transport measured (docs/performance.md). On a
#: free-threaded build running without the GIL, the master's default is
#: ``"thread"`` instead, as scinexus's.
DEFAULT_BACKEND = "multiprocess"

#: scinexus's backend names and the classes they make (``"threads"`` is aioflow's ``"thread"``).
BACKEND_TYPES: MappingProxyType[str, type[Backend]] = MappingProxyType(
    {"multiprocess": MultiprocessBackend, "threads": ThreadBackend, "loky": LokyBackend, "mpi": MPIBackend}
)

# Names accepted besides the aioflow pools: scinexus spells the thread backend "threads".
_OWN_BACKENDS = ("multiprocess", "loky", "mpi")
_ALIASES = {"threads": "thread"}

_lock = threading.RLock()
_default: Parallel | None = None
_named: dict[str, Backend] = {}


# --------------------------------------------------------------------------- backends


def available_backends() -> tuple[str, ...]:
    """The backend names `set_parallel_backend` accepts in this installation (optional libraries aside)."""
    from ..pools import available_pools

    return (*_OWN_BACKENDS, *available_pools(), *_ALIASES)


def _make_backend(name: str) -> Backend:
    if name == "multiprocess":
        return MultiprocessBackend()
    if name == "thread":
        return ThreadBackend()
    if name == "loky":
        return LokyBackend()
    if name == "mpi":
        return MPIBackend()
    return PoolBackend(name)


def _backend_named(name: str) -> Backend:
    if not isinstance(name, str):
        expected = "a backend name, a Parallel instance or None"
        raise ParallelOptionTypeError("backend", expected, name, f"backend must be {expected}, got {name!r}")
    key = _ALIASES.get(name, name)
    if key not in _OWN_BACKENDS:
        from ..pools import available_pools

        if key not in available_pools():
            _refuse_backend_name(name)
    with _lock:
        backend = _named.get(key)
        if backend is None:
            backend = _named[key] = _make_backend(key)
    backend.check_installed()  # on every use: the library may have gone (or been hidden) since
    return backend


def _refuse_backend_name(name: str) -> None:
    import difflib

    names = available_backends()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(repr(n) for n in names)
    expected = f"one of {listed}, or a Parallel instance"
    raise ParallelOptionError("backend", expected, name, f"unknown backend {name!r}: expected {expected}{hint}")


def _automatic_backend() -> str:
    """The default backend's name: threads where they run at once (no GIL) in the master, else `DEFAULT_BACKEND`.

    Asked on every call, as scinexus does: importing an extension without
    free-threading support turns the GIL back on at any time.
    """
    import multiprocessing

    probe = getattr(sys, "_is_gil_enabled", None)
    gil = True if probe is None else bool(probe())
    return DEFAULT_BACKEND if gil or multiprocessing.parent_process() is not None else "thread"


def set_parallel_backend(backend: str | Parallel | None = None) -> None:
    """Choose the backend every following map uses (process-wide).

    Args:
        backend: a name (``"multiprocess"``, the default; ``"loky"``;
            ``"mpi"``; ``"threads"``; any aioflow pool: ``"thread"``,
            ``"process"``, ``"billiard"``, ...), a `Parallel` instance (an
            aioflow `Backend`, or another engine's), or ``None`` for the
            default.

    Raises:
        ParallelOptionError: an unknown name (a `ValueError`).
        MissingExtraError: the backend's library is not installed (an `ImportError`).
    """
    global _default
    chosen = backend if backend is None or isinstance(backend, Parallel) else _backend_named(backend)
    with _lock:
        _default = chosen


def get_parallel_backend(backend: str | Parallel | None = None) -> Parallel:
    """The backend maps use now, or, given a name, the backend of that name (without making it the default).

    Raises:
        ParallelOptionError: an unknown name (a `ValueError`).
        MissingExtraError: the backend's library is not installed (an `ImportError`).
    """
    if isinstance(backend, Parallel):
        return backend
    if backend is not None:
        return _backend_named(backend)
    with _lock:
        current = _default
    return current if current is not None else _backend_named(_automatic_backend())


# --------------------------------------------------------------------------- ranks


def is_master_process() -> bool:
    """Whether this process is the master: rank 0, and not a task running in a worker of a map."""
    return get_rank() == 0 and not in_worker()


# --------------------------------------------------------------------------- maps


def _dispatch(
    f: Callable[[T], R],
    s: Iterable[T],
    max_workers: int | None,
    use_mpi: bool,
    if_serial: str,
    chunksize: int | None,
    *,
    ordered: bool,
) -> Generator[R, None, None]:
    mode = check_if_serial(if_serial)
    if not isinstance(use_mpi, bool):
        raise OptionError("use_mpi", "True or False", use_mpi)
    backend = get_parallel_backend("mpi" if use_mpi else None)
    if isinstance(backend, Backend):
        return run_map(backend, f, s, max_workers, chunksize=chunksize, if_serial=mode, ordered=ordered)
    return _delegate(backend, f, s, max_workers, chunksize, ordered=ordered)


def _delegate(
    backend: Parallel,
    f: Callable[[T], R],
    s: Iterable[T],
    max_workers: int | None,
    chunksize: int | None,
    *,
    ordered: bool,
) -> Generator[R, None, None]:
    """Another engine's map, called as scinexus calls it."""
    method = backend.imap if ordered else backend.as_completed
    yield from method(f, s, max_workers=max_workers, chunksize=chunksize)


def imap(
    f: Callable[[T], R],
    s: Iterable[T],
    max_workers: int | None = None,
    use_mpi: bool = False,
    if_serial: str = "raise",
    chunksize: int | None = None,
) -> Generator[R, None, None]:
    """Apply ``f`` to every item of ``s`` in worker processes; yield the results in input order.

    Lazy and bounded: items are read from ``s`` as workers need them; at
    most ``workers * max(2 * chunksize, 1024) + chunksize`` items are read
    and not yet yielded, so ``s`` may be a generator of any length. The workers stay warm for the next map
    (`shutdown` stops them). A map starts no more workers than it has chunks.

    Args:
        f: a function of one argument. Functions defined in ``__main__`` or a
            notebook, lambdas and closures are sent by value (cloudpickle).
        s: the items.
        max_workers: the number of workers (``None``: one per CPU), an int
            (numpy's too) from 1 to the CPU count on backends whose workers
            run here. Ignored under MPI, where it is the job's size minus one.
        use_mpi: run on the MPI job's worker ranks (the ``mpi`` backend) instead of the default backend.
        if_serial: what to do when the map would run serially in this
            process (called from a task in a worker of another map, or an
            MPI job with one worker): ``"raise"`` a `SerialExecutionError`,
            ``"warn"`` (a `SerialExecutionWarning`) and run, or ``"ignore"``
            and run.
        chunksize: items per chunk sent to a worker (``None``:
            `get_default_chunksize`; 1 on the thread backend).

    Raises:
        ParallelOptionError: an invalid argument (before any worker starts),
            such as more workers than CPUs; a `ParallelOptionTypeError` (a
            `TypeError` too) for one of the wrong type.
        SerialExecutionError: the map would run serially, with ``if_serial="raise"``.
        UnsendableFunctionError: ``f`` cannot be sent to a worker process.
        WorkerLostError: a worker process died while it ran a chunk.
        MissingExtraError: the backend's library is not installed.
        MPIUnavailableError: ``use_mpi`` in a process not launched by MPI.
        Exception: the first exception ``f`` raised, in input order, with the
            worker's traceback as ``__cause__``.
    """
    return _dispatch(f, s, max_workers, use_mpi, if_serial, chunksize, ordered=True)


def map(
    f: Callable[[T], R],
    s: Iterable[T],
    max_workers: int | None = None,
    use_mpi: bool = False,
    if_serial: str = "raise",
    chunksize: int | None = None,
) -> list[R]:
    """`imap`, as a list."""
    return list(_dispatch(f, s, max_workers, use_mpi, if_serial, chunksize, ordered=True))


def as_completed(
    f: Callable[[T], R],
    s: Iterable[T],
    max_workers: int | None = None,
    use_mpi: bool = False,
    if_serial: str = "raise",
    chunksize: int | None = None,
) -> Generator[R, None, None]:
    """`imap`, yielding results as they are computed: chunk by chunk in completion order.

    Within a chunk, results keep their input order; with ``chunksize=1`` the
    order is the tasks' completion order. Takes the same arguments as `imap`
    (scinexus's signature: ``f, s``, not a list of futures), except that a
    ``max_workers`` above the CPU count is clamped to it, as scinexus does.
    """
    return _dispatch(f, s, max_workers, use_mpi, if_serial, chunksize, ordered=False)
