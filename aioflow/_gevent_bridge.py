"""Running the asyncio engine in a process that gevent has monkey-patched.

Actors: the *caller*, a greenlet of the gevent hub of the calling thread
(usually the main thread); the *bridge thread*, a real OS thread that runs an
asyncio loop on the unpatched selector; and the tasks of the ``gevent`` pool,
greenlets of the caller's hub.

Why a real thread: in a patched process `threading.Thread` starts a greenlet,
not a thread, and even the original ``Thread`` class hangs (its ``start``
waits on an event that patching turned into a gevent primitive). The bridge
thread is started with the original ``_thread.start_new_thread``, and its loop
selects with the original ``selectors.DefaultSelector``, so that it blocks
its own OS thread and never the hub.

Hand-offs, none of them polling:

- caller -> bridge: the thread starts with the coroutine factory; Ctrl-C or
  a kill of the caller cancels the engine's task with
  ``loop.call_soon_threadsafe``.
- bridge -> caller: when the loop has finished (cleanup included), the
  thread ``send``\\s a hub ``async_`` watcher, whose callback (run by the hub)
  sets a `gevent.event.AsyncResult` the caller waits on. While it waits, the
  hub keeps running every other greenlet, the pool's tasks included, and the
  watcher keeps the hub's loop up: a greenlet waiting for a lock the bridge
  thread holds (a future's, as asyncio adds a callback to it) is woken when
  the thread lets go, instead of failing with ``LoopExit``.

The hub runs no callback of the bridge that could wait: the watcher's only
sets the `AsyncResult` (a gevent primitive of that hub, never contended by
another thread), and the ``gevent`` pool's take no lock at all (see
`aioflow.pools._gevent`). A hub callback that waits raises
``BlockingSwitchOutError`` instead, and what it was to do is lost.

Ownership: the caller owns the thread and the watcher; it returns only after
the thread has released its exit latch (a real lock), so no thread outlives
the call. The caller's hub is made available to the coroutine (and to the
tasks it creates) through a context variable, `bridge_hub`, which is how a
``gevent`` pool created inside the engine finds the hub its tasks run in.

What aioflow changes in a patched process, and when. Nothing at import, nor
when `is_patched` is asked. When a pool whose tasks run in this process (the
``thread`` and ``gevent`` pools) starts its executor in a patched process, it
calls `guard_tasks` once for the process: ``multiprocessing.Pool`` and
``billiard.Pool`` then refuse to be created *inside a task of those pools*
(a hang otherwise: `GEVENT_POOL_HANGS`), and a fork made *inside such a task*
first installs gevent's SIGCHLD handler (a lost child otherwise:
`install_sigchld_before_fork`). A task runs marked (`mark_task`), so both
act on aioflow's tasks only: everywhere else, the two classes and ``fork``
behave as they do without aioflow.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import sys
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = [
    "GEVENT_POOL_HANGS",
    "bridge_hub",
    "guard_tasks",
    "is_patched",
    "mark_task",
    "new_bridge_loop",
    "run_in_bridge_thread",
]

T = TypeVar("T")

_BRIDGE_HUB: contextvars.ContextVar[Any] = contextvars.ContextVar("aioflow_gevent_bridge_hub", default=None)

# True in a thread or greenlet that runs the tasks of a ``thread`` or ``gevent`` pool (`mark_task`).
# Each thread, and each greenlet, has a context of its own, which a new one does not inherit.
_IN_TASK: contextvars.ContextVar[bool] = contextvars.ContextVar("aioflow_in_task", default=False)


#: Why a process pool with handler threads cannot run in a patched process, and what to use instead.
GEVENT_POOL_HANGS = (
    "{what} cannot run in a process that gevent has monkey-patched: its result-handler thread is a "
    "greenlet that blocks the gevent hub in a pipe read, so the pool hangs (every start method); "
    "use concurrent.futures.ProcessPoolExecutor, multiprocessing.Process or billiard.Process "
    "inside the task instead, or gevent.pool.Pool for concurrency within this process"
)


def is_patched() -> bool:
    """Whether gevent has monkey-patched ``threading`` in this process.

    gevent is imported only when something already imported it: an unpatched
    program never pays for it. Asking changes nothing.
    """
    if sys.modules.get("gevent") is None:  # not imported, or blocked (``sys.modules["gevent"] = None``)
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


def mark_task() -> None:
    """Mark the running thread (or greenlet) as one that runs the tasks of a ``thread`` or ``gevent`` pool.

    Only there do the guards of `guard_tasks` act. The mark lasts as long as
    the thread or greenlet; those it starts are not marked.
    """
    _IN_TASK.set(True)


_GUARDED: list[bool] = []


def guard_tasks() -> None:
    """Keep a patched process's tasks from two hangs: call once its tasks may run here (idempotent).

    Called by the ``thread`` and ``gevent`` pools when they start an executor
    in a patched process; both guards act only in a thread or greenlet marked
    by `mark_task`:

    - ``multiprocessing.Pool`` and ``billiard.Pool`` refuse to be created
      there (`guard_process_pools`);
    - a fork made there first installs gevent's SIGCHLD handler
      (`install_sigchld_before_fork`).

    Installing them patches the two classes' ``__init__`` and registers an
    at-fork hook, which cannot be taken back; outside aioflow's tasks both
    only call through.
    """
    if _GUARDED:
        return
    _GUARDED.append(True)
    guard_process_pools()
    install_sigchld_before_fork()


def guard_process_pools() -> None:
    """Make ``multiprocessing.Pool`` and ``billiard.Pool`` raise at once when a task creates one in a patched process.

    With ``threading`` patched, their handler threads are greenlets, and the
    result handler blocks the whole hub in ``os.read`` on the result pipe:
    ``apply``/``map`` never return, whatever the start method, and no timeout
    can fire (the hub, and asyncio's loop waiting on gevent's selector, are
    blocked with it). A task that starts one, in a greenlet of the ``gevent``
    pool or a thread of the ``thread`` pool, would hang the whole program; it
    gets a `RuntimeError` saying why and what to use instead. The check runs
    when a pool is created, so a process patched with ``thread=False`` (real
    threads: the pools work) is left alone. Thread pools
    (``multiprocessing.pool.ThreadPool``, billiard's) are never refused, nor
    is a pool created outside aioflow's tasks.
    """
    import multiprocessing.pool

    _refuse_in_tasks(multiprocessing.pool.Pool, "multiprocessing.Pool", multiprocessing.pool.ThreadPool)
    try:
        import billiard.pool
    except ImportError:
        return
    _refuse_in_tasks(billiard.pool.Pool, "billiard.Pool", billiard.pool.ThreadPool)


def install_sigchld_before_fork() -> None:
    """Make gevent's SIGCHLD handler be in place before a task of a patched process forks.

    gevent's patched ``os.fork`` (``gevent.os.fork_and_watch``) starts a child
    watcher for the new process just after the fork, and the first child
    watcher of the process is what installs libev's SIGCHLD handler. A child
    that ends before its parent gets there (a short ``multiprocessing.Process``,
    on a busy machine) sends SIGCHLD to a process that ignores it: its end is
    never seen, it stays a zombie, and ``os.waitpid`` (``Process.join``) waits
    for ever, and with it the task and the execution. gevent's own
    ``subprocess`` installs the handler before it forks; this hook does the
    same for every fork a task makes (`_install_sigchld_handler`).
    """
    os.register_at_fork(before=_install_sigchld_handler)


def _install_sigchld_handler() -> None:
    """Before a fork: in a task, install libev's SIGCHLD handler when gevent will watch the child.

    Only in a thread or greenlet marked by `mark_task`; only when ``os.fork``
    is gevent's watching fork (not with ``GEVENT_NOWAITPID``, nor when ``os``
    is left unpatched: a plain child is waited for with the plain
    ``waitpid``, which libev's handler would preempt), and only with the
    default loop (the only one child watchers work in: the main thread's).
    The main thread's hub is made now if it does not exist yet, as
    ``fork_and_watch`` would make it just after the fork. The handler is
    process-wide, and installing it again is a no-op.
    """
    if not _IN_TASK.get():
        return
    gevent_os = sys.modules.get("gevent.os")
    if gevent_os is None or "waitpid" not in getattr(gevent_os, "__implements__", ()):
        return
    if os.fork is not getattr(gevent_os, "fork", None):
        return
    import gevent
    import gevent.hub
    from gevent import monkey
    from gevent._hub_local import get_hub_if_exists

    hub = get_hub_if_exists()
    if hub is None and monkey.get_original("_thread", "get_ident")() == gevent.hub.MAIN_THREAD_IDENT:
        hub = gevent.get_hub()
    loop = getattr(hub, "loop", None)
    if loop is not None and loop.default:
        loop.install_sigchld()


def _refuse_in_tasks(cls: type, what: str, spared: type) -> None:
    original: Callable[..., None] = cls.__dict__["__init__"]

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if _IN_TASK.get() and not isinstance(self, spared) and kwargs.get("threads", True) and is_patched():
            # multiprocessing's Pool.__del__ reads _state: a refused pool is not running.
            self._state = "CLOSE"
            raise RuntimeError(GEVENT_POOL_HANGS.format(what=what))
        original(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]


def bridge_hub() -> Any:
    """The gevent hub of the greenlet that called `run_in_bridge_thread`, or ``None`` outside one."""
    return _BRIDGE_HUB.get()


def new_bridge_loop() -> asyncio.AbstractEventLoop:
    """An asyncio loop on the original (unpatched) selector, for a real OS thread."""
    from gevent import monkey

    selector_class = monkey.get_original("selectors", "DefaultSelector")
    return asyncio.SelectorEventLoop(selector_class())


def run_in_bridge_thread(
    make_coro: Callable[[], Coroutine[Any, Any, T]],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run a coroutine on an asyncio loop in a real OS thread; wait for it in the hub.

    Called from a greenlet (the main one included) of a gevent-patched
    process. Other greenlets keep running while it waits. Ctrl-C (or killing
    the calling greenlet) while waiting cancels the coroutine, waits for its
    cleanup, then re-raises.

    Args:
        make_coro: builds the coroutine; called in the bridge thread.
        loop_factory: builds the bridge thread's loop (default `new_bridge_loop`).

    Returns:
        The coroutine's result; its exception is re-raised here.
    """
    import gevent
    import gevent.event
    from gevent import monkey

    hub = gevent.get_hub()
    start_new_thread = monkey.get_original("_thread", "start_new_thread")
    allocate_lock = monkey.get_original("_thread", "allocate_lock")
    factory = loop_factory or new_bridge_loop

    outcome: dict[str, Any] = {}
    handles: dict[str, Any] = {}
    handles_lock = allocate_lock()  # guards handles and the "cancelled" flag
    exited = allocate_lock()  # held by the bridge thread until its very last step
    exited.acquire()
    finished: gevent.event.AsyncResult = gevent.event.AsyncResult()
    watcher = hub.loop.async_()
    watcher.start(finished.set, None)

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        with handles_lock:
            handles["loop"], handles["task"] = asyncio.get_running_loop(), task
            cancelled = handles.get("cancelled", False)
        if cancelled:
            task.cancel()
        _BRIDGE_HUB.set(hub)
        return await make_coro()

    def target() -> None:
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                outcome["value"] = runner.run(main())
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            _destroy_own_hub()
            _forget_dummy_thread()
            watcher.send()
            exited.release()

    def cancel() -> None:
        with handles_lock:
            handles["cancelled"] = True
            loop, task = handles.get("loop"), handles.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed in the meantime: nothing left to cancel
                pass

    def wait_finished() -> None:
        """Wait for the thread in the hub, surviving further interrupts."""
        while True:
            try:
                finished.get()
            except BaseException:  # noqa: S112 - the thread's cleanup must be awaited
                continue
            return

    try:
        start_new_thread(target, ())
        try:
            finished.get()
        except BaseException:
            cancel()
            wait_finished()
            raise
        finally:
            # The thread has sent its last signal: it is about to return.
            exited.acquire()
            exited.release()
    finally:
        watcher.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _forget_dummy_thread() -> None:
    """Drop the placeholder `threading` made for this thread (asyncio asks for `threading.current_thread`).

    With ``threading`` patched, the placeholder is keyed by the thread's
    greenlet and never removed: each bridge call would leave one behind.
    """
    import threading

    active = getattr(threading, "_active", None)
    dummy = getattr(threading, "_DummyThread", None)
    if isinstance(active, dict) and dummy is not None:
        ident = threading.get_ident()
        if isinstance(active.get(ident), dummy):
            active.pop(ident, None)


def _destroy_own_hub() -> None:
    """Destroy the hub gevent made for this thread, if anything in it made one.

    A patched `threading.Thread` started in this thread (`run_in_own_thread`
    does, to close a pool) runs as a greenlet of a hub of this thread. Without
    this, each bridge call would leave that hub's loop (and its file
    descriptors) behind.
    """
    from gevent._hub_local import get_hub_if_exists

    hub = get_hub_if_exists()
    if hub is not None:
        hub.destroy(destroy_loop=True)
