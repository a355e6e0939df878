"""The ``multiprocessing`` and ``ndmultiprocessing`` pools: a `multiprocessing.Pool` behind an executor.

Actors and who owns what:

- `_MultiprocessingExecutor` (parent process) owns one `multiprocessing.Pool`
  and the futures it handed out (``_jobs``: job id -> `_Job`, guarded by
  ``_lock``). ``submit`` sends ``_call_in_worker(job_id, fn, args)`` with
  ``apply_async``; the pool's result-handler thread runs our callbacks,
  which resolve the future.
- The *workers* (the pool's processes) report on a pipe of our own, the
  *channel* (one writer lock shared by all workers): ``hello`` when they
  start, ``start`` with the job id before they run a call, ``bye`` when they
  exit cleanly (a `multiprocessing.util.Finalize` hook, which SIGKILL and
  ``os._exit`` skip), ``initfailed`` when the pool's initializer raised.
- The *watcher* thread (parent) waits on the channel and on every worker's
  sentinel. A worker that dies without ``bye`` died abnormally: the calls it
  was running can never finish (``multiprocessing.Pool`` silently replaces
  the worker and waits forever), and its death may leave the pool's queue
  locks held. The watcher then fails those calls' futures at once with
  `BrokenMultiprocessingPool` naming the pid and exit code, marks the
  executor broken (as `concurrent.futures.ProcessPoolExecutor` does), stops
  the whole pool and fails every other pending future. After
  ``shutdown`` it joins the pool once every call has finished, then ends.

Shutdown order. ``shutdown`` closes the pool (queued calls still run), the
watcher joins it when the last call finishes. `_MultiprocessingExecutor.abort`
(a timeout, a cancellation, a failed node) fails every pending future,
raises a shared *stop flag* (a worker that picks up a call after it skips
the call), stops the pool's worker thread (else every killed worker is
replaced at once, by one the kill misses), kills every worker with the
processes its task started (`kill_process_trees`), frees the result
queue's write lock a killed worker may hold, terminates the pool, then
joins the watcher. The broken path runs the same stop from the watcher.
A worker killed in the middle of reading a task or writing a result leaves
a pipe out of step: `_Pool` terminates whatever the pipes hold (see there),
and no error of the stop escapes the watcher.

Worker processes ignore SIGINT and exit with the owning process (see
`aioflow.pools._process._worker_initializer`).

Limits. A call cannot be taken back once ``apply_async`` queued it:
cancelling its future (before a worker reported ``start``) only stops the
caller from waiting, the call still runs unless the stop flag is up
(``shutdown(cancel_futures=True)``, an abort). On a pool shared by several
executions, stopping one of them while others run lets its running calls
finish in the background (`Pool._abort_owner`'s default). The pool's
internals this module reads and overrides, present in every CPython 3.8+:
``Pool._pool`` (the worker processes), ``Pool._worker_handler``,
``Pool._change_notifier``, ``Pool._outqueue``, ``Pool._setup_queues``,
``Pool._help_stuff_finish`` and ``Pool._terminate_pool``.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.pool
import multiprocessing.util
import os
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._errors import OptionError
from ._base import Pool, PoolOptions, settle
from ._outcomes import pack_error, signal_name, unpack_error
from ._process import _worker_initializer, kill_process_trees

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BrokenMultiprocessingPool", "MultiprocessingPool", "NonDaemonicMultiprocessingPool"]

logger = logging.getLogger("aioflow.pools")

T = TypeVar("T")

#: The keys ``pool_options`` may hold: keyword arguments of `multiprocessing.Pool`.
_EXTRA_KEYS = ("initializer", "initargs", "maxtasksperchild")

#: The message of the assertion `multiprocessing.Process.start` raises in a daemonic process.
_DAEMONIC_ASSERTION = "daemonic processes are not allowed to have children"

#: Seconds the watcher waits for the pool to reap a dead worker before it reads the exit code itself.
_REAP_GRACE = 2.0

#: Seconds a stop waits for each of the pool's threads and workers (only a stuck one reaches it).
_THREAD_GRACE = 10.0

#: Seconds a stop waits for a queue lock before it takes the holder for a dead worker.
_LOCK_GRACE = 0.5

#: Longest wait between two reads while the task pipe is drained.
_DRAIN_WAIT = 0.05

#: ``multiprocessing.pool.TERMINATE``: the state that ends each of the pool's threads.
_TERMINATE = "TERMINATE"


class BrokenMultiprocessingPool(concurrent.futures.BrokenExecutor):
    """A worker of a ``multiprocessing`` pool died, or the pool was stopped, before a call finished."""


# --------------------------------------------------------------------------- worker side


@dataclass
class _WorkerLink:
    """What a worker process needs to report to its executor (module global in each worker)."""

    writer: multiprocessing.connection.Connection
    lock: Any  # a multiprocessing Lock of the pool's context
    stop: Any  # a shared c_bool: calls picked up after it is set are skipped
    daemonic: bool


_LINK: _WorkerLink | None = None


def _send(link: _WorkerLink, message: tuple[Any, ...]) -> None:
    with link.lock:
        link.writer.send(message)


def _pool_initializer(
    link: _WorkerLink,
    owner_pid: int,
    user_initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
) -> None:
    """Run in each new worker: report it, ignore SIGINT, watch the owner, then the user's initializer."""
    global _LINK
    _LINK = link
    pid = os.getpid()
    try:
        _send(link, ("hello", pid, None))
    except OSError:
        # The executor closed its end: the pool was stopped while this
        # worker was starting. Nothing will ever be asked of it.
        os._exit(0)
    # Runs when the worker leaves cleanly (pool closed, maxtasksperchild
    # reached, initializer failed), never after SIGKILL or os._exit.
    multiprocessing.util.Finalize(None, _say_bye, args=(link, pid), exitpriority=100)
    try:
        _worker_initializer(owner_pid, user_initializer, initargs)
    except BaseException:
        _send(link, ("initfailed", pid, traceback.format_exc()))
        raise


