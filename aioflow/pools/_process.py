"""The ``process`` pool: a `concurrent.futures.ProcessPoolExecutor` that can be stopped at once.

Data flow: the scheduler's ``run_in_executor`` pickles a small task call into
the executor's call queue; a worker process runs it and sends back the
outputs (or the exception, with the worker's traceback as ``__cause__``).

Workers ignore SIGINT: Ctrl-C reaches the whole foreground process group, and
the parent, not each worker, decides what stops. Stopping running tasks
(timeout, cancellation, Ctrl-C, a failed node) kills every worker together
with the processes its task started (the whole tree, via psutil), then shuts
the executor down; the pool builds a new one on next use.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import select
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from ._base import Pool

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ProcessPool", "describe_exits", "kill_process_trees", "signal_name"]


def _worker_initializer(owner_pid: int, user_initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_owner, args=(owner_pid,), name="aioflow-parent-watch", daemon=True).start()
    if user_initializer is not None:
        user_initializer(*initargs)


def _exit_with_owner(owner_pid: int) -> None:
    """In a worker: when the pool's process dies (even by SIGKILL), stop the task's processes and exit.

    Blocks on a pidfd of the owner (Linux), else on the multiprocessing parent
    sentinel; no polling. The owner is not always our parent: forkserver
    workers are children of the fork server. Without this, a worker in the
    middle of a task would run on, orphaned, until its task ended.
    """
    try:
        fd = os.pidfd_open(owner_pid)
    except (AttributeError, OSError):
        parent = multiprocessing.parent_process()
        if parent is None:
            return
        parent.join()
    else:
        select.select([fd], [], [])
    kill_process_trees([child.pid for child in _children()])
    os._exit(1)


def _children() -> list[Any]:
    import psutil

    return list(psutil.Process().children())


def kill_process_trees(pids: list[int]) -> None:
    """SIGKILL processes and every process below them. Missing processes are ignored.

    Every tree is listed before anything is killed: once one worker of a
    ``ProcessPoolExecutor`` dies, the executor terminates the others, and the
    processes their tasks started would be re-parented (and lost to a later
    look-up) before we got to them.
    """
    import psutil

    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [*root.children(recursive=True), root]
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(procs)


def _wait_gone(procs: list[Any], timeout: float = 5.0) -> None:
    """Wait until killed processes are gone. A zombie counts as gone: an orphan is
    reaped by init, which may take its time, and it holds no resources but its pid."""
    import psutil

    deadline = time.monotonic() + timeout
    alive = procs
    while alive and time.monotonic() < deadline:
        _, alive = psutil.wait_procs(alive, timeout=0.05)
        alive = [p for p in alive if _running(p)]


def _running(proc: Any) -> bool:
    import psutil

    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def describe_exits(exits: list[tuple[int, int | None]]) -> str | None:
    """Describe the workers that ended, e.g. ``pid 42, killed by SIGKILL``.

    When one worker dies, the executor terminates the others (SIGTERM): those
    are named only when no other exit explains the loss.
    """
    ended = [(pid, code) for pid, code in exits if code is not None]
    if not ended:
        return None
    first = [(pid, code) for pid, code in ended if code != -signal.SIGTERM] or ended
    parts = []
    for pid, code in first:
        if code < 0:
            parts.append(f"pid {pid}, killed by {signal_name(code)}")
        else:
            parts.append(f"pid {pid}, exit code {code}")
    return "; ".join(parts)


# executor -> its ``_processes`` dict (pid -> Process), kept from creation:
# the executor drops the attribute when it shuts down, which a broken pool
# does on its own, possibly before we ask which worker died.
_WORKER_MAPS: weakref.WeakKeyDictionary[concurrent.futures.Executor, dict[int, Any]] = weakref.WeakKeyDictionary()


def _worker_map(executor: concurrent.futures.Executor) -> dict[int, Any]:
    found = _WORKER_MAPS.get(executor)
    if found is None:
        found = getattr(executor, "_processes", None) or {}
    return found


def signal_name(exitcode: int) -> str:
    """The signal behind a negative multiprocessing exit code: ``SIGKILL`` for -9."""
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class ProcessPool(Pool):
    """Tasks run in worker processes: real parallelism; inputs and outputs are pickled."""

    name = "process"
    uses_processes = True

    def _create_executor(self) -> concurrent.futures.Executor:
        extra = dict(self.options.extra)
        initializer = extra.pop("initializer", None)
        initargs = tuple(extra.pop("initargs", ()))
        context = self._mp_context()
        # Default (Pool._default_max_workers): one worker per CPU, as the stdlib.
        max_workers = self.capacity
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=max_workers,
            mp_context=context,
            initializer=_worker_initializer,
            initargs=(os.getpid(), initializer, initargs),
            **extra,
        )
        # ``_processes`` (pid -> Process) is the same dict for the executor's
        # whole life; kept here because the executor drops it at shutdown.
        processes = getattr(executor, "_processes", None)
        if isinstance(processes, dict):
            _WORKER_MAPS[executor] = processes
        if not self.options.scaling_workers:
            # Start every worker now. The executor otherwise starts them as
            # tasks arrive (spawn, forkserver) and reuses idle ones; fork
            # contexts start them all on first use anyway. ``_launch_processes``
            # is the executor's own start-up routine (CPython 3.9+).
            launch = getattr(executor, "_launch_processes", None)
            if launch is not None:
                launch()
        return executor

    def _mp_context(self) -> Any:
        """The multiprocessing context the workers start from."""
        return multiprocessing.get_context(self.options.context)

    def describe_lost_workers(self, executor: concurrent.futures.Executor) -> str | None:
        processes = dict(_worker_map(executor))
        # A worker that just died may not be reaped yet: give each up to the
        # rest of one second (only on this failure path).
        deadline = time.monotonic() + 1.0
        for proc in processes.values():
            proc.join(max(0.0, deadline - time.monotonic()))
        return describe_exits([(pid, proc.exitcode) for pid, proc in processes.items()])

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, concurrent.futures.ProcessPoolExecutor)
        # The executor keeps its worker processes in ``_processes`` (pid ->
        # Process) on every CPython since 3.2; there is no public way to stop
        # running tasks before 3.14's terminate_workers().
        pids = list(_worker_map(executor))
        executor.shutdown(wait=False, cancel_futures=True)
        kill_process_trees(pids)
        executor.shutdown(wait=True)
