"""The overrides of CPython's ``multiprocessing.Pool`` internals that the ``multiprocessing`` pools rely on.

`aioflow.pools._multiprocessing` runs its calls on a `multiprocessing.Pool`
whose workers report on pipes of their own and whose killed workers cannot
hang the others (its docstring says why and how). That needs more than the
public API: this module subclasses the pool and its queues and reads their
private attributes, and the executor reaches them only through `PipedPool`'s
methods.

The pool's workers start as every process pool's do
(`aioflow.pools._mp_start`, the other module that overrides multiprocessing
internals: how ``spawn`` and ``forkserver`` workers start).

What is overridden or read, by class:

- ``multiprocessing.pool.Pool``: ``Process`` (called as
  ``self.Process(ctx, target=, args=)``, with ``args`` the worker function's
  ``(inqueue, outqueue, initializer, initargs, ...)``), ``_setup_queues``
  (called by ``__init__`` right after it made the worker list),
  ``_help_stuff_finish`` and ``_terminate_pool`` (their signatures and the
  order of the stdlib's steps), ``_pool`` (the worker list, appended to right
  after each start), ``_cache``, ``_worker_handler``, ``_change_notifier``,
  ``_outqueue``, ``_ctx``, ``_quick_put``, ``_quick_get``, and the
  ``"TERMINATE"`` state that ends each of its threads;
- ``multiprocessing.queues.SimpleQueue``: ``get`` and ``put``, and its
  ``_reader``, ``_writer``, ``_rlock`` and ``_wlock``;
- ``multiprocessing.process.BaseProcess``: ``daemon``, which the pool sets on
  every worker (the non-daemonic workers ignore it);
- ``multiprocessing.connection.Connection``: how ``send_bytes`` frames a
  message (`aioflow.pools._outcomes.Inbox` reads those frames).

Versions. Written and tested for CPython 3.11 (3.11.7). Its
``multiprocessing/pool.py``, ``queues.py`` and ``connection.py`` in CPython
3.12 (3.12.1) and 3.13 (3.13.0) were compared with 3.11's line by line: what
is listed above is unchanged there. `check_supported` (`aioflow.pools._mp_start`)
refuses every other version, and every other implementation, when such a pool
is opened, with a `PoolError` that says which version it found and which it
supports: unknown internals would misbehave, not fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import multiprocessing.connection
import multiprocessing.pool
import multiprocessing.process
import multiprocessing.queues
import multiprocessing.util
import os
import select
import threading
import time
import weakref
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from ._lifecycle import kill_process_trees
from ._mp_start import SUPPORTED, check_supported, start_context

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["IDLE", "NO_JOB", "SUPPORTED", "TAKING", "PipedPool", "check_supported", "new_job_cell", "weak_call"]

logger = logging.getLogger("aioflow.pools")

#: A worker's state cell: ``TAKING`` from taking the task queue's read lock until the call it read is reported.
IDLE, TAKING = 0, 1

#: Seconds a stop waits for each of the pool's threads and workers (only a stuck one reaches it).
_THREAD_GRACE = 10.0

#: Seconds a stop waits for a queue lock before it takes the holder for a dead worker.
_LOCK_GRACE = 0.5

#: Longest wait between two reads while the task pipe is drained.
_DRAIN_WAIT = 0.05

#: ``multiprocessing.pool.TERMINATE``: the state that ends each of the pool's threads.
_TERMINATE = "TERMINATE"

#: The largest message (its 4-byte length included) a pipe takes in one indivisible write.
_ATOMIC_WRITE = select.PIPE_BUF

# In a worker: its state cell (`PipedPool.Process` gives each worker one, `_start_worker` keeps it here).
_STATE: Any = None


#: A job cell's value while its worker runs no call.
NO_JOB = -1


def new_job_cell(ctx: Any) -> Any:
    """A shared integer with a lock of its own: the id of the call a worker runs, or `NO_JOB`.

    The worker sets it (under its lock) before it reports a call and clears it
    before it sends the call's outcome; whoever holds the lock knows the
    worker cannot move on to another call meanwhile.
    """
    return ctx.Value(ctypes.c_longlong, NO_JOB, lock=ctx.Lock())


def weak_call(method: Callable[..., None], *args: Any) -> Callable[..., None]:
    """``method(*args, ...)``, called only while its object is alive."""
    ref = weakref.WeakMethod(method)

    def call(*more: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args, *more)

    return call


# --------------------------------------------------------------------------- in a worker


def _start_worker(state: Any, initializer: Callable[..., Any], initargs: tuple[Any, ...]) -> None:
    """A worker's first step: keep its state cell for `_TaskQueue`, then run the pool's initializer."""
    global _STATE
    _STATE = state
    initializer(*initargs)


class _TaskQueue(multiprocessing.queues.SimpleQueue[Any]):
    """The pool's task queue, read by a worker that holds its read lock only while a task is there.

    The stdlib's worker blocks in its read while it holds the lock: killed
    then, it leaves the lock taken and every other worker waits forever. Here
    a worker waits for data without the lock, and its state cell says
    ``TAKING`` from before it takes the lock until its call is reported (the
    call itself sets it back to ``IDLE``).
    """

    def get(self) -> Any:
        state = _STATE
        reader: multiprocessing.connection.Connection = self._reader  # type: ignore[attr-defined]
        while True:
            reader.poll(None)
            state.value = TAKING
            with self._rlock:  # type: ignore[attr-defined]
                if reader.poll():
                    data = reader.recv_bytes()
                    break
            state.value = IDLE  # another worker took it
        return ForkingPickler.loads(data)


class _ResultQueue(multiprocessing.queues.SimpleQueue[Any]):
    """The pool's result queue, written without its lock when a message fits in one indivisible write.

    The end-of-call markers always do: a worker killed around the write
    neither holds the lock nor leaves half a message.
    """

    def put(self, obj: Any) -> None:
        data = ForkingPickler.dumps(obj)
        writer: multiprocessing.connection.Connection = self._writer  # type: ignore[attr-defined]
        if len(data) + 4 <= _ATOMIC_WRITE:
            writer.send_bytes(data)
        else:
            with self._wlock:  # type: ignore[attr-defined]
                writer.send_bytes(data)


# --------------------------------------------------------------------------- in the pool's process


class _WorkerList(list[Any]):
    """``Pool._pool``, which tells who asks each worker the pool appends to it, right after it started."""

    def __init__(self, on_append: Callable[[Any], None]) -> None:
        super().__init__()
        self._on_append = on_append

    def append(self, process: Any) -> None:
        super().append(process)
        self._on_append(process)


class PipedPool(multiprocessing.pool.Pool):
    """A `multiprocessing.Pool` whose workers report on pipes of their own, and that stops cleanly whatever its killed workers left in its pipes.

    Each worker gets its own pipe, state cell and job cell (`Process`); once
    it has started, ``on_started(process, reader, state, job)`` is called, in
    the thread that started it. The pool's initializer receives them as its
    last three arguments, ``(*initargs, writer, state, job)``. The job cell
    (`new_job_cell`) is free for the executor's use. The queues are
    `_TaskQueue` and `_ResultQueue`.

    Stopping. Both queues are pipes of length-prefixed pickles. A worker
    killed in the middle of reading a task leaves the rest of that message in
    the task pipe: the stdlib's ``terminate`` unpickles what is left in the
    task pipe and raises (``EOFError: Ran out of input``), after which it
    never stops the pool's threads. Here:

    - ``terminate`` drains the task pipe as raw bytes (`_drain_raw`), never
      unpickling them; it runs once every worker is dead (`kill_and_terminate`);
    - a result that cannot be read ends the result thread, as the end of the
      pipe does, and reports it (``on_results_lost``) instead of raising there;
    - ``terminate`` waits for each thread and worker a bounded time, and ends
      the result thread, even one stuck in the middle of a message, by
      closing the result pipe's last write end (the workers' closed with them).
    """

    def __init__(
        self,
        *args: Any,
        on_results_lost: Callable[[str], None],
        on_started: Callable[[Any, multiprocessing.connection.Connection, Any, Any], None],
        **kwargs: Any,
    ) -> None:
        # Pool.__init__ starts the first workers: what they need comes first.
        self._on_results_lost = on_results_lost
        self._on_started = on_started
        self._starting: dict[Any, tuple[Any, ...]] = {}
        super().__init__(*args, **kwargs)

    # ---------------------------------------------------------- what the executor uses

    def workers(self) -> list[multiprocessing.process.BaseProcess]:
        """The worker processes the pool has started and not yet reaped."""
        return list(getattr(self, "_pool", None) or [])

    def replacing(self) -> bool:
        """Whether the pool's worker thread runs: it may still start a worker, or reap one."""
        handler = _private(self, "_worker_handler")
        return handler is not None and bool(handler.is_alive())

    def stop_replacing(self) -> None:
        """Stop the pool's worker thread, which replaces every worker that exits, and wait for it.

        Killing workers while it runs only makes it start new ones, which the
        kill misses and which would read the pipes while they are drained.
        """
        handler = _private(self, "_worker_handler")
        notifier = _private(self, "_change_notifier")
        if handler is None or notifier is None:
            return
        handler._state = _TERMINATE
        notifier.put(None)  # wakes it
        _join_thread(handler, threading.current_thread())

    def forget_calls(self) -> None:
        """Forget every call the pool waits for, so that a closed pool lets its workers exit.

        The stdlib keeps its workers until it has the end-of-call marker of
        every call it sent; those of calls whose worker died never come.
        """
        cache = self._cache  # type: ignore[attr-defined]
        for key in list(cache):
            with contextlib.suppress(KeyError):
                del cache[key]

    def kill_and_terminate(self) -> None:
        """Kill every worker tree, free the queue locks the dead may hold, terminate the pool."""
        # First no more replacements, then the kill: the set of workers is final.
        self.stop_replacing()
        kill_process_trees(sorted(p.pid for p in self.workers() if p.pid is not None))
        # A worker killed while sending a large result holds the result queue's
        # write lock, which the pool's threads take to send their end markers. (A
        # worker waiting for a task holds the task queue's read lock: terminate
        # does not take it.)
        _free_lock(_private(self, "_outqueue", "_wlock"))
        self.terminate()

    # ---------------------------------------------------------- the stdlib's hooks

    def Process(self, ctx: Any, *args: Any, **kwds: Any) -> Any:  # type: ignore[override]
        """Called by the pool for each new worker: give it a pipe, a state cell and a job cell of its own."""
        reader, writer = ctx.Pipe(duplex=False)
        state = ctx.RawValue(ctypes.c_int, IDLE)
        job = new_job_cell(ctx)
        inqueue, outqueue, initializer, initargs, *rest = kwds["args"]
        kwds["args"] = (inqueue, outqueue, _start_worker, (state, initializer, (*initargs, writer, state, job)), *rest)
        process = self._new_process(ctx, *args, **kwds)
        self._starting[process] = (reader, writer, state, job)
        return process

    @staticmethod
    def _new_process(ctx: Any, *args: Any, **kwds: Any) -> Any:
        return start_context(ctx.get_start_method()).Process(*args, **kwds)

    def _started(self, process: Any) -> None:
        reader, writer, state, job = self._starting.pop(process)
        writer.close()  # the worker has its own: the pipe ends with it
        self._on_started(process, reader, state, job)

    def _setup_queues(self) -> None:
        # Pool.__init__ calls it right after it made the worker list: the one place to replace both.
        # Weakly: the pool's exit hook holds the list until the pool is collected.
        self._pool = _WorkerList(weak_call(self._started))
        ctx = self._ctx  # type: ignore[attr-defined]
        self._inqueue = _TaskQueue(ctx=ctx)
        self._outqueue = _ResultQueue(ctx=ctx)
        self._quick_put = self._inqueue._writer.send  # type: ignore[attr-defined]
        self._quick_get = functools.partial(_receive_result, self._outqueue._reader, self._on_results_lost)  # type: ignore[attr-defined]

    @staticmethod
    def _help_stuff_finish(inqueue: Any, task_handler: Any, size: int) -> None:
        _drain_raw(inqueue._reader, task_handler)

    @classmethod
    def _terminate_pool(
        cls,
        taskqueue: Any,
        inqueue: Any,
        outqueue: Any,
        pool: list[Any],
        change_notifier: Any,
        worker_handler: Any,
        task_handler: Any,
        result_handler: Any,
        cache: Any,
    ) -> None:
        # The stdlib's steps, in its order, with bounded waits and no assertion
        # that the result thread is alive (a garbled result may have ended it).
        current = threading.current_thread()
        worker_handler._state = _TERMINATE
        task_handler._state = _TERMINATE
        change_notifier.put(None)
        cls._help_stuff_finish(inqueue, task_handler, len(pool))
        result_handler._state = _TERMINATE
        change_notifier.put(None)
        with contextlib.suppress(OSError):
            outqueue.put(None)  # the result thread's end marker
        _join_thread(worker_handler, current)
        for worker in pool:
            if worker.exitcode is None:
                worker.terminate()
        _join_thread(task_handler, current)
        # Nothing writes results any more. Closing the last write end (the
        # workers' closed when they died) lets the result thread read what
        # the pipe holds, then the end of the pipe: it ends even when stuck
        # in the middle of a message.
        outqueue._writer.close()
        _join_thread(result_handler, current)
        for worker in pool:
            worker.join(_THREAD_GRACE)
            if worker.exitcode is None:
                worker.kill()
                worker.join(_THREAD_GRACE)