def _say_bye(link: _WorkerLink, pid: int) -> None:
    # A process forked by a task (os.fork) inherits the hook: only the worker speaks for itself.
    if os.getpid() == pid:
        _send(link, ("bye", pid, None))


def _call_in_worker(job_id: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Run ``fn(*args)`` in a worker; return ``("ok", value)``, ``("error", packed exc)`` or ``("skipped",)``.

    Every exception, `BaseException` included, comes back as a value: the
    pool's own worker loop only catches `Exception` and would exit on the
    others, losing the call.
    """
    link = _LINK
    assert link is not None, "the worker was not initialised by the aioflow pool"
    if link.stop.value:
        return ("skipped",)
    _send(link, ("start", os.getpid(), job_id))
    try:
        return ("ok", fn(*args))
    except BaseException as exc:
        return ("error", pack_error(_clarify(exc, link.daemonic)))


def _clarify(exc: BaseException, daemonic: bool) -> BaseException:
    """Turn the stdlib's terse assertion about daemonic workers into an error that says what to do."""
    if not (daemonic and isinstance(exc, AssertionError) and _DAEMONIC_ASSERTION in str(exc)):
        return exc
    msg = (
        f"a task tried to start a process, but the workers of the 'multiprocessing' pool are "
        f"daemonic ({_DAEMONIC_ASSERTION}); run the graph with pool_type 'ndmultiprocessing', "
        "'ndprocess' or 'process', whose workers may start processes and pools"
    )
    clear = RuntimeError(msg)
    clear.__cause__ = exc
    return clear


# --------------------------------------------------------------------------- non-daemonic workers


class _NonDaemonic:
    """Mixin: ``daemon`` is always False, whatever the pool assigns.

    `multiprocessing.Pool` sets ``worker.daemon = True`` on every worker, and a
    daemonic process may not start children. Ignoring the assignment leaves
    the worker's ``_config`` without the ``daemon`` flag, so that tasks can
    start processes and pools of their own.
    """

    @property
    def daemon(self) -> bool:
        return False

    @daemon.setter
    def daemon(self, value: bool) -> None:
        pass


# Module-level classes, one per start method: spawn and forkserver pickle the
# process object by its class's qualified name.
class _NonDaemonicForkProcess(_NonDaemonic, multiprocessing.context.ForkProcess):
    pass


class _NonDaemonicSpawnProcess(_NonDaemonic, multiprocessing.context.SpawnProcess):
    pass


class _NonDaemonicForkServerProcess(_NonDaemonic, multiprocessing.context.ForkServerProcess):
    pass


_NON_DAEMONIC: dict[str, type[multiprocessing.process.BaseProcess]] = {
    "fork": _NonDaemonicForkProcess,
    "spawn": _NonDaemonicSpawnProcess,
    "forkserver": _NonDaemonicForkServerProcess,
}


class _Pool(multiprocessing.pool.Pool):
    """A `multiprocessing.Pool` that stops cleanly whatever its killed workers left in its pipes.

    Both queues are pipes of length-prefixed pickles. A worker killed in the
    middle of reading a task leaves the rest of that message in the task
    pipe; one killed while writing a result leaves part of a message in the
    result pipe. Every later read of that pipe is then out of step: the
    stdlib's ``terminate`` unpickles what is left in the task pipe and raises
    (``EOFError: Ran out of input``), after which it never stops the pool's
    threads; its result thread dies on a garbled result, or waits forever
    for the rest of a message that will never come. Here:

    - ``terminate`` drains the task pipe as raw bytes (`_drain_raw`), never
      unpickling them; it runs once every worker is dead (`_kill_and_terminate`);
    - a result that cannot be read ends the result thread, as the end of the
      pipe does, and reports it (``on_results_lost``) instead of raising there;
    - ``terminate`` waits for each thread and worker a bounded time, and ends
      the result thread, even one stuck in the middle of a message, by
      closing the result pipe's last write end (the workers' closed with them).

    Only stopping changes: results and tasks travel as in the stdlib.
    """

    def __init__(self, *args: Any, on_results_lost: Callable[[str], None], **kwargs: Any) -> None:
        self._on_results_lost = on_results_lost  # _setup_queues, called by __init__, needs it
        super().__init__(*args, **kwargs)

    def _setup_queues(self) -> None:
        super()._setup_queues()  # type: ignore[misc]
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
        try:
            outqueue.put(None)  # the result thread's end marker
        except OSError:
            pass
        _join_thread(worker_handler, current)
        for worker in pool:
            if worker.exitcode is None:
                worker.terminate()
        _join_thread(task_handler, current)
        # Nothing writes results any more. Closing the last write end (the
        # workers' closed when they died) lets the result thread read what
        # the pipe holds, then the end of the pipe: it ends even when stuck
        # in the middle of a message a killed worker began.
        outqueue._writer.close()
        _join_thread(result_handler, current)
        for worker in pool:
            worker.join(_THREAD_GRACE)
            if worker.exitcode is None:
                worker.kill()
                worker.join(_THREAD_GRACE)


class _NonDaemonicPool(_Pool):
    """A `multiprocessing.Pool` whose workers are not daemonic."""

    @staticmethod
    def Process(ctx: Any, *args: Any, **kwds: Any) -> Any:
        return _NON_DAEMONIC[ctx.get_start_method()](*args, **kwds)


# --------------------------------------------------------------------------- parent side


@dataclass
class _Job:
    future: concurrent.futures.Future[Any]
    pid: int | None = None  # the worker running it, once it reported ``start``


class _MultiprocessingExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` over a `multiprocessing.Pool` that notices dead workers."""

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
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count()
        self._state = "running"  # -> "closing" -> "closed", or -> "broken" / "aborted"
        self._stopped = False  # the pool was terminated (guarded by _stop_lock)
        self._pool_done = threading.Event()  # the pool was terminated or joined: its pipes may close
        self._stop_lock = threading.Lock()
        self._reader, writer = context.Pipe(duplex=False)
        self._wake_reader, self._wake_writer = multiprocessing.connection.Pipe(duplex=False)
        self._stop_flag: Any = context.RawValue(ctypes.c_bool, False)
        link = _WorkerLink(writer=writer, lock=context.Lock(), stop=self._stop_flag, daemonic=daemonic)
        self._writer = writer
        self._known: dict[int, multiprocessing.process.BaseProcess] = {}  # pid -> worker, until its death is handled
        self._clean_exits: set[int] = set()  # pids that said ``bye``
        self._handled: set[int] = set()  # pids whose exit was handled
        self._unmatched: set[int] = set()  # pids that said ``hello`` before the pool listed them
        self._broken_reason: str | None = None
        self._results_lost: str | None = None  # why the result pipe can no longer be read
        pool_cls = _Pool if daemonic else _NonDaemonicPool
        self._pool = pool_cls(
            processes=processes,
            initializer=_pool_initializer,
            initargs=(link, os.getpid(), initializer, initargs),
            maxtasksperchild=maxtasksperchild,
            context=context,
            # Weakly: the pool outlives nothing it does not need to. A strong
            # reference (pool -> executor) plus the exit hook's (registry ->
            # pool) would keep both, and every pipe, alive until exit.
            on_results_lost=_weak_call(self._on_results_lost),
        )
        # Priority 16: before the pool's own exit hook (15).
        multiprocessing.util.Finalize(
            self, _stop_at_exit, args=(self._pool, self._stop_flag, self._known, self._pool_done), exitpriority=16
        )
        self._watcher = threading.Thread(target=self._watch, name="aioflow-mp-watcher", daemon=True)
        self._watcher.start()

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        if kwargs:
            msg = "the multiprocessing pools take positional arguments only"
            raise TypeError(msg)
        with self._lock:
            if self._broken_reason is not None:
                raise BrokenMultiprocessingPool(self._broken_reason)
            if self._state != "running":
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            job_id = next(self._ids)
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._jobs[job_id] = _Job(future)
            self._pool.apply_async(
                _call_in_worker,
                (job_id, fn, args),
                callback=lambda outcome: self._on_result(job_id, outcome),
                error_callback=lambda exc: self._on_error(job_id, exc),
            )
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._state == "running":
                self._state = "closing"
                self._pool.close()
            if cancel_futures and self._state == "closing":
                self._stop_flag.value = True  # calls not started yet are skipped
                for job in self._jobs.values():
                    job.future.cancel()
        self._wake()
        if wait:
            self._watcher.join()

    # ------------------------------------------------------------ stopping

    def abort(self) -> None:
        """Stop every call now: fail the pending futures, kill the workers and their processes. Blocking."""
        with self._lock:
            if self._state not in ("broken", "aborted"):
                self._state = "aborted"
            jobs = self._take_jobs()
        _fail_all(jobs, "the pool was stopped while the call was pending")
        self._stop_pool()
        self._wake()
        self._watcher.join()

    def _take_jobs(self) -> list[_Job]:
        jobs = list(self._jobs.values())
        self._jobs.clear()
        return jobs

    def _stop_pool(self) -> None:
        """Kill every worker tree, free the queue locks they may hold, terminate the pool. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                with self._lock:
                    pids = set(self._known) | self._unmatched
                _kill_and_terminate(self._pool, self._stop_flag, pids)
            except Exception:
                # Nothing may stop the stop (the watcher runs it on a lost worker).
                logger.exception("stopping the multiprocessing pool failed")
            finally:
                self._pool_done.set()

    def _wake(self) -> None:
        with self._lock:
            if self._wake_writer.closed:
                return
            try:
                self._wake_writer.send_bytes(b"")
            except OSError:
                pass

    # ------------------------------------------------------------ results

    def _on_result(self, job_id: int, outcome: tuple[Any, ...]) -> None:
        with self._lock:
            job = self._jobs.pop(job_id, None)
            last = not self._jobs
        if job is not None:
            if outcome[0] == "ok":
                settle(job.future, result=outcome[1])
            elif outcome[0] == "error":
                settle(job.future, error=unpack_error(outcome[1]))
            elif not job.future.cancel():  # skipped after a stop: it never started
                settle(job.future, error=BrokenMultiprocessingPool("the pool was stopped before the call started"))
        if last:
            self._wake()

    def _on_error(self, job_id: int, exc: BaseException) -> None:
        # The call or its result could not be pickled (the pool's own errors).
        with self._lock:
            job = self._jobs.pop(job_id, None)
            last = not self._jobs
        if job is not None:
            settle(job.future, error=exc)
        if last:
            self._wake()

    def _on_results_lost(self, reason: str) -> None:
        # In the pool's result thread, which is ending: the watcher stops the pool.
        with self._lock:
            self._results_lost = reason
        self._wake()

    # ------------------------------------------------------------ the watcher

    def _watch(self) -> None:
        try:
            self._watch_loop()
        except Exception:
            logger.exception("the multiprocessing pool's watcher failed; stopping the pool")
            self._break("the pool's watcher failed")
        finally:
            # Workers started while the pool stops still need the channel.
            self._pool_done.wait()
            with self._lock:
                self._wake_writer.close()
            self._wake_reader.close()
            self._reader.close()
            self._writer.close()

    def _watch_loop(self) -> None:
        while True:
            with self._lock:
                state = self._state
                idle = not self._jobs
            if state in ("broken", "aborted"):
                return
            if state == "closing" and idle:
                self._pool.join()
                self._pool_done.set()
                with self._lock:
                    if self._state == "closing":
                        self._state = "closed"
                    # Every worker has exited: never signal their pids again.
                    self._known.clear()
                    self._unmatched.clear()
                return
            self._refresh_known()
            sentinels: dict[Any, int] = {p.sentinel: pid for pid, p in self._known.items()}
            timeout = 0.05 if self._unmatched else None
            ready = multiprocessing.connection.wait([self._reader, self._wake_reader, *sentinels], timeout)
            if self._wake_reader in ready:
                while self._wake_reader.poll():
                    self._wake_reader.recv_bytes()
            # Read every report first: a dead worker's last words are already in the pipe.
            self._drain()
            for obj in ready:
                pid = sentinels.get(obj)
                if pid is not None:
                    self._on_worker_exit(pid)
            self._check_unmatched()
            with self._lock:
                results_lost = self._results_lost
            if results_lost is not None:
                self._break(results_lost)

    def _drain(self) -> None:
        while self._reader.poll():
            kind, pid, data = self._reader.recv()
            if kind == "hello":
                self._unmatched.add(pid)
            elif kind == "bye":
                self._clean_exits.add(pid)
            elif kind == "start":
                with self._lock:
                    job = self._jobs.get(data)
                    if job is not None:
                        job.pid = pid
                        job.future.set_running_or_notify_cancel()
            elif kind == "initfailed":
                self._break(f"the pool's initializer failed in worker {pid}:\n{data}")

    def _refresh_known(self) -> None:
        with self._lock:
            for proc in _workers(self._pool):
                pid = proc.pid
                if pid is not None and pid not in self._known and pid not in self._handled:
                    self._known[pid] = proc
                    self._unmatched.discard(pid)

    def _check_unmatched(self) -> None:
        """A worker that reported and died before the pool listed it is only seen here."""
        import psutil

        dead = []
        for pid in list(self._unmatched):
            if pid in self._known or pid in self._handled or pid in self._clean_exits:
                self._unmatched.discard(pid)
                continue
            try:
                alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                alive = False
            if not alive:
                dead.append(pid)
        if not dead:
            return
        # Seen dead now: its ``bye``, if it said one, is in the pipe by now.
        self._drain()
        for pid in dead:
            self._unmatched.discard(pid)
            self._handled.add(pid)
            if pid in self._clean_exits:
                self._clean_exits.discard(pid)
            else:
                self._lost(pid, None)

    def _on_worker_exit(self, pid: int) -> None:
        proc = self._known.pop(pid)
        self._handled.add(pid)
        if pid in self._clean_exits:
            self._clean_exits.discard(pid)
            return
        with self._lock:
            if self._state in ("broken", "aborted"):
                return  # killed by us
        self._lost(pid, self._exit_code(proc))

    def _exit_code(self, proc: multiprocessing.process.BaseProcess) -> int | None:
        # Let the pool's own thread reap the worker first: two threads reading
        # one exit status race (a forkserver worker's status is read from a
        # pipe, once).
        deadline = time.monotonic() + _REAP_GRACE
        while proc in _workers(self._pool) and time.monotonic() < deadline:
            time.sleep(0.01)
        return proc.exitcode

    def _lost(self, pid: int, exitcode: int | None) -> None:
        how = _describe_exit(exitcode)
        with self._lock:
            ids = [job_id for job_id, job in self._jobs.items() if job.pid == pid]
            affected = [self._jobs.pop(job_id) for job_id in ids]
        msg = (
            f"worker process {pid} of the multiprocessing pool {how} while it ran the call "
            "(killed, crashed, or the task ended its process)"
        )
        _fail_all(affected, msg)
        self._break(f"worker process {pid} of the multiprocessing pool {how}")

    def _break(self, reason: str) -> None:
        with self._lock:
            if self._state in ("broken", "aborted"):
                return
            self._state = "broken"
            self._broken_reason = f"{reason}; the pool was stopped"
            jobs = self._take_jobs()
        self._stop_pool()
        _fail_all(jobs, f"{reason}; the pool was stopped before the call finished")


def _weak_call(method: Callable[[str], None]) -> Callable[[str], None]:
    """``method``, called only while its object is alive."""
    ref = weakref.WeakMethod(method)

    def call(reason: str) -> None:
        bound = ref()
        if bound is not None:
            bound(reason)

    return call


def _kill_and_terminate(pool: multiprocessing.pool.Pool, stop_flag: Any, pids: set[int]) -> None:
    """Kill every worker tree, free the queue locks the dead may hold, terminate ``pool``."""
    stop_flag.value = True
    # First no more replacements, then the kill: the set of workers is final.
    _stop_replacing_workers(pool)
    pids |= {p.pid for p in _workers(pool) if p.pid is not None}
    kill_process_trees(sorted(pids))
    # A worker killed while sending a result holds the result queue's write
    # lock, which the pool's threads take to send their end markers. (A
    # worker waiting for a task holds the task queue's read lock: _Pool's
    # terminate does not take it.)
    _free_lock(_private(pool, "_outqueue", "_wlock"))
    pool.terminate()


def _stop_at_exit(
    pool: multiprocessing.pool.Pool, stop_flag: Any, known: dict[int, Any], done: threading.Event
) -> None:
    """At interpreter exit, stop a pool nobody stopped (the program was interrupted mid-shutdown).

    Runs before `multiprocessing.Pool`'s own exit hook, which would only
    SIGTERM the workers and leave the processes their tasks started running.
    """
    if not done.is_set():
        _kill_and_terminate(pool, stop_flag, set(known))


def _fail_all(jobs: list[_Job], msg: str) -> None:
    # Failed, not cancelled: a caller sees why its call will never run
    # (as concurrent.futures.ProcessPoolExecutor does when it breaks).
    for job in jobs:
        settle(job.future, error=BrokenMultiprocessingPool(msg))


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "died (exit code unknown)"
    if exitcode < 0:
        return f"was killed by {signal_name(exitcode)} (exit code {exitcode})"
    return f"exited with code {exitcode}"


def _workers(pool: multiprocessing.pool.Pool) -> list[multiprocessing.process.BaseProcess]:
    # ``Pool._pool``, the list of worker processes, on every CPython 3.
    return list(getattr(pool, "_pool", None) or [])


def _private(obj: object, *names: str) -> Any:
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _stop_replacing_workers(pool: multiprocessing.pool.Pool) -> None:
    """Stop the pool's worker thread, which replaces every worker that exits, and wait for it.

    Killing workers while it runs only makes it start new ones, which the
    kill misses and which would read the pipes while they are drained.
    """
    handler = _private(pool, "_worker_handler")
    notifier = _private(pool, "_change_notifier")
    if handler is None or notifier is None:
        return
    handler._state = _TERMINATE
    notifier.put(None)  # wakes it
    _join_thread(handler, threading.current_thread())


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
    """The result thread's read: one result; a message that cannot be read ends the thread.

    ``EOFError`` and ``OSError`` end billiard's and the stdlib's result
    thread quietly; any other error there (a garbled message) would kill it
    with a traceback. The pipe is out of step from then on: no later
    result can be trusted, so the executor is told to stop the pool.
    """
    try:
        return reader.recv()
    except (EOFError, OSError):
        raise
    except Exception as exc:
        on_lost(f"a result could not be read ({type(exc).__name__}: {exc}): a worker died while sending one")
        raise EOFError from exc


def _join_thread(thread: Any, current: threading.Thread) -> None:
    if thread is current:
        return
    thread.join(_THREAD_GRACE)
    if thread.is_alive():
        logger.warning("the multiprocessing pool's %s thread did not end; leaving it (a daemon thread)", thread.name)


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

    A worker that dies during a call fails that call with
    `BrokenMultiprocessingPool` (the scheduler reports `aioflow.WorkerLostError`)
    and stops the whole pool, failing the other pending calls too: the dead
    worker may hold the pool's queue locks. The next use starts a new pool.
    """

    name = "multiprocessing"
    uses_processes = True
    _daemonic: ClassVar[bool] = True

    def _validate(self, options: PoolOptions) -> None:
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
