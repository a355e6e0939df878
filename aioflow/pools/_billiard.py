"""The ``billiard`` pool: a `billiard.pool.Pool` (Celery's fork of multiprocessing) behind an executor.

Actors:

- `BilliardExecutor` (the scheduler's side): ``submit`` wraps the call in
  `_call_in_worker` and hands it to ``Pool.apply_async`` with callbacks that
  resolve a `concurrent.futures.Future`. It owns ``_jobs`` (future -> record),
  guarded by ``_lock``.
- billiard's threads, in the pool's process: the task handler feeds the
  workers, the result handler runs our callbacks (so futures resolve in that
  thread), and the supervisor reaps dead workers and starts replacements.
  Ours (`_Supervisor`) waits on the workers' sentinels instead of sleeping
  0.8 s between rounds, so a dead worker is noticed at once and closing the
  pool does not wait for a nap to end.
- the workers: daemonic, as billiard makes them; they ignore SIGINT and exit
  with their owner (``_worker_initializer`` of the ``process`` pool).

Transport: the call travels pickled twice (`_Call`), so that the worker
acknowledges the job before it unpickles the inputs, and the worker pickles
the outcome itself (`_call_in_worker`), so that a result that cannot be
pickled fails its node with the real pickling error; an exception comes back
with the worker's traceback text as ``__cause__``, as with
``concurrent.futures``. Pickling happens in billiard's threads and in the
workers, never in the caller's (the event loop's) thread.

A worker that dies (os._exit, a signal, out of memory) fails the job it was
running: billiard waits ``lost_worker_timeout`` (1 s here, 10 s in billiard;
``pool_options`` can change it) for a result already on its way, then reports
``billiard.exceptions.WorkerLostError``, which the executor turns into a
`concurrent.futures.BrokenExecutor` (the scheduler then raises
`aioflow.WorkerLostError`). Unlike ``concurrent.futures``, the pool is not
broken: billiard starts a replacement and the other jobs go on. Workers that
keep dying before they accept any job (a failing initializer) do break it:
every pending future fails instead of waiting forever (billiard would
restart them forever, or SIGTERM the whole program when they restart too
fast). Likewise a failing billiard thread breaks the pool instead of ending
the program with ``os._exit``, as billiard's own threads do.

Workers: with ``scaling_workers`` the pool starts one worker and grows (up
to ``max_workers``) when jobs outnumber workers; otherwise billiard starts
them all at once and keeps them. A scaling pool also retires every worker
idle for longer than ``idle_timeout``, down to none: a pool nobody uses (an
open pool in a long-lived program, a notebook) then holds no process and
none of the memory a worker keeps, and the next job starts a worker as the
first one did. Keeping one would save that start (tens to hundreds of
milliseconds) only for the first job after a pause long enough to make it
negligible, at the price of a process that may never be used again.

How a worker retires. billiard's ``Pool.shrink`` (Celery's autoscaler)
SIGTERMs a worker that holds no acknowledged job. In this pool the workers
share one task queue: a worker that has just read a job, but whose
acknowledgement is not processed yet, counts as free and dies with that job,
which billiard never reports (only Celery's own pool tracks which worker a
job was written to), so its future would wait forever; and an idle worker
blocked in its read may, under load, read a job submitted just after the
signal before it handles it. billiard's per-worker shutdown event
(``allow_restart``) is no better: an idle worker blocks in its read and
checks the event only once a job arrives. ``grow`` is sound and is used as
is. To retire a worker, the pool does ``shrink``'s bookkeeping (one process
fewer to keep) and queues a *retirement job* (`_retire_worker`): whichever
idle worker reads it raises ``SystemExit``, which billiard reports as the
job's outcome before the worker exits cleanly, never in the middle of a
job. So no job is lost; and none waits for a retiring worker: once it has
taken its retirement job it no longer counts towards the pool's size
(`_Pool.retiring`), and a job that needs a worker gets a new one at once.
Retirement is decided in the supervisor thread, whose wait also ends when
the next idle worker is due (no polling of its own), and only while every
pending job is running (a job waiting for a worker is about to take an idle
one). Which idle worker takes a retirement job does not matter: the pool
keeps as many workers as were busy within the last ``idle_timeout``.

Daemonic workers and children (checked on billiard 4.3.2 with fork, spawn and
forkserver): a task may start ``billiard.Process`` and ``billiard.Pool``
(billiard does not refuse), but ``multiprocessing.Process`` and
``multiprocessing.Pool`` fail at once with ``AssertionError: daemonic
processes are not allowed to have children``. Use the ``ndprocess`` pool for
such tasks.

Shutdown order: ``shutdown(wait=True)`` waits for every job, then
`BilliardExecutor._teardown` stops the supervisor (no more replacements),
SIGKILLs the workers and what their tasks started (idle by then, or being
aborted), and lets ``Pool.terminate`` join billiard's threads. The workers
are not asked to exit: a billiard worker sleeps 1 s before exiting, which
made every pool close cost a second. Abort does the same without waiting for
the jobs, and fails their futures.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import math
import os
import pickle
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import MissingExtraError, OptionError
from ._base import DEFAULT_IDLE_TIMEOUT, Pool, PoolOptions
from ._outcomes import pack_error, unpack_error
from ._process import _worker_initializer, kill_process_trees

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BilliardExecutor", "BilliardPool", "BrokenBilliardPool"]

logger = logging.getLogger("aioflow.pools")

#: Seconds billiard waits, after a worker died, for a result it may have sent.
LOST_WORKER_TIMEOUT = 1.0

# Longest wait of the supervisor between two rounds when nothing happens.
_SUPERVISE_INTERVAL = 0.8

# At teardown, how long a queue lock may stay taken by a live thread (billiard's
# own handlers hold them for one small write) before it counts as a dead worker's.
_LOCK_WAIT = 0.5


class BrokenBilliardPool(concurrent.futures.BrokenExecutor):
    """A billiard worker died while running the job, or the pool can no longer run jobs."""


def _import_billiard() -> Any:
    try:
        import billiard
        import billiard.pool
    except ImportError as exc:
        raise MissingExtraError("pool 'billiard'", "billiard", "billiard") from exc
    return billiard


# --------------------------------------------------------------------------- in the worker


def _dump_error(exc: BaseException) -> bytes:
    return pickle.dumps(pack_error(exc), pickle.HIGHEST_PROTOCOL)


class _Packed:
    """The call's pickled bytes as they travel to the worker, or the pickled error that prevented it."""

    __slots__ = ("data", "failed")

    def __init__(self, data: bytes, failed: bool = False) -> None:
        self.data = data
        self.failed = failed


