"""The ``billiard`` pool: a `billiard.pool.Pool` (Celery's fork of multiprocessing) behind an executor.

Actors:

- `BilliardExecutor` (the scheduler's side): ``submit`` wraps the call in
  `_call_in_worker` and hands it to ``Pool.apply_async`` with callbacks that
  resolve a `concurrent.futures.Future`. It owns ``_jobs`` (future -> record),
  guarded by ``_lock``.
- billiard's threads, in the pool's process: the task handler queues each
  job for the next idle worker (`_Switchboard.dispatch`), the result handler
  reads what the workers send (`_Switchboard.poll`), writes a freed worker
  its next job and runs our callbacks (so futures resolve in that thread),
  and the supervisor reaps dead workers and starts replacements. Ours
  (`_Supervisor`) waits on the workers' sentinels instead of sleeping 0.8 s
  between rounds, so a dead worker is noticed at once and closing the pool
  does not wait for a nap to end.
- the workers run billiard's worker loop: daemonic, as billiard makes them;
  they ignore SIGINT and exit with their owner
  (`aioflow.pools._lifecycle.worker_initializer`).

Each worker has a pipe pair of its own (`_WorkerPipe`, through billiard's
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

Transport: the call travels pickled twice (`_Call`), so that the worker
acknowledges the job before it unpickles the inputs, and the worker pickles
the outcome itself (`_call_in_worker`), so that a result that cannot be
pickled fails its node with the real pickling error; an exception comes back
packed (`aioflow.pools._outcomes.pack_error`) with the worker's traceback as
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

Start methods: ``fork`` and ``spawn`` workers are billiard's processes.
``forkserver`` workers are started by the standard library's fork server
(`_ForkServerWorker`), which passes on how each worker ended; billiard's
reports exit code 255 for every worker.

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
*retirement job* (`_retire_worker`): the idle worker it is handed to raises
``SystemExit``, which billiard reports as the job's outcome before the
worker exits cleanly, never in the middle of a job. Once it has taken its
retirement job it no longer counts towards the pool's size
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

import collections
import concurrent.futures
import functools
import itertools
import logging
import math
import multiprocessing.connection
import multiprocessing.context
import os
import pickle
import select
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import MissingExtraError, OptionError
from ._base import DEFAULT_IDLE_TIMEOUT, Pool, PoolOptions
from ._lifecycle import kill_descendants, kill_process_trees, worker_initializer
from ._outcomes import BrokenBilliardPool, Inbox, WorkerDied, describe_exit, not_loadable, pack_error, unpack_error

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BilliardExecutor", "BilliardPool", "BrokenBilliardPool"]

logger = logging.getLogger("aioflow.pools")

# Longest wait of the supervisor between two rounds when nothing happens.
_SUPERVISE_INTERVAL = 0.8

#: Workers in a row that may die before taking the job they were given (an
#: initializer that ends them) before the pool breaks.
_UNTAKEN_DEATHS = 5


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


class _Call:
    """A call to send to a worker. It pickles as the bytes of its own pickle, in billiard's task-handler thread.

    A worker acknowledges a job (billiard's ACK) only once it has unpickled
    it. Were the inputs unpickled then, a worker killed while doing so (out of
    memory on a large input, a module that crashes on import) would die
    before its ACK, as if it had never read the job: the job would go to the
    next worker, and kill it too. As bytes, the job unpickles at once and the
    call itself is unpickled in `_call_in_worker`, after the ACK: the worker's
    death fails that job, like any other.
    """

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __reduce__(self) -> tuple[Any, ...]:
        return bytes, (pickle.dumps((self.fn, self.args, self.kwargs), pickle.HIGHEST_PROTOCOL),)


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


def _call_in_worker(call: bytes) -> tuple[bool, bytes]:
    """Run the call (a `_Call`'s bytes) and pickle its outcome: ``(True, result)`` or ``(False, packed exception)``.

    Exceptions that are not `Exception` are left to billiard, which reports
    them (and ends the worker after a SystemExit or KeyboardInterrupt).
    """
    try:
        fn, args, kwargs = pickle.loads(call)
        result = fn(*args, **kwargs)
    except Exception as exc:
        return False, _dump_error(_clarify(exc))
    try:
        return True, pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # the result cannot be pickled
        return False, _dump_error(exc)


class _WorkerPipe:
    """One of a worker's own two pipes, with what billiard's worker loop uses of a queue.

    The worker reads its jobs with ``get_payload`` and sends its messages
    with ``put``; as it starts, it closes the ends it does not use (the job
    pipe's ``_writer``, the message pipe's ``_reader``), and the pool closes
    the worker's ends in its own process. One process writes, one reads: no
    lock.
    """

    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: Any, writer: Any) -> None:
        self._reader = reader
        self._writer = writer

    def __getstate__(self) -> tuple[Any, Any]:
        return self._reader, self._writer

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self._reader, self._writer = state

    def get_payload(self) -> bytes:
        payload: bytes = self._reader.recv_bytes()
        return payload

    def get(self) -> Any:
        return pickle.loads(self.get_payload())

    def put(self, obj: Any) -> None:
        self._writer.send_bytes(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


class _ForkServerWorker(multiprocessing.context.ForkServerProcess):
    """A pool worker started by the standard library's fork server, which reports how each worker ended.

    billiard's own fork server sends a worker's exit code only when the
    worker returns from its main function; billiard's workers end with
    ``os._exit`` (or a signal), so it reports 255 for every one. The worker
    runs billiard's loop all the same; billiard's pool asks its workers
    ``_is_alive``.
    """

    def _is_alive(self) -> bool:
        return self.is_alive()


def _start_method(billiard: Any, name: str | None) -> tuple[Any, Any]:
    """The context the pool's workers start from, and their process class."""
    if name == "forkserver":
        return multiprocessing.get_context("forkserver"), _ForkServerWorker
    context = billiard.get_context(name)
    return context, context.Process


# --------------------------------------------------------------------------- the workers' pipes, in the pool's process


#: What the result thread queues after a dead worker's last messages: bury it then.
_BURY = object()

#: Jobs up to this size are framed in one buffer, written at once.
_SMALL_JOB = 1 << 14


def _frame(data: bytes) -> tuple[bytes, ...]:
    """A job as billiard's ``Connection.recv_bytes`` reads it: a big-endian 4-byte length, then the bytes."""
    header = struct.pack("!i", len(data))
    return (header + data,) if len(data) <= _SMALL_JOB else (header, data)


class _Link:
    """A worker as the switchboard sees it: its pipe ends, and the job written to it.

    ``write_lock`` is held while a job is written to the worker and while its
    pipes are closed: a descriptor is never closed under a write.
    """

    __slots__ = (
        "acked",
        "exitcode",
        "exiting",
        "gone",
        "inbox",
        "pid",
        "process",
        "reader",
        "sentinel",
        "task",
        "took_any",
        "write_lock",
        "writer",
    )

    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid: int = process.pid
        self.sentinel: int = process.sentinel
        self.writer = process.inq._writer  # where its jobs go
        self.reader = process.outq._reader  # where its messages come from
        os.set_blocking(self.writer.fileno(), False)
        self.inbox = Inbox(self.reader.fileno())
        self.write_lock = threading.Lock()
        self.task: tuple[Any, ...] | None = None  # the job written to it, until its READY
        self.acked = False  # it took that job (its ACK was read)
        self.took_any = False  # it has taken a job
        self.exiting = False  # it takes no more jobs (it said DEATH, or took a retirement job)
        self.gone = False  # reaped: what it sent is read, then it is buried
        self.exitcode: int | None = None

    def send(self, message: tuple[bytes, ...]) -> None:
        """Write a job, unless the worker ends first (`BrokenPipeError`).

        The pipe is non-blocking and its sentinel is watched: a job larger
        than the pipe's buffer, written to a worker that died before reading
        it, would otherwise block for ever if some other process (forked
        while the worker started) holds a copy of the pipe's read end.
        """
        with self.write_lock:
            fd = self.writer.fileno()
            poller: select.poll | None = None
            for chunk in message:
                view = memoryview(chunk)
                while view:
                    try:
                        view = view[os.write(fd, view) :]
                    except BlockingIOError:  # the pipe is full: wait for room, or the worker's end
                        if poller is None:
                            poller = select.poll()
                            poller.register(fd, select.POLLOUT)
                            poller.register(self.sentinel, select.POLLIN)
                        if any(ready == self.sentinel for ready, _ in poller.poll()):
                            raise BrokenPipeError(f"worker process {self.pid} ended") from None

    def close(self) -> None:
        """Close its pipes and its exit sentinel (billiard never closes a worker's: one descriptor each)."""
        with self.write_lock:
            self.writer.close()
        self.reader.close()
        popen = getattr(self.process, "_popen", None)
        if popen is not None and hasattr(popen, "close"):
            popen.close()


class _Switchboard:
    """The pool's task and result queues: hands each job to an idle worker's own pipe, reads every worker's.

    billiard's pool uses it where its shared queues were. Its task handler
    thread calls `dispatch` for each job, its result handler thread calls
    `poll` for the next message, its shutdown calls `stop`, ``put(None)``
    (the end of results) and `close`; the supervisor thread calls `add` for
    each worker it starts and `exited` for each one it reaps. ``_lock``
    guards the links, the jobs waiting for a worker and who holds which.

    A worker is given one job at a time, as billiard's took one from the
    shared pipe once free: no job waits behind another on a busy worker while
    a worker is idle. Whichever thread frees a worker or brings a job hands
    it out (`_pump`): the result thread writes a worker its next job as soon
    as it reads its READY, with no hand-off to another thread. The pipes are
    read by the result thread only.

    A reaped worker is *buried* in the result thread, after the messages its
    pipe still holds: a job it acknowledged fails (``fail``), a job it never
    acknowledged goes first to the next idle worker, and `_UNTAKEN_DEATHS`
    workers in a row dying before they took their job break the pool
    (``broken``).
    """

    def __init__(
        self, *, fail: Callable[[tuple[Any, ...], BaseException], None], broken: Callable[[str], None]
    ) -> None:
        from billiard.pool import ACK, DEATH, READY

        self._kinds = (ACK, READY, DEATH)
        self._fail = fail
        self._broken = broken
        self._lock = threading.Lock()
        self._links: dict[int, _Link] = {}  # pid -> worker not buried yet
        self._idle: list[_Link] = []  # without a job; the most recently idle last
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()  # jobs waiting for a worker
        self._graves: collections.deque[_Link] = collections.deque()  # reaped, not buried yet
        self._stopped = False
        self._closed = False
        self._ends = 0  # billiard's end-of-results markers, not yet returned by poll
        self._untaken_deaths = 0  # in a row
        self._last_exit = "none yet"  # how the last worker reaped ended
        # The result thread's own: messages read for billiard, and workers to bury (once billiard has
        # handled the messages read before).
        self._mail: collections.deque[tuple[_Link, Any]] = collections.deque()
        self._watched: dict[int, _Link] = {}  # message pipe -> worker, as polled
        self._poller = select.poll()
        self._rewatch = True  # the workers changed since the poller was built (under _lock)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # ------------------------------------------------------------ the supervisor thread

    def add(self, process: Any) -> None:
        """A worker has started: close its ends of its pipes here, and give it jobs."""
        process.inq._reader.close()
        process.outq._writer.close()
        link = _Link(process)
        with self._lock:
            self._links[link.pid] = link
            self._idle.append(link)
            self._rewatch = True
        self._wake()
        self._pump()

    def exited(self, process: Any) -> None:
        """A worker was reaped (its exit status is known): bury it once its last messages are read."""
        with self._lock:
            link = self._links.get(process.pid)
            if link is None or link.process is not process or link.gone:
                return
            link.gone = True
            link.exitcode = process.exitcode
            self._last_exit = describe_exit(link.pid, link.exitcode)
            if link in self._idle:
                self._idle.remove(link)
            self._graves.append(link)
            self._rewatch = True
        self._wake()

    # ------------------------------------------------------------ the task handler thread

    def dispatch(self, task: Any) -> None:
        """Queue a job for the next idle worker (billiard's ``_quick_put``).

        ``None``, billiard's "no more jobs" to each worker, is ignored: the
        workers are killed instead.
        """
        if task is None:
            return
        with self._lock:
            self._pending.append(task)
        self._pump()

    def stop(self) -> None:
        """Hand out no more jobs: the pool is terminating or broken (billiard's ``_help_stuff_finish``)."""
        with self._lock:
            self._stopped = True
            self._pending.clear()

    # ------------------------------------------------------------ any thread

    def _pump(self) -> None:
        """Write waiting jobs to idle workers, one job each.

        Never raises: billiard's task thread ends on an `OSError` (a worker
        that died before it read its job is buried, and the job sent again),
        and loses a job whose message cannot be pickled (it looks the job up
        under the wrong key): that job fails here with the pickling error.
        """
        while True:
            with self._lock:
                if self._stopped or not self._pending or not self._idle:
                    return
                link = self._idle.pop()
                task = link.task = self._pending.popleft()
                link.acked = False
                link.exiting = task[1][2] is _retire_worker
            try:
                message = _frame(pickle.dumps(task, pickle.HIGHEST_PROTOCOL))
            except Exception as exc:  # e.g. an input that cannot be pickled
                with self._lock:
                    self._idle_again(link)
                self._fail(task, exc)
                continue
            try:
                link.send(message)
            except OSError:
                pass  # it died: buried, it sends the job again

    # ------------------------------------------------------------ the result handler thread

    def poll(self, timeout: float) -> tuple[bool, Any]:
        """The next message of any worker, ``(True, None)`` once the results end, ``(False, None)`` after ``timeout`` s.

        billiard's ``_poll_result``: the result handler handles each message
        it returns (ACK, READY, DEATH).
        """
        deadline = time.monotonic() + timeout
        while True:
            while self._mail:
                link, message = self._mail.popleft()
                if message is _BURY:
                    self._bury(link)
                    continue
                return True, message
            with self._lock:
                if self._ends:
                    self._ends -= 1
                    return True, None
                graves = list(self._graves)
                self._graves.clear()
                if self._rewatch:
                    self._rewatch = False
                    self._watch([link for link in self._links.values() if not (link.gone or link.inbox.eof)])
            for link in graves:  # its last messages first
                self._read(link)
                self._mail.append((link, _BURY))
            if graves:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, None
            for fd, _ in self._poller.poll(math.ceil(remaining * 1000)):
                if fd == self._wake_r:
                    self._drain_wake()
                else:
                    self._read(self._watched[fd])

    def _watch(self, links: list[_Link]) -> None:
        """Poll the wake-up pipe and these workers' message pipes from now on."""
        self._watched = {link.inbox.fd: link for link in links}
        self._poller = select.poll()
        for fd in (self._wake_r, *self._watched):
            self._poller.register(fd, select.POLLIN)

    def put(self, obj: Any) -> None:
        """billiard's end of results (``obj`` is ``None``): `poll` returns it, once, as from a queue."""
        with self._lock:
            self._ends += 1
        self._wake()

    def _read(self, link: _Link) -> None:
        """Take the messages the worker's pipe holds: keep their books now (a freed worker gets its next job at
        once), and queue them for billiard."""
        freed = False
        for data in link.inbox.receive():
            message = self._open(link, data)
            if message is not None:
                freed |= message[0] == self._kinds[1]
                self._mail.append((link, message))
        if link.inbox.eof:  # it is exiting: its pipe would poll as ready until it is reaped
            with self._lock:
                self._rewatch = True
        if freed:
            self._pump()

    def _open(self, link: _Link, data: bytes) -> Any:
        """Unpickle a worker's message and keep its books; ``None`` if it is not for billiard."""
        try:
            message = pickle.loads(data)
        except Exception as exc:  # e.g. a task's BaseException whose class cannot be imported here
            self._unreadable(link, data, exc)
            return None
        ack, ready, death = self._kinds
        kind = message[0]
        if kind == ack:  # read and written by this thread only, once the job is written
            link.acked = link.took_any = True
            self._untaken_deaths = 0
            return message
        with self._lock:
            if kind == ready:
                self._idle_again(link)
            elif kind == death:
                link.exiting = True
                if link in self._idle:
                    self._idle.remove(link)
                if link.gone:
                    return None  # billiard would SIGTERM its pid, no longer its own
        return message

    def _idle_again(self, link: _Link) -> None:
        # Under _lock: its job is done.
        link.task = None
        link.acked = False
        if not (link.exiting or link.gone):
            self._idle.append(link)

    def _unreadable(self, link: _Link, data: bytes, error: BaseException) -> None:
        """A message that cannot be unpickled here: its worker's outcome. Fail the job it was running."""
        with self._lock:
            task = link.task if link.acked else None
            if task is not None:
                self._idle_again(link)
        if task is None:
            logger.warning("a message of billiard worker %d could not be read: %r", link.pid, error)
            return
        self._pump()
        self._fail(task, not_loadable(data, error))

    def _bury(self, link: _Link) -> None:
        """A reaped worker whose messages were all handled: fail or resend the job it held, close its pipes."""
        with self._lock:
            if self._links.get(link.pid) is link:
                del self._links[link.pid]
            task, taken = link.task, link.acked
            link.task = None
            breaks = False
            if task is not None and not taken:
                if not link.took_any:  # it died as it started
                    self._untaken_deaths += 1
                    breaks = self._untaken_deaths >= _UNTAKEN_DEATHS
                if not breaks:
                    self._pending.appendleft(task)  # it never started
        link.close()
        if task is None:
            return
        if taken:
            self._fail(task, WorkerDied(link.pid, link.exitcode))
        elif breaks:
            self._broken(self.dying_at_start())
        else:
            self._pump()

    # ------------------------------------------------------------ any thread

    def dying_at_start(self) -> str:
        """Why the pool breaks when its workers keep dying before they take a job."""
        with self._lock:
            last = self._last_exit
        return (
            f"its worker processes keep dying before they take any job (the last: {last}); "
            "does the pool's initializer end them?"
        )

    def _wake(self) -> None:
        with self._lock:
            if self._closed:  # a closed descriptor's number may be reused
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # full of wake-ups already

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close every pipe: the pool's threads have ended. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            links = [*self._links.values(), *self._graves]
            self._links.clear()
            self._graves.clear()
            self._idle.clear()
        for link in {id(link): link for link in links}.values():
            link.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


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
    worker_class: Any = bpool.Worker

    def run_guarded(thread: Any, pool: Any) -> None:
        """Run a pool thread's body; if it fails, break the pool.

        billiard's own ``run`` ends the whole program when a pool thread
        fails (``os._exit``, or SIGTERM to itself when workers restart too
        often): not a library's call to make.
        """
        try:
            thread.body()
        except RestartFreqExceeded:
            pool.break_pool(pool.switchboard.dying_at_start())
        except Exception as exc:
            logger.exception("the billiard pool's %s thread failed", type(thread).__name__)
            pool.break_pool(f"its {type(thread).__name__} thread failed ({type(exc).__name__}: {exc})")

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
                timeout = _SUPERVISE_INTERVAL
                idle_due = pool.on_idle()  # retires the idle workers that are due
                if idle_due is not None:
                    timeout = max(min(timeout, idle_due + 0.01), 0.01)
                sentinels = [w.sentinel for w in list(pool._pool) if w._popen is not None]
                ready = wait([self._wake_r, *sentinels], timeout=timeout)
                if self._wake_r in ready:
                    os.read(self._wake_r, 512)
                elif ready:
                    time.sleep(0.01)  # a worker ended: its exit status shows a moment later

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
        """billiard's pool, its workers on pipes of their own (`_Switchboard`)."""

        Supervisor = _Supervisor

        def __init__(
            self,
            *args: Any,
            process_class: Any,
            on_broken: Callable[[str], None],
            on_idle: Callable[[], float | None],
            **kwargs: Any,
        ) -> None:
            self.process_class = process_class
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

        def break_pool(self, reason: str) -> None:
            """The pool can run no more jobs: hand out none, and say so (the executor fails them all)."""
            self.switchboard.stop()
            self.on_broken(reason)

        def wake_supervisor(self) -> None:
            self._worker_handler.wake()

        def mark_retiring(self, pid: int) -> None:
            """Worker ``pid`` took a retirement job: it exits, and no longer counts."""
            with self.retiring_lock:
                if any(w.pid == pid for w in list(self._pool)):
                    self.retiring.add(pid)

        # ---------------------------------------------------------- the workers' own pipes

        def _setup_queues(self) -> None:
            # Called first thing by billiard's __init__: where its shared
            # queues were, the switchboard writes jobs and reads results.
            board = self.switchboard = _Switchboard(fail=self._fail_job, broken=self.break_pool)
            self._inqueue = self._outqueue = board
            self._quick_put = board.dispatch
            self._quick_get = None  # read through _poll_result only
            self._poll_result = board.poll

        def get_process_queues(self) -> tuple[_WorkerPipe, _WorkerPipe, None]:
            jobs = _WorkerPipe(*self._ctx.Pipe(duplex=False))
            messages = _WorkerPipe(*self._ctx.Pipe(duplex=False))
            return jobs, messages, None

        def Process(self, *args: Any, **kwargs: Any) -> Any:
            return self.process_class(*args, **kwargs)

        def Worker(self, *args: Any, **kwargs: Any) -> Any:
            # Without the shared on_ready_counter (see the module docstring).
            return worker_class(*args, **{**kwargs, "on_ready_counter": None})

        def _create_worker_process(self, i: int) -> Any:
            worker = super()._create_worker_process(i)
            self.switchboard.add(worker)
            return worker

        def process_flush_queues(self, worker: Any) -> None:
            # billiard calls it for each worker it has reaped.
            self.switchboard.exited(worker)

        def on_job_process_lost(self, job: Any, pid: int, exitcode: int) -> None:
            # billiard would fail the job after lost_worker_timeout, with
            # whatever exit code it last saw; the switchboard fails it as soon
            # as the worker's pipe is read, with that worker's own.
            pass

        def _fail_job(self, task: tuple[Any, ...], error: BaseException) -> None:
            job_id, index = task[1][:2]
            job = self._cache.get(job_id)
            if job is not None and not job.ready():
                job._set(index, (False, error))
                job.discard()  # billiard leaves a job it never saw taken in its books

        @staticmethod
        def _help_stuff_finish(inqueue: Any, task_handler: Any, _pool: Any) -> None:
            inqueue.stop()  # a task thread waiting for an idle worker returns

        @classmethod
        def _set_result_sentinel(cls, outqueue: Any, pool: Any) -> None:
            outqueue.put(None)

        # ---------------------------------------------------------- workers that retire

        def _join_exited_workers(self, shutdown: bool = False) -> Any:
            exitcodes = super()._join_exited_workers(shutdown)
            with self.retiring_lock:
                self.retiring &= {w.pid for w in self._pool}
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
        kwargs = dict(pool_kwargs or {})
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
        # Set once billiard's constructor, which starts the supervisor, returns.
        self._pool: Any = None
        start, process_class = _start_method(billiard, context)
        self._pool = _pool_class()(
            1 if scaling_workers else max_workers,
            initializer=worker_initializer,
            initargs=(os.getpid(), initializer, tuple(initargs)),
            context=start,
            process_class=process_class,
            on_broken=self._break,
            on_idle=self._retire_idle,
            on_process_exit=_OnExit(kwargs.pop("on_process_exit", None)),
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
        pool._result_handler.terminate()
        pool.terminate()  # closes the workers' pipes and sentinels once billiard's threads have ended
        pool.join()

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
            self._settle(job, error=not_loadable(payload, exc))
            return
        if ok:
            self._settle(job, result=outcome)
            return
        self._settle(job, error=unpack_error(outcome))

    def _on_error(self, job: _Job, einfo: Any) -> None:
        # billiard's ExceptionInfo (a task's SystemExit, a job its task
        # thread could not send), or an error of ours (a dead worker's WorkerDied).
        from billiard.einfo import ExceptionWithTraceback

        error = getattr(einfo, "exception", einfo)
        if isinstance(error, ExceptionWithTraceback):  # made in this process
            error = error.exc
        if not isinstance(error, BaseException):
            error = RuntimeError(f"the billiard pool reported a failure: {einfo}")
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
    ``initargs``, ``maxtasksperchild``, ``max_memory_per_child``...).
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
