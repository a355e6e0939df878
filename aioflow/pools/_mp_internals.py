"""Every override of CPython's ``multiprocessing`` internals that aioflow's pools rely on, in one place.

`aioflow.pools._multiprocessing` runs its calls on a `multiprocessing.Pool`
whose workers report on pipes of their own and whose killed workers cannot
hang the others (its docstring says why and how). That needs more than the
public API: this module subclasses the pool and its queues and reads their
private attributes, and the executor reaches them only through `PipedPool`'s
methods.

Every process pool starts its ``spawn`` and ``forkserver`` workers as
`SpawnProcess` and `ForkServerProcess` (the contexts of `start_context`): a
worker that dies before it has read its start-up data is a worker that died
(its sentinel and exit status say so), where the stdlib's start would wait
forever (``spawn``, when the data outgrow a pipe's buffer) or raise
``BrokenPipeError`` in whichever thread started it (``forkserver``). On a
Python this module was not written for, those classes start as the stdlib's
do: the ``process``, ``ndprocess`` and ``billiard`` pools open on any version.

What is overridden or read, by class:

- ``multiprocessing.pool.Pool``: ``Process`` (called as
  ``self.Process(ctx, target=, args=)``, with ``args`` the worker function's
  ``(inqueue, outqueue, initializer, initargs, ...)``), ``_setup_queues``
  (called by ``__init__`` right after it made the worker list),
  ``_help_stuff_finish`` and ``_terminate_pool`` (their signatures and the
  order of the stdlib's steps), ``_pool`` (the worker list, appended to right
  after each start), ``_cache``, ``_worker_handler``, ``_change_notifier``,
  ``_outqueue``, ``_ctx``, ``_quick_put``, ``_quick_get``, and the
  ``"TERMINATE"`` state that ends each of its threads;
- ``multiprocessing.queues.SimpleQueue``: ``get`` and ``put``, and its
  ``_reader``, ``_writer``, ``_rlock`` and ``_wlock``;
- ``multiprocessing.process.BaseProcess``: ``daemon``, which the pool sets on
  every worker (the non-daemonic workers ignore it);
- ``multiprocessing.connection.Connection``: how ``send_bytes`` frames a
  message (`aioflow.pools._outcomes.Inbox` reads those frames);
- ``SpawnProcess._Popen`` and ``ForkServerProcess._Popen`` (replaced);
  ``popen_spawn_posix.Popen._launch`` (replaced: the stdlib's steps, with
  ``spawn.get_preparation_data``, ``get_command_line``, ``get_executable``,
  ``util.spawnv_passfds``, ``resource_tracker.getfd``,
  ``context.set_spawning_popen`` and the ``_fds`` the child keeps, in the
  stdlib's order but for when the read end of the child's data pipe is
  closed) and ``popen_forkserver.Popen._launch`` (wrapped: the ``sentinel`` it
  sets before it writes the child its data, the ``pid`` it reads after, with
  ``forkserver.read_signed``).

Versions. Written and tested for CPython 3.11 (3.11.7). Its
``multiprocessing/pool.py``, ``queues.py``, ``connection.py``,
``context.py``, ``popen_spawn_posix.py``, ``popen_forkserver.py`` and
``spawn.py`` in CPython 3.12 (3.12.1) and 3.13 (3.13.0) were compared with
3.11's line by line: what is listed above is unchanged there. `check_supported`
refuses every other version, and every other implementation, when such a pool
is opened, with a `PoolError` that says which version it found and which it
supports: unknown internals would misbehave, not fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.pool
import multiprocessing.popen_forkserver
import multiprocessing.popen_spawn_posix
import multiprocessing.process
import multiprocessing.queues
import multiprocessing.util
import os
import select
import sys
import threading
import time
import weakref
from multiprocessing import reduction, resource_tracker, spawn
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from .._errors import PoolError
from ._lifecycle import kill_process_trees

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "IDLE",
    "SUPPORTED",
    "TAKING",
    "ForkServerProcess",
    "PipedPool",
    "SpawnProcess",
    "check_supported",
    "start_context",
    "weak_call",
]

logger = logging.getLogger("aioflow.pools")

#: The CPython versions (major, minor) whose multiprocessing internals this module was written for.
SUPPORTED = ((3, 11), (3, 12), (3, 13))

#: A worker's state cell: ``TAKING`` from taking the task queue's read lock until the call it read is reported.
IDLE, TAKING = 0, 1

#: Seconds a stop waits for each of the pool's threads and workers (only a stuck one reaches it).
_THREAD_GRACE = 10.0

#: Seconds a stop waits for a queue lock before it takes the holder for a dead worker.
_LOCK_GRACE = 0.5

#: Longest wait between two reads while the task pipe is drained.
_DRAIN_WAIT = 0.05

#: ``multiprocessing.pool.TERMINATE``: the state that ends each of the pool's threads.
_TERMINATE = "TERMINATE"

#: The largest message (its 4-byte length included) a pipe takes in one indivisible write.
_ATOMIC_WRITE = select.PIPE_BUF

# In a worker: its state cell (`PipedPool.Process` gives each worker one, `_start_worker` keeps it here).
_STATE: Any = None


def _running_version() -> tuple[str, tuple[int, ...]]:
    """The Python implementation (``sys.implementation.name``) and version running (the check's one source)."""
    return sys.implementation.name, tuple(sys.version_info[:3])


def _known_version() -> bool:
    """Whether this is CPython, in a version of `SUPPORTED`."""
    implementation, version = _running_version()
    return implementation == "cpython" and version[:2] in SUPPORTED


def check_supported(pool_name: str) -> None:
    """Refuse to open the ``pool_name`` pool on a Python whose multiprocessing internals this module does not know.

    Raises:
        PoolError: not CPython, or a CPython version outside `SUPPORTED`.
    """
    if _known_version():
        return
    implementation, version = _running_version()
    found = f"{implementation} {'.'.join(map(str, version))}"
    supported = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED)
    msg = (
        f"the {pool_name!r} pool overrides internals of the multiprocessing module of CPython {supported}, "
        f"and this is {found}: use pool_type 'process' or 'ndprocess' (which override none there), "
        "or an aioflow release written for this Python"
    )
    raise PoolError(msg)