def _private(obj: object, *names: str) -> Any:
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _free_lock(lock: Any) -> None:
    """Make ``lock`` free, even if a worker that died holding it left it taken.

    Our own threads hold it only for one short write: a lock still taken
    after the grace belongs to a dead worker, and a multiprocessing lock may
    be released by another process.
    """
    if lock is not None:
        lock.acquire(True, _LOCK_GRACE)
        lock.release()


def _drain_raw(reader: multiprocessing.connection.Connection, task_handler: threading.Thread) -> None:
    """Discard what the task pipe holds, as raw bytes, until the task thread has ended.

    The task thread may be blocked writing to a full pipe, and ends once it
    has sent its end markers. Called when every worker is dead: nobody else
    reads the pipe. Unpickling what is left would fail on a message a killed
    worker half read.
    """
    deadline = time.monotonic() + _THREAD_GRACE
    fd = reader.fileno()
    while task_handler.is_alive() and time.monotonic() < deadline:
        if multiprocessing.connection.wait([reader], _DRAIN_WAIT):
            try:
                os.read(fd, 1 << 16)
            except OSError:
                return


def _receive_result(reader: multiprocessing.connection.Connection, on_lost: Callable[[str], None]) -> Any:
    """The result thread's read: one marker; a message that cannot be read ends the thread.

    ``EOFError`` and ``OSError`` end the stdlib's result thread quietly; any
    other error there (a garbled message) would kill it with a traceback. The
    pipe is out of step from then on, so the executor is told: the results
    themselves travel on the workers' own pipes, but the stdlib pool can no
    longer keep its books.
    """
    try:
        return reader.recv()
    except (EOFError, OSError):
        raise
    except Exception as exc:
        on_lost(f"the multiprocessing pool's result queue could not be read ({type(exc).__name__}: {exc})")
        raise EOFError from exc


def _join_thread(thread: Any, current: threading.Thread) -> None:
    if thread is current:
        return
    thread.join(_THREAD_GRACE)
    if thread.is_alive():
        logger.warning("the multiprocessing pool's %s thread did not end; leaving it (a daemon thread)", thread.name)
