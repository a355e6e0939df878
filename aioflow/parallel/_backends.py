"""The backend interfaces, and the backends built on a `concurrent.futures.Executor`: loky, MPI, aioflow pools.

`Parallel` is scinexus's interface: ``imap``, ``as_completed``, ``get_rank``,
``get_size``, ``is_master_process``. Another engine (ray, dask, ...) plugs in
by implementing it; the module's maps then call its methods as scinexus does.
aioflow's own backends are `Backend` subclasses, which implement `Parallel`
with aioflow's map driver (`aioflow.parallel._maps`) over a transport of their
own.

A `Backend` owns warm workers across maps. Each map opens a `Session`: the
backend lends it workers (and sends them the function), the map's driver
(`aioflow.parallel._maps`) submits chunks while fewer than
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
import queue
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import MissingExtraError, PoolError
from ..pools._options import DEFAULT_IDLE_TIMEOUT, PoolSpec
from ._chunks import get_default_chunksize, in_worker, run_chunk
from ._maps import cpu_count, get_rank, run_map

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator

    from .._lost import WorkerLostError
    from ..pools import Pool
    from ._chunks import Outcome, PicklableAndCallable

__all__ = [
    "Backend",
    "ExecutorBackend",
    "LokyBackend",
    "MPIBackend",
    "MPIUnavailableError",
    "Parallel",
    "PoolBackend",
    "Session",
    "ThreadBackend",
]

T = TypeVar("T")
R = TypeVar("R")

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


class Parallel(abc.ABC):
    """A parallel engine, as scinexus defines one: subclass it to run maps on an engine of your own (ray, dask, ...).

    `aioflow.parallel.set_parallel_backend` takes any instance; ``imap``,
    ``map`` and ``as_completed`` of the module then call its methods as
    scinexus does: ``imap(f, s, max_workers=max_workers, chunksize=chunksize)``.
    aioflow's own backends implement it through `Backend`.
    """

    @abc.abstractmethod
    def imap(self, f: Callable[[T], R], s: Iterable[T], max_workers: int | None = None, **kwargs: Any) -> Iterator[R]:
        """Yield ``f(x)`` for each ``x`` of ``s``, in input order."""

    @abc.abstractmethod
    def as_completed(
        self, f: Callable[[T], R], s: Iterable[T], max_workers: int | None = None, **kwargs: Any
    ) -> Iterator[R]:
        """Yield ``f(x)`` for each ``x`` of ``s``, in completion order."""

    @abc.abstractmethod
    def is_master_process(self) -> bool:
        """Whether this process (and thread) is the master, not one of the workers."""

    @abc.abstractmethod
    def get_rank(self) -> int:
        """The rank of this process: 0 for the master."""

    @abc.abstractmethod
    def get_size(self) -> int:
        """The number of workers a map gets by default."""


class Backend(Parallel):
    """A way to run a map's chunks on workers, warm across maps.

    Subclasses set `name` and implement `open_session`; they may override
    `worker_limit`, `worker_count`, `default_chunksize` and `shutdown`. The
    `Parallel` methods come with it: ``imap`` and ``as_completed`` are
    `aioflow.parallel.imap` and ``as_completed`` on this backend.
    """

    #: The name `aioflow.parallel.set_parallel_backend` knows it by.
    name: str

    #: Whether tasks run in other processes (the function and items are pickled).
    uses_processes: bool = True

    def imap(
        self,
        f: Callable[[T], R],
        s: Iterable[T],
        max_workers: int | None = None,
        *,
        chunksize: int | None = None,
        if_serial: str = "raise",
        **kwargs: Any,
    ) -> Generator[R, None, None]:
        """`aioflow.parallel.imap` on this backend (``use_mpi`` aside).

        Raises:
            TypeError: a keyword argument other than ``chunksize`` and ``if_serial``.
        """
        _refuse_keywords(self, "imap", kwargs)
        return run_map(self, f, s, max_workers, chunksize=chunksize, if_serial=if_serial, ordered=True)

    def as_completed(
        self,
        f: Callable[[T], R],
        s: Iterable[T],
        max_workers: int | None = None,
        *,
        chunksize: int | None = None,
        if_serial: str = "raise",
        **kwargs: Any,
    ) -> Generator[R, None, None]:
        """`aioflow.parallel.as_completed` on this backend (``use_mpi`` aside).

        Raises:
            TypeError: a keyword argument other than ``chunksize`` and ``if_serial``.
        """
        _refuse_keywords(self, "as_completed", kwargs)
        return run_map(self, f, s, max_workers, chunksize=chunksize, if_serial=if_serial, ordered=False)

    def is_master_process(self) -> bool:
        """`aioflow.parallel.is_master_process`: rank 0, and not a task running in a worker of a map."""
        return self.get_rank() == 0 and not in_worker()

    def get_rank(self) -> int:
        """`aioflow.parallel.get_rank`: the MPI rank in an MPI job, else the worker's number (0 in the master)."""
        return get_rank()

    def get_size(self) -> int:
        """The number of workers a map gets with ``max_workers=None``: one per CPU this process may use."""
        return cpu_count()

    def worker_limit(self) -> int | None:
        """The most workers a map may ask for: the CPUs this process may use; ``None`` where workers are not here."""
        return cpu_count()

    @classmethod
    def check_installed(cls) -> None:
        """Raise `MissingExtraError` if a library the backend needs is not installed (none, by default)."""

    def worker_count(self, max_workers: int) -> int:
        """How many workers a map asking for ``max_workers`` (within `worker_limit`) gets."""
        return max_workers

    def ignored_max_workers(self, requested: int, workers: int) -> str | None:
        """The warning for a map that gave ``max_workers=requested`` and gets ``workers`` (`worker_count`).

        ``None`` (no warning) by default: a backend that decides the count
        itself says why it did not use the one asked for.
        """
        return None

    def serial_reason(self, workers: int) -> tuple[str, str] | None:
        """Why a map on ``workers`` workers would run serially here, and what to do instead; ``None`` if it would not.

        Asked after the reason every backend shares (a map called by a task
        running in a worker of another map).
        """
        return None

    def default_chunksize(self, s: Iterable[Any], workers: int) -> int:
        """Items per chunk when a map gives no ``chunksize``: `aioflow.parallel.get_default_chunksize`."""
        return get_default_chunksize(s, workers)

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


