"""The ``gevent`` pool: tasks run as greenlets in a gevent hub, for I/O-bound work.

Requires ``gevent.monkey.patch_all()`` at program start (so that the tasks'
blocking calls, ``time.sleep`` and sockets included, yield to the hub), and
the engine's asyncio loop running in a bridge thread
(`aioflow._gevent_bridge.run_in_bridge_thread`).

Actors and who owns what:

- the *hub*: the gevent hub of the greenlet that started the execution (the
  main thread's, usually). The set of running greenlets and their owners is
  touched in the hub's thread only, so it needs no lock.
- the *loop thread* (the bridge thread): ``submit`` is called there. It
  never blocks on a gevent primitive: it appends the call to the queue (a
  deque: its appends and pops are atomic, so it needs no lock either),
  wakes the hub with ``hub.loop.run_callback_threadsafe`` and returns a
  `concurrent.futures.Future`. A greenlet resolves it, and the asyncio side
  (``asyncio.wrap_future``) learns of it through ``call_soon_threadsafe``.
- at most ``max_workers`` greenlets run at once; further calls wait in the
  queue (not as greenlets) and start as running ones end. Greenlets are cheap
  and meant for I/O, so the default is `DEFAULT_MAX_WORKERS`.

No hub callback waits. A hub callback that would (a contended lock, a gevent
primitive) raises `gevent.exceptions.BlockingSwitchOutError` instead, and
gevent drops it. The futures' condition locks are such locks: with threading
patched they are gevent locks, and the loop thread holds them whenever
asyncio adds a callback to a future or reads its state. So the hub's
callbacks (`_start_next`, `_ended`, the wake-ups ``_post`` sends) only move
calls between the queue and greenlets; everything that touches a future runs
in a greenlet, which may wait: the call's own (`_run`), or one spawned to
fail a call whose greenlet was killed before it settled it (`_fail`). A call
is thus always started, cancelled or failed, never dropped.

Shutdown order: ``shutdown`` marks the executor closed (under a real lock, as
it is read from both threads), then, in the hub, cancels the queued calls if
asked and waits for the running greenlets. Abort cancels the queued calls,
kills the running greenlets (``Greenlet.kill``: a ``GreenletExit`` raised at
their next switch) and waits up to `KILL_GRACE` seconds for them. A thread
other than the hub's waits for these hub-side steps on a real lock, never on
a gevent primitive (those can only be waited on in their hub's thread).

A task runs guarded from two hangs (`aioflow._gevent_bridge.guard_tasks`):
a ``multiprocessing.Pool`` or ``billiard.Pool`` it creates is refused, and
a process it forks is watched from the start.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import AioflowError, MissingExtraError, OptionError, PoolError
from .._gevent_bridge import bridge_hub, guard_tasks, is_patched, mark_task
from ._base import Pool
from ._futures import owned_by

if TYPE_CHECKING:
    from ._options import PoolOptions

__all__ = ["DEFAULT_MAX_WORKERS", "KILL_GRACE", "GeventPool"]

T = TypeVar("T")

logger = logging.getLogger("aioflow.pools")

#: Greenlets running at once when ``max_workers`` is not given.
DEFAULT_MAX_WORKERS = 100

#: Seconds to wait for killed greenlets to end. A greenlet ends at its next
#: switch to the hub; one stuck in a C call blocks the whole hub anyway.
KILL_GRACE = 5.0

_Call = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def _import_gevent() -> Any:
    try:
        import gevent
    except ImportError:
        raise MissingExtraError("pool 'gevent'", "gevent", "gevent") from None
    return gevent


class _GeventExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` whose calls run as greenlets of one hub."""

    def __init__(self, hub: Any, max_workers: int) -> None:
        import gevent
        from gevent import monkey

        self._gevent = gevent
        self._hub = hub
        self._max_workers = max_workers
        self._get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
        self._allocate_lock: Callable[[], Any] = monkey.get_original("_thread", "allocate_lock")
        self._lock = self._allocate_lock()  # guards _shutdown (read from both threads)
        self._shutdown = False
        # Appended to by submit (any thread), popped in the hub's thread only:
        self._queue: collections.deque[_Call] = collections.deque()
        # Hub thread only:
        self._running: dict[Any, object] = {}  # greenlet -> owner (None when unbound)

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._queue.append((future, fn, args, kwargs))
            self._post(self._start_next)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
        if wait:
            self.call_in_hub(self._finish, cancel_futures)
        elif cancel_futures:
            self._post(self._gevent.spawn, self._cancel_queued)

    # ------------------------------------------------------------ hub side

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have the hub call ``fn`` in one of its callbacks, where nothing may wait: ``fn`` takes no lock."""
        if self._in_hub_thread():
            self._hub.loop.run_callback(fn, *args)
        else:
            self._hub.loop.run_callback_threadsafe(fn, *args)

    def _in_hub_thread(self) -> bool:
        return bool(self._get_ident() == self._hub.thread_ident)

    def call_in_hub(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a greenlet of the hub and wait for it, from any thread.

        In the hub's thread it is a plain call (the caller is a greenlet).
        Elsewhere the caller waits on a real lock, released by the greenlet.
        """
        if self._in_hub_thread():
            return fn(*args)
        done = self._allocate_lock()
        done.acquire()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = fn(*args)
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                done.release()

        self._post(self._gevent.spawn, run)
        done.acquire()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]  # type: ignore[no-any-return]

    def _start_next(self) -> None:
        """Start queued calls, each in a greenlet, while fewer than ``max_workers`` run.

        Runs in hub callbacks, so it touches no future: a future's lock may be
        held by another thread (asyncio adds its callbacks from the loop
        thread), and a hub callback that waits for a lock raises instead
        (`gevent.exceptions.BlockingSwitchOutError`). The call's greenlet
        marks its future running (`_run`).
        """
        while self._queue and len(self._running) < self._max_workers:
            call = self._queue.popleft()
            greenlet = None
            try:
                greenlet = self._gevent.Greenlet(self._run, *call)
                self._running[greenlet] = None
                greenlet.rawlink(functools.partial(self._ended, call[0]))
                greenlet.start()
            except BaseException as exc:
                # Ctrl-C lands wherever the hub happens to be, this callback
                # included: a call whose greenlet did not start fails, and
                # the queue is served again.
                if not greenlet:  # None, or not started
                    self._running.pop(greenlet, None)
                    error = PoolError(f"the 'gevent' pool could not start a call: {exc!r}")
                    error.__cause__ = exc
                    self._gevent.spawn(_fail, call[0], error)
                self._hub.loop.run_callback(self._start_next)
                raise

    def _run(self, future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: Any, kwargs: Any) -> bool:
        """A call's greenlet: run the call unless it was cancelled while queued, settle its future, start the next.

        Returns True once the future is settled (or was cancelled). A greenlet
        killed before that (before it started, or while it waited for the
        future's lock) returns nothing, and `_ended` fails the call.
        """
        current = self._gevent.getcurrent()
        mark_task()  # what `guard_tasks` guards
        try:
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except (KeyboardInterrupt, SystemExit) as exc:
                    # Ctrl-C strikes whichever greenlet runs at that moment, often a
                    # task: it is the program's interrupt, not the task's failure.
                    # Re-raised, gevent hands it to the main greenlet.
                    future.set_exception(exc)
                    raise
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            return True
        finally:
            del future, fn, args, kwargs
            self._running.pop(current, None)
            self._start_next()

    def _ended(self, future: concurrent.futures.Future[Any], greenlet: Any) -> None:
        """Hub callback, once a call's greenlet is dead: free its slot if `_run` did not, fail the call if it did not settle it.

        Failing the call waits for the future's lock: a new greenlet does it.
        """
        if greenlet in self._running:  # killed before it started
            del self._running[greenlet]
            self._start_next()
        if greenlet.value is not True:
            error = greenlet.exception if greenlet.exception is not None else self._gevent.GreenletExit()
            self._gevent.spawn(_fail, future, error)

    def run_owned(self, owner: object, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in this greenlet, recorded as ``owner``'s (positional-only: a call's keywords are its own)."""
        self._running[self._gevent.getcurrent()] = owner
        return fn(*args, **kwargs)

    def _cancel_queued(self) -> None:
        """Cancel every queued call. In a greenlet: cancelling waits for each future's lock."""
        while self._queue:
            _cancel(self._queue.popleft()[0])

    def _finish(self, cancel_futures: bool) -> None:
        if cancel_futures:
            self._cancel_queued()
        while self._running or self._queue:
            self._start_next()
            self._gevent.joinall(list(self._running))
            # A greenlet killed before it started is forgotten by its link
            # callback, which the hub runs next: let it.
            self._gevent.sleep(0)

    def kill(self, owner: object | None = None) -> int:
        """Kill the running greenlets of ``owner`` (all when None); return how many outlived `KILL_GRACE`.

        Runs in a greenlet. Other threads append to the queue meanwhile (it
        is a deque, whose appends and pops are atomic): ``owner``'s calls are
        taken out first, with no switch in between, then cancelled.
        """
        if owner is None:
            self._cancel_queued()
        else:
            mine: list[_Call] = []
            for _ in range(len(self._queue)):
                call = self._queue.popleft()
                (mine if owned_by(_owner_of(call), owner) else self._queue).append(call)
            for call in mine:
                _cancel(call[0])
        victims = [g for g, o in self._running.items() if owner is None or owned_by(o, owner)]
        self._gevent.killall(victims, block=True, timeout=KILL_GRACE)
        return sum(1 for g in victims if not g.dead)


