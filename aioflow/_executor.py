"""`aioflow.Executor`: a `concurrent.futures.Executor` over any aioflow pool, with task chaining.

Data flow. ``submit(fn, *args, **kwargs)`` returns a `ChainedFuture` at once.
The futures found among the arguments (at the top level, and inside lists,
tuples and dict values one level deep) are its *dependencies*: the call
waits for them here, in the parent, through done-callbacks; no worker is
ever blocked on another task. When the last one has a result, the futures
are replaced by their results and the call goes to the pool's executor; its
outcome is copied to the `ChainedFuture`.

Actors: the caller's thread submits; done-callbacks run in whichever thread
completes a future (a pool's worker or dispatcher thread, an event loop for
asyncio futures) and only ever count, resolve and submit, which never
blocks. Each `ChainedFuture` guards its link to the pool's future (``_inner``)
with its own lock, so `ChainedFuture.cancel` and the launch cannot race. The
executor's ``_lock`` guards the set of unfinished futures, the shutdown and
broken states and the thread that closes the pool after
``shutdown(wait=False)``.

Failure. A dependency that raised fails its dependents with
`aioflow.DependencyError` (its exception as ``__cause__``); a cancelled one
cancels them, so a cancellation runs down a whole chain. A lost worker gives
`aioflow.WorkerLostError`, an argument or result that cannot be pickled or
unpickled `aioflow.TransferError`, as in graph executions. A pool whose
``initializer`` failed breaks the executor, as the stdlib's: the calls it
refused and every later `Executor.submit` raise a
`concurrent.futures.BrokenExecutor`.

Life cycle, as the stdlib's executors. A call that reaches the pool while a
worker is free for it counts as started at once (the stdlib counts so the
calls in its workers' queue); a cancelled call is done for
`concurrent.futures.wait` and ``as_completed``. At interpreter exit (before
``atexit`` hooks, as ``concurrent.futures`` does it) every executor not shut
down is shut down with ``wait=True``: the calls already submitted run to
the end, those waiting for dependencies included; ``submit`` then raises
`RuntimeError`. An executor garbage-collected without `Executor.shutdown`
stops its own pool's workers. The executor never keeps a call's function,
arguments or result once the call has ended: they are freed as soon as the
caller drops them, without waiting for a cyclic garbage collection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import os
import threading
import time
import weakref
from collections import deque
from concurrent.futures._base import CANCELLED
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._broken import InitializerFailed
from ._errors import DependencyError, OptionError, PoolError
from .pools._futures import settle
from .pools._options import PoolSpec, takes_pool_keywords

if TYPE_CHECKING:
    import multiprocessing.context
    from collections.abc import Callable, Generator, Iterable, Iterator
    from types import TracebackType
    from typing import Unpack

    from .pools import Pool
    from .pools._options import PoolKeywords

__all__ = ["ChainedFuture", "Executor"]

T = TypeVar("T")

# How many calls `Executor.map` keeps submitted ahead of the consumer, per worker.
_MAP_AHEAD_PER_WORKER = 4


def _is_future(value: Any) -> bool:
    return isinstance(value, concurrent.futures.Future) or asyncio.isfuture(value)


def _describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class ChainedFuture(concurrent.futures.Future[T]):
    """The future `Executor.submit` returns.

    It stays pending while its call waits for dependencies or for a worker;
    `cancel` succeeds until a worker has started the call, and cancels the
    call's dependents too. A call that reaches the pool while a worker is
    free for it counts as started at once, as the stdlib's executors count
    the calls they have queued for their workers: it runs even if
    ``shutdown(cancel_futures=True)`` follows before the worker takes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._link_lock = threading.RLock()  # cancel() may re-enter through done-callbacks
        self._inner: concurrent.futures.Future[Any] | None = None

    def cancel(self) -> bool:
        with self._link_lock:
            if super().running():
                return False  # started when it reached a free worker
            inner = self._inner
            if inner is not None and not inner.cancel():
                return False  # the call is running, or done
            if not super().cancel():
                return False
            if self._state == CANCELLED:
                # No executor will ever take this future: tell the waiters of
                # concurrent.futures.wait() and as_completed() here, as an
                # executor's worker does when it finds a call cancelled.
                self.set_running_or_notify_cancel()
            return True

    def running(self) -> bool:
        if super().running():
            return True
        inner = self._inner
        return inner is not None and inner.running() and not self.done()


