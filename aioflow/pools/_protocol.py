"""The engine's private protocol with its pools: what the engine uses of a pool beyond its public interface.

`aioflow.Pool` (`aioflow.pools._base`) is what users hold: its name,
options, executor, capacity, and its life cycle. Every pool also speaks
this protocol, `EngineProtocol`, which only the engine uses: the async
driver (`aioflow.scheduler._run`), `aioflow.Executor` and the parallel
backends (`aioflow.parallel`). It is not documented for users, and may
change with the engine. httpcore draws the same line between the pool a
user holds and the interface its connections give the pool.

What it says:

- **What the pool can do**, asked instead of its name: `uses_processes`,
  `calls_in_flight_per_worker` (and `calls_in_flight`, the whole pool's),
  `chains_calls`, `keeps_results_remote`, `runs_in_gevent_hub`.
- **Whose calls these are.** Several executions may share one open pool.
  Each one is an *owner*: the engine wraps its calls with `bind` (or
  `bind_remote`) and counts them with `enter`/`leave`, so that
  ``Pool.aabort(owner)`` stops that owner's tasks only. When no other owner
  has tasks in flight, aborting replaces the whole executor (every worker
  is killed); otherwise the pool stops just the owner's tasks where it can
  (`_abort_owner`: threads are interrupted one by one) and leaves process
  workers running the others' tasks alone.
- **What went wrong.** `translate` turns a call's low-level failure (a
  lost worker, a failed initializer, an outcome that cannot be pickled)
  into the error of `aioflow._errors` a user reads; `lost_worker`,
  `describe_lost_workers` and `discard_broken` say which worker died and
  drop an executor that broke.
- **Where it lives**: `scope_to_running_loop`, for a pool only the running
  loop uses; `afetch`, for results a pool kept on its workers; `worker_of`,
  the process that ran a call.

The protocol acts on the pool's executor state (``_executor``, guarded by
``_lock``), which `Pool.__init__` sets up and `Pool.executor` fills.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._broken import InitializerFailed
from .._errors import PoolError, TransferError
from ._futures import noted_worker, this_host
from ._outcomes import TransferFailed, WorkerDied, unpicklable_type

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["EngineProtocol"]

logger = logging.getLogger("aioflow.pools")

T = TypeVar("T")


class EngineProtocol:
    """What the engine asks of a pool and tells it, beyond `aioflow.Pool`'s public interface.

    A subclass (every pool is one, through `aioflow.Pool`) overrides what
    it does differently: the capabilities below, `bind` (to tag a call with
    its owner), `_abort_owner`, `describe_lost_workers`, ...
    """

    #: The ``pool_type`` string users type (`aioflow.Pool.name`).
    name: ClassVar[str]

    if TYPE_CHECKING:  # `aioflow.Pool`'s, which `calls_in_flight` reads

        @property
        def capacity(self) -> int: ...

    #: Whether the workers are processes started with multiprocessing (or
    #: billiard), whose queues and locks hang in a gevent-patched process.
    uses_processes: ClassVar[bool] = False

    #: Whether the workers are not this machine's processes started by the
    #: pool, but a cluster's (Dask, Parsl, MPI ranks): a call and its result
    #: are pickled, and this machine's CPUs do not bound the worker count.
    workers_elsewhere: ClassVar[bool] = False

    #: How many calls per worker an execution keeps in the pool at once. A
    #: few suffice when a call reaches its worker in microseconds; pools whose
    #: calls cross a network raise it, so that round trips overlap.
    calls_in_flight_per_worker: ClassVar[int] = 8

    @property
    def calls_in_flight(self) -> int:
        """How many calls an execution keeps in the pool at once: `calls_in_flight_per_worker` per worker it may run."""
        return self.calls_in_flight_per_worker * self.capacity

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

    #: Whether the workers are threads or greenlets of this process: every
    #: call runs here (`worker_of`).
    runs_in_this_process: ClassVar[bool] = False

    def worker_of(self, future: concurrent.futures.Future[Any] | None) -> tuple[int, str] | None:
        """The worker process that ran the call of ``future``: its pid and host; ``None`` when the pool does not tell.

        Asked once the call is done. A pool of this process's threads or
        greenlets answers this process; a pool of processes, what its
        executor noted on the future when a worker took the call
        (`note_worker`); the ``dask`` pool, what it noted before settling
        the future: the Dask worker that holds the call's result.
        """
        if self.runs_in_this_process:
            return os.getpid(), this_host()
        return noted_worker(future) if future is not None else None

    #: Whether the tasks run as greenlets of a gevent hub: the engine's event
    #: loop must then run in a thread of its own while the caller waits in the
    #: hub (`aioflow.execute_graph` does it, see `aioflow._gevent_bridge`).
    runs_in_gevent_hub: ClassVar[bool] = False

    def __init__(self) -> None:
        # The executor, created on first use and replaced after an abort or a
        # break; owner -> number of its calls being awaited. Both under _lock.
        self._lock = threading.Lock()
        self._executor: concurrent.futures.Executor | None = None
        self._inflight: dict[object, int] = {}

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

    def stop_call(
        self, executor: concurrent.futures.Executor, owner: object, future: concurrent.futures.Future[Any] | None
    ) -> None:
        """Stop one call (a node's timeout): bound with ``owner``, a `OneCall`, its executor's future ``future``. Blocking.

        A call not started yet is cancelled. A running one is stopped as
        `stops_one_call` says: a pool of this machine's processes kills its
        worker, with the processes its task started (and the pool starts
        another); threads and greenlets are interrupted; a cluster pool
        cancels what it can. Other calls run on. By default, the pool's
        `_abort_owner` stops the call (``owner`` owns it alone); a pool that
        cannot single out an owner overrides this.
        """
        if future is not None and future.cancel():
            return
        if type(self)._abort_owner is not EngineProtocol._abort_owner:
            self._abort_owner(executor, owner)  # the pool singles out one owner's calls

    async def astop_call(
        self, executor: concurrent.futures.Executor, owner: object, future: concurrent.futures.Future[Any] | None
    ) -> None:
        """`stop_call`, in a thread of its own: the loop goes on while a worker is killed."""
        from ._threads import run_in_own_thread

        await run_in_own_thread(self.stop_call, executor, owner, future)

    @property
    def stops_one_call(self) -> str:
        """What `stop_call` does to a running call, in words (a `NodeTimeoutError` says it)."""
        if self.runs_in_this_process:
            return "its task was interrupted where Python code runs; one blocked in a C call runs on until it returns"
        if self.workers_elsewhere:
            return "the pool cannot stop a running task: it runs on in the background"
        return "its worker process was killed, with the processes its task started, and replaced"

    def _abort_owner(self, executor: concurrent.futures.Executor, owner: object) -> None:
        """Stop the running tasks of one owner while others keep theirs. Blocking.

        The default cannot single tasks out: they finish in the background.
        """
        logger.warning(
            "the %r pool is shared with other running executions: the stopped execution's "
            "running tasks finish in the background instead of being killed",
            self.name,
        )

    def _take_for_abort(self, owner: object | None) -> tuple[concurrent.futures.Executor | None, bool]:
        """The executor to act on, and whether it was detached (to be stopped whole)."""
        with self._lock:
            others_busy = any(n > 0 for o, n in self._inflight.items() if o is not owner)
            if owner is not None and others_busy:
                return self._executor, False
            executor, self._executor = self._executor, None
            return executor, True
