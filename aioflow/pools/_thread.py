"""The ``thread`` pool: an executor of daemon threads whose running tasks can be interrupted.

Data flow: ``submit`` queues the call and wakes the most recently idle thread
(`aioflow.pools._idle.Workers`: each idle thread waits on a lock of its own,
which ``submit`` releases, as in trio's thread cache); with no idle thread it
starts a new one (up to ``max_workers``), or else the call waits for the
next thread that finishes. A thread takes the oldest queued call, so calls
are taken in the order they were submitted, whichever thread runs first, and
each runs as soon as it is taken: two firings of one node submitted back to
back start in that order unless the system suspends the first thread between
taking its call and starting it.
A thread counts as idle as soon as its call has
returned, before it resolves the call's future: a call submitted from the
future's done-callback, or once its result is in, goes to that same thread,
and a chain of calls never starts a second one. A thread exits when the
executor shuts down or, with an ``idle_timeout``, once it has waited that
long with no call: the threads a burst started and a trickle of calls no
longer needs are never woken, and retire.

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
clears any pending one. ``_workers`` (busy and idle threads), ``_pending``
(the calls that wait for a thread), ``_threads``, ``_shutdown``, and a
thread's ``exit`` flag are guarded by ``_lock``.
With greenlets, ``_green_tasks`` (ident -> the task a greenlet is inside
right now) is written only by that greenlet, and read by the kill callback
in the same hub. A kill that lands between the entry
and the task's start still ends in the same ``finally``; the entry is
removed before anything that may switch, so none lands after the task.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._broken import InitializerFailed
from .._errors import OptionError, TaskInterrupted
from ._base import Pool
from ._futures import cancel_queued, owned_by
from ._idle import Workers
from ._outcomes import InterruptTaken

if TYPE_CHECKING:
    from ._options import PoolOptions

__all__ = ["INTERRUPT_GRACE", "TaskInterrupted", "ThreadPool"]

T = TypeVar("T")

logger = logging.getLogger("aioflow.pools")

#: Seconds to wait for interrupted tasks to stop. Python-level code stops
#: within microseconds; anything longer is stuck in a C call we cannot break.
INTERRUPT_GRACE = 5.0

#: A scaling thread pool of the default size (``max_workers=None``) starts a
#: thread for each queued call up to the stdlib's default, ``min(32, CPUs +
#: 4)``, and beyond it up to `THREAD_CAP` only while its busy threads wait
#: (`_ThreadExecutor._grow`): together they use less than `WAITING_CPU` of a
#: CPU, so they sleep, read or wait for a reply rather than compute.
THREAD_CAP = 128

#: CPUs that the busy threads together use, since each started its call, below which they count as waiting.
WAITING_CPU = 0.5

#: Seconds between two looks at the busy threads while calls queue.
GROW_INTERVAL = 0.005


def _thread_cpu(thread: threading.Thread | None) -> float | None:
    """CPU seconds ``thread`` has used, or ``None`` where the platform cannot tell (or it has exited)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))  # type: ignore[union-attr,arg-type]
    except (AttributeError, OSError, TypeError, ValueError):
        return None


def _async_raise(ident: int, exc_type: type[BaseException]) -> None:
    import ctypes  # here: only an interrupt needs it, and its import costs a first run about 1 ms

    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


def _consume_async_exc(ident: int) -> None:
    """Replace this thread's pending asynchronous exception, if any, by one caught here.

    ``PyThreadState_SetAsyncExc(ident, NULL)``, the documented way to clear
    one, leaves the interpreter's "asynchronous exception pending" flag set
    on CPython 3.11 while no thread has one any more: from then on, entering
    any frame under a profiler or tracer (cProfile, ``sys.settrace``,
    coverage, debuggers) loops forever in the interpreter. An exception that
    is *raised* clears the flag, so this thread is sent one of its own and
    takes it at once. The loop sends it again if another thread cleared the
    flag in between (the flag is one for all threads): each send sets it.
    ``ident`` must be the calling thread's.
    """
    try:
        while True:
            _async_raise(ident, InterruptTaken)
    except InterruptTaken:
        pass


