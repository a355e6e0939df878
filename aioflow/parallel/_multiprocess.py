"""The ``multiprocess`` backend (the default): warm worker processes fed chunks by the map's own thread.

Why not ``multiprocessing.Pool`` or a `concurrent.futures` executor: both put
two or three threads between the caller and the workers (a task feeder, a
result reader, a condition to wake the caller), and an executor makes one
future per chunk. Here the thread that iterates the map does all the I/O
itself: it writes chunks to the workers' pipes and reads their results, with
no thread and no future in between. At one item per chunk that is the
difference between about 100 µs per item (``ProcessPoolExecutor.map``) and
the figures in ``docs/performance.md``.

Actors and who owns what:

- `MultiprocessBackend` keeps the *idle* workers (``_idle``, under ``_lock``)
  between maps, up to one per CPU (the most a map may ask for): a warm second
  map starts no process.
- A map's `_Session` *leases* workers: it takes idle ones (the most recently
  used first) and starts the rest; while the session lasts, only the thread
  iterating that map touches them, so concurrent maps (two threads, or two
  generators consumed in turn) never share a worker and cannot deadlock.
  The session sends each worker the function once, then chunks.
- Each *worker* has two pipes: chunks in, outcomes out. It runs one chunk at
  a time: ``(index, items)`` in, ``(index, outcome)`` out (an outcome is
  every result, or the exception with the worker's traceback text).

Deadlock freedom. A worker blocks writing a large outcome until the caller
reads it; the caller must therefore never block writing a chunk: chunk pipes
are non-blocking on the caller's side, and what a full pipe does not take
waits in the worker's out-buffer, written when `select.poll` says the pipe has
room, in the same wait that reads outcomes. Reading blocks only once a
message has begun to arrive, which the worker finishes on its own.

Failures. A worker that dies (its sentinel fires) fails the map with
`aioflow.WorkerLostError` naming the chunk, pid and exit signal. A session
closed while chunks are still in flight (the consumer stopped early, a task
raised, Ctrl-C) kills the workers computing them, with the processes their
tasks started, since nobody wants their results; the other workers go back
to the idle list. Workers ignore SIGINT and exit with the process that
started them, even when it is killed (`aioflow.pools._process`). `shutdown`
and interpreter exit ask idle workers to exit and kill those that do not
within 5 s.

Idle retirement, with no thread of its own. A worker given back to the idle
list is told so (an "idle" message carrying ``idle_timeout``); a worker that
then hears nothing for ``idle_timeout`` seconds exits by itself. Its clock
starts when it reads that message, after the caller noted the time, so the
caller, which leases only workers idle for less than ``idle_timeout`` minus
a margin, never sends work to a worker that has decided to exit. Exited
workers are reaped at the next lease or give-back.
"""

from __future__ import annotations

import itertools
import os
import pickle
import select
import struct
import threading
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

from .._errors import PoolError
from .._lost import WorkerLostError
from ..pools._options import DEFAULT_IDLE_TIMEOUT, PoolSpec
from ._backends import CHUNKS_PER_WORKER, Backend, Session, chunks_per_worker
from ._chunks import _load_function, run_chunk

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from ._chunks import Outcome, PicklableAndCallable

__all__ = ["MultiprocessBackend"]

#: Seconds a worker asked to exit gets before it is killed.
_EXIT_GRACE = 5.0

#: Seconds of work a session queues on each worker. Chunks are assigned to
#: a worker when sent, so a deeper queue could leave one worker with work
#: while the other idles at the end of a map: at most this much (plus one
#: chunk). Tiny chunks get a deep queue (up to 64, `chunks_per_worker`), which lets a
#: worker run many chunks per wake-up and the caller send many per system
#: call (one item per chunk: about 35 µs per item with 2 chunks per worker,
#: 17 µs with 32 on the 2-core test machine); slow chunks get 2 per worker,
#: one running and one waiting.
_QUEUE_SECONDS = 0.002


#: A worker idle for longer than ``idle_timeout`` minus this (or half its
#: ``idle_timeout`` when shorter) is not leased again: it is about to exit.
_RETIRE_MARGIN = 0.25

