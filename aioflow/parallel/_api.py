"""The public functions: ``imap``, ``map``, ``as_completed``, the backend choice, ranks and size, ``shutdown``.

Data flow of a map. `imap` validates its arguments and picks the backend. A
`Parallel` of another engine gets the call as scinexus makes it; an aioflow
`Backend` goes through `run_map`, which decides the number of workers and
whether the run would be serial, all before any worker starts. The
generator it returns then opens a `Session` on the backend (warm workers are
lent to it), cuts the input into chunks as it goes (`_chunks.chunks`), keeps
at most ``session.capacity`` chunks submitted and not yet yielded, and yields
results in input order (`imap`) or as chunks finish (`as_completed`). So a
map over a generator of any length holds a bounded number of items:
``(capacity + 1) * chunksize`` at most.

Worker counts. A map never starts more workers than it has chunks, nor more
than the backend's `Backend.worker_limit` (the CPUs, for backends whose
workers run here): ``imap`` and ``map`` refuse a larger ``max_workers`` and
``as_completed`` clamps it, as scinexus does; on a cluster backend, a count
above the pools' bound (`aioflow.pools._options.MAX_WORKERS`) is refused.

Module state (under ``_lock``): the default backend, the backends made from
names (so one name always means the same warm workers), and the backends
that have run a map (stopped by `shutdown` and at interpreter exit).
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import warnings
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import OptionError, SerialExecutionError, SerialExecutionWarning
from ..pools._options import MAX_WORKERS
from ._backends import (
    Backend,
    LokyBackend,
    MPIBackend,
    Parallel,
    PoolBackend,
    ThreadBackend,
    cpu_count,
    warn_ignored_max_workers,
)
from ._chunks import PicklableAndCallable, chunks, in_worker, raise_outcome, worker_rank
from ._mpi import get_rank as mpi_rank
from ._mpi import get_size
from ._multiprocess import MultiprocessBackend
from ._options import ParallelOptionError, ParallelOptionTypeError, check_if_serial, check_optional_count

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
    "run_map",
    "set_parallel_backend",
    "shutdown",
    "worker_budget",
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
_used: list[Backend] = []
_exit_hook_registered = False


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


def shutdown() -> None:
    """Stop the warm workers of every backend that ran a map. Blocking.

    Backends stay usable: the next map starts new workers. Called at
    interpreter exit too.
    """
    with _lock:
        used = list(_used)
        _used.clear()
    for backend in used:
        backend.shutdown()


def _remember(backend: Backend) -> None:
    global _exit_hook_registered
    with _lock:
        if not any(b is backend for b in _used):
            _used.append(backend)
        if not _exit_hook_registered:
            import atexit

            # Registered after multiprocessing's own exit hook, so it runs before
            # it: our workers are asked to exit before multiprocessing joins them.
            atexit.register(shutdown)
            _exit_hook_registered = True


# --------------------------------------------------------------------------- ranks


def get_rank() -> int:
    """This process's rank: its MPI rank in an MPI job; otherwise 0 in the master and 1 or more in a map's worker.

    A worker's number is that of its thread (a thread backend's worker) or
    of its process (`_chunks.worker_rank`).
    """
    return mpi_rank() if get_size() > 1 else worker_rank()


def worker_budget() -> int:
    """The workers a map gets by default: the MPI job's worker ranks (its size minus the master), else the CPUs.

    scinexus's ``SIZE`` (`aioflow.parallel.SIZE` reads it when first asked for).
    """
    size = get_size()
    return size - 1 if size > 1 else cpu_count()


def is_master_process() -> bool:
    """Whether this process is the master: rank 0, and not a task running in a worker of a map."""
    return get_rank() == 0 and not in_worker()


# --------------------------------------------------------------------------- maps


def _worker_count(backend: Backend, max_workers: object, *, clamp: bool) -> int:
    """The workers a map asks of ``backend``, before the input's length is known.

    Raises:
        ParallelOptionError: ``max_workers`` is invalid, or above the backend's limit (unless ``clamp``).
    """
    given = check_optional_count(max_workers, "max_workers")
    limit = backend.worker_limit()
    requested = given or limit or cpu_count()
    if limit is not None and requested > limit:
        if not clamp:
            expected = f"an int from 1 to the CPU count ({limit}), or None"
            message = (
                f"max_workers ({requested}) must be less than or equal to CPU count ({limit}): more workers than "
                "CPUs only compete for them (as_completed clamps a larger count instead)"
            )
            raise ParallelOptionError("max_workers", expected, max_workers, message)
        requested = limit
    elif limit is None and requested > MAX_WORKERS:
        expected = f"an int from 1 to {MAX_WORKERS}, or None"
        message = f"max_workers ({requested}) must be less than or equal to {MAX_WORKERS}, the most any pool takes"
        raise ParallelOptionError("max_workers", expected, max_workers, message)
    workers = backend.worker_count(requested)
    if isinstance(backend, MPIBackend):
        warn_ignored_max_workers(backend, given, workers)
    return workers


def _serial_reason(backend: Backend, workers: int) -> tuple[str, str] | None:
    """Why a map would run serially in this process, and what to do instead; ``None`` if it runs on workers."""
    if in_worker():
        return (
            "it was called by a task that runs in a worker of another map (maps do not nest)",
            "parallelise the outer map only",
        )
    if workers == 1 and isinstance(backend, MPIBackend):
        return (
            "this MPI job has one worker process (MPI size 2)",
            "launch it with more processes: mpiexec -n 3 python -m mpi4py.futures script.py, or more",
        )
    return None


def _length(s: Iterable[Any]) -> int | None:
    try:
        return len(s)  # type: ignore[arg-type]
    except TypeError:
        return None


def _serial_decision(mode: str, fn: Callable[..., Any], reason: tuple[str, str]) -> None:
    """Apply ``if_serial`` to a serial run: raise, warn, or nothing."""
    name = PicklableAndCallable(fn).name
    if mode == "raise":
        raise SerialExecutionError(name, *reason)
    if mode == "warn":
        msg = f"aioflow.parallel: mapping {name} runs in serial in this process: {reason[0]}; {reason[1]}"
        warnings.warn(msg, SerialExecutionWarning, stacklevel=4)


def run_map(
    backend: Backend,
    f: Callable[[T], R],
    s: Iterable[T],
    max_workers: int | None,
    *,
    chunksize: int | None,
    if_serial: str,
    ordered: bool,
) -> Generator[R, None, None]:
    """A map of ``f`` over ``s`` on ``backend``: results in input order (``ordered``) or as computed.

    Validates every argument and decides the worker count now; the workers
    start when the generator is first advanced.
    """
    if not callable(f):
        raise OptionError("f", "a callable", f)
    mode = check_if_serial(if_serial)
    size = check_optional_count(chunksize, "chunksize")
    workers = _worker_count(backend, max_workers, clamp=not ordered)
    reason = _serial_reason(backend, workers)
    if reason is not None:
        _serial_decision(mode, f, reason)
        return _serial(f, s)
    return _run(backend, f, s, workers, size, ordered=ordered)


def _serial(f: Callable[[T], R], s: Iterable[T]) -> Generator[R, None, None]:
    for item in s:
        yield f(item)


def _run(
    backend: Backend,
    f: Callable[[T], R],
    s: Iterable[T],
    workers: int,
    chunksize: int | None,
    *,
    ordered: bool,
) -> Generator[R, None, None]:
    items = iter(s)
    length = _length(s)
    if length is None:
        # A generator's length is known only by reading it: enough for every worker to have a chunk.
        size = chunksize or backend.default_chunksize(s, workers)
        head = list(itertools.islice(items, workers * size))
        length = len(head)
        items = itertools.chain(head, items)
    else:
        size = chunksize or backend.default_chunksize(s, max(1, min(workers, length)))
    if length == 0:
        return
    # Never more workers than chunks: the others would start only to sit idle.
    workers = min(workers, math.ceil(length / size))
    fn = PicklableAndCallable(f)
    session = backend.open_session(fn, workers)
    _remember(backend)
    todo = enumerate(chunks(items, size))
    in_flight = 0
    exhausted = False
    done: dict[int, list[Any]] = {}  # finished chunks waiting for an earlier one (ordered maps)
    next_index = 0
    finished_normally = False
    try:
        while True:
            while not exhausted and in_flight + len(done) < session.capacity:
                try:
                    index, chunk = next(todo)
                except StopIteration:
                    exhausted = True
                    break
                session.submit(index, chunk)
                in_flight += 1
            if in_flight == 0:
                break
            for index, outcome in session.wait():
                in_flight -= 1
                results = raise_outcome(outcome, fn, index * size, session.remote)
                if ordered:
                    done[index] = results
                else:
                    yield from results
            while next_index in done:
                yield from done.pop(next_index)
                next_index += 1
        finished_normally = True
    finally:
        session.close(abandoned=not finished_normally)


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
