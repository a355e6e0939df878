"""The ``process`` pool: worker processes that scale, retire when idle, and can be stopped at once.

Data flow: the scheduler's ``run_in_executor`` hands a small task call to
the pool's `aioflow.pools._workers.WorkerProcessExecutor`, whose dispatcher
thread pickles it to an idle worker over that worker's own pipe; the worker
runs it and sends back the outputs (or the exception, with the worker's
traceback as ``__cause__``).

Workers ignore SIGINT: Ctrl-C reaches the whole foreground process group, and
the parent, not each worker, decides what stops. Stopping an execution's
running tasks (timeout, cancellation, Ctrl-C, a failed node) kills the
workers running them together with the processes those tasks started (the
whole tree, via psutil); on a pool no other execution is using, every
worker goes and the pool builds a new executor on next use. A worker that
dies fails only its own task (`aioflow.WorkerLostError` with its pid and
exit code or signal); the other workers carry on.

This module also holds the process helpers every process-based pool uses:
the worker initializer (ignore SIGINT, exit with the owner), killing process
trees, and naming exit signals.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import OptionError
from ._base import Pool, PoolOptions
from ._outcomes import RemoteTraceback, describe_exit, signal_name

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

T = TypeVar("T")

__all__ = [
    "ProcessPool",
    "RemoteTraceback",
    "describe_exit",
    "describe_exits",
    "join_or_kill",
    "kill_process_trees",
    "signal_name",
]


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
        # poll, not select: a worker may hold descriptors numbered past select's limit.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():
            pass
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


def join_or_kill(processes: list[Any], grace: float = 5.0) -> None:
    """Wait up to ``grace`` seconds in all for processes asked to exit; kill the trees of those still running.

    Each ``process`` is a `multiprocessing.Process` started by this process, so
    joining it reaps it and reads its exit status.
    """
    deadline = time.monotonic() + grace
    stuck = []
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            stuck.append(process)
    if stuck:
        kill_process_trees([process.pid for process in stuck])
        for process in stuck:
            process.join(grace)


def _wait_gone(procs: list[Any], timeout: float = 5.0) -> None:
    """Wait until killed processes are gone, without reaping any of them.

    A zombie counts as gone: it holds nothing but its pid. Reaping is left to
    each process's owner: an orphan's is init, and our own children's is the
    `multiprocessing.Process` (or `subprocess.Popen`) that started them, which
    must read the exit status itself. A process reaped behind its back never
    learns it ended, and stays in ``multiprocessing.active_children()``
    forever, where every process forked later tries (and fails) to join it
    on exit.
    """
    deadline = time.monotonic() + timeout
    alive = procs
    while True:
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return
        time.sleep(0.005)


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
    return "; ".join(describe_exit(pid, code) for pid, code in first)


class ProcessPool(Pool):
    """Tasks run in worker processes: real parallelism; inputs and outputs are pickled."""

    name = "process"
    uses_processes = True

    def _validate(self, options: PoolOptions) -> None:
        unknown = set(options.extra) - {"initializer", "initargs"}
        if unknown:
            raise OptionError("pool_options", "a dict with keys among initializer, initargs", options.extra)

    def _create_executor(self) -> concurrent.futures.Executor:
        from ._workers import WorkerProcessExecutor

        extra = dict(self.options.extra)
        # Default (Pool._default_max_workers): one worker per CPU, as the stdlib.
        return WorkerProcessExecutor(
            max_workers=self.capacity,
            mp_context=self._mp_context(),
            initializer=extra.get("initializer"),
            initargs=tuple(extra.get("initargs", ())),
            scaling=self.options.scaling_workers,
            idle_timeout=self.options.idle_timeout,
        )

    def _mp_context(self) -> Any:
        """The multiprocessing context the workers start from."""
        return multiprocessing.get_context(self.options.context)

    def bind(self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., T]) -> Callable[..., T]:
        from ._workers import Owned

        return Owned(owner, fn)

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        from ._workers import WorkerProcessExecutor

        assert isinstance(executor, WorkerProcessExecutor)
        executor.terminate()

    def _abort_owner(self, executor: concurrent.futures.Executor, owner: object) -> None:
        from ._workers import WorkerProcessExecutor

        assert isinstance(executor, WorkerProcessExecutor)
        executor.kill_owner(owner)
