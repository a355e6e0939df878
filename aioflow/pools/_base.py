"""The pool interface the scheduler sees, and the options every pool shares.

A `Pool` owns one `concurrent.futures.Executor` (created on first use, so
that opening a pool is cheap and validation happens before any worker
starts). The scheduler offloads with ``loop.run_in_executor(pool.executor, ...)``
and never looks inside.

Life cycle and ownership: whoever opens a pool closes it (`Pool.aclose`,
`Pool.close`, or leaving its ``with`` block). `Pool.abort` stops what is
running now (workers are killed or threads interrupted) and leaves the pool
usable: the next submission starts fresh workers.

Several executions may share one open pool. Each one is an *owner*: the
scheduler wraps its calls with `Pool.bind` and counts them with
`Pool.enter`/`Pool.leave`, so that `Pool.aabort(owner)` stops that owner's
tasks only. When no other owner has tasks in flight, aborting simply replaces
the whole executor (every worker is killed); otherwise the pool stops just
the owner's tasks where it can (threads are interrupted one by one) and
leaves process workers running the others' tasks alone.
"""

from __future__ import annotations

import abc
import concurrent.futures
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._errors import InitializerFailed, OptionError, PoolClosedError, PoolError, TransferError
from ._outcomes import TransferFailed, WorkerDied, unpicklable_type

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from types import TracebackType

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "InitializerFailed",
    "Pool",
    "PoolOptions",
    "cancel_queued",
    "run_in_own_thread",
]

logger = logging.getLogger("aioflow.pools")

T = TypeVar("T")

#: Seconds a scaling pool keeps an idle worker before retiring it. A process
#: worker costs tens of megabytes while idle and tens to hundreds of
#: milliseconds to start again: after a minute without work, the memory is
#: worth more than the restart it would save.
DEFAULT_IDLE_TIMEOUT = 60.0

#: The most workers a pool may be asked for: 1,024, or one per CPU on a larger
#: machine. A count beyond it is a slip (9999 for 99) that would start that
#: many processes: no local pool runs more usefully (a process worker holds
#: file descriptors of the parent, whose default limit on Linux is 1,024), and
#: on a cluster pool max_workers only sizes the calls kept in flight.
MAX_WORKERS = max(1024, os.cpu_count() or 1)


@dataclass(frozen=True)
class PoolOptions:
    """Options shared by every pool type. Validated at construction.

    Attributes:
        max_workers: the most workers the pool runs at once (``None``: the pool's default).
        scaling_workers: start workers only when tasks need them, and reuse idle
            ones first (``True``), or start ``max_workers`` at once (``False``).
        context: the multiprocessing start method of process-based pools
            (``spawn``, ``fork``, ``forkserver``; ``None``: the platform default).
        idle_timeout: with ``scaling_workers``, seconds after which a worker
            with nothing to do is retired (``None``: never).
        extra: pool-specific keyword arguments (``pool_options=``).
    """

    max_workers: int | None = None
    scaling_workers: bool = True
    context: str | None = None
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mw = self.max_workers
        if mw is not None and (isinstance(mw, bool) or not isinstance(mw, int) or mw < 1):
            raise OptionError(
                "max_workers",
                "an int >= 1 or None",
                mw,
                f"max_workers must be greater than 0: an int >= 1, or None (got {mw!r} of type {type(mw).__name__})",
            )
        if mw is not None and mw > MAX_WORKERS:
            raise OptionError("max_workers", f"an int from 1 to {MAX_WORKERS} (docs/pools.md), or None", mw)
        if not isinstance(self.scaling_workers, bool):
            raise OptionError("scaling_workers", "True or False", self.scaling_workers)
        if self.context is not None:
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            if self.context not in methods:
                raise OptionError("context", f"one of {', '.join(map(repr, methods))} or None", self.context)
        it = self.idle_timeout
        if it is not None and (isinstance(it, bool) or not isinstance(it, (int, float)) or not it > 0):
            raise OptionError("idle_timeout", "a number of seconds > 0, or None (never retire idle workers)", it)
        if not isinstance(self.extra, dict):
            raise OptionError("pool_options", "a dict", self.extra)