#: Weight of the newest chunk in the running mean of chunk durations.
_SMOOTHING = 0.2

# The framing of multiprocessing.connection.Connection.send_bytes, which
# the worker reads with recv_bytes: a 4-byte signed length, or -1 and an
# 8-byte length for messages of 2 GiB and more.
_SMALL = struct.Struct("!i")
_LARGE = struct.Struct("!iQ")
_FUNCTION = -1  # the index of the message carrying the function
_IDLE = -2  # the index of the message "you are idle: exit after this many seconds without work"
_PROTOCOL = pickle.HIGHEST_PROTOCOL

_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR


#: Bytes asked of the kernel per read: a pipe holds 64 KiB by default.
_READ_SIZE = 1 << 16


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    header = _SMALL.pack(n) if n < 0x7FFFFFFF else _LARGE.pack(-1, n)
    return header + payload


class _Frames:
    """Reads length-prefixed messages from a pipe, as many per ``os.read`` as have arrived.

    One system call then serves a burst of small messages, where
    ``Connection.recv_bytes`` makes two per message.
    """

    __slots__ = ("buffer", "fd", "messages")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.messages: deque[bytes] = deque()

    def read(self) -> bool:
        """Read what the pipe holds (blocking until something arrives); ``False`` at end of file."""
        need = self._missing()
        data = os.read(self.fd, max(_READ_SIZE, need))
        if not data:
            return False
        self.buffer += data
        self._parse()
        return True

    def _missing(self) -> int:
        buffer = self.buffer
        if len(buffer) < _SMALL.size:
            return 0
        (n,) = _SMALL.unpack_from(buffer)
        if n == -1:
            if len(buffer) < _LARGE.size:
                return 0
            return _LARGE.size + int(_LARGE.unpack_from(buffer)[1]) - len(buffer)
        return _SMALL.size + int(n) - len(buffer)

    def _parse(self) -> None:
        buffer = self.buffer
        while len(buffer) >= _SMALL.size:
            (n,) = _SMALL.unpack_from(buffer)
            start = _SMALL.size
            if n == -1:
                if len(buffer) < _LARGE.size:
                    return
                n = _LARGE.unpack_from(buffer)[1]
                start = _LARGE.size
            end = start + n
            if len(buffer) < end:
                return
            self.messages.append(bytes(buffer[start:end]))
            del buffer[:end]


# --------------------------------------------------------------------------- worker side


def _worker_main(tasks: Connection, outcomes: Connection, owner_pid: int) -> None:
    """A worker process: take the function, then run one chunk per message until asked to exit."""
    from ..pools._lifecycle import worker_initializer as _worker_initializer

    _worker_initializer(owner_pid, None, ())
    fn: Any = None
    frames = _Frames(tasks.fileno())
    idle_until: float | None = None  # when this idle worker retires
    while True:
        try:
            while not frames.messages:
                if idle_until is not None and not tasks.poll(max(0.0, idle_until - time.monotonic())):
                    return  # idle for idle_timeout: retire
                if not frames.read():
                    return  # the caller is gone
        except OSError:
            return
        data = frames.messages.popleft()
        if not data:
            return  # asked to exit
        index, body = pickle.loads(data)
        del data
        if index == _IDLE:
            idle_until = time.monotonic() + body
            continue
        idle_until = None
        if index == _FUNCTION:
            fn = _load_function(body)
            continue
        started = time.perf_counter()
        outcome = run_chunk(fn, body)
        seconds = time.perf_counter() - started
        try:
            payload = pickle.dumps((index, outcome, seconds), _PROTOCOL)
        except Exception as exc:  # a result cannot be pickled
            payload = pickle.dumps((index, _unsendable_result(fn, outcome, exc), seconds), _PROTOCOL)
        del body, outcome
        try:
            outcomes.send_bytes(payload)
        except (EOFError, OSError):
            return


def _unsendable_result(fn: Any, outcome: Outcome, exc: Exception) -> Outcome:
    position = 0
    for position, result in enumerate(outcome[1]):  # noqa: B007 - position is read below
        try:
            pickle.dumps(result, _PROTOCOL)
        except Exception:
            break
    error = TypeError(
        f"the result of {fn.name} cannot be sent back from the worker process "
        f"({type(exc).__name__}: {exc}); return picklable values"
    )
    return (False, position, error, "".join(traceback.format_exception(exc)))


