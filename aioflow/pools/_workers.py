"""`WorkerProcessExecutor`: the process executor behind the ``process`` and ``ndprocess`` pools.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot retire an idle
worker, cannot stop one running call without killing every worker, and when
one worker dies it breaks as a whole, failing the calls every other worker
was running and forgetting which worker died and how. This executor keeps
the same `concurrent.futures.Executor` interface and does all three.

Actors and who owns what:

- the *caller* (any thread, usually the event loop's): ``submit`` appends a
  `_Item` to ``_pending`` under ``_lock`` and wakes the dispatcher through a
  pipe. Nothing is pickled on the caller's thread.
- the *dispatcher* thread (one per executor, started by the first
  ``submit``) owns the workers: it hands each pending call to an idle worker
  (the most recently used first, so surplus workers stay idle and retire),
  starts a new worker when none is idle and fewer than ``max_workers`` run,
  reads results, reaps dead workers, and retires workers idle for longer
  than ``idle_timeout`` or done with ``max_tasks_per_child`` calls. It blocks in one `multiprocessing.connection.wait`
  on the wake-up pipe, every worker's connection and every worker's
  sentinel, with the next retirement as its timeout: no polling.
- each *worker* process has a duplex pipe of its own to the dispatcher and
  runs one call at a time: it receives the call (`aioflow.pools._wire.dump_call`),
  and sends back its outcome, ``(_CALL, ok, value)``, or, once, its
  initializer's failure, ``(_INIT, False, packed exception)``
  (`aioflow.pools._wire.dump_outcome`: an exception that cannot be rebuilt
  here arrives as `aioflow.RemoteError` with its type, message and
  traceback). An empty message asks it to exit.

``_lock`` guards ``_pending``, ``_workers`` (the workers that may take
calls, busy or idle, the most recently idle first to take one:
`aioflow.pools._idle.Workers`), ``_leaving`` (pid -> worker asked to exit,
or killed, whose exit is not reaped yet), each worker's ``item``, and the
``_shutdown``/``_broken`` flags. Pipe I/O and process
starts happen outside it.

Failures stay local. A worker that dies fails only the call it was
running, with `WorkerDied` naming its pid and exit code or signal (the
dispatcher reaps the process itself, so the exit status is always known);
the executor stays usable and starts a new worker when one is needed. A
worker whose initializer fails breaks the executor, as the stdlib's does.
A call, or its result, that cannot be pickled or unpickled on its way fails
alone with `TransferFailed` (whatever the failing ``__reduce__`` raised,
``SystemExit`` included), and the worker carries on.
`WorkerProcessExecutor.kill_owner` kills only the workers running one
owner's calls (with the processes those calls started); `terminate` kills
them all and ends the executor.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import logging
import os
import pickle
import threading
import weakref
from collections import deque
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from .._broken import InitializerFailed
from ._futures import Owned, cancel_queued, note_worker, owned_by
from ._idle import Workers
from ._lifecycle import join_or_kill, kill_process_trees, ready_to_fork, worker_initializer
from ._outcomes import TransferFailed, WorkerDied, describe_exit, idle_exit_level, unpack_error
from ._wire import dump_call, dump_outcome, load_call

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

__all__ = ["Owned", "WorkerDied", "WorkerProcessExecutor"]

logger = logging.getLogger("aioflow.pools")

#: What a worker's message is about: a call's outcome, or the failure of its initializer.
_CALL, _INIT = 0, 1

#: Seconds a worker asked to exit (shutdown, retirement) gets before it is killed.
_EXIT_GRACE = 5.0


# --------------------------------------------------------------------------- worker side


def _worker_main(
    conn: Connection,
    owner_pid: int,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
) -> None:
    """A worker process: run the initializer, then one call per message until asked to exit."""
    try:
        worker_initializer(owner_pid, initializer, initargs)
    except BaseException as exc:
        _reply(conn, dump_outcome((_INIT,), False, exc))
        return
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the executor is gone
        if not data:
            return  # asked to exit
        try:
            fn, args, kwargs = load_call(data)
        except BaseException as exc:  # SystemExit too: a failing __reduce__ must not end the worker
            failed = TransferFailed.wrapping("the call could not be unpickled in the worker process", exc)
            _reply(conn, dump_outcome((_CALL,), False, failed))
            continue
        del data
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            outcome = dump_outcome((_CALL,), False, exc)
        else:
            outcome = dump_outcome((_CALL,), True, result)
            del result
        # Drop references before waiting: a result or its inputs may be large.
        del fn, args, kwargs
        _reply(conn, outcome)
        del outcome


def _reply(conn: Connection, message: bytes) -> None:
    try:
        conn.send_bytes(message)
    except (EOFError, OSError):
        raise SystemExit(0) from None  # the executor is gone


# --------------------------------------------------------------------------- parent side


class _Item:
    __slots__ = ("args", "fn", "future", "kwargs", "owner")

    def __init__(
        self,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        owner: object,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.owner = owner


class _Worker:
    __slots__ = ("conn", "eof", "item", "killed", "pid", "process", "tasks")

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.pid: int = process.pid
        self.conn = conn
        self.item: _Item | None = None
        self.killed = False  # by terminate or kill_owner: its call was stopped, not lost
        self.eof = False  # its end of the pipe is closed: it is exiting
        self.tasks = 0  # calls it has finished


_LIVE_EXECUTORS: weakref.WeakSet[WorkerProcessExecutor] = weakref.WeakSet()


@atexit.register
def _stop_at_exit() -> None:
    for executor in list(_LIVE_EXECUTORS):
        executor.terminate()


class WorkerProcessExecutor(concurrent.futures.Executor):
    """A process pool executor whose workers scale, retire when idle, and fail alone.

    Args:
        max_workers: the most worker processes at once.
        mp_context: the multiprocessing context workers start from.
        initializer: called with ``initargs`` in each new worker.
        scaling: start workers as calls need them (``True``), or all at once.
        idle_timeout: with ``scaling``, retire a worker idle this many seconds
            (``None``: never).
        max_tasks_per_child: retire a worker once it has run this many calls
            (``None``: never), as the stdlib's ``ProcessPoolExecutor``; a new
            one starts when a call needs it.
    """

    _counter = itertools.count()

    def __init__(
        self,
        max_workers: int,
        mp_context: Any,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        scaling: bool = True,
        idle_timeout: float | None = None,
        max_tasks_per_child: int | None = None,
    ) -> None:
        self._max_workers = max_workers
        self._max_tasks_per_child = max_tasks_per_child
        self._context = mp_context
        ready_to_fork(mp_context.get_start_method())
        self._initializer = initializer
        self._initargs = initargs
        self._scaling = scaling
        self._owner_pid = os.getpid()
        self._lock = threading.Lock()
        self._pending: deque[_Item] = deque()
        self._workers: Workers[_Worker] = Workers(idle_timeout if scaling else None)
        self._leaving: dict[int, _Worker] = {}
        self._shutdown = False
        # Why the executor takes no more calls, and the initializer's exception when that is why.
        self._broken: str | None = None
        self._broken_cause: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Closed with the executor object, never while another thread may still use them: not at
        # interpreter exit (a finalizer's default), where the dispatcher may still run, and would
        # wait on the descriptor numbers after they were reused ("FD 3 is already registered").
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w).atexit = False
        _LIVE_EXECUTORS.add(self)
        if not scaling:
            # Before the dispatcher thread exists: with ``fork``, no thread of
            # ours is running at the moment the workers are forked.
            for _ in range(max_workers):
                worker = self._start_worker()
                self._workers.add(worker)
                self._workers.idle(worker)

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        owner = None
        if isinstance(fn, Owned):
            owner, fn = fn.owner, fn.fn
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._broken is not None:
                raise self._broken_error()
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            self._pending.append(_Item(future, fn, args, kwargs, owner))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._dispatch_forever, name=f"aioflow-process-dispatch_{next(self._counter)}", daemon=True
                )
                self._thread.start()
        self._wake()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_pending(lambda item: True)
            thread = self._thread
        if thread is None:
            self._stop_workers()
            return
        self._wake()
        if wait and thread is not threading.current_thread():
            thread.join()

    # ------------------------------------------------------------ stopping calls

    def terminate(self) -> None:
        """Kill every worker with the processes its call started, fail what remains, end. Blocking."""
        with self._lock:
            self._shutdown = True
            self._cancel_pending(lambda item: True)
            victims = self._take_workers(lambda worker: True)
            thread = self._thread
        kill_process_trees([worker.pid for worker in victims])
        if thread is None:
            self._stop_workers()
        else:
            self._wake()
            if thread is not threading.current_thread():
                thread.join()

    def kill_owner(self, owner: object) -> list[int]:
        """Stop ``owner``'s calls: cancel its queued ones, kill the workers running the others.

        Other owners' calls run on. Returns the pids of the killed workers. Blocking.
        """
        with self._lock:
            self._cancel_pending(lambda item: owned_by(item.owner, owner))
            victims = self._take_workers(lambda worker: worker.item is not None and owned_by(worker.item.owner, owner))
        pids = [worker.pid for worker in victims]
        kill_process_trees(pids)
        self._wake()
        return pids

    def worker_pids(self) -> list[int]:
        """The pids of the workers that may take calls now."""
        with self._lock:
            return [worker.pid for worker in self._workers]

    # ------------------------------------------------------------ internals (under _lock)

    def _cancel_pending(self, which: Callable[[_Item], bool]) -> None:
        kept: deque[_Item] = deque()
        for item in self._pending:
            if which(item):
                cancel_queued(item.future)
            else:
                kept.append(item)
        self._pending = kept

    def _take_workers(self, which: Callable[[_Worker], bool]) -> list[_Worker]:
        """Move the chosen workers (live or leaving) to ``_leaving``, marked killed."""
        victims = [w for w in [*self._workers, *self._leaving.values()] if which(w)]
        for worker in victims:
            worker.killed = True
            self._workers.remove(worker)
            self._leaving[worker.pid] = worker
        return victims

    # ------------------------------------------------------------ dispatcher thread

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child_conn, self._owner_pid, self._initializer, self._initargs),
            name=f"aioflow-process-worker-{next(self._counter)}",
        )
        try:
            process.start()
        finally:
            child_conn.close()
        return _Worker(process, parent_conn)

    def _dispatch_forever(self) -> None:
        try:
            while True:
                self._dispatch()
                with self._lock:
                    if self._shutdown and not self._pending and not self._busy():
                        return
                    workers = [*self._workers, *self._leaving.values()]
                    timeout = self._workers.next_expiry()
                waitables: list[Any] = [self._wake_r]
                waitables += [w.conn for w in workers if not w.eof]
                waitables += [w.process.sentinel for w in workers]
                ready = set(wait(waitables, timeout))
                if self._wake_r in ready:
                    self._drain_wake()
                for worker in workers:
                    if worker.conn in ready:
                        self._receive(worker)
                for worker in workers:
                    if worker.process.sentinel in ready:
                        self._reap(worker)
                self._retire_idle()
        except BaseException as exc:
            logger.exception("the process pool's dispatcher failed; stopping the pool")
            with self._lock:
                self._broken = f"the process pool's dispatcher failed: {exc!r}"
                self._shutdown = True
        finally:
            self._stop_workers()

    def _busy(self) -> bool:
        return any(w.item is not None for w in [*self._workers, *self._leaving.values()])

    def _dispatch(self) -> None:
        """Hand pending calls to idle workers, starting workers up to ``max_workers``."""
        while True:
            with self._lock:
                if not self._pending or self._broken is not None:
                    return
                worker = self._workers.take()
                if worker is None and len(self._workers) >= self._max_workers:
                    return
                item = self._pending.popleft()
            if not item.future.set_running_or_notify_cancel():
                if worker is not None:
                    with self._lock:
                        self._workers.idle(worker)
                continue
            if worker is None:
                try:
                    worker = self._start_worker()
                except BaseException as exc:  # e.g. "daemonic processes are not allowed to have children"
                    item.future.set_exception(exc)
                    continue
                with self._lock:
                    self._workers.add(worker)
            try:
                payload = dump_call(item.fn, item.args, item.kwargs)
            except BaseException as exc:  # an unpicklable function or input
                with self._lock:
                    self._workers.idle(worker)
                item.future.set_exception(TransferFailed.wrapping("the call could not be pickled", exc))
                continue
            with self._lock:
                worker.item = item
            note_worker(item.future, worker.pid)
            try:
                worker.conn.send_bytes(payload)
            except OSError:
                pass  # the worker died: reaping it fails the call
            del payload, item

    def _receive(self, worker: _Worker) -> None:
        """Read the message a worker sent: its call's outcome, or its initializer's failure."""
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            worker.eof = True  # it died mid-message, or exited: its sentinel says how
            return
        try:
            about, ok, value = pickle.loads(data)
        except BaseException as exc:  # e.g. the result's class cannot be imported here; SystemExit too
            about, ok = _CALL, False
            value = TransferFailed.wrapping("the result could not be unpickled in the calling process", exc)
        else:
            if not ok:
                value = unpack_error(value)
        del data
        if about == _INIT:
            self._break(worker, value)
            return
        with self._lock:
            item, worker.item = worker.item, None
            worker.tasks += 1
            limit = self._max_tasks_per_child
            retiring = worker in self._workers and limit is not None and worker.tasks >= limit
            if retiring:
                self._retire(worker)
            elif worker in self._workers:
                self._workers.idle(worker)  # before the future is resolved: its callbacks may submit
        if retiring:
            self._ask_to_exit(worker)
        if item is None:
            return
        if ok:
            item.future.set_result(value)
        else:
            item.future.set_exception(value)

    def _reap(self, worker: _Worker) -> None:
        """A worker exited: fail its call (unless its outcome is already in the pipe) and forget it."""
        if not worker.eof and worker.conn.poll():  # an outcome sent just before it exited
            self._receive(worker)
        # The sentinel fires as the process closes its files: a blocking wait
        # reaps it right after, and only we wait for it, so the status is known.
        worker.process.join(_EXIT_GRACE)
        exitcode = worker.process.exitcode
        with self._lock:
            item, worker.item = worker.item, None
            self._workers.remove(worker)
            self._leaving.pop(worker.pid, None)
        worker.conn.close()
        if exitcode is not None:
            worker.process.close()
        if item is None:
            if exitcode and not worker.killed:
                logger.log(
                    idle_exit_level(exitcode),
                    "an idle worker of the process pool exited: %s",
                    describe_exit(worker.pid, exitcode),
                )
            return
        if worker.killed:
            error: BaseException = concurrent.futures.BrokenExecutor(
                f"the call was stopped: its worker process {worker.pid} was killed"
            )
        else:
            error = WorkerDied(worker.pid, exitcode)
        if not item.future.done():
            item.future.set_exception(error)

    def _break(self, worker: _Worker, cause: BaseException) -> None:
        """A worker's initializer failed: fail its call and every queued one, accept no more.

        As with the stdlib's executor; calls running on other workers finish.
        """
        with self._lock:
            self._broken = f"the pool's initializer failed in worker process {worker.pid}: {cause!r}"
            self._broken_cause = cause
            self._shutdown = True
            pending, self._pending = self._pending, deque()
            item, worker.item = worker.item, None
        for queued in pending:
            if queued.future.set_running_or_notify_cancel():
                queued.future.set_exception(self._broken_error())
        if item is not None and not item.future.done():
            item.future.set_exception(self._broken_error())

    def _broken_error(self) -> concurrent.futures.BrokenExecutor:
        """The error for a call refused because the executor broke (a new instance per call)."""
        assert self._broken is not None
        if self._broken_cause is None:  # the dispatcher failed
            return concurrent.futures.BrokenExecutor(self._broken)
        return InitializerFailed.caused_by(self._broken, self._broken_cause)

    def _retire_idle(self) -> None:
        """Ask the workers idle for ``idle_timeout`` to exit."""
        with self._lock:
            retiring = self._workers.expired()
            for worker in retiring:
                self._retire(worker)
        for worker in retiring:
            self._ask_to_exit(worker)

    def _retire(self, worker: _Worker) -> None:
        """Under ``_lock``: ``worker`` takes no more calls; it exits once asked (`_ask_to_exit`)."""
        self._workers.remove(worker)
        self._leaving[worker.pid] = worker

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    @staticmethod
    def _ask_to_exit(worker: _Worker) -> None:
        try:
            worker.conn.send_bytes(b"")
        except OSError:
            pass  # already gone

    def _stop_workers(self) -> None:
        """Ask every worker to exit, kill those that do not within the grace period, reap all."""
        with self._lock:
            workers = [*self._workers.clear(), *self._leaving.values()]
            self._leaving.clear()
            leftovers = [w.item for w in workers if w.item is not None]
            for worker in workers:
                worker.item = None
        for worker in workers:
            self._ask_to_exit(worker)
        join_or_kill([w.process for w in workers], _EXIT_GRACE)
        for worker in workers:
            worker.conn.close()
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(concurrent.futures.BrokenExecutor("the process pool was stopped"))
        _LIVE_EXECUTORS.discard(self)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