def _refuse_keywords(backend: Backend, method: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        names = ", ".join(repr(k) for k in kwargs)
        msg = f"{type(backend).__name__}.{method}() got unexpected keyword arguments: {names}"
        raise TypeError(msg)


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
        from .._lost import WorkerLostError  # imports multiprocessing: only once a worker is lost

        detail = self._backend._lost_worker(self._executor, error)
        what = f"({detail})" if detail else f"({type(error).__name__}: {error})"
        msg = f"aioflow.parallel: a worker process of the {self._backend.name!r} backend running {self._fn.name} died {what}"
        return WorkerLostError(msg, backend=self._backend.name, detail=detail)

    def close(self, abandoned: bool) -> None:
        for future in self._futures:
            future.cancel()  # the ones not started yet; running ones finish in the background
        self._futures.clear()


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
        super().__init__()
        spec = PoolSpec(
            pool_type,
            context=context,
            scaling_workers=scaling_workers,
            idle_timeout=idle_timeout,
            pool_options=dict(pool_options or {}),
        )
        cls = spec.pool_class()
        cls(spec.options)  # validates every option now; a pool object starts nothing until used
        self.name = pool_type
        # Chunks run in other processes on multiprocessing-based pools and on the
        # cluster pools alike: the function must pickle, a worker's traceback is sent back.
        self.uses_processes = cls.uses_processes or cls.workers_elsewhere
        self._workers_elsewhere = cls.workers_elsewhere
        # One pool per worker count, each opened with this spec and that count.
        self._spec = spec
        self._pools: dict[int, Pool] = {}

    def worker_limit(self) -> int | None:
        # A cluster's workers are not this machine's CPUs: only the pools' own bound applies.
        return None if self._workers_elsewhere else cpu_count()

    def _create_executor(self, workers: int) -> concurrent.futures.Executor:
        pool = self._pools.get(workers)
        if pool is None:
            pool = self._pools[workers] = self._spec._replace(max_workers=workers).open()
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
        return f"<{type(self).__name__} {self.name!r} context={self._spec.context!r}>"


class ThreadBackend(PoolBackend):
    """aioflow's thread pool (``"thread"``, or ``"threads"`` as scinexus spells it): nothing is pickled.

    Items go one per chunk unless ``chunksize`` says otherwise: a thread has
    no transport cost to share, and one item at a time keeps every thread
    busy to the end (as scinexus's thread backend, which takes one task per
    item).

    Args:
        scaling_workers: start threads as chunks need them (``True``), or all at once.
        idle_timeout: seconds after which an idle thread is retired (``None``: never).
        pool_options: options of the thread pool (``initializer``, ``initargs``).
    """

    def __init__(
        self,
        *,
        scaling_workers: bool = True,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        pool_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            "thread", scaling_workers=scaling_workers, idle_timeout=idle_timeout, pool_options=pool_options
        )

    def default_chunksize(self, s: Iterable[Any], workers: int) -> int:
        return 1


class LokyBackend(ExecutorBackend):
    """loky's reusable executor (``pip install 'aioflow[loky]'``): spawn-like workers, cloudpickle."""

    name = "loky"

    def __init__(self) -> None:
        super().__init__()
        self.check_installed()

    @classmethod
    def check_installed(cls) -> None:
        require("loky", "the 'loky' parallel backend", "loky")

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


class MPIUnavailableError(PoolError, RuntimeError):
    """A map on the ``mpi`` backend (``use_mpi=True``) in a process that is not part of an MPI job of two or more.

    An `aioflow.PoolError`, and a `RuntimeError` as scinexus raises there.
    """


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
        self.check_installed()

    @classmethod
    def check_installed(cls) -> None:
        require("mpi4py", "the 'mpi' parallel backend", "mpi")

    def get_size(self) -> int:
        """The job's worker ranks: its size minus the master (1 outside an MPI job)."""
        from ._mpi import get_size

        return max(get_size() - 1, 1)

    def worker_limit(self) -> int | None:
        return None  # the ranks mpiexec started, whatever max_workers says

    def worker_count(self, max_workers: int) -> int:
        from ._mpi import get_size

        size = get_size()
        if size < 2:
            msg = (
                "aioflow.parallel: Cannot use MPI: the 'mpi' backend (use_mpi=True) needs the script launched by MPI, "
                "for example: mpiexec -n 3 python -m mpi4py.futures script.py (rank 0 runs the script, ranks 1-2 are "
                f"the workers); this process is not part of an MPI job of more than one process (MPI size {size})"
            )
            raise MPIUnavailableError(msg)
        return size - 1

    def ignored_max_workers(self, requested: int, workers: int) -> str | None:
        """``max_workers`` does not choose the number of MPI workers: say so when it differs."""
        if requested == workers:
            return None
        return (
            f"max_workers ({requested}) is not the {workers} workers of this MPI job (its size minus the master), "
            f"which mpiexec -n fixed: the {self.name!r} backend ignores it, this request is not used"
        )

    def serial_reason(self, workers: int) -> tuple[str, str] | None:
        """An MPI job of one worker rank runs the map in the master."""
        if workers > 1:
            return None
        return (
            "this MPI job has one worker process (MPI size 2)",
            "launch it with more processes: mpiexec -n 3 python -m mpi4py.futures script.py, or more",
        )

    def executor(self, workers: int) -> concurrent.futures.Executor:
        # One executor serves every map: its workers are the job's ranks, however many a map uses.
        return super().executor(0)

    def _create_executor(self, workers: int) -> concurrent.futures.Executor:
        from mpi4py.futures import MPIPoolExecutor

        return MPIPoolExecutor()  # the ranks mpiexec started

    def _close_executor(self, executor: concurrent.futures.Executor) -> None:
        executor.shutdown(wait=True, cancel_futures=True)


def require(module: str, what: str, extra: str) -> None:
    """Raise `MissingExtraError` unless ``module`` can be imported (``sys.modules[module] = None`` hides it)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(what, module, extra)