def weak_call(method: Callable[..., None], *args: Any) -> Callable[..., None]:
    """``method(*args, ...)``, called only while its object is alive."""
    ref = weakref.WeakMethod(method)

    def call(*more: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args, *more)

    return call


# --------------------------------------------------------------------------- in a worker


def _start_worker(state: Any, initializer: Callable[..., Any], initargs: tuple[Any, ...]) -> None:
    """A worker's first step: keep its state cell for `_TaskQueue`, then run the pool's initializer."""
    global _STATE
    _STATE = state
    initializer(*initargs)


class _TaskQueue(multiprocessing.queues.SimpleQueue[Any]):
    """The pool's task queue, read by a worker that holds its read lock only while a task is there.

    The stdlib's worker blocks in its read while it holds the lock: killed
    then, it leaves the lock taken and every other worker waits forever. Here
    a worker waits for data without the lock, and its state cell says
    ``TAKING`` from before it takes the lock until its call is reported (the
    call itself sets it back to ``IDLE``).
    """

    def get(self) -> Any:
        state = _STATE
        reader: multiprocessing.connection.Connection = self._reader  # type: ignore[attr-defined]
        while True:
            reader.poll(None)
            state.value = TAKING
            with self._rlock:  # type: ignore[attr-defined]
                if reader.poll():
                    data = reader.recv_bytes()
                    break
            state.value = IDLE  # another worker took it
        return ForkingPickler.loads(data)


class _ResultQueue(multiprocessing.queues.SimpleQueue[Any]):
    """The pool's result queue, written without its lock when a message fits in one indivisible write.

    The end-of-call markers always do: a worker killed around the write
    neither holds the lock nor leaves half a message.
    """

    def put(self, obj: Any) -> None:
        data = ForkingPickler.dumps(obj)
        writer: multiprocessing.connection.Connection = self._writer  # type: ignore[attr-defined]
        if len(data) + 4 <= _ATOMIC_WRITE:
            writer.send_bytes(data)
        else:
            with self._wlock:  # type: ignore[attr-defined]
                writer.send_bytes(data)