def _cancel(future: concurrent.futures.Future[Any]) -> None:
    """Cancel a queued call and tell ``wait`` and ``as_completed`` (``cancel`` alone does not). In a greenlet."""
    future.cancel()
    future.set_running_or_notify_cancel()


def _fail(future: concurrent.futures.Future[Any], error: BaseException) -> None:
    """Fail a call whose greenlet could not settle it. Runs in a greenlet: it waits for the future's lock."""
    try:
        future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # settled after all, or cancelled


def _owner_of(call: _Call) -> object:
    fn = call[1]
    if isinstance(fn, functools.partial) and fn.args:
        return fn.args[0]
    return None


class GeventPool(Pool):
    """Tasks run as greenlets of the calling hub: cheap concurrency for I/O-bound tasks.

    Needs ``gevent.monkey.patch_all()`` at program start. ``max_workers``
    caps the greenlets running at once (default `DEFAULT_MAX_WORKERS`);
    ``context`` and ``pool_options`` do not apply.
    """

    name = "gevent"
    runs_in_gevent_hub = True
    runs_in_this_process = True

    def __init__(self, options: PoolOptions) -> None:
        super().__init__(options)
        self._hub = _find_hub()
        if self._hub is _current_hub():
            _check_loop_yields_to_hub()

    def _validate(self, options: PoolOptions) -> None:
        _import_gevent()
        if not is_patched():
            msg = (
                "the 'gevent' pool needs a gevent-patched process: call "
                "`from gevent import monkey; monkey.patch_all()` first thing in the program"
            )
            raise AioflowError(msg)
        if options.context is not None:
            raise OptionError(
                "context", "None for the 'gevent' pool (start methods apply to process pools)", options.context
            )
        if options.extra:
            raise OptionError("pool_options", "an empty dict for the 'gevent' pool", options.extra)

    def _default_max_workers(self) -> int:
        return DEFAULT_MAX_WORKERS

    def _create_executor(self) -> concurrent.futures.Executor:
        guard_tasks()  # the tasks' own process pools refused, their forks watched
        executor = _GeventExecutor(self._hub, self.capacity)
        if executor._in_hub_thread():
            _check_loop_yields_to_hub()
        return executor

    def bind(self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., T]) -> Callable[..., T]:
        assert isinstance(executor, _GeventExecutor)
        return functools.partial(executor.run_owned, owner, fn)

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, _GeventExecutor)
        with executor._lock:
            executor._shutdown = True
        _warn_stuck(executor.call_in_hub(executor.kill, None))

    def _abort_owner(self, executor: concurrent.futures.Executor, owner: object) -> None:
        assert isinstance(executor, _GeventExecutor)
        _warn_stuck(executor.call_in_hub(executor.kill, owner))


