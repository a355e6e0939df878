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
executor's ``_lock`` guards the set of unfinished futures and the shutdown
flag.

Failure. A dependency that raised fails its dependents with
`aioflow.DependencyError` (its exception as ``__cause__``); a cancelled one
cancels them, so a cancellation runs down a whole chain. A lost worker gives
`aioflow.WorkerLostError`, an argument that cannot be pickled
`aioflow.TransferError`, as in graph executions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import DependencyError, PoolError
from .pools import DEFAULT_IDLE_TIMEOUT, Pool, open_pool
from .pools._base import settle

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator
    from types import TracebackType

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
    call's dependents too.
    """

    def __init__(self) -> None:
        super().__init__()
        self._link_lock = threading.RLock()  # cancel() may re-enter through done-callbacks
        self._inner: concurrent.futures.Future[Any] | None = None

    def cancel(self) -> bool:
        with self._link_lock:
            inner = self._inner
            if inner is not None and not inner.cancel():
                return False  # the call is running, or done
            return super().cancel()

    def running(self) -> bool:
        inner = self._inner
        return inner is not None and inner.running() and not self.done()


class _Call:
    """One submitted call waiting for its dependencies."""

    __slots__ = ("args", "fn", "future", "kwargs", "remaining")

    def __init__(
        self, future: ChainedFuture[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ):
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.remaining = 0


class Executor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` on an aioflow pool, whose calls can take futures as arguments.

    Args:
        pool_type: any name of `aioflow.available_pools()` (default: ``process``,
            or ``gevent`` when gevent has patched the process).
        max_workers, scaling_workers, context, idle_timeout, pool_options:
            as for `aioflow.open_pool`.
        pool: an open pool to share instead (it stays open after `shutdown`).

    Use it as a context manager: leaving the block waits for every call and
    stops the workers (``shutdown(wait=True)``).

    Raises:
        OptionError: an unknown pool type or an invalid option, before any worker starts.
    """

    def __init__(
        self,
        pool_type: str | None = None,
        *,
        max_workers: int | None = None,
        scaling_workers: bool = True,
        context: str | None = None,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        pool_options: dict[str, Any] | None = None,
        pool: Pool | None = None,
    ) -> None:
        if pool is None:
            pool = open_pool(
                pool_type,
                max_workers=max_workers,
                scaling_workers=scaling_workers,
                context=context,
                idle_timeout=idle_timeout,
                pool_options=pool_options,
            )
            self._owns_pool = True
        else:
            self._owns_pool = False
        self._pool = pool
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # Calls not finished: ChainedFutures of submit, pool futures of asubmit's direct path.
        self._unfinished: set[concurrent.futures.Future[Any]] = set()
        self._shutdown = False

    @property
    def pool(self) -> Pool:
        """The pool the calls run on."""
        return self._pool

    # ------------------------------------------------------------ Executor API

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> ChainedFuture[T]:
        """Schedule ``fn(*args, **kwargs)``; futures among the arguments are replaced by their results first.

        Raises:
            RuntimeError: after `shutdown`.
        """
        future: ChainedFuture[T] = ChainedFuture()
        with self._lock:
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            self._unfinished.add(future)
        future.add_done_callback(self._forget)
        call = _Call(future, fn, args, kwargs)
        dependencies = _dependencies(args, kwargs)
        if not dependencies:
            self._launch(call)
            return future
        call.remaining = len(dependencies)
        # A dependent that is cancelled while it waits stops nothing upstream.
        for dependency in dependencies:
            dependency.add_done_callback(lambda done, call=call: self._dependency_done(call, done))
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
        try:
            while window:
                future = window.popleft()
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                results = future.result(remaining)
                for chunk in itertools.islice(chunks, 1):
                    window.append(self.submit(_run_chunk, fn, chunk))
                yield from results
        finally:
            for future in window:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; with ``wait``, wait for the submitted ones (and stop the workers of an own pool).

        ``cancel_futures`` cancels the calls that have not started, those waiting
        for dependencies included.
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._unfinished) if cancel_futures else []
        for future in pending:
            future.cancel()
        if wait:
            with self._idle:
                self._idle.wait_for(lambda: not self._unfinished)
            if self._owns_pool:
                self._pool.close()
        elif self._owns_pool:
            threading.Thread(target=self._close_when_idle, name="aioflow-executor-close", daemon=True).start()

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
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            executor = pool.executor
            inner = executor.submit(pool.bind(executor, self, fn), *args, **kwargs)
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
                outcome.set_exception(self._translate(error, executor, fn))

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
        from .pools._base import run_in_own_thread

        await run_in_own_thread(self.shutdown, True)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else f"{len(self._unfinished)} unfinished"
        return f"<aioflow.Executor on {self._pool!r}, {state}>"

    # ------------------------------------------------------------ internals

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._idle:
            self._unfinished.discard(future)
            if not self._unfinished:
                self._idle.notify_all()

    def _close_when_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: not self._unfinished)
        self._pool.close()

    def _dependency_done(self, call: _Call, dependency: Any) -> None:
        future = call.future
        if future.done():
            return  # cancelled, or failed by an earlier dependency
        if dependency.cancelled():
            future.cancel()
            return
        error = dependency.exception()
        if error is not None:
            failed = DependencyError(_describe(call.fn), f"{type(error).__name__}: {error}")
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
            try:
                executor = pool.executor
                inner = executor.submit(pool.bind(executor, self, call.fn), *call.args, **call.kwargs)
            except BaseException as exc:  # the pool refused: closed, broken
                settle(future, error=exc)
                return
            future._inner = inner
        call.args, call.kwargs = (), {}  # the pool holds them now
        pool.enter(self)
        inner.add_done_callback(lambda done: self._finished(future, done, executor, call.fn))

    def _finished(
        self,
        future: ChainedFuture[Any],
        inner: concurrent.futures.Future[Any],
        executor: concurrent.futures.Executor,
        fn: Callable[..., Any],
    ) -> None:
        self._pool.leave(self)
        if inner.cancelled():
            if not future.cancel():  # the pool gave up on the call, not the caller
                settle(future, error=PoolError(f"task {_describe(fn)}: the pool cancelled the call"))
            return
        error = inner.exception()
        if error is None:
            settle(future, result=inner.result())
        else:
            settle(future, error=self._translate(error, executor, fn))

    def _translate(
        self, error: BaseException, executor: concurrent.futures.Executor, fn: Callable[..., Any]
    ) -> BaseException:
        return self._pool.translate(error, executor, f"task {_describe(fn)}")


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


def _run_chunk(fn: Callable[..., T], chunk: tuple[tuple[Any, ...], ...]) -> list[T]:
    """In a worker: ``fn`` over one chunk of `Executor.map`'s argument tuples."""
    return [fn(*args) for args in chunk]