# --------------------------------------------------------------------------- starting a worker


def _start_data(popen: Any, process_obj: Any) -> memoryview:
    """What a new ``spawn`` child reads first, as the stdlib writes it: the preparation data, then the process object."""
    buffer = io.BytesIO()
    multiprocessing.context.set_spawning_popen(popen)
    try:
        reduction.dump(spawn.get_preparation_data(process_obj._name), buffer)
        reduction.dump(process_obj, buffer)
    finally:
        multiprocessing.context.set_spawning_popen(None)
    return buffer.getbuffer()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _hand_over(fd: int, data: memoryview) -> None:
    """Write a new child its start-up data, unless it is gone before it has read them all."""
    with contextlib.suppress(BrokenPipeError), open(fd, "wb", closefd=False) as pipe:
        pipe.write(data)


class _SpawnPopen(multiprocessing.popen_spawn_posix.Popen):
    """``spawn``'s start, which outlives a child that dies before it has read its start-up data.

    The stdlib's ``_launch`` holds a copy of the read end of the child's data
    pipe until it has written everything: when the data outgrow the pipe's
    buffer (large ``initargs``) and the child is gone, the write waits
    forever. Here that copy is closed as soon as the child has its own, so the
    write fails instead (the pipe has no reader left), and the child counts as
    started: its sentinel and exit status say it died, as for any worker that
    dies.
    """

    def _launch(self, process_obj: Any) -> None:
        fds: list[Any] = self._fds  # type: ignore[attr-defined]  # the descriptors the child keeps
        tracker_fd = resource_tracker.getfd()
        fds.append(tracker_fd)
        data = _start_data(self, process_obj)
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        self.finalizer = multiprocessing.util.Finalize(self, _close_fds, (parent_r, parent_w))
        try:
            command = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            fds.extend([child_r, child_w])
            executable: Any = spawn.get_executable()
            self.pid = multiprocessing.util.spawnv_passfds(executable, command, fds)
        finally:
            os.close(child_r)
            os.close(child_w)
        self.sentinel = parent_r
        _hand_over(parent_w, data)


class _ForkServerPopen(multiprocessing.popen_forkserver.Popen):
    """``forkserver``'s start, which outlives a child that dies before it has read its start-up data.

    The stdlib's ``_launch`` then raises ``BrokenPipeError`` before it reads
    the child's pid. The fork server has sent it all the same, right after the
    fork, and sends the child's exit status once it has reaped it: read the
    pid, and the child counts as started, its sentinel and exit status saying
    it died. (Without a sentinel the fork server was not reached: no child.)
    """

    def _launch(self, process_obj: Any) -> None:
        try:
            super()._launch(process_obj)  # type: ignore[misc]
        except BrokenPipeError:
            if getattr(self, "sentinel", None) is None:
                raise
            self.pid = multiprocessing.forkserver.read_signed(self.sentinel)


#: Per start method that writes its children start-up data: the start above, and the stdlib's.
_POPENS: dict[str, tuple[Any, Any]] = {
    "spawn": (_SpawnPopen, multiprocessing.popen_spawn_posix.Popen),
    "forkserver": (_ForkServerPopen, multiprocessing.popen_forkserver.Popen),
}


def _popen(process_obj: Any) -> Any:
    """Start ``process_obj``: with the start above on a Python this module knows, else with the stdlib's."""
    ours, stdlib = _POPENS[process_obj._start_method]
    return (ours if _known_version() else stdlib)(process_obj)


class SpawnProcess(multiprocessing.context.SpawnProcess):
    """A ``spawn`` process whose child may die before it has read its start-up data (`_SpawnPopen`)."""

    _Popen = staticmethod(_popen)


