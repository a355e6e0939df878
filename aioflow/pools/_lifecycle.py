"""How a pool's worker process lives and dies: what it does as it starts, and how process trees are killed.

Every process-based pool (``process``, ``ndprocess``, ``multiprocessing``,
``ndmultiprocessing``, ``billiard``) and ``aioflow.parallel``'s multiprocess
backend start their workers with `_worker_initializer`: the worker ignores
SIGINT (Ctrl-C reaches the whole foreground process group, and the parent,
not each worker, decides what stops), keeps the processes its tasks start in
its own tree and takes them along when it exits, and exits with its owner.
Stopping running tasks kills the workers' whole trees (`kill_process_trees`,
via psutil, or by pid when a worker has no child).

No process a task starts outlives its worker, daemons included. A daemon
forks twice: its parent exits, and the kernel re-parents it to the nearest
*subreaper* above it, or to init, out of reach of a look-up of the worker's
tree. On Linux every worker is a subreaper (`set_subreaper`), so the tasks'
orphans stay its children: killing the worker's tree kills them, and a
worker that exits cleanly (retired when idle, its pool closed) kills them
first (a `multiprocessing.util.Finalize` hook, run at the end of a
multiprocessing process's bootstrap). An adopted orphan that ends stays a
zombie, holding only its pid, until its worker exits: reaping it could take
the exit status of a child a task still waits for. Elsewhere, a daemon
started by a task escapes, as it would without aioflow.

A module of its own, below the pools and their executors, because each of
them uses it: the ``process`` pool and its executor
(`aioflow.pools._workers`) alike. It imports nothing of aioflow.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.util
import os
import select
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "join_or_kill",
    "kill_descendants",
    "kill_process_trees",
    "ready_to_fork",
    "set_subreaper",
    "worker_initializer",
]

# Processes the stdlib, billiard and loky start once per interpreter to clean
# up after it (named semaphores, shared memory) once it has exited: killing
# them would leak what they clean up. They end by themselves, after it.
_TRACKERS = ("multiprocessing.resource_tracker", "billiard.semaphore_tracker", "loky.backend.resource_tracker")

# prctl(2) options (Linux 3.4+).
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

# A worker's exit hook runs before every other multiprocessing exit hook (the
# multiprocessing pool's "bye" has 100), and before the process joins its
# children: a task's child left running would otherwise keep it waiting.
_EXIT_HOOK_PRIORITY = 1000


def worker_initializer(owner_pid: int, user_initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    """In a new worker: ignore SIGINT, adopt its tasks' orphans, kill them on a clean exit, exit with the owner.

    Then the user's ``initializer`` runs, with ``initargs``. First of all, a
    worker forked from its owner forgets the imports other threads of the
    owner had under way (`forget_unfinished_imports`).
    """
    forget_unfinished_imports()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_subreaper(True)
    multiprocessing.util.Finalize(None, _kill_left_behind, args=(os.getpid(),), exitpriority=_EXIT_HOOK_PRIORITY)
    threading.Thread(target=_exit_with_owner, args=(owner_pid,), name="aioflow-parent-watch", daemon=True).start()
    if user_initializer is not None:
        user_initializer(*initargs)


def _modules_now() -> list[tuple[str, Any]]:
    """``sys.modules``' items, copied whole even if another thread (or a finalizer the copy runs) imports meanwhile."""
    while True:
        try:
            return list(sys.modules.copy().items())
        except RuntimeError:  # it changed size while it was copied: copy again
            continue


def forget_unfinished_imports() -> None:
    """In a process just forked: drop the imports that threads of the parent had under way, and their locks.

    A thread of the parent (a ``thread`` pool's task, in an execution with
    several pools) may be running a module's body at the moment a worker is
    forked: the worker inherits that module half-made in ``sys.modules`` and
    its import lock held by a thread that does not exist in it, and would
    wait forever the first time it imports the module (unpickling a call of
    one of its functions). CPython re-makes its global import lock in a
    forked child, not the per-module locks. So: every module still being
    made is dropped from ``sys.modules`` (it is imported afresh when needed),
    and the per-module locks are forgotten (new ones are made on demand). A
    forked worker never returns into its parent's frames, so no import of
    its own is cut short. After a ``spawn`` or ``forkserver`` start there is
    nothing to forget.
    """
    import importlib._bootstrap as bootstrap  # the import system's own state, as the fork left it

    for name, module in _modules_now():
        spec = getattr(module, "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            del sys.modules[name]
    locks = getattr(bootstrap, "_module_locks", None)
    if isinstance(locks, dict):
        locks.clear()
    blocking = getattr(bootstrap, "_blocking_on", None)
    if isinstance(blocking, dict):
        blocking.clear()


def _kill_left_behind(worker_pid: int) -> None:
    """In a worker that exits cleanly: kill what its tasks left running."""
    # A process a task forks with os.fork inherits the hook: only the worker acts on it.
    if os.getpid() == worker_pid:
        kill_descendants()


def set_subreaper(enabled: bool) -> bool | None:
    """Make this process adopt the orphans below it, or stop; return the previous setting.

    A subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``) becomes the parent of any
    process below it whose parent exits, instead of init, so that a daemon
    started below it stays in its tree. The setting is not inherited by
    children. Returns ``None``, changing nothing, where it cannot be set (not
    Linux, or the kernel refuses).
    """
    if not sys.platform.startswith("linux"):
        return None
    ctypes, prctl = _prctl()
    previous = ctypes.c_int()
    if prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous)) != 0:
        return None
    if prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(enabled)) != 0:
        return None
    return bool(previous.value)