class Pool(abc.ABC):
    """A named kind of worker pool behind one executor.

    Subclasses set `name`, implement `_create_executor` and `_abort_running`,
    and may override `_validate`.
    """

    #: The ``pool_type`` string users type.
    name: ClassVar[str]

    #: Whether the workers are processes started with multiprocessing (or
    #: billiard), whose queues and locks hang in a gevent-patched process.
    uses_processes: ClassVar[bool] = False

    #: How many calls per worker an execution keeps in the pool at once. A
    #: few suffice when a call reaches its worker in microseconds; pools whose
    #: calls cross a network raise it, so that round trips overlap.
    calls_in_flight_per_worker: ClassVar[int] = 8

    #: Whether the executor chains calls: a `concurrent.futures.Future` it
    #: returned, given to ``submit`` as a positional argument, is replaced by
    #: that call's result on the worker, once it is there (``submit`` itself
    #: does not wait). If that call fails or is cancelled, the call fails
    #: without running. Pools whose engine tracks dependencies itself (Dask,
    #: Parsl) do it with no round trip through this process; the scheduler
    #: then sends a node before its inputs exist, when nothing but its
    #: predecessors' success can decide whether it runs.
    chains_calls: ClassVar[bool] = False

    #: Whether a call's result can stay on the worker that computed it
    #: (`bind_remote`): its future then resolves, as soon as the call is
    #: done, to a handle that later calls take as an argument (chaining) and
    #: that `afetch` turns into the value. The data then goes from worker to
    #: worker; only what the caller asks for comes back.
    keeps_results_remote: ClassVar[bool] = False

    #: Whether the tasks run as greenlets of a gevent hub: the engine's event
    #: loop must then run in a thread of its own while the caller waits in the
    #: hub (`aioflow.execute_graph` does it, see `aioflow._gevent_bridge`).
    runs_in_gevent_hub: ClassVar[bool] = False

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        if self.uses_processes:
            _refuse_under_gevent(self.name)
        self._validate(options)
        self._executor: concurrent.futures.Executor | None = None
        self._lock = threading.Lock()
        self._closed = False
        # owner -> number of its calls being awaited (touched under _lock).
        self._inflight: dict[object, int] = {}

    # -------------------------------------------------------------- subclass API

    def _validate(self, options: PoolOptions) -> None:
        """Raise `OptionError` for options this pool cannot honour."""

    @abc.abstractmethod
    def _create_executor(self) -> concurrent.futures.Executor:
        """Build the executor. Called on first use and after `abort`."""

    @abc.abstractmethod
    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        """Stop every running task of ``executor`` and shut it down. Blocking."""

    def _default_max_workers(self) -> int:
        """The number of workers when ``max_workers`` is not given."""
        return os.cpu_count() or 1

    def _abort_owner(self, executor: concurrent.futures.Executor, owner: object) -> None:
        """Stop the running tasks of one owner while others keep theirs. Blocking.

        The default cannot single tasks out: they finish in the background.
        """
        logger.warning(
            "the %r pool is shared with other running executions: the stopped execution's "
            "running tasks finish in the background instead of being killed",
            self.name,
        )

    # -------------------------------------------------------------- public API

    @property
    def executor(self) -> concurrent.futures.Executor:
        """The executor tasks are offloaded to (started on first access).

        Raises:
            PoolClosedError: the pool was closed (a `RuntimeError`).
        """
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._closed:
                    raise PoolClosedError(self.name)
                if self._executor is None:
                    self._executor = self._create_executor()
                executor = self._executor
        return executor

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def capacity(self) -> int:
        """How many tasks the pool runs at once: ``max_workers``, or the pool's default."""
        return self.options.max_workers or self._default_max_workers()

    def scope_to_running_loop(self) -> None:
        """Let the pool live on the running event loop, for a pool only this loop's caller uses.

        Pools bound to an event loop may move onto the running one when only
        this execution uses them (`execute_graph_async` calls it on the pool it
        opens for itself, before its first use, and closes that pool with
        `aclose` on the same loop): no thread of their own, no hop between
        threads per call. Every other pool ignores it.
        """

    def bind(self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., T]) -> Callable[..., T]:
        """Wrap ``fn``, to be submitted to ``executor``, so the pool knows whose call it runs."""
        return fn

    def bind_remote(
        self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., Any]
    ) -> Callable[..., Any]:
        """Like `bind`, for a call whose result stays on its worker (`keeps_results_remote` pools only).

        The future of such a call resolves to a handle, not to the result;
        a failure still comes back as the exception.
        """
        raise NotImplementedError(f"the {self.name!r} pool cannot keep results on its workers")

    async def afetch(self, handles: list[Any]) -> list[Any]:
        """The values behind handles from `bind_remote` calls, fetched together.

        Raises:
            PoolError: the values could not be fetched (the workers that held them are gone).
        """
        raise NotImplementedError(f"the {self.name!r} pool cannot keep results on its workers")

    def enter(self, owner: object) -> int:
        """Count one call of ``owner`` as in flight; return how many calls, of every owner, were before it."""
        with self._lock:
            before = sum(self._inflight.values())
            self._inflight[owner] = self._inflight.get(owner, 0) + 1
            return before

    def leave(self, owner: object) -> None:
        """The call counted by `enter` is no longer awaited."""
        with self._lock:
            count = self._inflight.get(owner, 0) - 1
            if count > 0:
                self._inflight[owner] = count
            else:
                self._inflight.pop(owner, None)

    def describe_lost_workers(self, executor: concurrent.futures.Executor) -> str | None:
        """For a broken executor: which worker died and how (``pid 42, killed by SIGKILL``), if known."""
        return None

    def lost_worker(self, executor: concurrent.futures.Executor, error: BaseException) -> str | None:
        """A call failed with ``error``, a `concurrent.futures.BrokenExecutor`: describe the lost worker.

        Returns which worker died and how (``pid 42, killed by SIGKILL``), if
        known. By default the executor is broken as a whole: it is discarded,
        and the next use builds a new one.
        """
        if isinstance(error, WorkerDied):
            return error.detail  # only that call failed: the executor carries on
        detail = self.describe_lost_workers(executor) or str(error) or None
        self.discard_broken(executor)
        return detail

    def translate(
        self, error: BaseException, executor: concurrent.futures.Executor, where: str, **fields: Any
    ) -> BaseException:
        """Turn a call's low-level failure into an error that says what happened and what to do.

        ``where`` starts the message (``graph 'g': node 'n'``, ``task fit``);
        ``fields`` go to `WorkerLostError` (``node_id=``). A broken executor is
        discarded here, so the next call gets a new one.
        """
        if isinstance(error, InitializerFailed):
            self.discard_broken(executor)
            refused = PoolError(f"{where} could not run: {error}")
            refused.__cause__ = error.__cause__
            return refused
        if isinstance(error, concurrent.futures.BrokenExecutor) and not isinstance(error, PoolError):
            detail = (
                self.lost_worker(executor, error) or "it was killed or crashed: out of memory, a segfault, os._exit?"
            )
            if isinstance(error, WorkerDied):
                fields = {"pid": error.pid, "exitcode": error.exitcode, "signal": error.signal, **fields}
            from .._lost import WorkerLostError  # imports multiprocessing: only once a worker is lost

            lost = WorkerLostError(f"{where} lost its worker process ({detail})", **fields)
            lost.__cause__ = error
            return lost
        if isinstance(error, TransferFailed):
            transfer = TransferError(where, error.type_name, error.detail)
            transfer.__cause__ = error.__cause__ or error
            return transfer
        kind = unpicklable_type(error)
        if kind is not None:
            transfer = TransferError(where, kind, str(error))
            transfer.__cause__ = error
            return transfer
        return error

    def discard_broken(self, executor: concurrent.futures.Executor) -> None:
        """Forget an executor that broke (a worker died); the next use builds a new one."""
        with self._lock:
            if self._executor is not executor:
                return  # already replaced
            self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    def _take_for_abort(self, owner: object | None) -> tuple[concurrent.futures.Executor | None, bool]:
        """The executor to act on, and whether it was detached (to be stopped whole)."""
        with self._lock:
            others_busy = any(n > 0 for o, n in self._inflight.items() if o is not owner)
            if owner is not None and others_busy:
                return self._executor, False
            executor, self._executor = self._executor, None
            return executor, True

    def abort(self, owner: object | None = None) -> None:
        """Stop what ``owner`` (or anyone, when ``None``) is running; the pool stays usable. Blocking."""
        executor, whole = self._take_for_abort(owner)
        if executor is None:
            return
        if whole:
            self._abort_running(executor)
        else:
            self._abort_owner(executor, owner)

    async def aabort(self, owner: object | None = None) -> None:
        """`abort` without blocking the event loop."""
        executor, whole = self._take_for_abort(owner)
        if executor is None:
            return
        if whole:
            await run_in_own_thread(self._abort_running, executor)
        else:
            await run_in_own_thread(self._abort_owner, executor, owner)

    def close(self) -> None:
        """Wait for submitted tasks, then stop the workers. Blocking."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """`close` without blocking the event loop."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            await run_in_own_thread(executor.shutdown, True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.abort()
        self.close()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            await self.aabort()
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._executor else "idle")
        return f"<{type(self).__name__} {self.name!r} max_workers={self.options.max_workers} {state}>"


