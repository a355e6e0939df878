"""Every override of billiard's internals that the ``billiard`` pool relies on, in one place.

`aioflow.pools._billiard` runs its calls on a billiard pool whose workers
each have a pipe pair of their own, whose threads break the pool instead of
ending the program, and whose idle workers retire between jobs (its
docstring says why and how). billiard offers hooks for some of it (Celery's
pool uses ``get_process_queues``); the rest needs its private parts. This
module holds all of them; the executor reaches billiard only through
`PipedPool`'s methods, its public ``apply_async``, ``grow`` and
``terminate``, and `start_method`.

What is overridden or read, by class of ``billiard.pool``:

- ``Pool``: ``_setup_queues`` (called first by ``__init__``; sets
  ``_inqueue``, ``_outqueue``, ``_quick_put``, ``_quick_get``,
  ``_poll_result``), ``get_process_queues``, ``Process``, ``Worker`` (its
  ``on_ready_counter`` keyword), ``Supervisor``, ``TaskHandler`` and
  ``ResultHandler`` (built in ``__init__``, in this order, after the first
  workers; the result handler given no ``on_ready_counters``),
  ``_create_worker_process`` (replaced: billiard's steps without the
  shared counter), ``process_flush_queues``,
  ``on_job_process_lost``, ``_help_stuff_finish``, ``_set_result_sentinel``,
  ``_join_exited_workers``, ``_repopulate_pool``, ``_avail_index``,
  ``_maintain_pool``, ``_pool``, ``_processes``, ``_poolctrl``,
  ``_on_ready_counters``, ``_initializer``, ``_initargs``,
  ``_maxtasksperchild``, ``_on_process_exit``, ``threads``,
  ``_wrap_exception``, ``_max_memory_per_child``, ``allow_restart``,
  ``on_process_up``, ``_process_register_queues``, ``WorkerProcess``,
  ``_cache`` (jobs and their
  ``_set``, ``discard`` and ``ready``), ``_ctx``, ``_state``,
  ``_worker_handler``, ``_result_handler``, ``restart_state`` (``step``,
  ``maxR``, ``maxT``), and the job tuples the task handler queues
  (``(job_id, index, function, args, kwargs)`` in ``task[1]``);
- ``Supervisor``, ``TaskHandler``, ``ResultHandler``: ``run`` (replaced),
  ``body``, ``_state``, ``close``, ``terminate``;
- the constants ``ACK``, ``READY``, ``DEATH``, ``RUN``, ``EX_OK`` and
  ``EX_RECYCLE``; ``billiard.exceptions.RestartFreqExceeded``;
  ``billiard.einfo.ExceptionWithTraceback``; a worker process's ``inq``,
  ``outq``, ``sentinel``, ``_popen`` and ``_is_alive``; how
  ``Connection.send_bytes`` frames a message.

Versions. Written and tested for billiard 4.3 (4.3.2). `check_supported`
refuses every other version when the pool is opened, with a `PoolError`
that says which version it found and which it supports: unknown internals
would misbehave, not fail.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import logging
import math
import multiprocessing
import multiprocessing.context
import os
import pickle
import select
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

import billiard
import billiard.pool as bpool
from billiard.connection import wait
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import RestartFreqExceeded

from .._errors import PoolError
from ._idle import Workers
from ._outcomes import Inbox, WorkerDied, describe_exit, not_loadable

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SUPPORTED", "PipedPool", "check_supported", "error_of", "start_method"]

logger = logging.getLogger("aioflow.pools")

#: The billiard versions (major, minor) whose internals this module was written for.
SUPPORTED = ((4, 3),)

# Longest wait of the supervisor between two rounds when nothing happens.
_SUPERVISE_INTERVAL = 0.8

#: Workers in a row that may die before taking the job they were given (an
#: initializer that ends them) before the pool breaks.
_UNTAKEN_DEATHS = 5


def _installed_version() -> str:
    """billiard's version (the check's one source, replaced in its test)."""
    return str(billiard.__version__)


def check_supported(pool_name: str) -> None:
    """Refuse to open the ``pool_name`` pool with a billiard whose internals this module does not know.

    Raises:
        PoolError: a billiard version outside `SUPPORTED`.
    """
    found = _installed_version()
    try:
        major, minor = (int(part) for part in found.split(".")[:2])
    except ValueError:
        major = minor = -1
    if (major, minor) in SUPPORTED:
        return
    supported = ", ".join(f"{major}.{minor}.x" for major, minor in SUPPORTED)
    msg = (
        f"the {pool_name!r} pool overrides internals of billiard {supported}, and billiard {found} is installed: "
        f"pip install 'billiard>={SUPPORTED[0][0]}.{SUPPORTED[0][1]},<{SUPPORTED[-1][0]}.{SUPPORTED[-1][1] + 1}', "
        "or use pool_type 'process' or 'ndprocess', which do not use billiard"
    )
    raise PoolError(msg)


def error_of(einfo: Any) -> BaseException:
    """The exception behind what billiard passes a job's ``error_callback``.

    billiard's ``ExceptionInfo`` (a task's SystemExit, a job its task thread
    could not send), or an error of ours (a dead worker's `WorkerDied`).
    """
    error: Any = getattr(einfo, "exception", einfo)
    if isinstance(error, ExceptionWithTraceback):  # made in this process
        error = error.exc
    if isinstance(error, BaseException):
        return error
    return RuntimeError(f"the billiard pool reported a failure: {einfo}")


def _retire_worker() -> None:
    """A retirement job: the worker that runs it exits once billiard has reported it."""
    raise SystemExit(0)


# --------------------------------------------------------------------------- the workers' pipes


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


def start_method(name: str | None) -> tuple[Any, Any]:
    """The context the pool's workers start from (``None``: billiard's default), and their process class.

    Workers started by ``spawn`` and ``forkserver`` are standard library
    processes (`aioflow.pools._billiard_workers`, imported only for them).
    """
    context = billiard.get_context(name)
    method = context.get_start_method()
    if method in ("spawn", "forkserver"):
        from ._billiard_workers import STDLIB_WORKERS

        worker = STDLIB_WORKERS[method]
        return multiprocessing.get_context(worker._start_method), worker
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
    read by the result thread only. A job goes to the most recently idle
    worker, a retirement job to the least recently idle one
    (`aioflow.pools._idle.Workers`), and a worker counts as idle as soon as
    its READY is read, before billiard resolves the job: a trickle of jobs
    stays on one warm worker, and the workers a burst started retire.

    A reaped worker is *buried* in the result thread, after the messages its
    pipe still holds: a job it acknowledged fails (``fail``), a job it never
    acknowledged goes first to the next idle worker, and `_UNTAKEN_DEATHS`
    workers in a row dying before they took their job break the pool
    (``broken``).
    """

    def __init__(
        self,
        *,
        fail: Callable[[tuple[Any, ...], BaseException], None],
        broken: Callable[[str], None],
        idle_timeout: float | None,
    ) -> None:
        self._kinds = (bpool.ACK, bpool.READY, bpool.DEATH)
        self._fail = fail
        self._broken = broken
        self._lock = threading.Lock()
        self._links: dict[int, _Link] = {}  # pid -> worker not buried yet
        # The workers not buried yet that take jobs, busy or idle (`aioflow.pools._idle`).
        self._workers: Workers[_Link] = Workers(idle_timeout)
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()  # jobs waiting for a worker
        self._graves: collections.deque[_Link] = collections.deque()  # reaped, not buried yet
        self._stopped = False
        self._closed = False
        self._ends = 0  # billiard's end-of-results markers, not yet returned by poll
        # Jobs written to a worker, not taken yet, to stop: its worker is killed as it takes one (`stop_job`).
        self._doomed: set[int] = set()
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
            self._workers.add(link)
            self._workers.idle(link)
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
            self._workers.remove(link)
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
                if self._stopped or not self._pending or not self._workers.idle_count:
                    return
                task = self._pending.popleft()
                retiring = task[1][2] is _retire_worker
                link = self._workers.take_oldest() if retiring else self._workers.take()
                assert link is not None
                link.task = task
                link.acked = False
                link.exiting = retiring
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
        if kind == ack:
            with self._lock:  # `stop_job` reads ``acked`` under the lock
                link.acked = link.took_any = True
                self._untaken_deaths = 0
                if link.task is not None and link.task[1][0] in self._doomed:
                    self._doomed.discard(link.task[1][0])
                    _kill_tree(link.pid)  # it has just taken the job: nothing else runs there
            return message
        with self._lock:
            if kind == ready:
                self._idle_again(link)
            elif kind == death:
                link.exiting = True
                self._workers.remove(link)
                if link.gone:
                    return None  # billiard would SIGTERM its pid, no longer its own
        return message

    def _idle_again(self, link: _Link) -> None:
        # Under _lock: its job is done.
        link.task = None
        link.acked = False
        if link.exiting or link.gone:
            self._workers.remove(link)
        else:
            self._workers.idle(link)

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

    def stop_job(self, job_id: int) -> None:
        """Stop one job: drop it if no worker has it, kill its worker (with what it started) if one took it.

        Under the lock, a worker's job is the job until its READY is handled,
        and a worker gets no other job before: the worker killed is the one
        running this job, or done with it and idle, never one running another
        job. A job written to a worker that has not taken it yet dooms that
        worker when it does (`_open`): killed before, the job would go to
        another worker.
        """
        dropped = None
        with self._lock:
            for task in self._pending:
                if task[1][0] == job_id:
                    dropped = task
                    self._pending.remove(task)
                    break
            else:
                link = next((x for x in self._links.values() if x.task is not None and x.task[1][0] == job_id), None)
                if link is None:
                    return  # done
                if link.acked:
                    _kill_tree(link.pid)
                else:
                    self._doomed.add(job_id)
        if dropped is not None:
            self._fail(dropped, concurrent.futures.CancelledError())

    def idle_expiry(self) -> tuple[int, float | None]:
        """How many idle workers have been idle for ``idle_timeout``, and seconds until the next one has."""
        with self._lock:
            return self._workers.expiry()

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
            self._workers.clear()
        for link in {id(link): link for link in links}.values():
            link.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