def _free_locks_of_dead_workers(results: Any, tasks: Any) -> None:
    """Release the queue locks that killed workers died holding (the result queue's write lock, the task queue's read lock).

    Only called once every worker is dead, and before ``Pool.terminate``.
    Nobody else would ever release such a lock, and billiard's shutdown would
    wait on it forever. (A lock of this kind may be released by any process.)

    - The result queue's write lock is also taken, for one small write, by
      billiard's task handler in this process: still taken after a short
      wait, it was a worker's.
    - The task queue's read lock is taken in this process only by
      ``Pool.terminate``, later: taken now, it was a worker's. An idle worker
      holds it while it waits for its next job, so after a normal close it is
      almost always taken; waiting for it would add ``_LOCK_WAIT`` to every
      close.
    """
    for lock, wait in ((getattr(results, "_wlock", None), True), (getattr(tasks, "_rlock", None), False)):
        if lock is None:
            continue
        if lock.acquire(timeout=_LOCK_WAIT) if wait else lock.acquire(False):
            lock.release()  # free: nobody died holding it
            continue
        try:
            lock.release()
        except ValueError:
            pass  # released meanwhile


def _release_sentinels(workers: list[Any]) -> None:
    """Close the exit pipes of workers that ended: billiard never closes them (one descriptor per worker).

    Killed workers are reaped by psutil, so billiard may not know their exit
    code: the caller vouches that each one has ended.
    """
    for worker in workers:
        popen = getattr(worker, "_popen", None)
        if popen is not None and hasattr(popen, "close"):
            popen.close()


