"""The ``multiprocessing`` and ``ndmultiprocessing`` pools: a `multiprocessing.Pool` behind an executor.

Actors and who owns what:

- `_MultiprocessingExecutor` (parent process) owns the futures it handed
  out (``_jobs``: job id -> `_Job`) and one *generation*, a `_Generation`:
  a `multiprocessing.Pool` (`aioflow.pools._mp_internals.PipedPool`) with its stop flag. ``submit`` sends
  ``_call_in_worker(job_id, sealed call)`` with ``apply_async``: the
  stdlib's task thread pickles it into the pool's task queue, and one of the
  pool's workers takes it. ``_lock`` guards ``_jobs``, ``_state`` and the
  generations.
- Every *worker* has a pipe of its own to the executor (`PipedPool.Process`
  makes it, with a shared *state cell* and a *job cell*, before the stdlib
  starts the worker). On it the worker says ``ready`` once its initializer has run,
  ``start`` with the job id before it runs a call, then the call's outcome
  (`aioflow.pools._wire.dump_outcome`), and ``bye`` when it
  exits cleanly (a `multiprocessing.util.Finalize` hook, which SIGKILL and
  ``os._exit`` skip). Only that worker writes to its pipe: no lock, and
  nothing another worker does can garble it. What the stdlib's result queue
  carries is only a small end-of-call marker, which keeps the stdlib
  pool's books (it waits for every call it knows of before it closes).
- The *watcher* thread (parent) is the only reader of those pipes: it
  waits on them, on every worker's sentinel and on a wake-up pipe, resolves
  the futures, and handles every worker's exit.

Failures stay local, as in the ``process`` pool. A worker that dies
without ``bye`` fails the one call it had reported and not finished, with
`WorkerDied` naming its pid and the exit code or signal read from that
worker's own exit status; the stdlib starts a replacement, and the calls
queued or running elsewhere go on. The same holds for a worker that dies
before it has even read its start-up data: its start
(`aioflow.pools._mp_internals`'s ``spawn`` and ``forkserver`` processes)
neither waits for it forever nor raises in the thread that started it (a
caller's ``submit`` that starts a new generation, or the pool's worker
thread). Whether the stdlib pool itself survives depends on where the worker
died, which its state cell tells:

- anywhere but in the task queue's read (running a call, waiting for one,
  starting up): it held no lock and took no call it did not report. (It
  waits for a task without the queue's read lock, ``_TaskQueue.get``; it
  writes its marker in one ``write`` of less than ``PIPE_BUF`` bytes, which
  the kernel does all at once, ``_ResultQueue.put``.)
- in the read (``TAKING``, from taking the queue's read lock until the call
  it read is reported): it may hold the lock, may have left half a task in
  the pipe, or may have taken a call nobody will ever run. That generation
  is *retired*: its stop flag goes up (a worker that picks up a call from
  then on reports ``start``, sees the flag and skips the call), its workers
  are no longer replaced, and every call with no ``start`` read by then is
  sent again to a new generation. A call is sent again only when it has
  provably not started: its worker reports ``start`` before it checks the
  flag, and the watcher reads every worker's pipe after raising the flag.
  A retired generation is terminated once the calls its workers had started
  have finished, so for that while the pool runs more than ``max_workers``
  processes.

Messages that cannot be read fail only their call: a result whose class
cannot be imported here is `ResultNotLoadable` (the pool turns it into
`aioflow.TransferError`), a result that cannot be pickled comes back as the
pickling error, and a call's function or arguments travel pickled inside the
task (`aioflow.pools._wire.Sealed`), loaded by `_call_in_worker` after ``start``: one the worker
cannot load fails that call instead of ending the worker in the stdlib's loop.

The executor breaks as a whole only when it cannot start workers: the pool's
initializer raised, or ``_STARTUP_DEATHS`` workers in a row died before they
were ready. Then, as `concurrent.futures.ProcessPoolExecutor` does, every
pending future fails with `BrokenMultiprocessingPool` and the pool is stopped.

Shutdown order. ``shutdown`` closes the current pool (queued calls still
run); once every call has finished, the watcher ends the retired pools,
drops from the stdlib's books the markers that will never come (calls whose
worker died), which lets the workers exit, handles their exits as always,
joins the pool once they are gone, then ends. `_MultiprocessingExecutor.abort` (a timeout, a
cancellation, a failed node) fails every pending future and stops every
generation: it raises the stop flag (a worker that picks up a call after it
skips the call), stops the pool's worker thread (else every killed worker
is replaced at once, by one the kill misses), kills every worker with the
processes its task started (`kill_process_trees`), frees the result queue's
write lock, terminates the pool, then joins the watcher. A worker killed in
the middle of reading a task leaves a pipe out of step: `PipedPool` terminates
whatever the pipes hold (see there), and no error of the stop escapes.

Stopping one call (a node's timeout, `stop_job`) kills the worker running
it. A worker may already have sent that call's outcome and taken its next
call: its job cell names the call it runs, set before ``start`` and cleared
before the outcome goes out, and the worker is killed only while holding the
cell's lock shows the call being stopped (`_kill_if_running`).

Worker processes ignore SIGINT and exit with the owning process (see
`aioflow.pools._lifecycle.worker_initializer`).

Limits. A call cannot be taken back once ``apply_async`` queued it:
cancelling its future (before a worker reported ``start``) only stops the
caller from waiting, the call still runs unless the stop flag is up
(``shutdown(cancel_futures=True)``, an abort). On a pool shared by several
executions, stopping one of them while others run lets its running calls
finish in the background (`Pool._abort_owner`'s default).

Versions. The pool's internals this module relies on are overridden and
read in one place, `aioflow.pools._mp_internals`, which lists them and the
CPython versions it was written for; opening a ``multiprocessing`` pool on
another version raises a `PoolError` that says so.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.pool
import multiprocessing.queues
import multiprocessing.util
import os
import pickle
import threading
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._errors import OptionError
from ._base import Pool
from ._futures import note_worker, settle
from ._lifecycle import kill_process_trees, ready_to_fork, worker_initializer
from ._mp_internals import IDLE, NO_JOB, TAKING, PipedPool, check_supported, weak_call
from ._mp_start import non_daemonic_context
from ._outcomes import (
    BrokenMultiprocessingPool,
    Inbox,
    WorkerDied,
    describe_exit,
    idle_exit_level,
    not_loadable,
    unpack_error,
)
from ._wire import Sealed, clarify_daemonic, dump_outcome, dumps, load_call

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._options import PoolOptions

__all__ = ["BrokenMultiprocessingPool", "MultiprocessingPool", "NonDaemonicMultiprocessingPool"]

logger = logging.getLogger("aioflow.pools")

T = TypeVar("T")

#: The keys ``pool_options`` may hold: keyword arguments of `multiprocessing.Pool`.
_EXTRA_KEYS = ("initializer", "initargs", "maxtasksperchild")

#: Workers in a row that may die before they are ready (their initializer ran) before the pool breaks.
_STARTUP_DEATHS = 5

#: Seconds the watcher waits for the pool to reap a dead worker before it reads the exit code itself.
_REAP_GRACE = 2.0

#: Seconds between two looks at a closing pool's worker thread, which ends without telling anyone.
_CLOSE_POLL = 0.02

#: Seconds a stop waits for a worker's job cell before it takes the holder for a dead worker.
_CELL_GRACE = 1.0


# --------------------------------------------------------------------------- worker side


@dataclass
class _WorkerLink:
    """What a worker process needs to report to its executor (module global in each worker)."""

    conn: multiprocessing.connection.Connection  # this worker's own pipe to the executor
    state: Any  # this worker's shared c_int: IDLE or TAKING (`aioflow.pools._mp_internals`)
    job: Any  # this worker's job cell: the call it runs (`aioflow.pools._mp_internals.new_job_cell`)
    stop: Any  # the generation's shared c_bool: calls picked up after it is set are skipped
    daemonic: bool


_LINK: _WorkerLink | None = None


def _link() -> _WorkerLink:
    link = _LINK
    assert link is not None, "the worker was not initialised by the aioflow pool"
    return link


def _send(link: _WorkerLink, message: tuple[Any, ...] | bytes) -> None:
    """Send ``message`` (or its pickle) to the executor; exit if it no longer listens (the pool is being stopped)."""
    data = message if isinstance(message, bytes) else dumps(message)
    try:
        link.conn.send_bytes(data)
    except OSError:
        raise SystemExit(0) from None


def _pool_initializer(
    stop: Any,
    daemonic: bool,
    owner_pid: int,
    user_initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
    conn: multiprocessing.connection.Connection,
    state: Any,
    job: Any,
) -> None:
    """Run in each new worker: ignore SIGINT, watch the owner, run the user's initializer, say ``ready``.

    ``conn``, ``state`` and ``job`` are this worker's own (`PipedPool.Process` adds them).
    """
    global _LINK
    link = _LINK = _WorkerLink(conn, state, job, stop, daemonic)
    # Runs when the worker leaves cleanly (pool closed, maxtasksperchild
    # reached, initializer failed), never after SIGKILL or os._exit.
    multiprocessing.util.Finalize(None, _say_bye, args=(link, os.getpid()), exitpriority=100)
    try:
        worker_initializer(owner_pid, user_initializer, initargs)
    except BaseException:
        _send(link, ("initfailed", traceback.format_exc()))
        raise
    _send(link, ("ready",))


def _say_bye(link: _WorkerLink, pid: int) -> None:
    # A process forked by a task (os.fork) inherits the hook: only the worker speaks for itself.
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            link.conn.send(("bye",))


def _call_in_worker(job_id: int, sealed: bytes) -> None:
    """Report the call, then run it and send its outcome, ``("done", id, ok, value)`` (`aioflow.pools._wire.dump_outcome`).

    ``start`` goes out before the stop flag is read: a call without ``start``
    never runs in this generation (the executor may send it again). Every
    exception, `BaseException` included, is sent as an outcome: the pool's own
    worker loop only catches `Exception` and would exit on the others.

    The job cell holds ``job_id`` from before ``start`` until before the
    outcome goes out: the executor stops this call (`_MultiprocessingExecutor.stop_job`)
    only while it does, never the next one.
    """
    link = _link()
    link.job.value = job_id
    _send(link, ("start", job_id))
    link.state.value = IDLE
    if link.stop.value:
        link.job.value = NO_JOB
        _send(link, ("skipped", job_id))
        return
    try:
        fn, args, kwargs = load_call(sealed)
        del sealed
        value = fn(*args, **kwargs)
    except BaseException as exc:
        error = clarify_daemonic(exc, "multiprocessing") if link.daemonic else exc
        link.job.value = NO_JOB
        _send(link, dump_outcome(("done", job_id), False, error))
    else:
        link.job.value = NO_JOB
        _send(link, dump_outcome(("done", job_id), True, value))


class _Worker:
    """A worker process as the watcher sees it: its pipe, its state cell, and the call it reported."""

    __slots__ = ("clean", "conn", "generation", "inbox", "job", "job_cell", "process", "ready", "state")

    def __init__(
        self,
        generation: _Generation,
        process: multiprocessing.process.BaseProcess,
        conn: multiprocessing.connection.Connection,
        state: Any,
        job_cell: Any,
    ) -> None:
        self.generation = generation
        self.process = process
        self.conn = conn
        self.inbox = Inbox(conn.fileno())
        self.state = state
        self.job_cell = job_cell  # the call it runs, as it says itself (`_call_in_worker`)
        self.job: int | None = None  # the call it reported ``start`` for and has not finished
        self.ready = False  # its initializer ran
        self.clean = False  # it said ``bye``


# --------------------------------------------------------------------------- parent side


class _NonDaemonicPipedPool(PipedPool):
    """A `PipedPool` whose workers are never daemonic (`aioflow.pools._mp_start.NonDaemonic`): tasks may start processes."""

    @staticmethod
    def _new_process(ctx: Any, *args: Any, **kwds: Any) -> Any:
        return non_daemonic_context(ctx.get_start_method()).Process(*args, **kwds)


class _Generation:
    """One `multiprocessing.Pool` of the executor, with the stop flag its workers read.

    Retired (``retired``) once a dead worker may have left its task queue
    unusable: it takes no new call, its workers skip the calls they pick up,
    and it ends (`end`) once the calls they had started have finished.
    """

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self.stop: Any = context.RawValue(ctypes.c_bool, False)
        self.pool: PipedPool  # set by the executor, right after
        self.retired = False
        self.closed = False  # takes no more calls; its workers exit once the last is done
        self.results_lost: str | None = None  # why its result pipe can no longer be read
        self.ended = threading.Event()  # terminated or joined: its workers are gone
        self._end_lock = threading.Lock()
        self.exit_hook: multiprocessing.util.Finalize | None = None

    def close(self) -> None:
        self.closed = True
        self.pool.close()

    def end(self) -> None:
        """Kill every worker tree, free the queue locks the dead may hold, terminate the pool. Idempotent."""
        with self._end_lock:
            if self.ended.is_set():
                return
            try:
                _stop_at_exit(self.pool, self.stop)
            except Exception:
                # Nothing may stop the stop (the watcher runs it).
                logger.exception("stopping the multiprocessing pool failed")
            finally:
                self._ended()

    def let_go(self) -> None:
        """Every call has finished: let the closed pool's workers exit.

        The stdlib keeps its workers until it has the marker of every call it
        sent; those it still waits for are the markers of calls whose worker
        died, which will never come. Forgetting them lets it send each worker
        its end marker.
        """
        self.pool.forget_calls()

    def join(self) -> None:
        """Join the closed pool, whose workers have exited and whose worker thread has ended."""
        self.pool.join()
        self._ended()

    def _ended(self) -> None:
        if self.exit_hook is not None:
            self.exit_hook.cancel()
        self.ended.set()


@dataclass
class _Job:
    future: concurrent.futures.Future[Any]
    call: Sealed  # what a new generation is sent, if this one cannot run it
    generation: _Generation | None = None
    worker: _Worker | None = None  # the worker that reported ``start`` for it
    stop: bool = False  # stopped before it started (`stop_job`): its worker is killed as it reports ``start``


def _kill_if_running(worker: _Worker, job_id: int) -> None:
    """Kill ``worker``, with every process its task started, if it still runs call ``job_id``.

    A worker sends a call's outcome and takes the next call from the queue on
    its own: the call the executor last heard of may be over. Its job cell
    says which call it runs; holding the cell's lock, the worker cannot move
    on before it is killed. A worker killed while it held the lock (only for
    a moment, to set it) is dead already: after `_CELL_GRACE` it is left alone.
    """
    pid = worker.process.pid
    lock = worker.job_cell.get_lock()
    if pid is None or not lock.acquire(timeout=_CELL_GRACE):
        return
    try:
        if worker.job_cell.get_obj().value == job_id:
            kill_process_trees([pid])
    finally:
        lock.release()


class _MultiprocessingExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` over a `multiprocessing.Pool` whose dead workers fail only their own call."""

    def __init__(
        self,
        *,
        processes: int,
        context: multiprocessing.context.BaseContext,
        daemonic: bool,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        maxtasksperchild: int | None = None,
    ) -> None:
        self._processes = processes
        self._context = context
        ready_to_fork(context.get_start_method())
        self._daemonic = daemonic
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = maxtasksperchild
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count()
        self._state = "running"  # -> "closing" -> "closed", or -> "broken" / "aborted"
        self._broken_reason: str | None = None
        self._cancel_queued = False  # shutdown(cancel_futures=True): skipped calls are not sent again
        self._generation: _Generation | None = None  # the one new calls go to
        self._generations: list[_Generation] = []  # every one not ended yet
        # Workers the pools started, for the watcher (appended from the pools' threads).
        self._arrivals: collections.deque[_Worker] = collections.deque()
        self._watched: list[_Worker] = []  # the watcher's own
        self._startup_deaths = 0  # workers in a row that died before they were ready
        self._wake_lock = threading.Lock()
        self._wake_reader, self._wake_writer = multiprocessing.connection.Pipe(duplex=False)
        with self._lock:
            self._generation = self._start_generation()
        self._watcher = threading.Thread(target=self._watch, name="aioflow-mp-watcher", daemon=True)
        self._watcher.start()

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._broken_reason is not None:
                raise BrokenMultiprocessingPool(self._broken_reason)
            if self._state != "running":
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            job_id = next(self._ids)
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            job = self._jobs[job_id] = _Job(future, Sealed(fn, args, kwargs))
            try:
                self._send(job_id, job)
            except BaseException:
                del self._jobs[job_id]
                raise
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._state == "running":
                self._state = "closing"
                if self._generation is not None:
                    self._generation.close()
            if cancel_futures and self._state == "closing":
                self._cancel_queued = True
                for generation in self._generations:
                    generation.stop.value = True  # calls not started yet are skipped
                for job in self._jobs.values():
                    job.future.cancel()
        self._wake()
        if wait:
            self._watcher.join()

    # ------------------------------------------------------------ generations (under _lock)

    def _start_generation(self) -> _Generation:
        generation = _Generation(self._context)
        pool_cls = PipedPool if self._daemonic else _NonDaemonicPipedPool
        generation.pool = pool_cls(
            processes=self._processes,
            initializer=_pool_initializer,
            initargs=(generation.stop, self._daemonic, os.getpid(), self._initializer, self._initargs),
            maxtasksperchild=self._maxtasksperchild,
            context=self._context,
            # Weakly: the pool outlives nothing it does not need to. A strong
            # reference (pool -> executor) plus the exit hook's (registry ->
            # pool) would keep both, and every pipe, alive until exit.
            on_results_lost=weak_call(self._on_results_lost, generation),
            on_started=weak_call(self._on_started, generation),
        )
        # Priority 16: before the pool's own exit hook (15).
        generation.exit_hook = multiprocessing.util.Finalize(
            self, _stop_at_exit, args=(generation.pool, generation.stop), exitpriority=16
        )
        self._generations.append(generation)
        return generation

    def _send(self, job_id: int, job: _Job) -> None:
        """Queue ``job`` on the current generation, starting a new one if the last was retired or closed.

        A generation started while the executor closes is closed by the watcher.
        """
        generation = self._generation
        if generation is None or generation.closed:
            generation = self._generation = self._start_generation()
        job.generation = generation
        generation.pool.apply_async(
            _call_in_worker, (job_id, job.call), error_callback=weak_call(self._on_error, job_id, generation)
        )

    # ------------------------------------------------------------ stopping

    def abort(self) -> None:
        """Stop every call now: fail the pending futures, kill the workers and their processes. Blocking."""
        with self._lock:
            if self._state not in ("broken", "aborted"):
                self._state = "aborted"
            jobs = self._take_jobs()
        _fail_all(jobs, "the pool was stopped while the call was pending")
        self._end_all()
        self._wake()
        self._watcher.join()

    def _take_jobs(self) -> list[_Job]:
        jobs = list(self._jobs.values())
        self._jobs.clear()
        return jobs

    def _end_all(self) -> None:
        with self._lock:
            generations = list(self._generations)
            self._generation = None
        for generation in generations:
            generation.end()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_writer.closed:
                return
            with contextlib.suppress(OSError):
                self._wake_writer.send_bytes(b"")

    # ------------------------------------------------------------ callbacks from the pools' threads

    def _on_started(self, generation: _Generation, process: Any, conn: Any, state: Any, job_cell: Any) -> None:
        self._arrivals.append(_Worker(generation, process, conn, state, job_cell))
        self._wake()

    def _on_error(self, job_id: int, generation: _Generation, exc: BaseException) -> None:
        # In the pool's task thread: the call could not be pickled.
        job = self._pop_job(job_id, generation)
        if job is not None:
            settle(job.future, error=exc)

    def _on_results_lost(self, generation: _Generation, reason: str) -> None:
        # In the pool's result thread, which is ending: the stdlib's books can no longer be kept.
        generation.results_lost = reason
        self._wake()

    def _pop_job(self, job_id: int, generation: _Generation) -> _Job | None:
        """Take job ``job_id`` off the books if ``generation`` runs it; wake the watcher after the last."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.generation is not generation:
                return None
            del self._jobs[job_id]
            last = not self._jobs
        if last:
            self._wake()
        return job

    # ------------------------------------------------------------ the watcher

    def _watch(self) -> None:
        try:
            self._watch_loop()
        except Exception:
            logger.exception("the multiprocessing pool's watcher failed; stopping the pool")
            self._break("the pool's watcher failed")
        finally:
            # Workers the pools start while they stop still need their pipes.
            with self._lock:
                generations = list(self._generations)
            for generation in generations:
                generation.ended.wait()
            with self._wake_lock:
                self._wake_writer.close()
            self._wake_reader.close()
            self._take_arrivals()
            for worker in self._watched:
                worker.conn.close()

    def _watch_loop(self) -> None:
        while True:
            self._take_arrivals()
            self._end_retired()
            with self._lock:
                state = self._state
                idle = not self._jobs
                generations = list(self._generations)
                current = self._generation
                if state == "closing" and current is not None and not current.closed:
                    current.close()
            if state in ("broken", "aborted"):
                return
            closing = state == "closing" and idle
            if closing and self._closed_down():
                return
            for generation in generations:
                if generation.results_lost is not None:
                    self._retire(generation, generation.results_lost)
            watched = list(self._watched)
            conns = {w.conn: w for w in watched if not w.inbox.eof}
            sentinels = {w.process.sentinel: w for w in watched}
            # Closing: a pool's worker thread ends with no event to wake us.
            timeout = _CLOSE_POLL if closing else None
            ready = multiprocessing.connection.wait([self._wake_reader, *conns, *sentinels], timeout)
            if self._wake_reader in ready:
                while self._wake_reader.poll():
                    self._wake_reader.recv_bytes()
            for obj in ready:
                if obj in conns:
                    self._read(conns[obj])
            for obj in ready:
                if obj in sentinels:
                    self._on_exit(sentinels[obj])

    def _take_arrivals(self) -> None:
        while self._arrivals:
            self._watched.append(self._arrivals.popleft())

    def _read(self, worker: _Worker) -> None:
        """Handle every whole message the worker's pipe holds now."""
        for data in worker.inbox.receive():
            self._handle(worker, data)

    def _handle(self, worker: _Worker, data: bytes) -> None:
        try:
            message = pickle.loads(data)
        except BaseException as exc:  # an outcome whose value cannot be loaded here
            if worker.job is not None:
                self._finish(worker, worker.job, error=not_loadable(data, exc))
            return
        kind = message[0]
        if kind == "done":
            _, job_id, ok, outcome = message
            if ok:
                self._finish(worker, job_id, result=outcome)
            else:
                self._finish(worker, job_id, error=unpack_error(outcome))
        elif kind == "start":
            self._on_start(worker, message[1])
        elif kind == "skipped":
            self._on_skipped(worker, message[1])
        elif kind == "ready":
            worker.ready = True
            self._startup_deaths = 0
        elif kind == "bye":
            worker.clean = True
        elif kind == "initfailed":
            self._break(f"the pool's initializer failed in worker process {worker.process.pid}:\n{message[1]}")

    def _on_start(self, worker: _Worker, job_id: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.generation is not worker.generation:
                return  # stopped, or sent again to a new generation: the worker skips it
            job.worker = worker
            worker.job = job_id
            if worker.process.pid is not None:  # started: it has one
                note_worker(job.future, worker.process.pid)
            if not (job.future.running() or job.future.done()):
                job.future.set_running_or_notify_cancel()
            doomed = job.stop
        if doomed:
            _kill_if_running(worker, job_id)

    def stop_job(self, future: concurrent.futures.Future[Any]) -> None:
        """Stop one call: kill the worker running it, with the processes it started; one that starts it later dies too.

        A call ``apply_async`` queued runs once a worker takes it, cancelled
        or not: its worker is killed as it reports ``start``. The pool
        replaces a killed worker; the other calls go on. A call that ended
        before its worker is killed is not stopped: its outcome stands.
        """
        worker = None
        with self._lock:
            found = next(((i, j) for i, j in self._jobs.items() if j.future is future), None)
            if found is None:
                return  # over
            job_id, job = found
            if job.worker is not None and job.worker.job == job_id:
                worker = job.worker
            else:
                job.stop = True
        if worker is not None:
            _kill_if_running(worker, job_id)

    def _on_skipped(self, worker: _Worker, job_id: int) -> None:
        """The worker saw the stop flag after ``start``: the call did not run."""
        if worker.job == job_id:
            worker.job = None
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.generation is not worker.generation:
                return
            if worker.generation.retired and not self._cancel_queued and self._state in ("running", "closing"):
                job.worker = None
                self._send(job_id, job)
                return
        job = self._pop_job(job_id, worker.generation)
        if job is not None and not job.future.cancel():
            settle(job.future, error=BrokenMultiprocessingPool("the pool was stopped before the call started"))

    def _finish(self, worker: _Worker, job_id: int, *, result: Any = None, error: BaseException | None = None) -> None:
        if worker.job == job_id:
            worker.job = None
        job = self._pop_job(job_id, worker.generation)
        if job is not None:
            settle(job.future, result=result, error=error)

    def _on_exit(self, worker: _Worker) -> None:
        """A worker exited: read its last words, fail the call it was running, retire its pool if unsound."""
        self._watched.remove(worker)
        self._read(worker)  # its last words; half a message is dropped
        worker.conn.close()
        generation = worker.generation
        with self._lock:
            if self._state in ("broken", "aborted") or generation.ended.is_set():
                return  # killed by us
        if worker.clean and worker.job is None:
            return
        pid = worker.process.pid
        assert pid is not None
        exitcode = self._exit_code(worker)
        if worker.job is not None:
            self._finish(worker, worker.job, error=WorkerDied(pid, exitcode))
        else:
            when = "while idle" if worker.ready else "while it started"
            logger.log(
                idle_exit_level(exitcode),
                "a worker of the multiprocessing pool died %s: %s",
                when,
                describe_exit(pid, exitcode),
            )
        if worker.state.value == TAKING:
            self._retire(
                generation, f"worker process {pid} of the multiprocessing pool died while it took a call from its queue"
            )
        if not worker.ready:
            self._startup_deaths += 1
            if self._startup_deaths >= _STARTUP_DEATHS:
                self._break(
                    f"{self._startup_deaths} worker processes in a row died before they were ready "
                    f"(the last: {describe_exit(pid, exitcode)}); does the pool's initializer end them?"
                )

    def _exit_code(self, worker: _Worker) -> int | None:
        # Let the pool's own thread reap the worker first: two threads reading
        # one exit status race (a forkserver worker's status is read from a
        # pipe, once). A retired pool's thread is stopped: then it is ours.
        pool = worker.generation.pool
        deadline = time.monotonic() + _REAP_GRACE
        while worker.process in pool.workers() and pool.replacing() and time.monotonic() < deadline:
            time.sleep(0.01)
        return worker.process.exitcode

    def _retire(self, generation: _Generation, reason: str) -> None:
        """Stop sending calls to ``generation``; send the calls none of its workers started to a new one."""
        with self._lock:
            if generation.retired:
                return
            generation.retired = True
            if self._generation is generation:
                self._generation = None
        logger.warning("%s; the calls no worker of that pool had started go to a new one", reason)
        generation.stop.value = True
        generation.pool.stop_replacing()
        # Each worker reports ``start`` before it reads the flag: every call
        # that will run in this generation has its ``start`` in a pipe now.
        self._take_arrivals()
        for worker in list(self._watched):
            if worker.generation is generation:
                self._read(worker)
        with self._lock:
            unstarted = [
                (i, job) for i, job in self._jobs.items() if job.generation is generation and job.worker is None
            ]
            if self._cancel_queued or self._state not in ("running", "closing"):
                for job_id, _ in unstarted:
                    del self._jobs[job_id]
            else:
                for job_id, job in unstarted:
                    self._send(job_id, job)
                unstarted = []
        for _, job in unstarted:
            job.future.cancel()
        self._wake()

    def _end_retired(self) -> None:
        """End the retired generations none of whose calls is still running."""
        with self._lock:
            if not any(g.retired for g in self._generations):
                return
            busy = {id(job.generation) for job in self._jobs.values()}
            done = [g for g in self._generations if g.retired and id(g) not in busy]
            for generation in done:
                self._generations.remove(generation)
        for generation in done:
            self._forget_workers(generation)
            generation.end()

    def _forget_workers(self, generation: _Generation) -> None:
        for worker in [w for w in self._watched if w.generation is generation]:
            self._watched.remove(worker)
            worker.conn.close()

    def _closed_down(self) -> bool:
        """Closing, and every call has finished: end the retired generations, join the others. True once all are.

        A generation is joined once its worker thread has ended (no worker
        can start any more) and its workers have exited, not before: until
        then the watcher handles their deaths as always, and one that dies in
        the task queue's read, where it may hold the lock the others need to
        read their end markers, has its generation ended instead. Joining
        never waits for a worker.
        """
        with self._lock:
            generations = list(self._generations)
        for generation in generations:
            if generation.retired:
                self._forget_workers(generation)
                generation.end()
            else:
                generation.let_go()
                self._take_arrivals()
                if generation.pool.replacing() or any(w.generation is generation for w in self._watched):
                    continue
                generation.join()
            with self._lock:
                self._generations.remove(generation)
        with self._lock:
            if self._generations:
                return False
            if self._state == "closing":
                self._state = "closed"
            return True

    def _break(self, reason: str) -> None:
        with self._lock:
            if self._state in ("broken", "aborted"):
                return
            self._state = "broken"
            self._broken_reason = f"{reason}; the pool was stopped"
            jobs = self._take_jobs()
        self._end_all()
        _fail_all(jobs, f"{reason}; the pool was stopped before the call finished")


def _stop_at_exit(pool: PipedPool, stop_flag: Any) -> None:
    """Stop a pool: its workers skip the calls they pick up from now on, and are killed with their trees.

    Also run at interpreter exit, for a pool nobody stopped (the program was
    interrupted mid-shutdown): before `multiprocessing.Pool`'s own exit hook,
    which would only SIGTERM the workers and leave the processes their tasks
    started running. That hook is cancelled once the pool is terminated or joined.
    """
    stop_flag.value = True
    pool.kill_and_terminate()


def _fail_all(jobs: list[_Job], msg: str) -> None:
    # Failed, not cancelled: a caller sees why its call will never run
    # (as concurrent.futures.ProcessPoolExecutor does when it breaks).
    for job in jobs:
        settle(job.future, error=BrokenMultiprocessingPool(msg))


# --------------------------------------------------------------------------- the pools


class MultiprocessingPool(Pool):
    """Tasks run in the daemonic worker processes of a `multiprocessing.Pool`.

    ``multiprocessing.Pool`` starts all its workers when it is created, so
    this pool always behaves as ``scaling_workers=False``: ``max_workers``
    processes (one per CPU by default) start when the pool is first used and
    are reused for every task. Its workers are daemonic, as the stdlib makes
    them: a task may not start processes of its own (use ``ndmultiprocessing``).

    ``pool_options`` may hold ``initializer``, ``initargs`` and
    ``maxtasksperchild`` (passed to `multiprocessing.Pool`).

    A worker that dies during a call fails that call only (the scheduler
    reports `aioflow.WorkerLostError` with its pid and exit code or signal);
    the other calls, queued or running, go on, on a replacement worker.
    """

    name = "multiprocessing"
    uses_processes = True
    _daemonic: ClassVar[bool] = True

    def _validate(self, options: PoolOptions) -> None:
        check_supported(self.name)
        unknown = set(options.extra) - set(_EXTRA_KEYS)
        if unknown:
            raise OptionError("pool_options", f"a dict with keys among {', '.join(_EXTRA_KEYS)}", options.extra)

    def _create_executor(self) -> concurrent.futures.Executor:
        extra = self.options.extra
        return _MultiprocessingExecutor(
            processes=self.capacity,
            context=multiprocessing.get_context(self.options.context),
            daemonic=self._daemonic,
            initializer=extra.get("initializer"),
            initargs=tuple(extra.get("initargs", ())),
            maxtasksperchild=extra.get("maxtasksperchild"),
        )

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, _MultiprocessingExecutor)
        executor.abort()

    def stop_call(
        self, executor: concurrent.futures.Executor, owner: object, future: concurrent.futures.Future[Any] | None
    ) -> None:
        # Not future.cancel(): a call the pool queued runs all the same (`_MultiprocessingExecutor.stop_job`).
        if future is not None:
            assert isinstance(executor, _MultiprocessingExecutor)
            executor.stop_job(future)


class NonDaemonicMultiprocessingPool(MultiprocessingPool):
    """`MultiprocessingPool` with non-daemonic workers: tasks may start processes and pools.

    ``multiprocessing.Pool`` marks its workers daemonic, and a daemonic
    process may not have children (the stdlib asserts it in
    ``Process.start``), so a task that uses a ``multiprocessing.Pool`` of its
    own fails in the ``multiprocessing`` pool. Here the workers are built from
    a process class whose ``daemon`` flag is always False. The processes a
    task starts are killed with its worker when the execution stops early.
    """

    name = "ndmultiprocessing"
    _daemonic = False