# --------------------------------------------------------------------------- billiard's pool and threads


def _kill_tree(pid: int) -> None:
    """SIGKILL a worker and the processes below it, listed first; waits for nothing (callers hold a lock)."""
    import psutil  # only to stop one job

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


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


class _Supervisor(bpool.Supervisor):  # type: ignore[misc]
    """Maintains the workers as billiard's does; wakes when a worker dies or the pool stops.

    billiard starts it in the pool's ``__init__`` before the result handler it
    reports each worker's exit to exists: its rounds start once the pool is
    built (``PipedPool.built``), or a worker that died meanwhile would fail
    the round on the missing handler, and break the pool.
    """

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
        pool.built.wait()
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


class _TaskHandler(bpool.TaskHandler):  # type: ignore[misc]
    def __init__(self, *args: Any, aioflow_pool: Any, **kwargs: Any) -> None:
        self.aioflow_pool = aioflow_pool
        super().__init__(*args, **kwargs)

    def run(self) -> None:
        run_guarded(self, self.aioflow_pool)


class _ResultHandler(bpool.ResultHandler):  # type: ignore[misc]
    def __init__(self, *args: Any, aioflow_pool: Any, **kwargs: Any) -> None:
        self.aioflow_pool = aioflow_pool
        # The workers have no on_ready_counter (`PipedPool.Worker`): none to credit.
        super().__init__(*args, **{**kwargs, "on_ready_counters": None})

    def run(self) -> None:
        run_guarded(self, self.aioflow_pool)