class _Call:
    """One submitted call, until it goes to the pool (it may wait for dependencies)."""

    __slots__ = ("args", "fn", "future", "kwargs", "name", "remaining")

    def __init__(
        self, future: ChainedFuture[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ):
        self.future = future
        self.fn: Callable[..., Any] | None = fn
        self.args = args
        self.kwargs = kwargs
        self.name = _describe(fn)
        self.remaining = 0

    def take(self) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The function and arguments, for the pool, which holds them from now on (this call forgets them)."""
        fn, args, kwargs = self.fn, self.args, self.kwargs
        assert fn is not None
        self.fn, self.args, self.kwargs = None, (), {}
        return fn, args, kwargs


# Executors the interpreter's exit shuts down, and whether it has begun (under _EXIT_LOCK).
_LIVE: weakref.WeakSet[Executor] = weakref.WeakSet()
_EXIT_LOCK = threading.Lock()
_exiting = False


def _shut_down_at_exit() -> None:
    """At interpreter exit: refuse new calls, let every submitted one run, stop the executors' own pools."""
    global _exiting
    with _EXIT_LOCK:
        _exiting = True
        executors = list(_LIVE)
    for executor in executors:
        executor._release(wait=True)


# As concurrent.futures does: run before atexit hooks and before non-daemon
# threads are joined, while the pools' threads still run.
threading._register_atexit(_shut_down_at_exit)  # type: ignore[attr-defined]


def _forget_parent_executors() -> None:
    """In a forked child (a process pool's worker): none of its parent's executors is its own."""
    global _EXIT_LOCK
    _EXIT_LOCK = threading.Lock()  # another thread of the parent may have held it
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_executors)


