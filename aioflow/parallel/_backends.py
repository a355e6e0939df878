"""The backend interface, and the backends built on a `concurrent.futures.Executor`: loky, MPI, aioflow pools.

A `Backend` owns warm workers across maps. Each map opens a `Session`: the
backend lends it workers (and sends them the function), the map's driver
(`aioflow.parallel._api`) submits chunks while fewer than
``Session.capacity`` are in flight, waits for finished ones, and closes the
session when the map ends. A session closed early (``abandoned``: the
consumer stopped, a task raised, Ctrl-C) stops what it can of the chunks still
in flight.

`ExecutorBackend` implements a session over any executor: each chunk is one
``executor.submit(run_chunk, fn, items)``. Subclass it and implement
`ExecutorBackend._create_executor` for a new engine; subclass `Backend` and
`Session` for a transport of your own (as the ``multiprocess`` backend does).

Thread safety: backends are shared by every thread; their executors are
created and dropped under ``_lock``. A session belongs to the one generator
that opened it.
"""

from __future__ import annotations

import abc
import concurrent.futures
import os
import queue
import threading
import warnings
from typing import TYPE_CHECKING, Any

from .._errors import MissingExtraError, OptionError, PoolError, WorkerLostError
from ..pools._base import DEFAULT_IDLE_TIMEOUT
from ._chunks import run_chunk

if TYPE_CHECKING:
    from ..pools import Pool
    from ._chunks import Outcome, PicklableAndCallable

__all__ = ["Backend", "ExecutorBackend", "LokyBackend", "MPIBackend", "PoolBackend", "Session"]

#: Chunks a session keeps in flight per worker, at least: one running and
#: one waiting, so a worker that finishes a chunk starts the next without
#: waiting for a round trip to the caller.
CHUNKS_PER_WORKER = 2

#: Small chunks get more in flight, up to this many per worker ...
MAX_CHUNKS_PER_WORKER = 64

#: ... as long as they hold at most this many items per worker. A round trip
#: through an executor costs tens to hundreds of microseconds (mpi4py's
#: manager thread polls): with one item per chunk, two in flight would leave
#: the workers waiting most of the time. The items read ahead of the consumer
#: stay below ``workers * max(2 * chunksize, 1024) + chunksize``.
QUEUE_ITEMS_PER_WORKER = 1024