class _Call:
    """A call to send to a worker. It pickles as `_Packed`, in billiard's task-handler thread.

    A worker acknowledges a job (billiard's ACK) only once it has unpickled
    it. Were the inputs unpickled then, a worker killed while doing so (out of
    memory on a large input, a module that crashes on import) would take an
    unacknowledged job with it, which billiard never reports. Packed, the job
    unpickles at once and the call itself is unpickled in `_call_in_worker`,
    after the ACK: its loss is reported like any other.
    """

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __reduce__(self) -> tuple[Any, ...]:
        try:
            return (_Packed, (pickle.dumps((self.fn, self.args, self.kwargs), pickle.HIGHEST_PROTOCOL),))
        except Exception as exc:
            # billiard loses a job whose message cannot be pickled (its
            # task handler looks the job up under the wrong key): send the
            # error instead, as the job's outcome.
            return (_Packed, (_dump_error(exc), True))


def _retire_worker() -> None:
    """A retirement job: the worker that runs it exits once billiard has reported it."""
    raise SystemExit(0)


#: The message of the assertion `multiprocessing.Process.start` raises in a daemonic process.
_DAEMONIC_ASSERTION = "daemonic processes are not allowed to have children"


def _clarify(exc: Exception) -> Exception:
    """Turn multiprocessing's terse assertion about daemonic workers into an error that says what to do."""
    if not (isinstance(exc, AssertionError) and _DAEMONIC_ASSERTION in str(exc)):
        return exc
    msg = (
        f"a task tried to start a multiprocessing process, but the workers of the 'billiard' pool are "
        f"daemonic ({_DAEMONIC_ASSERTION}); billiard processes and pools work there, and for "
        "multiprocessing ones run the graph with pool_type 'ndmultiprocessing', 'ndprocess' or 'process', "
        "whose workers may start processes and pools"
    )
    clear = RuntimeError(msg)
    clear.__cause__ = exc
    return clear


def _call_in_worker(call: _Packed) -> tuple[bool, bytes]:
    """Run the call and pickle its outcome: ``(True, result)`` or ``(False, packed exception)``.

    Exceptions that are not `Exception` (SystemExit, KeyboardInterrupt) are
    left to billiard, which reports them and replaces the worker.
    """
    if call.failed:
        return False, call.data
    try:
        fn, args, kwargs = pickle.loads(call.data)
        result = fn(*args, **kwargs)
    except Exception as exc:
        return False, _dump_error(_clarify(exc))
    try:
        return True, pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # the result cannot be pickled
        return False, _dump_error(exc)


# --------------------------------------------------------------------------- billiard subclasses