class PipedPool(bpool.Pool):  # type: ignore[misc]
    """billiard's pool, its workers on pipes of their own (`_Switchboard`).

    What `aioflow.pools._billiard.BilliardExecutor` uses of it is the public
    ``apply_async``, ``grow`` and ``terminate``, and the methods below, which
    keep every read of billiard's private state in this module.
    """

    Supervisor = _Supervisor

    def __init__(
        self,
        *args: Any,
        process_class: Any,
        on_broken: Callable[[str], None],
        on_idle: Callable[[], float | None],
        idle_timeout: float | None,
        **kwargs: Any,
    ) -> None:
        self.process_class = process_class
        self.on_broken = on_broken
        # Called by the supervisor each round: retires idle workers, returns
        # the seconds until the next one is due (None: no idle worker).
        self.on_idle = on_idle
        self.idle_timeout = idle_timeout
        # Pids of workers that took a retirement job and are exiting.
        self.retiring: set[int] = set()
        self.retiring_lock = threading.Lock()
        # billiard builds and starts its threads in __init__, passing
        # them no pool: bind ours to this one first.
        self.TaskHandler = functools.partial(_TaskHandler, aioflow_pool=self)
        self.ResultHandler = functools.partial(_ResultHandler, aioflow_pool=self)
        #: Set once billiard's ``__init__`` has returned (or raised): its threads all exist.
        self.built = threading.Event()
        try:
            super().__init__(*args, **kwargs)
        finally:
            self.built.set()

    # ---------------------------------------------------------- what the executor uses

    @property
    def size(self) -> int:
        """How many workers the pool keeps (retiring ones aside)."""
        processes: int = self._processes
        return processes

    def worker_pids(self) -> list[int]:
        """The pids of the current worker processes, retiring ones included."""
        return [w.pid for w in list(self._pool) if w.pid is not None]

    def idle_expiry(self) -> tuple[int, float | None]:
        """How many idle workers have been idle for ``idle_timeout``, and seconds until the next one has."""
        return self.switchboard.idle_expiry()

    def allow_restarts_in_a_row(self, count: int) -> None:
        """Break the pool after ``count`` worker exits in a row with no job taken in between.

        billiard counts exits per second, which a slow ``spawn`` start never reaches.
        """
        self.restart_state.maxR = count
        self.restart_state.maxT = math.inf

    def queue_retirement(self, accept_callback: Callable[[int, float], None]) -> None:
        """Keep one worker fewer: the idle worker that takes the retirement job queued here exits.

        ``shrink``'s bookkeeping (the worker that exits is not replaced)
        without its SIGTERM, which may strike a worker reading a job.
        """
        self._processes -= 1
        self.apply_async(_retire_worker, accept_callback=accept_callback)

    def stop_supervisor(self) -> None:
        """Stop the supervisor thread and wait for it: no worker is replaced from now on."""
        supervisor = self._worker_handler
        supervisor.terminate()
        if supervisor.is_alive() and supervisor is not threading.current_thread():
            supervisor.join()

    def close_down(self) -> None:
        """Once the workers are dead: end billiard's threads, close the workers' pipes and sentinels.

        Jobs left in billiard's books would keep its result handler waiting
        for them (5 s) after the workers are gone: they are dropped first.
        """
        self._cache.clear()
        self._result_handler.terminate()
        self.terminate()
        self.join()

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
        board = self.switchboard = _Switchboard(
            fail=self._fail_job, broken=self.break_pool, idle_timeout=self.idle_timeout
        )
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
        # Without the shared on_ready_counter (see `aioflow.pools._billiard`'s docstring).
        return bpool.Worker(*args, **{**kwargs, "on_ready_counter": None})

    def _create_worker_process(self, i: int) -> Any:
        # billiard's own, less the on_ready_counter it makes for each worker
        # (a ctypes value in shared memory, whose module imports ctypes): our
        # workers take none (`Worker`), and the result handler credits none.
        sentinel = self._ctx.Event() if self.allow_restart else None
        inq, outq, synq = self.get_process_queues()
        worker = self.WorkerProcess(
            self.Worker(
                inq, outq, synq, self._initializer, self._initargs, self._maxtasksperchild, sentinel,
                self._on_process_exit, sigprotection=self.threads, wrap_exception=self._wrap_exception,
                max_memory_per_child=self._max_memory_per_child, on_ready_counter=None,
            )
        )  # fmt: skip
        self._pool.append(worker)
        self._process_register_queues(worker, (inq, outq, synq))
        worker.name = worker.name.replace("Process", "PoolWorker")
        worker.daemon = True
        worker.index = i
        worker.start()
        self._poolctrl[worker.pid] = sentinel
        self._on_ready_counters[worker.pid] = None  # billiard deletes the entry when it reaps the worker
        if self.on_process_up:
            self.on_process_up(worker)
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