class _GreenTask:
    """A task running in a greenlet of the pool (gevent-patched process): whom to kill, and from which hub."""

    __slots__ = ("greenlet", "hub", "owner")

    def __init__(self, owner: object, greenlet: Any, hub: Any) -> None:
        self.owner = owner
        self.greenlet = greenlet
        self.hub = hub


_WorkItem = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Worker:
    """A thread of the pool: the lock it waits on while idle, whether it is to exit, when its call started."""

    __slots__ = ("exit", "started", "thread", "wake")

    def __init__(self) -> None:
        self.exit = False  # set (under the executor's lock) with `wake` released: the executor shuts down
        # Held while the thread has nothing to do: a caller queues a call and releases it.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.thread: threading.Thread | None = None
        # (monotonic time, this thread's CPU time) when its current call started; only
        # kept by an executor that grows (`_ThreadExecutor._grow`), which reads it.
        self.started: tuple[float, float] | None = None


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
        grow_to: int | None = None,
    ) -> None:
        self._max_workers = max_workers
        # Past max_workers, up to grow_to threads while the busy ones wait (`_grow`); None: never.
        self._grow_to = grow_to if grow_to is not None and grow_to > max_workers else None
        self._grower: threading.Thread | None = None  # under _lock: the thread running `_grow`
        self._stop_growing = threading.Event()
        self._prefix = thread_name_prefix
        self._initializer = initializer
        self._initargs = initargs
        # Under _lock: the threads, busy or idle (the most recently idle takes the next call), and the
        # calls that wait for one (only while every thread is busy and max_workers run).
        self._workers: Workers[_Worker] = Workers(idle_timeout)
        self._pending: deque[_WorkItem] = deque()
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
        if self._green:
            self._grow_to = None  # greenlets: no thread CPU clock tells waiting from computing
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
            self._pending.append((future, fn, args, kwargs))
            worker = self._workers.take()
            if worker is not None:
                worker.wake.release()
            elif len(self._workers) < self._max_workers:
                self._start_thread()
            elif self._grow_to is not None and self._grower is None and len(self._workers) < self._grow_to:
                self._grower = threading.Thread(target=self._grow, name=f"{self._prefix}-grow", daemon=True)
                self._grower.start()
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_queued()
            # The idle threads exit now, the busy ones once no call waits.
            while (worker := self._workers.take()) is not None:
                self._workers.remove(worker)
                worker.exit = True
                worker.wake.release()
            threads = list(self._threads)
            grower = self._grower
        self._stop_growing.set()
        if wait:
            if grower is not None:
                grower.join()
            for thread in threads:
                thread.join()

    # ------------------------------------------------------------ internals

    def start_all(self) -> None:
        """Start every worker now (``scaling_workers=False``)."""
        with self._lock:
            while len(self._workers) < self._max_workers:
                self._start_thread()

    def _start_thread(self) -> None:
        """Start a thread (under ``_lock``): once initialised, it takes the oldest queued call, or goes idle."""
        worker = _Worker()
        name = f"{self._prefix}_{next(self._counter)}"
        worker.thread = threading.Thread(target=self._work, args=(worker,), name=name, daemon=True)
        worker.thread.start()
        self._workers.add(worker)
        self._threads.append(worker.thread)

    def _grow(self) -> None:
        """While calls queue, start threads for them as long as the busy threads wait rather than compute.

        Runs in a thread of its own, started by ``submit`` when a call queues
        with ``max_workers`` threads busy, and ends when no call queues (a
        later one starts it again), at ``grow_to`` threads, or at shutdown.
        Every `GROW_INTERVAL`, it adds up the CPU each busy thread has used
        since its call started, divided by the time since: under the GIL,
        threads that compute use about one CPU together however many there
        are, threads blocked in ``sleep``, I/O or a lock next to none. Below
        `WAITING_CPU`, it starts one thread per busy thread (at most one per
        queued call), so the pool doubles while the calls wait. Where a
        thread's CPU time cannot be read, the process's is used.
        """
        per_thread = True
        last = (time.monotonic(), time.process_time())  # the process's CPU, for the fallback
        while not self._stop_growing.wait(GROW_INTERVAL):
            with self._lock:
                pending = len(self._pending)
                live = len(self._workers)
                assert self._grow_to is not None
                if self._shutdown or self._broken is not None or not pending or live >= self._grow_to:
                    self._grower = None
                    return
                busy = self._workers.busy()
            now = time.monotonic()
            used = 0.0
            if per_thread:
                for worker in busy:
                    started = worker.started
                    cpu = _thread_cpu(worker.thread)
                    if cpu is None:
                        per_thread = False
                        break
                    if started is not None and now > started[0]:
                        used += (cpu - started[1]) / (now - started[0])
            if not per_thread:
                cpu = time.process_time()
                used = (cpu - last[1]) / max(now - last[0], GROW_INTERVAL)
                last = (now, cpu)
            if used >= WAITING_CPU:
                continue
            with self._lock:
                if self._shutdown:
                    continue
                for _ in range(min(len(self._pending), len(busy), self._grow_to - len(self._workers))):
                    self._start_thread()

    def _take_pending(self) -> list[_WorkItem]:
        """Take the calls that wait for a thread (under ``_lock``)."""
        items = list(self._pending)
        self._pending.clear()
        return items

    def _cancel_queued(self) -> None:
        for item in self._take_pending():
            cancel_queued(item[0])

    def _broken_error(self) -> InitializerFailed:
        assert self._broken is not None
        return InitializerFailed.caused_by(self._broken, self._broken_cause)

    def _break(self, worker: _Worker, cause: BaseException) -> None:
        """The initializer failed in ``worker``'s thread: fail its call and the queued ones, refuse new ones.

        As the stdlib's executor does; calls already running in other threads finish.
        """
        with self._lock:
            self._broken = f"the thread pool's initializer failed: {cause!r}; the pool cannot run calls"
            self._broken_cause = cause
            self._workers.remove(worker)
            queued = self._take_pending()
        for future, *_ in queued:
            if future.set_running_or_notify_cancel():
                future.set_exception(self._broken_error())

    def _work(self, worker: _Worker) -> None:
        if self._green:
            from .._gevent_bridge import mark_task

            mark_task()  # what `guard_tasks` guards
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:
                logger.exception("the thread pool's initializer failed")
                self._break(worker, exc)
                return
        item = self._free(worker)
        while True:
            # Each call's function, arguments and result are freed with `_run`'s frame: nothing outlives it here.
            if item is not None:
                item = self._run(worker, item)
            elif self._wait(worker):
                item = self._free(worker)
            else:
                return

    def _run(self, worker: _Worker, item: _WorkItem) -> _WorkItem | None:
        """Run one call, unless it was cancelled while queued; return the next call that waits, if any.

        The thread is free (idle, or given the next call) before the call's
        future is resolved: a caller that submits again from the future's
        done-callback, or once its result is in, finds this thread idle.
        """
        future, fn, args, kwargs = item
        del item
        if not future.set_running_or_notify_cancel():
            return self._free(worker)
        if self._grow_to is not None:
            worker.started = (time.monotonic(), time.thread_time())
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            following = self._free(worker)
            future.set_exception(exc)
        else:
            following = self._free(worker)
            future.set_result(result)
        return following

    def _free(self, worker: _Worker) -> _WorkItem | None:
        """``worker`` has no call: the oldest one queued, or none, and it is idle (or exits after a shutdown).

        Calls are taken in the order they were submitted: whichever thread
        comes here first takes the oldest, whichever thread ``submit`` woke.
        """
        with self._lock:
            if self._pending:
                return self._pending.popleft()
            if self._shutdown:
                self._workers.remove(worker)
                worker.exit = True
                worker.wake.release()  # `_wait` returns at once
            else:
                self._workers.idle(worker)
        return None

    def _wait(self, worker: _Worker) -> bool:
        """Wait, idle, until a caller wakes this thread (``True``) or it is to exit (``False``).

        A woken thread takes the oldest queued call (`_free`), if no other
        thread has taken it meanwhile. It exits when the executor shuts
        down, or once it has waited ``idle_timeout`` seconds and no caller
        has woken it meanwhile (one that has is about to release its lock).
        """
        timeout = self._workers.idle_timeout
        while not worker.wake.acquire(timeout=-1 if timeout is None else timeout):
            with self._lock:
                if self._workers.leave_if_idle(worker):
                    assert worker.thread is not None
                    self._threads.remove(worker.thread)
                    return False
        return not worker.exit

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
                    # An interruption may still be pending (it was sent as
                    # the task ended): take it now, not in the next task.
                    self._interrupted.discard(ident)
                    _consume_async_exc(ident)
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

    def interrupt(self, owner: object | None = None, grace: float = INTERRUPT_GRACE) -> list[str]:
        """Interrupt the running tasks of ``owner`` (all when None) and wait for them.

        Returns the names of the threads still running one of them after
        ``grace`` seconds. A thread interrupted earlier (a node's timeout)
        whose task still runs is stuck in a C call: it is not waited for again.
        """

        def busy() -> set[int]:
            return {i for i, o in self._running.items() if owner is None or owned_by(o, owner)}

        with self._running_changed:
            stuck_before = busy() & self._interrupted
            if self._green:
                for ident, task in list(self._green_tasks.items()):
                    if owner is None or owned_by(task.owner, owner):
                        self._kill_green(ident, task)
            else:
                for ident in busy() - stuck_before:
                    self._interrupted.add(ident)
                    _async_raise(ident, TaskInterrupted)
            self._running_changed.wait_for(lambda: not (busy() - stuck_before), timeout=grace)
            stuck = busy()
        return [t.name for t in list(self._threads) if t.ident in stuck]