@functools.cache
def _pool_class() -> type[Any]:
    """Our subclass of ``billiard.pool.Pool`` (built on first use: billiard is optional)."""
    billiard = _import_billiard()
    bpool = billiard.pool
    from billiard.connection import wait
    from billiard.exceptions import RestartFreqExceeded

    # billiard has no type hints: its classes are Any to mypy.
    supervisor_base: Any = bpool.Supervisor
    result_handler_base: Any = bpool.ResultHandler
    task_handler_base: Any = bpool.TaskHandler
    pool_base: Any = bpool.Pool

    def run_guarded(thread: Any, pool: Any) -> None:
        """Run a pool thread's body; if it fails, break the pool.

        billiard's own ``run`` ends the whole program when a pool thread
        fails (``os._exit``, or SIGTERM to itself when workers restart too
        often): not a library's call to make.
        """
        try:
            thread.body()
        except RestartFreqExceeded:
            pool.on_broken("its worker processes keep exiting before they accept any task")
        except Exception as exc:
            logger.exception("the billiard pool's %s thread failed", type(thread).__name__)
            pool.on_broken(f"its {type(thread).__name__} thread failed ({type(exc).__name__}: {exc})")

    class _Supervisor(supervisor_base):  # type: ignore[misc]
        """Maintains the workers as billiard's does; wakes when a worker dies or the pool stops."""

        def __init__(self, pool: Any) -> None:
            super().__init__(pool)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_w, False)
            self._wake_lock = threading.Lock()
            self._wake_closed = False

        def run(self) -> None:
            try:
                run_guarded(self, self.pool)
            finally:
                with self._wake_lock:
                    self._wake_closed = True
                    os.close(self._wake_r)
                    os.close(self._wake_w)

        def body(self) -> None:
            pool = self.pool
            while self._state == bpool.RUN and pool._state == bpool.RUN:
                pool._maintain_pool()
                timeout = self._timeout(pool)
                idle_due = pool.on_idle()  # retires the idle workers that are due
                if idle_due is not None:
                    timeout = max(min(timeout, idle_due + 0.01), 0.01)
                sentinels = [w.sentinel for w in list(pool._pool) if w._popen is not None]
                ready = wait([self._wake_r, *sentinels], timeout=timeout)
                if self._wake_r in ready:
                    os.read(self._wake_r, 512)
                elif ready:
                    time.sleep(0.01)  # a worker ended: let its last messages arrive first

        @staticmethod
        def _timeout(pool: Any) -> float:
            """Until the next lost job is due (billiard marks it after ``lost_worker_timeout``)."""
            timeout = _SUPERVISE_INTERVAL
            now = time.monotonic()
            for job in list(pool._cache.values()):
                lost = job._worker_lost
                if lost and not job.ready():
                    timeout = min(timeout, lost[0] + job._lost_worker_timeout - now + 0.01)
            return max(timeout, 0.01)

        def wake(self) -> None:
            with self._wake_lock:
                if self._wake_closed:  # a closed descriptor's number may be reused
                    return
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:
                    pass  # full of wake-ups already

        def close(self) -> None:
            super().close()
            self.wake()

        def terminate(self) -> None:
            super().terminate()
            self.wake()

    class _TaskHandler(task_handler_base):  # type: ignore[misc]
        def __init__(self, *args: Any, aioflow_pool: Any, **kwargs: Any) -> None:
            self.aioflow_pool = aioflow_pool
            super().__init__(*args, **kwargs)

        def run(self) -> None:
            run_guarded(self, self.aioflow_pool)

    class _ResultHandler(result_handler_base):  # type: ignore[misc]
        def __init__(self, *args: Any, aioflow_pool: Any, **kwargs: Any) -> None:
            self.aioflow_pool = aioflow_pool
            super().__init__(*args, **kwargs)

        def run(self) -> None:
            run_guarded(self, self.aioflow_pool)

    class _Pool(pool_base):  # type: ignore[misc]
        Supervisor = _Supervisor

        def __init__(
            self,
            *args: Any,
            on_broken: Callable[[str], None],
            on_idle: Callable[[], float | None],
            **kwargs: Any,
        ) -> None:
            self.on_broken = on_broken
            # Called by the supervisor each round: retires idle workers, returns
            # the seconds until the next one is due (None: no idle worker).
            self.on_idle = on_idle
            # Pids of workers that took a retirement job and are exiting.
            self.retiring: set[int] = set()
            self.retiring_lock = threading.Lock()
            # billiard builds and starts its threads in __init__, passing
            # them no pool: bind ours to this one first.
            self.TaskHandler = functools.partial(_TaskHandler, aioflow_pool=self)
            self.ResultHandler = functools.partial(_ResultHandler, aioflow_pool=self)
            super().__init__(*args, **kwargs)

        def wake_supervisor(self) -> None:
            self._worker_handler.wake()

        def mark_retiring(self, pid: int) -> None:
            """Worker ``pid`` took a retirement job: it exits, and no longer counts."""
            with self.retiring_lock:
                if any(w.pid == pid for w in list(self._pool)):
                    self.retiring.add(pid)

        def _join_exited_workers(self, shutdown: bool = False) -> Any:
            before = list(self._pool)
            exitcodes = super()._join_exited_workers(shutdown)
            with self.retiring_lock:
                self.retiring &= {w.pid for w in self._pool}
            _release_sentinels([w for w in before if w not in self._pool])
            return exitcodes

        def _repopulate_pool(self, exitcodes: list[int | None]) -> None:
            # billiard's, except that retiring workers do not count: a job
            # that needs a worker gets a new one at once, not when they exit.
            with self.retiring_lock:
                missing = self._processes - (len(self._pool) - len(self.retiring))
            for i in range(missing):
                if self._state != bpool.RUN:
                    return
                try:
                    if exitcodes and exitcodes[i] not in (bpool.EX_OK, bpool.EX_RECYCLE):
                        self.restart_state.step()
                except IndexError:
                    self.restart_state.step()
                self._create_worker_process(self._avail_index())

        def _avail_index(self) -> int:
            # billiard asserts fewer workers than processes, untrue while some retire.
            indices = {w.index for w in self._pool}
            return next(i for i in itertools.count() if i not in indices)

        @staticmethod
        def _help_stuff_finish(inqueue: Any, task_handler: Any, _pool: Any) -> None:
            # As billiard's, without waiting for the read lock: an idle
            # worker blocks in its read holding it, and we SIGKILL workers
            # before terminating the pool, so it is never released.
            locked = inqueue._rlock.acquire(False)
            try:
                while task_handler.is_alive() and inqueue._reader.poll():
                    inqueue._reader.recv()
                    time.sleep(0)
            finally:
                if locked:
                    inqueue._rlock.release()

        @classmethod
        def _set_result_sentinel(cls, outqueue: Any, pool: Any) -> None:
            # A worker SIGKILLed while sending a result may hold the write lock.
            if outqueue._wlock is None or outqueue._wlock.acquire(True, 1.0):
                try:
                    outqueue._writer.send(None)
                finally:
                    if outqueue._wlock is not None:
                        outqueue._wlock.release()

    return _Pool