class Owned:
    """A callable submitted on behalf of an owner (an execution), so it can be stopped alone.

    An executor that knows it (the ``process`` pool's, the ``dask`` pool's) unwraps it before
    sending: only ``fn`` travels to the worker.
    """

    __slots__ = ("fn", "owner", "remote")

    def __init__(self, owner: object, fn: Callable[..., Any], *, remote: bool = False) -> None:
        self.owner = owner
        self.fn = fn
        # The result stays on the worker (`Pool.bind_remote`).
        self.remote = remote

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def in_place(args: tuple[Any, ...], positions: tuple[int, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with ``values`` at ``positions``: the results of the calls a chained call waited for, in their places."""
    if not positions:
        return args
    filled = list(args)
    for position, value in zip(positions, values, strict=True):
        filled[position] = value
    return tuple(filled)


def settle(future: concurrent.futures.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Give a future its outcome, unless it was cancelled (or settled by another thread) meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass  # nobody waits for this outcome any more


def cancel_queued(future: concurrent.futures.Future[Any]) -> None:
    """Cancel a call that no worker has taken, so that `concurrent.futures.wait` and ``as_completed`` see it end.

    `Future.cancel` alone leaves the future ``CANCELLED``: the waiters those
    functions install hear of a cancellation only from
    `Future.set_running_or_notify_cancel`, which an executor calls when a
    worker takes the call, and this one never will be. (Only for a future no
    one has called ``set_running_or_notify_cancel`` on yet: a queued call's.)
    """
    if future.cancel():
        future.set_running_or_notify_cancel()


def _refuse_under_gevent(name: str) -> None:
    from .._gevent_bridge import is_patched

    if is_patched():
        msg = (
            f"the {name!r} pool cannot run in a process that gevent has monkey-patched "
            "(multiprocessing's queues and locks hang there); use pool_type='gevent' (the default there) or 'thread'"
        )
        raise PoolError(msg)


async def run_in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a short-lived thread of its own, without blocking the loop.

    Used for pool shutdown: a thread from the loop's default executor would
    outlive the execution, this one ends with the call. Cancelling the
    awaiting task does not stop the call: it is waited for (shielded), because
    a half-shut pool would leak workers.
    """
    import asyncio  # here: worker processes import this module, and never need asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def resolve(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(resolve, None, exc)
        else:
            loop.call_soon_threadsafe(resolve, result, None)

    thread = threading.Thread(target=target, name=f"aioflow-{getattr(fn, '__name__', 'call')}", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.shield(future)
        raise
    finally:
        # The thread has posted its result: joining it takes no time.
        thread.join()
