"""The ``thread`` pool: an executor of daemon threads whose running tasks can be interrupted.

Data flow: ``submit`` puts a work item on a queue and, when no thread is
idle, starts a new one (up to ``max_workers``); a thread runs items until
the executor shuts down, or, with an ``idle_timeout``, until it has waited
that long for an item. Idle threads are reused before new ones start.

Threads cannot be killed. To stop a running task (timeout, cancellation,
Ctrl-C), the pool raises `aioflow.TaskInterrupted` inside the thread that runs it
(``PyThreadState_SetAsyncExc``). Python code sees it at its next bytecode, so
a task blocked inside one long C call (``time.sleep(3600)``, a blocking read)
only stops when that call returns. The pool waits `INTERRUPT_GRACE` seconds
for interrupted tasks, then gives up on them with a warning naming the
thread; use a process pool when tasks must be stoppable at any moment.

In a process where gevent has monkey-patched ``threading``, the pool's
"threads" are greenlets of the hub of the thread that started them, and
``PyThreadState_SetAsyncExc`` cannot reach them (their ident is a greenlet's,
not a thread's). There, as the ``gevent`` pool does, the running greenlet is
killed instead: `TaskInterrupted` is thrown into it at its next switch to
the hub, by a callback that the hub owning it runs (handed over with
``run_callback_threadsafe`` when the abort runs in another OS thread: a
greenlet is never thrown into from a foreign thread). The callback throws
only if the greenlet is still inside the very task it was sent for. A task
that does not stop (it carries on after `TaskInterrupted`, or blocks its hub
in a C call while the abort waits in another OS thread) is abandoned after
`INTERRUPT_GRACE`, with the same warning; a C call that blocks the hub of
the aborting thread holds up the abort itself (and any timeout) until it
returns. Whether the threads are greenlets is decided once per executor: an
unpatched process runs exactly the code above, at the same cost. A patched
process's tasks are guarded from two hangs (`aioflow._gevent_bridge.guard_tasks`).

Why our own executor rather than `concurrent.futures.ThreadPoolExecutor`:
its threads are joined at interpreter exit, so one task stuck in a C call
after an abort would keep the program from exiting after Ctrl-C. Ours are
daemon threads: `ThreadPool.close` still waits for them, but an abandoned one
never blocks exit. (`aioflow.Executor` waits for its own calls at exit, as the
stdlib's executors do.)

An ``initializer`` that raises breaks the executor, as it breaks the stdlib's:
the calls queued fail with `InitializerFailed` (a
`concurrent.futures.BrokenExecutor` whose ``__cause__`` is the initializer's
exception), and so does every later ``submit``; calls running in other
threads finish.

Who owns what: ``_running`` (thread ident -> owner of the task it runs) is
guarded by the ``_running_changed`` condition; an interruption is only ever
sent to a thread in that map, under its lock, and a thread leaving the map
clears any pending one. ``_threads``, ``_shutdown`` and the queue's sentinel
are guarded by ``_lock``. With greenlets, ``_green_tasks`` (ident -> the task a
greenlet is inside right now) is written only by that greenlet, and read
by the kill callback in the same hub. A kill that lands between the entry
and the task's start still ends in the same ``finally``; the entry is
removed before anything that may switch, so none lands after the task.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import itertools
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import InitializerFailed, OptionError, TaskInterrupted
from ._base import Pool
from ._futures import cancel_queued

if TYPE_CHECKING:
    from ._options import PoolOptions

__all__ = ["INTERRUPT_GRACE", "TaskInterrupted", "ThreadPool"]

T = TypeVar("T")

logger = logging.getLogger("aioflow.pools")

#: Seconds to wait for interrupted tasks to stop. Python-level code stops
#: within microseconds; anything longer is stuck in a C call we cannot break.
INTERRUPT_GRACE = 5.0


def _async_raise(ident: int, exc_type: type[BaseException] | None) -> None:
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type else None)


class _GreenTask:
    """A task running in a greenlet of the pool (gevent-patched process): whom to kill, and from which hub."""

    __slots__ = ("greenlet", "hub", "owner")

    def __init__(self, owner: object, greenlet: Any, hub: Any) -> None:
        self.owner = owner
        self.greenlet = greenlet
        self.hub = hub


_WorkItem = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _ThreadExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` of daemon threads, started on demand."""

    _counter = itertools.count()

    def __init__(
        self,
        max_workers: int,
        thread_name_prefix: str = "aioflow-thread",
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        idle_timeout: float | None = None,
    ) -> None:
        self._max_workers = max_workers
        self._idle_timeout = idle_timeout
        self._prefix = thread_name_prefix
        self._initializer = initializer
        self._initargs = initargs
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        # Exact counts, under _lock: items put on the queue and not yet taken
        # by a thread, and threads waiting for one. ``submit`` starts a thread
        # only when the items outnumber the waiting threads; a thread whose wait
        # timed out retires only when no item is on its way.
        self._unclaimed = 0
        self._waiting = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._shutdown = False
        # Why the executor cannot run calls (its initializer failed), and the initializer's exception.
        self._broken: str | None = None
        self._broken_cause: BaseException | None = None
        self._running: dict[int, object] = {}
        self._interrupted: set[int] = set()  # threads sent a TaskInterrupted
        self._running_changed = threading.Condition(threading.Lock())
        # Decided once: are our threads greenlets (gevent-patched threading)?
        from .._gevent_bridge import guard_tasks, is_patched

        self._green = is_patched()
        #: What `ThreadPool.bind` wraps tasks with: `run_owned`, or `run_owned_green`.
        self.run_task: Callable[..., Any] = self.run_owned
        if self._green:
            import gevent
            from gevent import monkey

            guard_tasks()  # the tasks' own process pools refused, their forks watched

            self._getcurrent: Callable[[], Any] = gevent.getcurrent
            self._get_hub: Callable[[], Any] = gevent.get_hub
            self._real_get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
            self._green_tasks: dict[int, _GreenTask] = {}
            self.run_task = self.run_owned_green

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._broken is not None:
                raise self._broken_error()
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._queue.put((future, fn, args, kwargs))
            self._unclaimed += 1
            if self._unclaimed > self._waiting and len(self._threads) < self._max_workers:
                self._start_thread()
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_queued()
            self._queue.put(None)  # each thread passes the sentinel on and exits
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()

    # ------------------------------------------------------------ internals

    def start_all(self) -> None:
        """Start every worker now (``scaling_workers=False``)."""
        with self._lock:
            while len(self._threads) < self._max_workers:
                self._start_thread()

    def _start_thread(self) -> None:
        name = f"{self._prefix}_{next(self._counter)}"
        thread = threading.Thread(target=self._work, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _take_queued(self) -> list[_WorkItem]:
        """Take the items no thread has taken off the queue (under ``_lock``); a shutdown's sentinel stays."""
        items: list[_WorkItem] = []
        stopping = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stopping = True
            else:
                self._unclaimed -= 1
                items.append(item)
        if stopping:
            self._queue.put(None)
        return items

    def _cancel_queued(self) -> None:
        for item in self._take_queued():
            cancel_queued(item[0])

    def _broken_error(self) -> InitializerFailed:
        assert self._broken is not None
        return InitializerFailed.caused_by(self._broken, self._broken_cause)

    def _break(self, cause: BaseException) -> None:
        """The initializer failed: fail the queued calls and refuse new ones, as the stdlib's executor does.

        Calls already running in other threads finish.
        """
        with self._lock:
            self._broken = f"the thread pool's initializer failed: {cause!r}; the pool cannot run calls"
            self._broken_cause = cause
            queued = self._take_queued()
        for future, *_ in queued:
            if future.set_running_or_notify_cancel():
                future.set_exception(self._broken_error())

    def _work(self) -> None:
        if self._green:
            from .._gevent_bridge import mark_task

            mark_task()  # what `guard_tasks` guards
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:
                logger.exception("the thread pool's initializer failed")
                self._break(exc)
                return
        while True:
            with self._lock:
                self._waiting += 1
            try:
                item = self._queue.get(timeout=self._idle_timeout)
                timed_out = False
            except queue.Empty:
                item, timed_out = None, True
            with self._lock:
                self._waiting -= 1
                if timed_out:
                    if self._unclaimed == 0:  # idle for idle_timeout: retire
                        self._threads.remove(threading.current_thread())
                        return
                    continue  # an item was put just now: take it
                if item is not None:
                    self._unclaimed -= 1
            if item is None:
                self._queue.put(None)
                return
            _run(item)
            del item  # nothing of a call outlives it here: its function, arguments and result are freed

    def run_owned(self, owner: object, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in this worker thread, recorded as ``owner``'s."""
        ident = threading.get_ident()
        with self._running_changed:
            self._running[ident] = owner
        try:
            return fn(*args, **kwargs)
        finally:
            with self._running_changed:
                self._running.pop(ident, None)
                if ident in self._interrupted:
                    # Clear an interruption that arrived after the task ended.
                    # Only then: clearing is not free (and, with a profiler or
                    # tracer installed, not harmless) on the normal path.
                    self._interrupted.discard(ident)
                    _async_raise(ident, None)
                self._running_changed.notify_all()

    def run_owned_green(self, owner: object, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """`run_owned` for a worker that is a greenlet (gevent-patched ``threading``)."""
        ident = threading.get_ident()
        task = _GreenTask(owner, self._getcurrent(), self._get_hub())
        try:
            with self._running_changed:
                self._running[ident] = owner
                self._green_tasks[ident] = task
            return fn(*args, **kwargs)
        finally:
            # First, before anything that may switch: no kill lands after this.
            self._green_tasks.pop(ident, None)
            with self._running_changed:
                self._running.pop(ident, None)
                self._running_changed.notify_all()

    def _kill_green(self, ident: int, task: _GreenTask) -> None:
        """Have ``task``'s hub throw `TaskInterrupted` into its greenlet, if it still runs that task."""
        hub = task.hub

        def throw() -> None:  # run by the hub, in its own thread
            if self._green_tasks.get(ident) is not task:
                return  # the task ended meanwhile: its greenlet has moved on
            try:
                task.greenlet.throw(TaskInterrupted)
            except BaseException:
                hub.handle_error(task.greenlet, *sys.exc_info())

        if self._real_get_ident() == hub.thread_ident:
            hub.loop.run_callback(throw)
        else:
            hub.loop.run_callback_threadsafe(throw)

    def interrupt(self, owner: object | None = None) -> list[str]:
        """Interrupt the running tasks of ``owner`` (all when None) and wait for them.

        Returns the names of the threads still running one of them after
        `INTERRUPT_GRACE` seconds.
        """

        def busy() -> set[int]:
            return {i for i, o in self._running.items() if owner is None or o is owner}

        with self._running_changed:
            if self._green:
                for ident, task in list(self._green_tasks.items()):
                    if owner is None or task.owner is owner:
                        self._kill_green(ident, task)
            else:
                for ident in busy():
                    self._interrupted.add(ident)
                    _async_raise(ident, TaskInterrupted)
            self._running_changed.wait_for(lambda: not busy(), timeout=INTERRUPT_GRACE)
            stuck = busy()
        return [t.name for t in list(self._threads) if t.ident in stuck]


def _run(item: _WorkItem) -> None:
    """Run one call in this worker thread, unless it was cancelled while queued."""
    future, fn, args, kwargs = item
    if future.set_running_or_notify_cancel():
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)


class ThreadPool(Pool):
    """Tasks run in threads of this process: no pickling, shared memory, the GIL."""

    name = "thread"

    def _validate(self, options: PoolOptions) -> None:
        if options.context is not None:
            raise OptionError(
                "context", "None for the 'thread' pool (start methods apply to process pools)", options.context
            )
        unknown = set(options.extra) - {"initializer", "initargs", "thread_name_prefix"}
        if unknown:
            raise OptionError(
                "pool_options", "a dict with keys among initializer, initargs, thread_name_prefix", options.extra
            )

    def _default_max_workers(self) -> int:
        # The stdlib's default: enough threads for I/O-bound tasks without
        # oversubscribing small machines.
        return min(32, (os.cpu_count() or 1) + 4)

    def _create_executor(self) -> concurrent.futures.Executor:
        max_workers = self.capacity
        idle_timeout = self.options.idle_timeout if self.options.scaling_workers else None
        executor = _ThreadExecutor(max_workers=max_workers, idle_timeout=idle_timeout, **self.options.extra)
        if not self.options.scaling_workers:
            executor.start_all()
        return executor

    def bind(self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., T]) -> Callable[..., T]:
        assert isinstance(executor, _ThreadExecutor)
        return functools.partial(executor.run_task, owner, fn)

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, _ThreadExecutor)
        executor.shutdown(wait=False, cancel_futures=True)
        stuck = executor.interrupt()
        _warn_stuck(stuck)
        for thread in list(executor._threads):
            if thread.name not in stuck:
                thread.join(INTERRUPT_GRACE)

    def _abort_owner(self, executor: concurrent.futures.Executor, owner: object) -> None:
        assert isinstance(executor, _ThreadExecutor)
        _warn_stuck(executor.interrupt(owner))


def _warn_stuck(names: list[str]) -> None:
    if names:
        logger.warning(
            "thread(s) %s did not stop within %.0f s (a task blocked in a C call); "
            "they finish in the background. Use a process pool for tasks that must be stoppable.",
            ", ".join(names),
            INTERRUPT_GRACE,
        )