class Executor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` on an aioflow pool, whose calls can take futures as arguments.

    Args:
        pool_type, max_workers, scaling_workers, context, idle_timeout, pool_options:
            the pool keywords of `aioflow.open_pool` (`aioflow.pools._options.PoolSpec`).
        pool: an open pool to share instead (it stays open after `shutdown`).
        mp_context, initializer, initargs, max_tasks_per_child, thread_name_prefix:
            the keywords of the stdlib's ``ThreadPoolExecutor`` and
            ``ProcessPoolExecutor``, for the pools that take them:
            ``mp_context`` gives ``context`` its start method; the others go
            to ``pool_options``.

    Use it as a context manager: leaving the block waits for every call and
    stops the workers (``shutdown(wait=True)``).

    Raises:
        OptionError: an unknown pool type or an invalid option, before any worker starts.
    """

    #: The message of the `RuntimeError` that `submit` raises after `shutdown`:
    #: the stdlib's words. A subclass that stands in for another library's
    #: executor may use that one's (`aioflow.parsl.ParslPoolExecutor`: Parsl's).
    _shutdown_message: ClassVar[str] = "cannot schedule new futures after shutdown"

    @takes_pool_keywords
    def __init__(
        self,
        pool_type: str | None = None,
        *,
        pool: Pool | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_child: int | None = None,
        thread_name_prefix: str = "",
        **pool_keywords: Unpack[PoolKeywords],
    ) -> None:
        spec = PoolSpec.from_keywords("Executor", pool_type, pool_keywords)
        stdlib = {
            "initializer": initializer,
            "initargs": tuple(initargs) or None,
            "max_tasks_per_child": max_tasks_per_child,
            "thread_name_prefix": thread_name_prefix or None,
        }
        if pool is None:
            context = _start_method(spec.context, mp_context)
            pool_options = _merged(spec.pool_options, stdlib)
            pool = spec._replace(context=context, pool_options=pool_options).open()
            self._owns_pool = True
            weakref.finalize(self, _close_abandoned, pool).atexit = False
        else:
            for name, value in {**stdlib, "mp_context": mp_context}.items():
                if value is not None:
                    raise OptionError(name, "left out with pool= (the shared pool's own options apply)", value)
            self._owns_pool = False
        self._pool = pool
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # Calls not finished: ChainedFutures of submit, pool futures of asubmit's direct path.
        self._unfinished: set[concurrent.futures.Future[Any]] = set()
        self._shutdown = False
        # The pool's initializer failed: every call is refused with this error (a new instance each time).
        self._broken: InitializerFailed | None = None
        # Stops the workers of an own pool after shutdown(wait=False), once every call has ended.
        self._closer: threading.Thread | None = None
        with _EXIT_LOCK:
            _LIVE.add(self)

    @property
    def pool(self) -> Pool:
        """The pool the calls run on."""
        return self._pool

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> ChainedFuture[T]:
        """Schedule ``fn(*args, **kwargs)``; futures among the arguments are replaced by their results first.

        Raises:
            RuntimeError: after `shutdown`, or once the interpreter exits.
            concurrent.futures.BrokenExecutor: the pool's ``initializer`` failed.
        """
        future: ChainedFuture[T] = ChainedFuture()
        with self._lock:
            self._check_open()
            runnable = self._runnable(fn)
            self._unfinished.add(future)
        future.add_done_callback(self._forget)
        call = _Call(future, runnable, args, kwargs)
        dependencies = _dependencies(args, kwargs)
        if not dependencies:
            self._launch(call)
            return future
        call.remaining = len(dependencies)
        # A dependent that is cancelled while it waits stops nothing upstream.
        for dependency in dependencies:
            dependency.add_done_callback(functools.partial(self._dependency_done, call))
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Generator[T, None, None]:
        """``fn`` over the iterables' items, results in order, as `concurrent.futures.Executor.map`.

        The iterables are read lazily: at most a few calls per worker are
        submitted ahead of the results consumed, so a long generator is
        never held in memory. ``chunksize`` items travel to a worker in one
        call. Closing the iterator early cancels the calls not yet started.

        Raises (when the results are iterated):
            TimeoutError: a result is not there ``timeout`` seconds after the call to `map`.
            Any exception of ``fn``.
        """
        if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
            from ._errors import OptionError

            raise OptionError("chunksize", "an int >= 1", chunksize)
        deadline = None if timeout is None else time.monotonic() + timeout
        items = zip(*iterables, strict=False)
        chunks: Iterator[tuple[tuple[Any, ...], ...]] = iter(lambda: tuple(itertools.islice(items, chunksize)), ())
        ahead = max(2, self._pool.capacity * _MAP_AHEAD_PER_WORKER)
        window: deque[ChainedFuture[list[T]]] = deque(
            self.submit(_run_chunk, fn, chunk) for chunk in itertools.islice(chunks, ahead)
        )
        return self._map_results(window, chunks, deadline, fn)

    def _map_results(
        self,
        window: deque[ChainedFuture[list[T]]],
        chunks: Iterator[tuple[tuple[Any, ...], ...]],
        deadline: float | None,
        fn: Callable[..., T],
    ) -> Generator[T, None, None]:
        # As the stdlib's map: the call whose result timed out (or failed) is
        # cancelled if it has not started, and the iterator keeps no reference
        # to a future or a result it has handed out.
        try:
            while window:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                results = _result_or_cancel(window.popleft(), remaining)
                for chunk in itertools.islice(chunks, 1):
                    window.append(self.submit(_run_chunk, fn, chunk))
                results.reverse()
                while results:
                    yield results.pop()
        finally:
            for future in window:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; with ``wait``, wait for the submitted ones (and stop the workers of an own pool).

        ``cancel_futures`` cancels the calls that have not started, those waiting
        for dependencies included. Without ``wait``, the calls submitted still
        run, and an own pool stops once they have ended.
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._unfinished) if cancel_futures else []
        for future in pending:
            future.cancel()
        self._release(wait)

    async def asubmit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``await`` the result of ``fn(*args, **kwargs)`` from async code without blocking the loop.

        Arguments may be futures of any kind, asyncio ones included. Cancelling
        the awaiting task cancels the call if it has not started.

        Raises:
            RuntimeError: after `shutdown`.
        """
        if _dependencies(args, kwargs):
            return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))
        # No future to wait for: the pool's future reports straight to the
        # loop, as run_in_executor's does, without a ChainedFuture between.
        loop = asyncio.get_running_loop()
        pool = self._pool
        with self._lock:
            self._check_open()
            executor = pool.executor
            inner = executor.submit(pool.bind(executor, self, self._runnable(fn)), *args, **kwargs)
            self._unfinished.add(inner)
        pool.enter(self)
        outcome: asyncio.Future[T] = loop.create_future()

        def deliver(done: concurrent.futures.Future[Any]) -> None:  # in the event loop
            if outcome.done():
                return  # the awaiting task was cancelled
            if done.cancelled():
                outcome.cancel()  # shutdown(cancel_futures=True)
                return
            error = done.exception()
            if error is None:
                outcome.set_result(done.result())
            else:
                outcome.set_exception(self._outcome_error(error, executor, _describe(fn)))

        def finished(done: concurrent.futures.Future[Any]) -> None:  # in the thread that completed the call
            pool.leave(self)
            self._forget(done)
            try:
                loop.call_soon_threadsafe(deliver, done)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits the outcome any more

        inner.add_done_callback(finished)
        try:
            return await outcome
        except asyncio.CancelledError:
            inner.cancel()  # a call not started yet does not run
            raise

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown(wait=True)

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        from .pools._threads import run_in_own_thread

        await run_in_own_thread(self.shutdown, True)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else f"{len(self._unfinished)} unfinished"
        return f"<aioflow.Executor on {self._pool!r}, {state}>"

    # ------------------------------------------------------------ internals

    def _check_open(self) -> None:
        """Under ``_lock``: raise if no call may be submitted now, as the stdlib's executors do."""
        self._check_broken()
        if self._shutdown:
            raise RuntimeError(self._shutdown_message)
        if _exiting:
            msg = "cannot schedule new futures after interpreter shutdown"
            raise RuntimeError(msg)

    def _runnable(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Under ``_lock``: what the pool runs for ``fn``, a call the executor has just accepted: ``fn`` itself.

        A subclass may give the pool another callable for it (never for a
        call refused after `shutdown`): `aioflow.parsl.ParslPoolExecutor`
        gives the Parsl app it keeps for ``fn``. If this raises, ``submit``
        raises it, and the call is not made.
        """
        return fn

    def _check_broken(self) -> None:
        """Under ``_lock``: raise a new `InitializerFailed` if the pool's initializer failed."""
        if self._broken is not None:
            raise InitializerFailed.caused_by(str(self._broken), self._broken.__cause__)

    def _release(self, wait: bool) -> None:
        """After shutdown (or at interpreter exit): stop an own pool's workers once every call has ended.

        With ``wait``, return when they are stopped; otherwise a thread does it.
        """
        if not self._owns_pool:
            if wait:
                self._wait_idle()
            return
        with self._lock:
            closer = self._closer
            if closer is None and not wait:
                closer = self._closer = threading.Thread(
                    target=self._close_when_idle, name="aioflow-executor-close", daemon=True
                )
                closer.start()
        if not wait:
            return
        if closer is not None:
            closer.join()
        else:
            self._close_when_idle()

    def _wait_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: not self._unfinished)

    def _close_when_idle(self) -> None:
        self._wait_idle()
        self._pool.close()

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._idle:
            self._unfinished.discard(future)
            if not self._unfinished:
                self._idle.notify_all()

    def _dependency_done(self, call: _Call, dependency: Any) -> None:
        future = call.future
        if future.done():
            return  # cancelled, or failed by an earlier dependency
        if dependency.cancelled():
            future.cancel()
            return
        error = dependency.exception()
        if error is not None:
            failed = DependencyError(call.name, f"{type(error).__name__}: {error}")
            failed.__cause__ = error
            settle(future, error=failed)
            return
        with future._link_lock:
            call.remaining -= 1
            ready = call.remaining == 0
        if ready:
            call.args, call.kwargs = _resolve(call.args, call.kwargs)
            self._launch(call)

    def _launch(self, call: _Call) -> None:
        future = call.future
        pool = self._pool
        with future._link_lock:
            if future.done():  # cancelled while it waited
                return
            fn, args, kwargs = call.take()
            if pool.enter(self) < pool.capacity:
                future.set_running_or_notify_cancel()  # a worker is free for it: it starts at once
            try:
                with self._lock:
                    self._check_broken()  # it may have broken while this call waited for its dependencies
                executor = pool.executor
            except BaseException as exc:  # broken, or the pool was closed
                pool.leave(self)
                settle(future, error=exc)
                return
            try:
                inner = executor.submit(pool.bind(executor, self, fn), *args, **kwargs)
            except BaseException as exc:  # the pool's executor refused it: broken, shut down
                pool.leave(self)
                settle(future, error=self._outcome_error(exc, executor, call.name))
                return
            future._inner = inner
        del fn, args, kwargs  # the pool holds them now, until the call ends
        inner.add_done_callback(functools.partial(self._finished, future, executor, call.name))

    def _finished(
        self,
        future: ChainedFuture[Any],
        executor: concurrent.futures.Executor,
        name: str,
        inner: concurrent.futures.Future[Any],
    ) -> None:
        self._pool.leave(self)
        if inner.cancelled():
            if not future.cancel():  # the pool gave up on the call, not the caller
                settle(future, error=PoolError(f"task {name}: the pool cancelled the call"))
        else:
            error = inner.exception()
            if error is None:
                settle(future, result=inner.result())
            else:
                settle(future, error=self._outcome_error(error, executor, name))
        # The future no longer refers to the pool's: no reference cycle keeps either alive.
        future._inner = None

    def _outcome_error(self, error: BaseException, executor: concurrent.futures.Executor, name: str) -> BaseException:
        """What the caller gets for a call that failed with ``error`` in the pool."""
        if isinstance(error, InitializerFailed):
            # As the stdlib: the executor is broken; the error stays a BrokenExecutor.
            self._break(error)
            return error
        return self._pool.translate(error, executor, f"task {name}")

    def _break(self, error: InitializerFailed) -> None:
        """Refuse every call from now on, as the stdlib's executors do once an initializer failed."""
        with self._lock:
            if self._broken is None:
                self._broken = error


def _dependencies(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The distinct futures among the arguments, at the top level and one level inside containers."""
    found: dict[int, Any] = {}
    for value in itertools.chain(args, kwargs.values()):
        if _is_future(value):
            found[id(value)] = value
        elif isinstance(value, (list, tuple)):
            for inner in value:
                if _is_future(inner):
                    found[id(inner)] = inner
        elif isinstance(value, dict):
            for inner in value.values():
                if _is_future(inner):
                    found[id(inner)] = inner
    return list(found.values())


def _resolve(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments with every future replaced by its result (all are done and succeeded)."""
    return tuple(_resolve_value(v) for v in args), {k: _resolve_value(v) for k, v in kwargs.items()}


def _resolve_value(value: Any) -> Any:
    if _is_future(value):
        return value.result()
    if isinstance(value, (list, tuple)) and any(map(_is_future, value)):
        resolved = [v.result() if _is_future(v) else v for v in value]
        if isinstance(value, list):
            return resolved
        return type(value)(*resolved) if hasattr(value, "_fields") else tuple(resolved)
    if isinstance(value, dict) and any(map(_is_future, value.values())):
        return type(value)({k: (v.result() if _is_future(v) else v) for k, v in value.items()})
    return value


def _close_abandoned(pool: Pool) -> None:
    """An executor was garbage-collected without `Executor.shutdown`: stop its own pool's workers.

    As the stdlib's executors do. Its calls have all ended (each one refers
    to the executor until it has), so there is nothing to wait for; a thread
    closes the pool, as this may run in any thread, one of the pool's own included.
    """
    if not pool.closed:
        threading.Thread(target=pool.close, name="aioflow-executor-close", daemon=True).start()


def _start_method(context: str | None, mp_context: multiprocessing.context.BaseContext | None) -> str | None:
    """The ``context`` option, given itself or as the stdlib's ``mp_context``."""
    if mp_context is None:
        return context
    get_start_method = getattr(mp_context, "get_start_method", None)
    if not callable(get_start_method):
        raise OptionError(
            "mp_context", "a multiprocessing context, e.g. multiprocessing.get_context('spawn')", mp_context
        )
    method: str = get_start_method()
    if context is not None and context != method:
        raise OptionError("mp_context", f"a context of start method {context!r}, as context=", mp_context)
    return method


def _merged(pool_options: dict[str, Any] | None, stdlib: dict[str, Any]) -> dict[str, Any]:
    """``pool_options`` with the stdlib keywords that were given; each option is given once."""
    merged = dict(pool_options or {})
    for name, value in stdlib.items():
        if value is None:
            continue
        if name in merged:
            raise OptionError(name, "given once: as a keyword or in pool_options", value)
        merged[name] = value
    return merged


def _result_or_cancel(future: concurrent.futures.Future[T], timeout: float | None) -> T:
    """``future``'s result; if it is not there in time (or failed), its call is cancelled unless it started."""
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise


def _run_chunk(fn: Callable[..., T], chunk: tuple[tuple[Any, ...], ...]) -> list[T]:
    """In a worker: ``fn`` over one chunk of `Executor.map`'s argument tuples."""
    return [fn(*args) for args in chunk]