# --------------------------------------------------------------------------- the executor


@dataclass(eq=False)
class _Job:
    future: concurrent.futures.Future[Any]
    started: bool = False
    pid: int | None = None  # the worker that accepted it


class BilliardExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` running calls in a billiard pool.

    Args:
        max_workers: the most worker processes.
        context: the start method (``None``: billiard's default).
        scaling_workers: start one worker, and more as jobs wait for one,
            and retire idle ones (``True``); or all ``max_workers`` now, for
            good (``False``).
        idle_timeout: with ``scaling_workers``, seconds after which an idle
            worker retires (``None``: never).
        initializer: called with ``initargs`` in each worker as it starts.
        initargs: see ``initializer``.
        pool_kwargs: more keyword arguments of ``billiard.pool.Pool``.
    """

    def __init__(
        self,
        max_workers: int,
        *,
        context: str | None = None,
        scaling_workers: bool = True,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        pool_kwargs: dict[str, Any] | None = None,
    ) -> None:
        billiard = _import_billiard()
        kwargs = {"lost_worker_timeout": LOST_WORKER_TIMEOUT, **(pool_kwargs or {})}
        self._max_workers = max_workers
        self._scaling = scaling_workers
        self._idle_timeout = idle_timeout if scaling_workers else None
        # pid -> when the worker last became idle (a worker first seen idle: when seen).
        self._idle_since: dict[int, float] = {}
        self._retirements = 0  # retirement jobs queued, not taken yet
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._jobs: dict[concurrent.futures.Future[Any], _Job] = {}
        self._shutdown = False
        self._torn_down = False
        self._broken: str | None = None
        #: How the last worker lost while running a job ended, as billiard tells it.
        self.last_loss: str | None = None
        # Set once billiard's constructor, which starts the supervisor, returns.
        self._pool: Any = None
        self._pool = _pool_class()(
            1 if scaling_workers else max_workers,
            initializer=_worker_initializer,
            initargs=(os.getpid(), initializer, tuple(initargs)),
            context=billiard.get_context(context),
            on_broken=self._break,
            on_idle=self._retire_idle,
            **kwargs,
        )
        # Break the pool after this many worker exits in a row with no job
        # accepted in between (billiard counts per second, which a slow
        # spawn start never reaches), unless max_restarts was given.
        if "max_restarts" not in kwargs:
            self._pool.restart_state.maxR = 3 * max_workers
            self._pool.restart_state.maxT = math.inf

    # ------------------------------------------------------------------ Executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        job = _Job(future)
        with self._lock:
            if self._broken is not None:
                raise BrokenBilliardPool(self._broken)
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            self._jobs[future] = job
            pool = self._pool
            grow = self._scaling and len(self._jobs) > pool._processes and pool._processes < self._max_workers
            if grow:
                pool.grow(1)
            result = pool.apply_async(
                _call_in_worker,
                (_Call(fn, args, kwargs),),
                callback=functools.partial(self._on_result, job),
                error_callback=functools.partial(self._on_error, job),
                accept_callback=functools.partial(self._on_accept, job),
            )
            if result is None:  # the pool stopped (it only does when broken)
                del self._jobs[future]
                raise BrokenBilliardPool(self._broken or "the billiard pool stopped")
        if grow:
            pool.wake_supervisor()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for job in list(self._jobs.values()):
                    if not job.started and job.future.cancel():
                        del self._jobs[job.future]
                if not self._jobs:
                    self._drained.notify_all()
        if wait:
            self._wait_and_teardown()
        else:
            threading.Thread(target=self._wait_and_teardown, name="aioflow-billiard-shutdown", daemon=True).start()

    # ------------------------------------------------------------------ pool-facing API

    @property
    def broken(self) -> bool:
        """Whether the pool can no longer run jobs (a lost worker alone does not break it)."""
        return self._broken is not None

    def worker_pids(self) -> list[int]:
        """The pids of the current worker processes."""
        return [w.pid for w in list(self._pool._pool) if w.pid is not None]

    def abort(self) -> None:
        """Kill every worker and what its task started, fail every pending future, stop the pool. Blocking."""
        with self._lock:
            self._shutdown = True
        self._teardown(BrokenBilliardPool("the task was stopped: its pool was aborted"))

    # ------------------------------------------------------------------ internals

    def _wait_and_teardown(self) -> None:
        with self._lock:
            self._drained.wait_for(lambda: not self._jobs)
        self._teardown(None)

    def _teardown(self, error: BaseException | None) -> None:
        with self._lock:
            if self._torn_down:
                return
            self._torn_down = True
        pool = self._pool
        supervisor = pool._worker_handler
        supervisor.terminate()  # no replacement workers from now on
        if supervisor.is_alive() and supervisor is not threading.current_thread():
            supervisor.join()
        kill_process_trees(self.worker_pids())
        if error is not None:
            self._fail_all(error)
        # Jobs left in billiard's cache would keep its result handler
        # waiting for them (5 s) after the workers are gone.
        pool._cache.clear()
        # Stop reading results: billiard's end-of-results marker may never
        # come if a killed worker holds the result queue's write lock.
        pool._result_handler.terminate()
        # The same lock (and the task queue's read lock) would also block
        # billiard's own shutdown: its task handler writes that marker under
        # the lock, and its termination takes the read lock to drain tasks.
        # Every worker is dead now, so a lock still taken was taken by one.
        _free_locks_of_dead_workers(pool._outqueue, pool._inqueue)
        pool.terminate()
        pool.join()
        _release_sentinels(list(pool._pool))

    def _break(self, reason: str) -> None:
        """The pool cannot run jobs any more: fail them all (called from a billiard thread)."""
        with self._lock:
            if self._broken is None:
                self._broken = f"the billiard pool is broken: {reason}"
            message = self._broken
        self._fail_all(BrokenBilliardPool(message))

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self._settle(job, error=error)

    def _retire_idle(self) -> float | None:
        """Retire the workers idle for longer than ``idle_timeout`` (supervisor thread).

        Returns the seconds until the next idle worker is due, or ``None``
        when none is idle (the supervisor then waits as usual).
        """
        timeout = self._idle_timeout
        pool = self._pool
        if timeout is None or pool is None:  # None: the pool is being built
            return None
        with self._lock:  # no job is submitted meanwhile
            if self._shutdown or self._broken is not None:
                return None
            if not all(job.started for job in self._jobs.values()):
                return None  # a job waits for a worker: an idle one is about to take it
            busy = {job.pid for job in self._jobs.values()}
            with pool.retiring_lock:
                workers = [w.pid for w in list(pool._pool) if w.pid is not None and w.pid not in pool.retiring]
            for pid in set(self._idle_since) - set(workers):
                del self._idle_since[pid]
            now = time.monotonic()
            due = 0
            next_due: float | None = None
            for pid in workers:
                if pid in busy:
                    continue
                when = self._idle_since.setdefault(pid, now) + timeout
                if when <= now:
                    due += 1
                else:
                    next_due = when if next_due is None else min(next_due, when)
            for _ in range(due - self._retirements):
                self._queue_retirement(pool)
        return None if next_due is None else next_due - now

    def _queue_retirement(self, pool: Any) -> None:
        # Under _lock. shrink's bookkeeping: the worker that exits is not replaced.
        pool._processes -= 1
        self._retirements += 1
        pool.apply_async(_retire_worker, accept_callback=self._on_retirement_taken)

    def _on_retirement_taken(self, pid: int, time_accepted: float) -> None:
        # In billiard's result thread: worker ``pid`` read a retirement job and exits.
        with self._lock:
            self._retirements -= 1
            self._idle_since.pop(pid, None)
        pool = self._pool
        pool.mark_retiring(pid)
        pool.wake_supervisor()  # a job may be waiting for a worker to replace it

    def _on_accept(self, job: _Job, pid: int, time_accepted: float) -> None:
        with self._lock:
            if job.started or job.future not in self._jobs:
                return
            job.started = True
            job.pid = pid
            self._idle_since.pop(pid, None)
            job.future.set_running_or_notify_cancel()

    def _on_result(self, job: _Job, value: tuple[bool, bytes]) -> None:
        ok, payload = value
        try:
            outcome = pickle.loads(payload)
        except Exception as exc:  # e.g. a class the parent cannot import
            self._settle(job, error=exc)
            return
        if ok:
            self._settle(job, result=outcome)
            return
        self._settle(job, error=unpack_error(outcome))

    def _on_error(self, job: _Job, einfo: Any) -> None:
        from billiard.einfo import ExceptionWithTraceback
        from billiard.exceptions import Terminated, WorkerLostError

        error = getattr(einfo, "exception", einfo)
        if isinstance(error, ExceptionWithTraceback):  # made in this process
            error = error.exc
        if isinstance(error, (WorkerLostError, Terminated)):
            # "Worker exited prematurely: signal 9 (SIGKILL) Job: 3." -> "signal 9 (SIGKILL)"
            how = re.sub(r"^Worker exited prematurely: |\s*Job: \d+\.?$", "", str(error))
            self.last_loss = f"a billiard worker ended: {how}" if how else None
            lost = BrokenBilliardPool(f"a billiard worker process died while running the task: {error}")
            lost.__cause__ = error
            error = lost
        if not isinstance(error, BaseException):
            error = BrokenBilliardPool(f"the billiard pool reported a failure: {einfo}")
        self._settle(job, error=error)

    def _settle(self, job: _Job, *, result: Any = None, error: BaseException | None = None) -> None:
        future = job.future
        with self._lock:
            if self._jobs.pop(future, None) is None:
                return  # already settled
            if job.pid is not None:
                self._idle_since[job.pid] = time.monotonic()
            if not self._jobs:
                self._drained.notify_all()
            if not job.started:
                job.started = True
                if not future.set_running_or_notify_cancel():
                    return  # cancelled while waiting for a worker
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


# --------------------------------------------------------------------------- the pool


class BilliardPool(Pool):
    """Tasks run in the worker processes of a billiard pool (``pip install 'aioflow[billiard]'``).

    ``pool_options`` are passed to ``billiard.pool.Pool`` (``initializer``,
    ``initargs``, ``maxtasksperchild``, ``max_memory_per_child``,
    ``lost_worker_timeout``...).
    """

    name = "billiard"
    uses_processes = True

    def _validate(self, options: PoolOptions) -> None:
        billiard = _import_billiard()
        if options.context is not None:
            methods = billiard.get_all_start_methods()
            if options.context not in methods:
                raise OptionError("context", f"one of {', '.join(map(repr, methods))} or None", options.context)

    def _create_executor(self) -> concurrent.futures.Executor:
        extra = dict(self.options.extra)
        initializer = extra.pop("initializer", None)
        initargs = tuple(extra.pop("initargs", ()))
        return BilliardExecutor(
            self.capacity,
            context=self.options.context,
            scaling_workers=self.options.scaling_workers,
            idle_timeout=self.options.idle_timeout,
            initializer=initializer,
            initargs=initargs,
            pool_kwargs=extra,
        )

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, BilliardExecutor)
        executor.abort()

    def discard_broken(self, executor: concurrent.futures.Executor) -> None:
        # A lost worker does not break a billiard pool: it was replaced, and
        # the other jobs run on. Only a pool that stopped is replaced.
        if isinstance(executor, BilliardExecutor) and not executor.broken:
            return
        super().discard_broken(executor)

    def describe_lost_workers(self, executor: concurrent.futures.Executor) -> str | None:
        return executor.last_loss if isinstance(executor, BilliardExecutor) else None
