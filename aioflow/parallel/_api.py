"""The public functions: ``imap``, ``map``, ``as_completed``, the backend choice, MPI rank and size, ``shutdown``.

Data flow of a map. `imap` validates its arguments, picks the backend and the
number of workers, and decides whether the run would be serial, all before
any worker starts. The generator it returns then opens a `Session` on the
backend (warm workers are lent to it), cuts the input into chunks as it goes
(`_chunks.chunks`), keeps at most ``session.capacity`` chunks submitted and
not yet yielded, and yields results in input order (`imap`) or as chunks
finish (`as_completed`). So a map over a generator of any length holds a
bounded number of items: ``(capacity + 1) * chunksize`` at most.

Module state (under ``_lock``): the default backend, the backends made from
names (so one name always means the same warm workers), and the backends
that have run a map (stopped by `shutdown` and at interpreter exit).
"""

from __future__ import annotations

import itertools
import threading
import warnings
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import OptionError, SerialExecutionError, SerialExecutionWarning
from ._backends import (
    Backend,
    LokyBackend,
    MPIBackend,
    PoolBackend,
    cpu_count,
    warn_ignored_max_workers,
)
from ._chunks import PicklableAndCallable, chunks, get_default_chunksize, in_worker, raise_outcome
from ._mpi import get_rank, get_size

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable

__all__ = [
    "DEFAULT_BACKEND",
    "IF_SERIAL_CHOICES",
    "as_completed",
    "available_backends",
    "get_parallel_backend",
    "get_rank",
    "get_size",
    "imap",
    "is_master_process",
    "map",
    "resolve_max_workers",
    "set_parallel_backend",
    "shutdown",
]

T = TypeVar("T")
R = TypeVar("R")

#: The backend used when `set_parallel_backend` was not called: warm worker
#: processes, the fastest transport measured (docs/performance.md).
DEFAULT_BACKEND = "multiprocess"

#: What ``if_serial`` accepts (any letter case).
IF_SERIAL_CHOICES = ("raise", "warn", "ignore")

# Names accepted besides the aioflow pools: scinexus spells the thread backend "threads".
_OWN_BACKENDS = ("multiprocess", "loky", "mpi")
_ALIASES = {"threads": "thread"}

_lock = threading.RLock()
_default: Backend | None = None
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
        from ._multiprocess import MultiprocessBackend

        return MultiprocessBackend()
    if name == "loky":
        return LokyBackend()
    if name == "mpi":
        return MPIBackend()
    from ..pools import available_pools

    pool_type = _ALIASES.get(name, name)
    if pool_type in available_pools():
        return PoolBackend(pool_type)
    import difflib

    names = available_backends()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(repr(n) for n in names)
    raise OptionError("backend", f"a Backend or one of {listed}{hint}", name)


def _backend_named(name: str) -> Backend:
    if not isinstance(name, str):
        raise OptionError("backend", "a backend name, a Backend instance or None", name)
    key = _ALIASES.get(name, name)
    with _lock:
        backend = _named.get(key)
        if backend is None:
            backend = _named[key] = _make_backend(name)
        return backend


def set_parallel_backend(backend: str | Backend | None) -> None:
    """Choose the backend every following map uses (process-wide).

    Args:
        backend: a name (``"multiprocess"``, the default; ``"loky"``;
            ``"mpi"``; any aioflow pool: ``"thread"``, ``"process"``,
            ``"billiard"``, ...), a `Backend` instance, or ``None`` for the
            default.

    Raises:
        OptionError: an unknown name.
        MissingExtraError: the backend's library is not installed.
    """
    global _default
    chosen = None if backend is None else backend if isinstance(backend, Backend) else _backend_named(backend)
    with _lock:
        _default = chosen


def get_parallel_backend(backend: str | Backend | None = None) -> Backend:
    """The backend maps use now, or, given a name, the backend of that name (without making it the default).

    Raises:
        OptionError: an unknown name.
        MissingExtraError: the backend's library is not installed.
    """
    if isinstance(backend, Backend):
        return backend
    if backend is not None:
        return _backend_named(backend)
    with _lock:
        current = _default
    return current if current is not None else _backend_named(DEFAULT_BACKEND)


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


# --------------------------------------------------------------------------- MPI and workers


def is_master_process() -> bool:
    """Whether this process is the master: MPI rank 0, and not a task running in a worker of a map."""
    return get_rank() == 0 and not in_worker()


# --------------------------------------------------------------------------- maps


def resolve_max_workers(max_workers: int | None) -> int:
    """``max_workers``, validated; ``None`` gives the number of CPUs this process may use.

    Raises:
        OptionError: not an int >= 1 or None.
    """
    if max_workers is None:
        return cpu_count()
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise OptionError("max_workers", "an int >= 1 or None", max_workers)
    return max_workers


