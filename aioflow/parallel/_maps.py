"""The map driver of `aioflow.parallel`'s backends: worker counts, serial runs, chunks in flight; ranks; shutdown.

`run_map` runs one map on one `Backend`: it validates the arguments and
decides the number of workers and whether the run would be serial, all
before any worker starts. The generator it returns then opens a `Session`
on the backend (warm workers are lent to it), cuts the input into chunks as
it goes (`_chunks.chunks`), keeps at most ``session.capacity`` chunks
submitted and not yet yielded, and yields results in input order (`imap`)
or as chunks finish (`as_completed`). So a map over a generator of any
length holds a bounded number of items: ``(capacity + 1) * chunksize`` at
most.

Worker counts. A map never starts more workers than it has chunks, nor more
than the backend's `Backend.worker_limit` (the CPUs, for backends whose
workers run here): ``imap`` and ``map`` refuse a larger ``max_workers`` and
``as_completed`` clamps it, as scinexus does; on a cluster backend, a count
above the pools' bound (`aioflow.pools._options.MAX_WORKERS`) is refused. A
backend that decides the count itself (``mpi``: the job's ranks) says so
(`Backend.ignored_max_workers`), and says when a map would run serially
(`Backend.serial_reason`): the driver asks the backend, not its class.

The backends (`aioflow.parallel._backends`) call `run_map` and `get_rank`
from here, and `aioflow.parallel._api` (the module's functions) calls them
and the backends: this module imports no backend, so none of them import
each other in a cycle.

Module state (under ``_used_lock``): the backends that have run a map,
which `shutdown` stops, at interpreter exit too.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import OptionError, SerialExecutionError, SerialExecutionWarning
from ..pools._options import MAX_WORKERS
from ._chunks import PicklableAndCallable, chunks, in_worker, raise_outcome, worker_rank
from ._mpi import get_rank as mpi_rank
from ._mpi import get_size
from ._options import ParallelOptionError, check_if_serial, check_optional_count

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable

    from ._backends import Backend

__all__ = ["cpu_count", "get_rank", "run_map", "shutdown", "worker_budget"]

T = TypeVar("T")
R = TypeVar("R")

_used_lock = threading.Lock()
_used: list[Backend] = []
_exit_hook_registered = False


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def shutdown() -> None:
    """Stop the warm workers of every backend that ran a map. Blocking.

    Backends stay usable: the next map starts new workers. Called at
    interpreter exit too.
    """
    with _used_lock:
        used = list(_used)
        _used.clear()
    for backend in used:
        backend.shutdown()


def _remember(backend: Backend) -> None:
    global _exit_hook_registered
    with _used_lock:
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
    note = None if given is None else backend.ignored_max_workers(given, workers)
    if note is not None:
        warnings.warn(note, UserWarning, stacklevel=3)
    return workers


def _serial_reason(backend: Backend, workers: int) -> tuple[str, str] | None:
    """Why a map would run serially in this process, and what to do instead; ``None`` if it runs on workers."""
    if in_worker():
        return (
            "it was called by a task that runs in a worker of another map (maps do not nest)",
            "parallelise the outer map only",
        )
    return backend.serial_reason(workers)


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