def _find_hub() -> Any:
    """The hub the pool's greenlets run in: the bridge's caller's, or this (main) thread's."""
    import threading

    import gevent

    hub = bridge_hub()
    if hub is not None:
        return hub
    if threading.current_thread() is threading.main_thread():
        return gevent.get_hub()
    msg = (
        "the 'gevent' pool runs its tasks in the gevent hub of the program's main thread: "
        "open it there, or run the execution with aioflow.execute_graph() from the main thread"
    )
    raise PoolError(msg)


def _current_hub() -> Any:
    from gevent._hub_local import get_hub_if_exists

    return get_hub_if_exists()


def _check_loop_yields_to_hub() -> None:
    """Refuse an event loop in the hub's own thread that would never let the hub run.

    Such a loop works only if it waits on gevent's selector (asyncio's
    selector loop created after ``patch_all()``): then the hub, and the
    tasks, run whenever the loop waits. uvloop, or a loop made before
    patching, would block the hub for good.
    """
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # used from plain synchronous code in a greenlet
    selector = getattr(loop, "_selector", None)
    if selector is not None and type(selector).__module__.startswith("gevent"):
        return
    msg = (
        f"the 'gevent' pool cannot run tasks for an event loop ({type(loop).__name__}) that blocks the "
        "gevent hub of its thread: run the execution with aioflow.execute_graph(), which runs the engine in a "
        "thread of its own while the hub keeps running"
    )
    raise PoolError(msg)


def _warn_stuck(count: int) -> None:
    if count:
        logger.warning(
            "%d greenlet(s) of the 'gevent' pool did not stop within %.0f s after being killed",
            count,
            KILL_GRACE,
        )