def chunks_per_worker(chunk_items: int) -> int:
    """How many chunks of ``chunk_items`` items a session keeps in flight per worker."""
    return max(CHUNKS_PER_WORKER, min(MAX_CHUNKS_PER_WORKER, QUEUE_ITEMS_PER_WORKER // max(1, chunk_items)))


class Session(abc.ABC):
    """One map's use of a backend's workers.

    Attributes:
        capacity: the most chunks the map may have in flight at once.
        remote: whether chunks run in other processes (a task's exception
            then gets the worker's traceback as ``__cause__``).
    """

    capacity: int
    remote: bool = True

    @abc.abstractmethod
    def submit(self, index: int, items: list[Any]) -> None:
        """Start chunk ``index`` (its items in input order). Does not wait for it."""

    @abc.abstractmethod
    def wait(self) -> list[tuple[int, Outcome]]:
        """Block until at least one chunk finished; return every finished chunk's index and outcome.

        Raises:
            WorkerLostError: a worker died while it ran a chunk.
        """

    @abc.abstractmethod
    def close(self, abandoned: bool) -> None:
        """The map is over. With ``abandoned``, chunks may still be in flight: stop what can be stopped."""


class Backend(abc.ABC):
    """A way to run a map's chunks on workers, warm across maps.

    Subclasses set `name` and implement `open_session`; they may override
    `worker_count` and `shutdown`.
    """

    #: The name `aioflow.parallel.set_parallel_backend` knows it by.
    name: str

    #: Whether tasks run in other processes (the function and items are pickled).
    uses_processes: bool = True

    def worker_count(self, max_workers: int) -> int:
        """How many workers a map asking for ``max_workers`` gets."""
        return max_workers

    @abc.abstractmethod
    def open_session(self, fn: PicklableAndCallable[Any], workers: int) -> Session:
        """Lend ``workers`` workers to a map of ``fn``.

        Raises:
            UnsendableFunctionError: ``fn`` cannot be sent to the workers.
            MissingExtraError: the backend's library is not installed.
        """

    def shutdown(self) -> None:
        """Stop the warm workers. The backend stays usable: the next map starts new ones."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# --------------------------------------------------------------------------- executor-based


class ExecutorBackend(Backend):
    """A backend whose workers sit behind a `concurrent.futures.Executor`, one per worker count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executors: dict[int, concurrent.futures.Executor] = {}

    @abc.abstractmethod
    def _create_executor(self, workers: int) -> concurrent.futures.Executor:
        """A new executor with ``workers`` workers."""

    def _close_executor(self, executor: concurrent.futures.Executor) -> None:
        """Stop an executor's workers (at `shutdown`). Blocking."""
        executor.shutdown(wait=True, cancel_futures=True)

    def _lost_worker(self, executor: concurrent.futures.Executor, error: BaseException) -> str | None:
        """``error`` (a `concurrent.futures.BrokenExecutor`) says a worker died: describe it, drop the executor."""
        self._forget(executor)
        return None

    def executor(self, workers: int) -> concurrent.futures.Executor:
        """The warm executor with ``workers`` workers (created on first use)."""
        with self._lock:
            executor = self._executors.get(workers)
            if executor is None:
                executor = self._executors[workers] = self._create_executor(workers)
            return executor

    def _forget(self, executor: concurrent.futures.Executor) -> None:
        with self._lock:
            for key, known in list(self._executors.items()):
                if known is executor:
                    del self._executors[key]

    def open_session(self, fn: PicklableAndCallable[Any], workers: int) -> Session:
        if self.uses_processes:
            fn.payload()  # an unsendable function fails here, before any worker starts
        return _ExecutorSession(self, self.executor(workers), fn, workers)

    def shutdown(self) -> None:
        with self._lock:
            executors = list(self._executors.values())
            self._executors.clear()
        for executor in executors:
            self._close_executor(executor)


class _ExecutorSession(Session):
    def __init__(
        self,
        backend: ExecutorBackend,
        executor: concurrent.futures.Executor,
        fn: PicklableAndCallable[Any],
        workers: int,
    ) -> None:
        self._backend = backend
        self._executor = executor
        self._fn = fn
        self._futures: dict[concurrent.futures.Future[Any], int] = {}
        self._done: queue.SimpleQueue[concurrent.futures.Future[Any]] = queue.SimpleQueue()
        self._workers = workers
        self._chunk_items = 1  # the largest chunk submitted
        self.remote = backend.uses_processes

    @property
    def capacity(self) -> int:  # type: ignore[override]  # grows to the chunks' size
        # The executor's queue is shared by its workers: more in flight never
        # unbalances them, it only reads the input further ahead.
        return self._workers * chunks_per_worker(self._chunk_items)

    def submit(self, index: int, items: list[Any]) -> None:
        self._chunk_items = max(self._chunk_items, len(items))
        try:
            future = self._executor.submit(run_chunk, self._fn, items)
        except concurrent.futures.BrokenExecutor as exc:
            raise self._lost(exc) from exc
        self._futures[future] = index
        future.add_done_callback(self._done.put)

    def wait(self) -> list[tuple[int, Outcome]]:
        # Done-callbacks feed a queue: O(1) per finished chunk, where
        # concurrent.futures.wait would visit every future in flight each time.
        ready = [self._done.get()]
        while not self._done.empty():
            ready.append(self._done.get())
        finished = []
        for future in ready:
            index = self._futures.pop(future, None)
            if index is None or future.cancelled():
                continue
            try:
                outcome = future.result()
            except concurrent.futures.BrokenExecutor as exc:
                raise self._lost(exc) from exc
            finished.append((index, outcome))
        return finished

    def _lost(self, error: BaseException) -> WorkerLostError:
        detail = self._backend._lost_worker(self._executor, error)
        what = f"({detail})" if detail else f"({type(error).__name__}: {error})"
        msg = f"aioflow.parallel: a worker process of the {self._backend.name!r} backend running {self._fn.name} died {what}"
        return WorkerLostError(msg, backend=self._backend.name, detail=detail)

    def close(self, abandoned: bool) -> None:
        for future in self._futures:
            future.cancel()  # the ones not started yet; running ones finish in the background
        self._futures.clear()


# Pools whose workers are processes of their own, not started with multiprocessing.
_REMOTE_POOLS = frozenset({"dask", "parsl", "mpi"})


class PoolBackend(ExecutorBackend):
    """Any aioflow pool by name (``thread``, ``process``, ``billiard``, ...), opened with `aioflow.open_pool`.

    Each worker count gets its own pool, opened on first use and kept open
    until `shutdown`. The options are those of `aioflow.open_pool`.

    Args:
        pool_type: the pool's name, as in `aioflow.available_pools`.
        context: the start method of process-based pools (``None``: the platform's default).
        scaling_workers: start workers as chunks need them (``True``), or all at once.
        idle_timeout: seconds after which an idle worker is retired (``None``: never).
        pool_options: pool-specific options (``initializer``, ``initargs``, ...).

    Raises:
        OptionError: an unknown pool type or option (before any worker starts).
    """

    name = "pool"

    def __init__(
        self,
        pool_type: str,
        *,
        context: str | None = None,
        scaling_workers: bool = True,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        pool_options: dict[str, Any] | None = None,
    ) -> None:
        from ..pools import PoolOptions, pool_class

        super().__init__()
        cls = pool_class(pool_type)
        extra = dict(pool_options or {})
        # Validates every option now; a pool object starts nothing until used.
        cls(PoolOptions(context=context, scaling_workers=scaling_workers, idle_timeout=idle_timeout, extra=extra))
        self.name = pool_type
        # Chunks run in other processes on multiprocessing-based pools and on the
        # cluster pools alike: the function must pickle, a worker's traceback is sent back.
        self.uses_processes = cls.uses_processes or cls.name in _REMOTE_POOLS
        self._pool_type = pool_type
        self._context = context
        self._scaling_workers = scaling_workers
        self._idle_timeout = idle_timeout
        self._extra = extra
        self._pools: dict[int, Pool] = {}

    def _create_executor(self, workers: int) -> concurrent.futures.Executor:
        from ..pools import open_pool

        pool = self._pools.get(workers)
        if pool is None:
            pool = open_pool(
                self._pool_type,
                max_workers=workers,
                context=self._context,
                scaling_workers=self._scaling_workers,
                idle_timeout=self._idle_timeout,
                pool_options=self._extra,
            )
            self._pools[workers] = pool
        return pool.executor

    def _pool_of(self, executor: concurrent.futures.Executor) -> Pool | None:
        return next((p for p in self._pools.values() if p._executor is executor), None)

    def _lost_worker(self, executor: concurrent.futures.Executor, error: BaseException) -> str | None:
        pool = self._pool_of(executor)
        detail = pool.lost_worker(executor, error) if pool is not None else None
        if pool is None or pool._executor is not executor:
            self._forget(executor)  # the pool dropped it: the next map asks the pool again
        return detail

    def _close_executor(self, executor: concurrent.futures.Executor) -> None:
        pool = self._pool_of(executor)
        if pool is None:
            executor.shutdown(wait=True, cancel_futures=True)

    def shutdown(self) -> None:
        super().shutdown()
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.abort()  # stops what abandoned maps left running
            pool.close()

    def __repr__(self) -> str:
        return f"<PoolBackend {self._pool_type!r} context={self._context!r}>"


class LokyBackend(ExecutorBackend):
    """loky's reusable executor (``pip install 'aioflow[loky]'``): spawn-like workers, cloudpickle."""

    name = "loky"

    def __init__(self) -> None:
        super().__init__()
        _require("loky", "the 'loky' parallel backend", "loky")

    def _create_executor(self, workers: int) -> concurrent.futures.Executor:
        import loky

        executor: concurrent.futures.Executor = loky.get_reusable_executor(max_workers=workers)
        return executor

    def executor(self, workers: int) -> concurrent.futures.Executor:
        # loky keeps one reusable executor per process and resizes it on demand.
        with self._lock:
            self._executors.clear()
        return super().executor(workers)

    def _close_executor(self, executor: concurrent.futures.Executor) -> None:
        executor.shutdown(wait=True, kill_workers=True)  # type: ignore[call-arg]  # loky's shutdown takes kill_workers

    def _lost_worker(self, executor: concurrent.futures.Executor, error: BaseException) -> str | None:
        self._forget(executor)  # loky builds a new executor on the next get_reusable_executor
        return str(error)


class MPIBackend(ExecutorBackend):
    """The worker ranks of an MPI job, through ``mpi4py.futures.MPIPoolExecutor`` (``pip install 'aioflow[mpi]'``).

    The script must be launched with
    ``mpiexec -n <workers + 1> python -m mpi4py.futures script.py``: rank 0
    runs the script, the other ranks are the workers (``max_workers`` is
    ignored).
    """

    name = "mpi"

    def __init__(self) -> None:
        super().__init__()
        _require("mpi4py", "the 'mpi' parallel backend", "mpi")

    def worker_count(self, max_workers: int) -> int:
        from ._mpi import get_size

        size = get_size()
        if size < 2:
            msg = (
                "aioflow.parallel: the 'mpi' backend (use_mpi=True) needs the script launched by MPI, for example: "
                "mpiexec -n 3 python -m mpi4py.futures script.py (rank 0 runs the script, ranks 1-2 are the workers); "
                f"this process is not part of an MPI job of more than one process (MPI size {size})"
            )
            raise PoolError(msg)
        return size - 1

    def _create_executor(self, workers: int) -> concurrent.futures.Executor:
        from mpi4py.futures import MPIPoolExecutor

        return MPIPoolExecutor()  # the ranks mpiexec started

    def _close_executor(self, executor: concurrent.futures.Executor) -> None:
        executor.shutdown(wait=True, cancel_futures=True)


def _require(module: str, what: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(what, module, extra)


def warn_ignored_max_workers(backend: Backend, requested: int | None, workers: int) -> None:
    """``max_workers`` does not choose the number of MPI workers: say so when it differs."""
    if requested is not None and requested != workers:
        msg = (
            f"max_workers={requested} is ignored by the {backend.name!r} backend: the MPI job has {workers} worker "
            "processes (its size minus the master)"
        )
        warnings.warn(msg, UserWarning, stacklevel=4)


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def validate_context(context: str | None) -> None:
    """Raise `OptionError` unless ``context`` is a start method of this platform, or ``None``."""
    if context is None:
        return
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if context not in methods:
        raise OptionError("context", f"one of {', '.join(map(repr, methods))} or None", context)