@functools.cache
def _prctl() -> tuple[Any, Any]:
    """``ctypes`` and libc's ``prctl``, loaded once per process (and inherited by forked workers)."""
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True).prctl


def ready_to_fork(start_method: str | None) -> None:
    """Before a pool forks workers: load here, once, what `worker_initializer` needs.

    Each forked worker then finds it loaded, where it would otherwise import
    ``ctypes`` itself (about 3 ms of CPU per worker, while the pool starts
    and the first jobs wait). Workers of other start methods load their own.
    """
    if start_method == "fork" and sys.platform.startswith("linux"):
        _prctl()


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
    kill_descendants()
    os._exit(1)


def kill_descendants() -> None:
    """SIGKILL every process below this one, but the resource trackers, which must outlive it.

    Every tree is listed before anything is killed (`kill_process_trees`).
    Only for a process that owns all its children: a worker, or the
    ``aioflow run`` command's.
    """
    if not _has_children():
        return  # without importing psutil
    import psutil

    roots = []
    for child in psutil.Process().children():
        try:
            cmdline = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            cmdline = ""
        if not any(tracker in cmdline for tracker in _TRACKERS):
            roots.append(child.pid)
    kill_process_trees(roots)


def _has_children() -> bool:
    """Whether this process has a child, running or a zombie; none is reaped."""
    if not hasattr(os, "waitid"):  # macOS, Windows: ask psutil
        return True
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def kill_process_trees(pids: list[int]) -> None:
    """SIGKILL processes and every process below them. Missing processes are ignored.

    Every tree is listed before anything is killed: once one worker of a
    ``ProcessPoolExecutor`` dies, the executor terminates the others, and the
    processes their tasks started would be re-parented (and lost to a later
    look-up) before we got to them.

    When each process is a child of this one with no child of its own (a
    pool's idle workers at close, the common case), they are killed without
    importing psutil (about 5 ms): `_childless_children`.
    """
    if pids and _childless_children(pids):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_exited(pids)
        return
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


def _childless_children(pids: list[int]) -> bool:
    """Whether every pid is a child of this process (alive, or a zombie) with no child of its own (Linux ``/proc``).

    A child's pid cannot be reused before this process reaps it, so killing
    it by pid is safe. Its children are listed by each of its threads in
    ``/proc/PID/task/TID/children`` (a process a task started from a thread
    of the worker is that thread's child). ``False`` wherever that cannot be
    read (another platform, a kernel without the file): the caller then asks
    psutil.
    """
    me = str(os.getpid()).encode()
    for pid in pids:
        try:
            if _stat_fields(pid)[1] != me:  # its parent
                return False
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    if f.read().strip():
                        return False
        except (OSError, ValueError, IndexError):
            return False
    return True


def _wait_exited(pids: list[int], timeout: float = 5.0) -> None:
    """Wait until our killed children are dead (gone, or zombies left for their owner to reap), reaping none.

    On a pidfd of each (Linux 5.3+), which becomes readable as its process
    exits; elsewhere by looking at ``/proc`` every millisecond.
    """
    deadline = time.monotonic() + timeout
    if _waited_on_pidfds(pids, deadline):
        return
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive_child(pid)]
        if alive:
            time.sleep(0.001)


def _waited_on_pidfds(pids: list[int], deadline: float) -> bool:
    """`_wait_exited` on pidfds; ``False``, having waited for nothing, where they cannot be had."""
    open_pidfd = getattr(os, "pidfd_open", None)
    if open_pidfd is None:
        return False
    fds: list[int] = []
    try:
        for pid in pids:
            try:
                fds.append(open_pidfd(pid))
            except ProcessLookupError:
                continue  # gone already
            except OSError:
                return False  # a kernel without pidfds
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        waiting = len(fds)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                waiting -= 1
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _alive_child(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] not in (b"Z", b"X")  # its state: a zombie, or dead
    except OSError:
        return False


def _stat_fields(pid: int) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name: state, parent pid, ... (Linux)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return stat[stat.rindex(b")") + 2 :].split()


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