# --------------------------------------------------------------------------- caller side


class _Worker:
    __slots__ = ("chunks", "fd", "frames", "idle_since", "outbuf", "outcomes", "pid", "process", "tasks")

    def __init__(self, process: Any, tasks: Connection, outcomes: Connection) -> None:
        self.process = process
        self.pid: int = process.pid
        self.tasks = tasks
        self.fd = tasks.fileno()
        self.outcomes = outcomes
        self.frames = _Frames(outcomes.fileno())
        self.outbuf = bytearray()  # chunks not written to the pipe yet (submitted, or not taken by a full pipe)
        self.chunks: deque[int] = deque()  # indexes sent and not answered, oldest (running) first
        self.idle_since = 0.0  # time.monotonic() when it was last given back to the idle list

    def close(self) -> None:
        self.tasks.close()
        self.outcomes.close()
        if self.process.exitcode is not None:
            self.process.close()


class MultiprocessBackend(Backend):
    """Warm worker processes fed by the map's own thread (the default backend).

    Args:
        context: the start method: ``fork``, ``spawn``, ``forkserver``
            (``None``: the platform's default, ``fork`` on Linux before
            Python 3.14). Functions defined in ``__main__`` or a notebook
            work with every start method (they travel by value).
        idle_timeout: seconds after which a worker left idle between maps
            exits, giving its memory back (``None``: keep it until
            `shutdown`). The default is aioflow's pools' default, 60 s.

    Raises:
        OptionError: ``context`` is not a start method of this platform, or
            ``idle_timeout`` is not a number > 0 or ``None``.
    """

    name = "multiprocess"

    # Worker numbers, in the workers' names: their rank (worker_rank), so from 1.
    _counter = itertools.count(1)

    def __init__(self, context: str | None = None, idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT) -> None:
        PoolSpec(context=context, idle_timeout=idle_timeout).options  # noqa: B018 - made to be checked
        self.context = context
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._owner_pid = os.getpid()

    def open_session(self, fn: PicklableAndCallable[Any], workers: int) -> Session:
        payload = fn.payload()  # an unsendable function fails here, before any worker starts
        leased = self._lease(workers)
        return _Session(self, fn, payload, leased, keep=self.worker_limit() or workers)

    # ------------------------------------------------------------ workers

    def _lease(self, count: int) -> list[_Worker]:
        with self._lock:
            if self._owner_pid != os.getpid():  # this process was forked: the workers are not ours
                self._idle = []
                self._owner_pid = os.getpid()
            retiring = self._sweep()
            taken: list[_Worker] = []
            while self._idle and len(taken) < count:
                taken.append(self._idle.pop())
        self._stop(retiring)
        try:
            while len(taken) < count:
                taken.append(self._start_worker())
        except BaseException:
            self._stop(taken)
            raise
        return taken

    def _start_worker(self) -> _Worker:
        import multiprocessing

        from ..pools._lifecycle import ready_to_fork

        context: Any = multiprocessing.get_context(self.context)
        ready_to_fork(context.get_start_method())
        tasks_r, tasks_w = context.Pipe(duplex=False)
        outcomes_r, outcomes_w = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_main,
            args=(tasks_r, outcomes_w, os.getpid()),
            name=f"aioflow-parallel-worker-{next(self._counter)}",
        )
        try:
            process.start()
        except AssertionError as exc:  # "daemonic processes are not allowed to have children"
            tasks_w.close()
            outcomes_r.close()
            msg = (
                f"aioflow.parallel: the 'multiprocess' backend cannot start worker processes here ({exc}); "
                "run the map in a process that may start children, or use set_parallel_backend('thread')"
            )
            raise PoolError(msg) from exc
        finally:
            tasks_r.close()
            outcomes_w.close()
        os.set_blocking(tasks_w.fileno(), False)
        return _Worker(process, tasks_w, outcomes_r)

    def _sweep(self) -> list[_Worker]:
        """Drop from the idle list the workers that exited (reaping them) and those about to; return the latter.

        Called with ``_lock`` held.
        """
        timeout = self.idle_timeout
        oldest = -1.0 if timeout is None else time.monotonic() - timeout + min(_RETIRE_MARGIN, timeout / 2)
        kept: list[_Worker] = []
        retiring: list[_Worker] = []
        for worker in self._idle:
            if not worker.process.is_alive():  # retired by itself (is_alive reaps it)
                worker.close()
            elif worker.idle_since < oldest:
                retiring.append(worker)
            else:
                kept.append(worker)
        self._idle = kept
        return retiring

    def _give_back(self, workers: list[_Worker], keep: int) -> None:
        """Return a finished session's workers to the idle list, keeping at most ``keep`` idle ones."""
        if self.idle_timeout is not None:
            idle = _frame(pickle.dumps((_IDLE, self.idle_timeout), _PROTOCOL))
            for worker in workers:
                try:
                    os.write(worker.fd, idle)  # a few bytes into the empty pipe of a worker with no chunk
                except OSError:
                    pass  # it died, or cannot hear: it stays until leased or shut down
        now = time.monotonic()
        for worker in workers:
            worker.idle_since = now
        with self._lock:
            retiring = self._sweep()
            self._idle.extend(workers)
            surplus = self._idle[: max(0, len(self._idle) - keep)]
            del self._idle[: len(surplus)]
        self._stop(retiring + surplus)

    def shutdown(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
            mine = self._owner_pid == os.getpid()
        if mine:
            self._stop(workers)

    @staticmethod
    def _stop(workers: list[_Worker]) -> None:
        """Ask workers to exit; kill those still running after the grace period; reap all."""
        for worker in workers:
            try:
                os.set_blocking(worker.fd, True)
                worker.tasks.send_bytes(b"")
            except OSError:
                pass  # already gone
        from ..pools._lifecycle import join_or_kill

        join_or_kill([worker.process for worker in workers], _EXIT_GRACE)
        for worker in workers:
            worker.close()

    def __repr__(self) -> str:
        return (
            f"<MultiprocessBackend context={self.context!r} idle_timeout={self.idle_timeout!r}"
            f" idle_workers={len(self._idle)}>"
        )


def _kill(workers: list[_Worker]) -> None:
    """Kill workers with every process their tasks started, and reap them."""
    if not workers:
        return
    from ..pools._lifecycle import kill_process_trees

    kill_process_trees([worker.pid for worker in workers])
    for worker in workers:
        worker.process.join(_EXIT_GRACE)


def _load(worker: _Worker) -> int:
    return len(worker.chunks)


class _Session(Session):
    def __init__(
        self,
        backend: MultiprocessBackend,
        fn: PicklableAndCallable[Any],
        payload: bytes,
        workers: list[_Worker],
        keep: int,
    ) -> None:
        self._backend = backend
        self._fn = fn
        self._workers = workers
        self._keep = keep
        self._depth = CHUNKS_PER_WORKER  # chunks queued per worker, adapted to their duration
        self._mean_seconds: float | None = None
        self._chunk_items = 1  # the largest chunk submitted
        self._poll = select.poll()
        self._writing: set[int] = set()  # chunk pipes polled for room
        # fd -> (worker, what the fd is: "outcome", "sentinel" or "chunk")
        self._fds: dict[int, tuple[_Worker, str]] = {}
        message = _frame(pickle.dumps((_FUNCTION, payload), _PROTOCOL))
        for worker in workers:
            self._fds[worker.outcomes.fileno()] = (worker, "outcome")
            self._fds[worker.process.sentinel] = (worker, "sentinel")
            self._fds[worker.fd] = (worker, "chunk")
            self._poll.register(worker.outcomes.fileno(), _POLL_IN)
            self._poll.register(worker.process.sentinel, _POLL_IN)
            self._write(worker, message)

    @property
    def capacity(self) -> int:  # type: ignore[override]  # adapts as chunks finish
        return len(self._workers) * self._depth

    def _learn(self, seconds: float) -> None:
        mean = self._mean_seconds
        mean = seconds if mean is None else mean + _SMOOTHING * (seconds - mean)
        self._mean_seconds = mean
        by_time = max(CHUNKS_PER_WORKER, int(_QUEUE_SECONDS / max(mean, 1e-9)))
        # By size too, as every backend (chunks_per_worker): at most 64 chunks, 1024 items beyond two chunks.
        self._depth = min(by_time, chunks_per_worker(self._chunk_items))

    def submit(self, index: int, items: list[Any]) -> None:
        # Written by the next wait(), with every other chunk submitted before
        # it: one system call per worker per round.
        try:
            payload = pickle.dumps((index, items), _PROTOCOL)
        except Exception as exc:
            from .._errors import TransferError

            detail = f"{type(exc).__name__}: {exc}"
            raise TransferError(f"aioflow.parallel: an item mapped by {self._fn.name}", "?", detail) from exc
        self._chunk_items = max(self._chunk_items, len(items))
        worker = min(self._workers, key=_load)
        worker.chunks.append(index)
        worker.outbuf += _frame(payload)

    def _write(self, worker: _Worker, data: bytes) -> None:
        worker.outbuf += data
        self._flush(worker)

    def _flush(self, worker: _Worker) -> None:
        """Write what the worker's pipe takes without blocking; poll for room when some is left."""
        had_left = worker.fd in self._writing
        try:
            written = os.write(worker.fd, worker.outbuf)
        except BlockingIOError:
            written = 0
        except OSError:
            written = len(worker.outbuf)  # the worker died: its sentinel tells the next wait
        del worker.outbuf[:written]
        if worker.outbuf and not had_left:
            self._poll.register(worker.fd, select.POLLOUT)
            self._writing.add(worker.fd)
        elif not worker.outbuf and had_left:
            self._poll.unregister(worker.fd)
            self._writing.discard(worker.fd)

    def wait(self) -> list[tuple[int, Outcome]]:
        finished: list[tuple[int, Outcome]] = []
        for worker in self._workers:
            if worker.outbuf and worker.fd not in self._writing:
                self._flush(worker)
            if worker.frames.messages:  # read in an earlier round
                self._take(worker, finished)
        while not finished:
            dead: list[_Worker] = []
            for fd, _ in self._poll.poll():
                worker, kind = self._fds[fd]
                if kind == "outcome":
                    try:
                        worker.frames.read()
                    except OSError:
                        pass  # it died: its sentinel says how
                    self._take(worker, finished)
                elif kind == "chunk":
                    self._flush(worker)
                else:
                    dead.append(worker)
            for worker in dead:
                self._lost(worker, finished)
        return finished

    def _take(self, worker: _Worker, finished: list[tuple[int, Outcome]]) -> None:
        messages = worker.frames.messages
        while messages:
            index, outcome, seconds = pickle.loads(messages.popleft())
            worker.chunks.popleft()
            finished.append((index, outcome))
            self._learn(seconds)

    def _lost(self, worker: _Worker, finished: list[tuple[int, Outcome]]) -> None:
        """A worker's sentinel fired: keep what it sent before it died, then fail the map."""
        try:
            while worker.chunks and worker.outcomes.poll() and worker.frames.read():
                self._take(worker, finished)
        except OSError:
            pass
        worker.process.join(_EXIT_GRACE)
        from ..pools._outcomes import describe_exit

        detail = describe_exit(worker.pid, worker.process.exitcode)
        self._workers.remove(worker)
        for fd in (worker.outcomes.fileno(), worker.process.sentinel, worker.fd):
            self._fds.pop(fd, None)
            try:
                self._poll.unregister(fd)
            except KeyError:
                pass
        running = f"chunk {worker.chunks[0]}" if worker.chunks else "no chunk"
        worker.close()
        msg = (
            f"aioflow.parallel: the worker process running {self._fn.name} ({running}) died ({detail}); the map stopped"
        )
        raise WorkerLostError(msg, backend="multiprocess", detail=detail, pid=worker.pid)

    def close(self, abandoned: bool) -> None:
        busy = [w for w in self._workers if w.chunks or w.outbuf]
        idle = [w for w in self._workers if not (w.chunks or w.outbuf)]
        self._workers = []
        _kill(busy)  # nobody wants their results
        for worker in busy:
            worker.close()
        self._backend._give_back(idle, self._keep)