def _validate(f: Any, max_workers: Any, use_mpi: Any, if_serial: Any, chunksize: Any) -> tuple[int, str]:
    if not callable(f):
        raise OptionError("f", "a callable", f)
    requested = resolve_max_workers(max_workers)
    if not isinstance(use_mpi, bool):
        raise OptionError("use_mpi", "True or False", use_mpi)
    mode = if_serial.lower() if isinstance(if_serial, str) else if_serial
    if mode not in IF_SERIAL_CHOICES:
        choices = ", ".join(repr(c) for c in IF_SERIAL_CHOICES)
        raise OptionError("if_serial", f"one of {choices} (any letter case)", if_serial)
    if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1):
        raise OptionError("chunksize", "an int >= 1 or None (a default from the input's length)", chunksize)
    return requested, mode


def _serial_reason(backend: Backend, max_workers: int | None, workers: int, s: Iterable[Any]) -> tuple[str, str] | None:
    """Why a map would run serially, and what to do instead; ``None`` if it runs in parallel."""
    if in_worker():
        return (
            "it was called by a task that runs in a worker of another map (maps do not nest)",
            "parallelise the outer map only",
        )
    if workers == 1:
        if isinstance(backend, MPIBackend):
            return (
                "this MPI job has one worker process (MPI size 2)",
                "launch it with more processes: mpiexec -n 3 python -m mpi4py.futures script.py, or more",
            )
        if max_workers is None:
            return ("this process may use one CPU only (max_workers defaults to the CPU count)", "pass max_workers=2")
        return ("max_workers is 1", "pass max_workers=2 or more")
    if _length(s) == 1:
        return ("the input has one item", "map over two items or more")
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


def _plan(
    f: Callable[[T], R],
    s: Iterable[T],
    max_workers: int | None,
    use_mpi: bool,
    if_serial: str,
    chunksize: int | None,
    *,
    ordered: bool = True,
) -> Generator[R, None, None]:
    requested, mode = _validate(f, max_workers, use_mpi, if_serial, chunksize)
    backend = get_parallel_backend("mpi" if use_mpi else None)
    workers = backend.worker_count(requested)
    if isinstance(backend, MPIBackend):
        warn_ignored_max_workers(backend, max_workers, workers)
    reason = _serial_reason(backend, max_workers, workers, s)
    if reason is not None:
        _serial_decision(mode, f, reason)
        return _serial(f, s)
    size = chunksize or get_default_chunksize(s, workers)
    return _run(backend, f, s, workers, size, mode, ordered=ordered)


def _serial(f: Callable[[T], R], s: Iterable[T]) -> Generator[R, None, None]:
    for item in s:
        yield f(item)


def _run(
    backend: Backend,
    f: Callable[[T], R],
    s: Iterable[T],
    workers: int,
    chunksize: int,
    mode: str,
    *,
    ordered: bool = True,
) -> Generator[R, None, None]:
    items = iter(s)
    if _length(s) is None:
        # A generator's length is known only by reading it: one item means a serial run.
        head = list(itertools.islice(items, 2))
        if len(head) == 1:
            _serial_decision(mode, f, ("the input has one item", "map over two items or more"))
            yield f(head[0])
            return
        items = itertools.chain(head, items)
    fn = PicklableAndCallable(f)
    session = backend.open_session(fn, workers)
    _remember(backend)
    todo = enumerate(chunks(items, chunksize))
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
                results = raise_outcome(outcome, fn, index * chunksize, session.remote)
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
    (`shutdown` stops them).

    Args:
        f: a function of one argument. Functions defined in ``__main__`` or a
            notebook, lambdas and closures are sent by value (cloudpickle).
        s: the items.
        max_workers: the number of workers (``None``: one per CPU). Ignored
            under MPI, where it is the job's size minus one.
        use_mpi: run on the MPI job's worker ranks (the ``mpi`` backend) instead of the default backend.
        if_serial: what to do when the map would run serially in this
            process (one worker, one item, or called from a task in a worker):
            ``"raise"`` a `SerialExecutionError`, ``"warn"`` (a
            `SerialExecutionWarning`) and run, or ``"ignore"`` and run.
        chunksize: items per chunk sent to a worker (``None``:
            `get_default_chunksize`).

    Raises:
        OptionError: an invalid argument (before any worker starts).
        SerialExecutionError: the map would run serially, with ``if_serial="raise"``.
        UnsendableFunctionError: ``f`` cannot be sent to a worker process.
        WorkerLostError: a worker process died while it ran a chunk.
        MissingExtraError: the backend's library is not installed.
        PoolError: ``use_mpi`` in a process not launched by MPI.
        Exception: the first exception ``f`` raised, in input order, with the
            worker's traceback as ``__cause__``.
    """
    return _plan(f, s, max_workers, use_mpi, if_serial, chunksize)


def map(
    f: Callable[[T], R],
    s: Iterable[T],
    max_workers: int | None = None,
    use_mpi: bool = False,
    if_serial: str = "raise",
    chunksize: int | None = None,
) -> list[R]:
    """`imap`, as a list."""
    return list(_plan(f, s, max_workers, use_mpi, if_serial, chunksize))


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
    (scinexus's signature: ``f, s``, not a list of futures).
    """
    return _plan(f, s, max_workers, use_mpi, if_serial, chunksize, ordered=False)
