"""The ``billiard`` pool: a `billiard.pool.Pool` (Celery's fork of multiprocessing) behind an executor.

Actors:

- `BilliardExecutor` (the scheduler's side): ``submit`` wraps the call in
  `_call_in_worker` and hands it to ``Pool.apply_async`` with callbacks that
  resolve a `concurrent.futures.Future`. It owns ``_jobs`` (future -> record),
  guarded by ``_lock``.
- billiard's threads, in the pool's process: the task handler queues each
  job for the next idle worker (the switchboard's ``dispatch``), the result handler
  reads what the workers send (its ``poll``), writes a freed worker
  its next job and runs our callbacks (so futures resolve in that thread),
  and the supervisor reaps dead workers and starts replacements. Ours
  waits on the workers' sentinels instead of sleeping 0.8 s
  between rounds, so a dead worker is noticed at once and closing the pool
  does not wait for a nap to end.
- the workers run billiard's worker loop: daemonic, as billiard makes them;
  they ignore SIGINT and exit with their owner
  (`aioflow.pools._lifecycle.worker_initializer`).

Each worker has a pipe pair of its own (through billiard's
``get_process_queues`` hook, as in Celery's own pool): one brings it its
jobs, the other takes back what it says (ACK when it takes a job, READY with
the outcome, DEATH as it exits). billiard's default, one task pipe and one
result pipe shared by every worker, each behind a lock between processes,
cannot survive a worker's death: killed while it holds a lock (an idle
worker waits for its next job holding the task pipe's read lock; a worker
holds the result pipe's write lock while it sends, and billiard SIGTERMs a
worker as soon as its DEATH arrives, while it still holds it), the worker
leaves it taken and every other worker waits for it forever; killed between
reading a job and acknowledging it, it takes the job with it, unreported.
With a pipe pair per worker nothing is shared and nothing is locked: a dead
worker can only garble what was its own. (Nor does a worker get billiard's
``on_ready_counter``, a shared value behind a lock of its own that a worker
reads as it exits, to wait until its last messages are read: its pipe keeps
them after it dies.)

Transport (`aioflow.pools._wire`, as for every process pool): the call
travels pickled twice (`Sealed`), so that the worker acknowledges the job
before it unpickles the inputs, and the worker pickles the outcome itself
(`_call_in_worker`, `dump_outcome`), so that a result that cannot be pickled
fails its node with the real pickling error; an exception comes back packed
(`aioflow.pools._outcomes.pack_error`) with the worker's traceback as
``__cause__``, and a result whose class cannot be imported here fails its
node with `aioflow.TransferError`. Pickling happens in billiard's threads
and in the workers, never in the caller's (the event loop's) thread.

A worker that dies (os._exit, a signal, out of memory) fails only the job it
had taken, with `WorkerDied` naming its pid and the exit code or signal
read from its own exit status; the pool replaces it and the other jobs go on.
When the supervisor has reaped it, the switchboard reads what it sent before
it died (a result already sent counts), then fails the job it had
acknowledged, or sends a job it never acknowledged to another worker (it
died before reading it, or while starting up: the job never ran). There is
no waiting for a result that may be on its way (billiard's
``lost_worker_timeout``): all the worker sent is in its pipe. Workers that
keep dying before they take the job they were given (an initializer that
ends them) break the pool: every pending future fails instead of waiting
forever (billiard would restart them forever, or SIGTERM the whole program
when they restart too fast). Likewise a failing billiard thread breaks the
pool instead of ending the program with ``os._exit``, as billiard's own
threads do.

Start methods: ``fork`` workers are billiard's processes. ``spawn`` and
``forkserver`` workers are the standard library's (they run billiard's
worker loop all the same): its fork server passes on how each worker ended,
where billiard's reports exit code 255 for every worker, and its start, as
`aioflow.pools._mp_internals` runs it, counts a worker that dies before it
has read its start-up data as a dead worker, where billiard's ``spawn`` waits
forever once those data outgrow a pipe's buffer.

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
SIGTERMs a worker that holds no acknowledged job, which may be reading one;
billiard's per-worker shutdown event (``allow_restart``) is read only when a
job arrives. ``grow`` is sound and is used as is. To retire a worker, the
pool does ``shrink``'s bookkeeping (one process fewer to keep) and queues a
*retirement job*: the idle worker it is handed to raises
``SystemExit``, which billiard reports as the job's outcome before the
worker exits cleanly, never in the middle of a job. Once it has taken its
retirement job it no longer counts towards the pool's size
(``retiring``), and a job that needs a worker gets a new one at once.
Retirement is decided in the supervisor thread, whose wait also ends when
the next idle worker is due (no polling of its own), and only while every
pending job is running (a job waiting for a worker is about to take an idle
one). The switchboard hands a job to the most recently idle worker and a
retirement job to the least recently idle one (`aioflow.pools._idle`): a
trickle of jobs stays on one warm worker while the others retire, and the
pool keeps as many workers as were busy within the last ``idle_timeout``.

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

billiard's internals. The switchboard, the supervisor and every other part
that overrides or reads billiard's private parts live in
`aioflow.pools._billiard_internals`, which lists them and the billiard
versions it was written for; opening the pool with another version raises a
`PoolError` that says so. This module uses billiard through that module
only, imported once billiard is known to be installed.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import pickle
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import MissingExtraError, OptionError
from ._base import Pool
from ._futures import note_worker, settle
from ._lifecycle import kill_descendants, kill_process_trees, ready_to_fork, worker_initializer
from ._options import DEFAULT_IDLE_TIMEOUT, PoolOptions
from ._outcomes import BrokenBilliardPool, not_loadable, unpack_error
from ._wire import Sealed, clarify_daemonic, dump_outcome, load_call

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BilliardExecutor", "BilliardPool", "BrokenBilliardPool"]

logger = logging.getLogger("aioflow.pools")


def _import_billiard() -> Any:
    try:
        import billiard
        import billiard.pool
    except ImportError as exc:
        raise MissingExtraError("pool 'billiard'", "billiard", "billiard") from exc
    return billiard


# --------------------------------------------------------------------------- in the worker


class _OnExit:
    """billiard's ``on_process_exit``, run in a worker on its way out: kill what its tasks left running.

    billiard's workers end with ``os._exit``, past the ``multiprocessing``
    finalizers through which other pools' workers do this, so a worker
    retired when idle would otherwise leave a daemon its task started (the
    worker is a subreaper: `aioflow.pools._lifecycle.set_subreaper`). A
    user's own ``on_process_exit`` runs after it.
    """

    __slots__ = ("user",)

    def __init__(self, user: Callable[[int, int], Any] | None) -> None:
        self.user = user

    def __call__(self, pid: int, exitcode: int) -> None:
        try:
            kill_descendants()
        finally:
            if self.user is not None:
                self.user(pid, exitcode)


def _call_in_worker(call: bytes) -> bytes:
    """Run the call (a `Sealed` call's bytes), and return its outcome pickled (`aioflow.pools._wire.dump_outcome`).

    The call is loaded here, once billiard's worker has acknowledged the job:
    a worker killed while it loads large inputs (out of memory, a module that
    crashes on import) fails that job, instead of dying before its ACK as if
    it never read the job, which would then go to the next worker and kill it
    too. Exceptions that are not `Exception` are left to billiard, which
    reports them (and ends the worker after a SystemExit or KeyboardInterrupt).
    """
    try:
        fn, args, kwargs = load_call(call)
        result = fn(*args, **kwargs)
    except Exception as exc:
        return dump_outcome((), False, clarify_daemonic(exc, "billiard"))
    return dump_outcome((), True, result)


# --------------------------------------------------------------------------- the executor


@dataclass(eq=False)
class _Job:
    future: concurrent.futures.Future[Any]
    started: bool = False
    job_id: int | None = None  # billiard's


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
        _import_billiard()
        from ._billiard_internals import PipedPool, start_method

        kwargs = dict(pool_kwargs or {})
        self._max_workers = max_workers
        self._scaling = scaling_workers
        self._idle_timeout = idle_timeout if scaling_workers else None
        self._retirements = 0  # retirement jobs queued, not taken yet
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._jobs: dict[concurrent.futures.Future[Any], _Job] = {}
        self._shutdown = False
        self._torn_down = False
        self._broken: str | None = None
        # Set once billiard's constructor, which starts the supervisor, returns.
        self._pool: Any = None
        start, process_class = start_method(context)
        ready_to_fork(start.get_start_method())
        pool = PipedPool(
            1 if scaling_workers else max_workers,
            initializer=worker_initializer,
            initargs=(os.getpid(), initializer, tuple(initargs)),
            context=start,
            process_class=process_class,
            on_broken=self._break,
            on_idle=self._retire_idle,
            idle_timeout=self._idle_timeout,
            on_process_exit=_OnExit(kwargs.pop("on_process_exit", None)),
            **kwargs,
        )
        # Break the pool after this many worker exits in a row with no job
        # accepted in between, unless max_restarts was given.
        if "max_restarts" not in kwargs:
            pool.allow_restarts_in_a_row(3 * max_workers)
        self._pool = pool

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
            grow = self._scaling and len(self._jobs) > pool.size and pool.size < self._max_workers
            if grow:
                pool.grow(1)
            result = pool.apply_async(
                _call_in_worker,
                (Sealed(fn, args, kwargs),),
                callback=functools.partial(self._on_result, job),
                error_callback=functools.partial(self._on_error, job),
                accept_callback=functools.partial(self._on_accept, job),
            )
            if result is None:  # the pool stopped (it only does when broken)
                del self._jobs[future]
                raise BrokenBilliardPool(self._broken or "the billiard pool stopped")
            job.job_id = result._job
        if grow:
            pool.wake_supervisor()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As the stdlib's; on a broken pool, the jobs not started fail with its error instead of being cancelled.

        A pool that breaks fails every job (`_break`), from billiard's thread;
        the engine may discard it (``cancel_futures=True``) as soon as the
        first job's failure reaches it, before the others' do: those jobs
        did not get cancelled by anyone, the pool broke under them.
        """
        failed: list[_Job] = []
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for job in list(self._jobs.values()):
                    if job.started:
                        continue
                    if self._broken is not None:
                        failed.append(job)
                    elif job.future.cancel():
                        del self._jobs[job.future]
                if not self._jobs:
                    self._drained.notify_all()
            broken = self._broken
        for job in failed:
            self._settle(job, error=BrokenBilliardPool(broken or ""))
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
        pids: list[int] = self._pool.worker_pids()
        return pids

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
        pool.stop_supervisor()  # no replacement workers from now on
        kill_process_trees(self.worker_pids())
        if error is not None:
            self._fail_all(error)
        pool.close_down()

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
        pool = self._pool
        if self._idle_timeout is None or pool is None:  # None: the pool is being built
            return None
        with self._lock:  # no job is submitted meanwhile
            if self._shutdown or self._broken is not None:
                return None
            if not all(job.started for job in self._jobs.values()):
                return None  # a job waits for a worker: an idle one is about to take it
            # The switchboard's idle workers (`aioflow.pools._idle`): each retirement job
            # goes to the least recently idle one.
            expiry: tuple[int, float | None] = pool.idle_expiry()
            due, next_due = expiry
            for _ in range(due - self._retirements):
                self._queue_retirement(pool)
        return next_due

    def _queue_retirement(self, pool: Any) -> None:
        # Under _lock.
        self._retirements += 1
        pool.queue_retirement(self._on_retirement_taken)

    def _on_retirement_taken(self, pid: int, time_accepted: float) -> None:
        # In billiard's result thread: worker ``pid`` read a retirement job and exits.
        with self._lock:
            self._retirements -= 1
        pool = self._pool
        pool.mark_retiring(pid)
        pool.wake_supervisor()  # a job may be waiting for a worker to replace it

    def _on_accept(self, job: _Job, pid: int, time_accepted: float) -> None:
        with self._lock:
            if job.started or job.future not in self._jobs:
                return
            job.started = True
            note_worker(job.future, pid)
            job.future.set_running_or_notify_cancel()

    def stop_job(self, future: concurrent.futures.Future[Any]) -> None:
        """Stop one call: kill the worker running it, with the processes it started, or drop it if none took it.

        A job billiard queued runs once a worker takes it, cancelled or not:
        the pool's switchboard, which knows which job each worker holds,
        stops it (`_billiard_internals._Switchboard.stop_job`). The pool
        replaces a killed worker; the other jobs go on.
        """
        with self._lock:
            job = self._jobs.get(future)
            job_id = job.job_id if job is not None else None
        if job_id is not None:
            self._pool.switchboard.stop_job(job_id)

    def _on_result(self, job: _Job, payload: bytes) -> None:
        try:
            ok, outcome = pickle.loads(payload)
        except Exception as exc:  # e.g. a class the parent cannot import
            self._settle(job, error=not_loadable(payload, exc))
            return
        if ok:
            self._settle(job, result=outcome)
            return
        self._settle(job, error=unpack_error(outcome))

    def _on_error(self, job: _Job, einfo: Any) -> None:
        from ._billiard_internals import error_of

        self._settle(job, error=error_of(einfo))

    def _settle(self, job: _Job, *, result: Any = None, error: BaseException | None = None) -> None:
        future = job.future
        with self._lock:
            if self._jobs.pop(future, None) is None:
                return  # already settled
            if not self._jobs:
                self._drained.notify_all()
            if not job.started:
                job.started = True
                if not future.set_running_or_notify_cancel():
                    return  # cancelled while waiting for a worker
        # A job cancelled before a worker took it ran all the same: its future stays cancelled.
        settle(future, result=result, error=error)


# --------------------------------------------------------------------------- the pool


class BilliardPool(Pool):
    """Tasks run in the worker processes of a billiard pool (``pip install 'aioflow[billiard]'``).

    ``pool_options`` are passed to ``billiard.pool.Pool`` (``initializer``,
    ``initargs``, ``maxtasksperchild``, ``max_memory_per_child``...).
    """

    name = "billiard"
    uses_processes = True

    def _validate(self, options: PoolOptions) -> None:
        billiard = _import_billiard()
        from ._billiard_internals import check_supported

        check_supported(self.name)
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

    def stop_call(
        self, executor: concurrent.futures.Executor, owner: object, future: concurrent.futures.Future[Any] | None
    ) -> None:
        # Not future.cancel(): a job billiard queued runs all the same (`BilliardExecutor.stop_job`).
        if future is not None:
            assert isinstance(executor, BilliardExecutor)
            executor.stop_job(future)