class ForkServerProcess(multiprocessing.context.ForkServerProcess):
    """A ``forkserver`` process whose child may die before it has read its start-up data (`_ForkServerPopen`)."""

    _Popen = staticmethod(_popen)


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = SpawnProcess


class _ForkServerContext(multiprocessing.context.ForkServerContext):
    Process = ForkServerProcess


_CONTEXTS: dict[str, multiprocessing.context.BaseContext] = {
    "spawn": _SpawnContext(),
    "forkserver": _ForkServerContext(),
}


def start_context(method: str | None) -> Any:
    """The multiprocessing context of start method ``method`` (``None``: the default), its processes started as above.

    Raises:
        ValueError: the start method is not available here.
    """
    name = method or multiprocessing.get_start_method()
    return _CONTEXTS.get(name) or multiprocessing.get_context(name)


# --------------------------------------------------------------------------- in the pool's process


class _WorkerList(list[Any]):
    """``Pool._pool``, which tells who asks each worker the pool appends to it, right after it started."""

    def __init__(self, on_append: Callable[[Any], None]) -> None:
        super().__init__()
        self._on_append = on_append

    def append(self, process: Any) -> None:
        super().append(process)
        self._on_append(process)


class PipedPool(multiprocessing.pool.Pool):
    """A `multiprocessing.Pool` whose workers report on pipes of their own, and that stops cleanly whatever its killed workers left in its pipes.

    Each worker gets its own pipe and state cell (`Process`); once it has
    started, ``on_started(process, reader, state)`` is called, in the thread
    that started it. The pool's initializer receives them as its last two
    arguments, ``(*initargs, writer, state)``. The queues are `_TaskQueue` and
    `_ResultQueue`.

    Stopping. Both queues are pipes of length-prefixed pickles. A worker
    killed in the middle of reading a task leaves the rest of that message in
    the task pipe: the stdlib's ``terminate`` unpickles what is left in the
    task pipe and raises (``EOFError: Ran out of input``), after which it
    never stops the pool's threads. Here:

    - ``terminate`` drains the task pipe as raw bytes (`_drain_raw`), never
      unpickling them; it runs once every worker is dead (`kill_and_terminate`);
    - a result that cannot be read ends the result thread, as the end of the
      pipe does, and reports it (``on_results_lost``) instead of raising there;
    - ``terminate`` waits for each thread and worker a bounded time, and ends
      the result thread, even one stuck in the middle of a message, by
      closing the result pipe's last write end (the workers' closed with them).
    """

    def __init__(
        self,
        *args: Any,
        on_results_lost: Callable[[str], None],
        on_started: Callable[[Any, multiprocessing.connection.Connection, Any], None],
        **kwargs: Any,
    ) -> None:
        # Pool.__init__ starts the first workers: what they need comes first.
        self._on_results_lost = on_results_lost
        self._on_started = on_started
        self._starting: dict[Any, tuple[Any, ...]] = {}
        super().__init__(*args, **kwargs)

    # ---------------------------------------------------------- what the executor uses

    def workers(self) -> list[multiprocessing.process.BaseProcess]:
        """The worker processes the pool has started and not yet reaped."""
        return list(getattr(self, "_pool", None) or [])

    def replacing(self) -> bool:
        """Whether the pool's worker thread runs: it may still start a worker, or reap one."""
        handler = _private(self, "_worker_handler")
        return handler is not None and bool(handler.is_alive())

    def stop_replacing(self) -> None:
        """Stop the pool's worker thread, which replaces every worker that exits, and wait for it.

        Killing workers while it runs only makes it start new ones, which the
        kill misses and which would read the pipes while they are drained.
        """
        handler = _private(self, "_worker_handler")
        notifier = _private(self, "_change_notifier")
        if handler is None or notifier is None:
            return
        handler._state = _TERMINATE
        notifier.put(None)  # wakes it
        _join_thread(handler, threading.current_thread())

    def forget_calls(self) -> None:
        """Forget every call the pool waits for, so that a closed pool lets its workers exit.

        The stdlib keeps its workers until it has the end-of-call marker of
        every call it sent; those of calls whose worker died never come.
        """
        cache = self._cache  # type: ignore[attr-defined]
        for key in list(cache):
            with contextlib.suppress(KeyError):
                del cache[key]

    def kill_and_terminate(self) -> None:
        """Kill every worker tree, free the queue locks the dead may hold, terminate the pool."""
        # First no more replacements, then the kill: the set of workers is final.
        self.stop_replacing()
        kill_process_trees(sorted(p.pid for p in self.workers() if p.pid is not None))
        # A worker killed while sending a large result holds the result queue's
        # write lock, which the pool's threads take to send their end markers. (A
        # worker waiting for a task holds the task queue's read lock: terminate
        # does not take it.)
        _free_lock(_private(self, "_outqueue", "_wlock"))
        self.terminate()

    # ---------------------------------------------------------- the stdlib's hooks

    def Process(self, ctx: Any, *args: Any, **kwds: Any) -> Any:  # type: ignore[override]
        """Called by the pool for each new worker: give it a pipe and a state cell of its own."""
        reader, writer = ctx.Pipe(duplex=False)
        state = ctx.RawValue(ctypes.c_int, IDLE)
        inqueue, outqueue, initializer, initargs, *rest = kwds["args"]
        kwds["args"] = (inqueue, outqueue, _start_worker, (state, initializer, (*initargs, writer, state)), *rest)
        process = self._new_process(ctx, *args, **kwds)
        self._starting[process] = (reader, writer, state)
        return process

    @staticmethod
    def _new_process(ctx: Any, *args: Any, **kwds: Any) -> Any:
        return start_context(ctx.get_start_method()).Process(*args, **kwds)

    def _started(self, process: Any) -> None:
        reader, writer, state = self._starting.pop(process)
        writer.close()  # the worker has its own: the pipe ends with it
        self._on_started(process, reader, state)

    def _setup_queues(self) -> None:
        # Pool.__init__ calls it right after it made the worker list: the one place to replace both.
        # Weakly: the pool's exit hook holds the list until the pool is collected.
        self._pool = _WorkerList(weak_call(self._started))
        ctx = self._ctx  # type: ignore[attr-defined]
        self._inqueue = _TaskQueue(ctx=ctx)
        self._outqueue = _ResultQueue(ctx=ctx)
        self._quick_put = self._inqueue._writer.send  # type: ignore[attr-defined]
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
        with contextlib.suppress(OSError):
            outqueue.put(None)  # the result thread's end marker
        _join_thread(worker_handler, current)
        for worker in pool:
            if worker.exitcode is None:
                worker.terminate()
        _join_thread(task_handler, current)
        # Nothing writes results any more. Closing the last write end (the
        # workers' closed when they died) lets the result thread read what
        # the pipe holds, then the end of the pipe: it ends even when stuck
        # in the middle of a message.
        outqueue._writer.close()
        _join_thread(result_handler, current)
        for worker in pool:
            worker.join(_THREAD_GRACE)
            if worker.exitcode is None:
                worker.kill()
                worker.join(_THREAD_GRACE)


def _private(obj: object, *names: str) -> Any:
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


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
    """The result thread's read: one marker; a message that cannot be read ends the thread.

    ``EOFError`` and ``OSError`` end the stdlib's result thread quietly; any
    other error there (a garbled message) would kill it with a traceback. The
    pipe is out of step from then on, so the executor is told: the results
    themselves travel on the workers' own pipes, but the stdlib pool can no
    longer keep its books.
    """
    try:
        return reader.recv()
    except (EOFError, OSError):
        raise
    except Exception as exc:
        on_lost(f"the multiprocessing pool's result queue could not be read ({type(exc).__name__}: {exc})")
        raise EOFError from exc


def _join_thread(thread: Any, current: threading.Thread) -> None:
    if thread is current:
        return
    thread.join(_THREAD_GRACE)
    if thread.is_alive():
        logger.warning("the multiprocessing pool's %s thread did not end; leaving it (a daemon thread)", thread.name)