class ThreadPool(Pool):
    """Tasks run in threads of this process: no pickling, shared memory, the GIL."""

    name = "thread"
    runs_in_this_process = True

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
        # The stdlib's default: the threads started as calls come; a scaling
        # pool of this default size grows past it while its threads wait.
        return min(32, (os.cpu_count() or 1) + 4)

    @property
    def _grows(self) -> bool:
        """Whether the pool grows past `capacity`, up to `THREAD_CAP`, while its threads wait.

        A scaling pool of the default size does; one given ``max_workers``,
        or ``scaling_workers=False``, keeps to its size.
        """
        return self.options.max_workers is None and self.options.scaling_workers

    @property
    def calls_in_flight(self) -> int:
        """As every pool's, counting `THREAD_CAP` workers for a pool that grows (`_grows`)."""
        return self.calls_in_flight_per_worker * (THREAD_CAP if self._grows else self.capacity)

    def _create_executor(self) -> concurrent.futures.Executor:
        max_workers = self.capacity
        idle_timeout = self.options.idle_timeout if self.options.scaling_workers else None
        grow_to = THREAD_CAP if self._grows else None
        executor = _ThreadExecutor(
            max_workers=max_workers, idle_timeout=idle_timeout, grow_to=grow_to, **self.options.extra
        )
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

    def stop_call(
        self, executor: concurrent.futures.Executor, owner: object, future: concurrent.futures.Future[Any] | None
    ) -> None:
        # Interrupted, not waited for: a task blocked in a C call runs on, and
        # the execution that stops it stops its calls when it ends (`aabort`).
        if future is not None and future.cancel():
            return
        assert isinstance(executor, _ThreadExecutor)
        executor.interrupt(owner, grace=0)


def _warn_stuck(names: list[str]) -> None:
    if names:
        logger.warning(
            "thread(s) %s did not stop within %.0f s (a task blocked in a C call); "
            "they finish in the background. Use a process pool for tasks that must be stoppable.",
            ", ".join(names),
            INTERRUPT_GRACE,
        )
