"""`aioflow.start`: an execution that runs while the caller goes on, with a handle to steer it.

::

    async with aioflow.start(graph, pool_type="process") as run:
        ...
        run.cancel("fit")          # that node fails with NodeCancelledError; the rest goes on
        results = await run        # as execute_graph_async returns or raises

    with aioflow.start(graph) as run:      # from synchronous code: the run goes on in a helper thread
        run.cancel("fit")
        results = run.result()

The handle runs `aioflow.execute_graph_async` with the options given
(checked when `start` is called), as a task of the running loop (``async
with``) or in a helper thread (``with``) as `aioflow.execute_graph` would
(`aioflow.scheduler.run_execution`: a loop of its own, or the gevent bridge
in a gevent-patched process, where the helper thread is a greenlet). It reaches
the running execution through the engine's `aioflow.scheduler.Steering`,
which the face picks up from the run's task (`aioflow._api`).

Leaving the block waits for the run to end and raises its error, unless the
run was awaited (``await run``, ``run.result()``), which raised it there;
leaving it with an exception cancels the run, waits for its workers to
stop, and lets the exception through.

Its events (`aioflow.events`), as the ``on_event`` callback sees them, are
also read with ``async for event in run.events()`` or ``for event in
run.events()`` (`EventStream`). The run never waits for a reader: the handle
keeps the last `BACKLOG` events, so that a reader that starts late sees the
run from its start (or from its last `BACKLOG` events), and each reader
has a buffer of its own; a reader that falls more than its buffer behind
loses the oldest events it has not read, and reads one ``events.lost``
event in their place, with their number (``total``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

from ._api import _STEERING, execute_graph_async
from ._errors import OptionError
from ._results import Results
from .events import Event
from .scheduler import Steering

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Generator, Iterator
    from types import TracebackType

    from .graph import NodeId

__all__ = ["BACKLOG", "EventStream", "Run", "start"]

#: The events a run handle keeps for the readers that start late (`Run.events`), and a reader's buffer by default.
BACKLOG = 10_000

T = TypeVar("T")


def start(graph: Any, **options: Any) -> Run:
    """Start executing ``graph`` in the background; a handle to use with ``async with`` or ``with``.

    Takes the options of `aioflow.execute_graph_async` (checked here).

    Raises:
        OptionError: an option it does not take.
    """
    try:
        inspect.signature(execute_graph_async).bind(graph, **options)
    except TypeError as exc:
        raise OptionError("start", "the options of aioflow.execute_graph_async", sorted(options), str(exc)) from None
    return Run(graph, options)


class Run:
    """A running execution (`start`): cancel one of its nodes, read its results so far, wait for its end."""

    def __init__(self, graph: Any, options: dict[str, Any]) -> None:
        self._graph = graph
        self._feed = _Feed()
        user = options.get("on_event")
        tap = self._feed.tap
        self._options = {**options, "on_event": tap if user is None else _Both(user, tap)}
        self._steering = Steering()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Results] | None = None
        self._thread: threading.Thread | None = None
        self._outcome: concurrent.futures.Future[Results] = concurrent.futures.Future()
        self._retrieved = False

    async def _main(self) -> Results:
        _STEERING.set(self._steering)  # in this task's context only: the face takes it
        return await execute_graph_async(self._graph, **self._options)

    # ------------------------------------------------------------------ async with

    async def __aenter__(self) -> Run:
        self._claim()
        loop = self._loop = asyncio.get_running_loop()
        task = self._task = loop.create_task(self._main(), name="aioflow run")
        task.add_done_callback(self._settle)
        await self._started()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task = self._task
        assert task is not None
        if kind is not None:
            task.cancel()
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # the caller was cancelled while it waited: stop the run, then go on
                task.cancel()
                await asyncio.wait([task])
                raise
            if kind is not None or self._retrieved:
                return  # the run was cancelled (by the block's exception, or run.cancel() awaited)
            raise
        except BaseException:
            if kind is not None or self._retrieved:
                return  # the block's exception goes on; or the caller saw this one already
            raise

    def __await__(self) -> Generator[Any, None, Results]:
        if self._task is None:
            msg = "await a run inside its 'async with aioflow.start(...)' block"
            raise RuntimeError(msg)
        self._retrieved = True
        return self._task.__await__()

    async def _started(self) -> None:
        """Return once the execution has started (it can be steered), or raise why it could not start."""
        task = self._task
        assert task is not None
        started = asyncio.get_running_loop().create_future()

        def on_start() -> None:
            if not started.done():
                started.set_result(None)

        self._steering.when_started(on_start)
        await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        if not self._steering.started:
            started.cancel()
            self._retrieved = True
            task.result()  # the graph or an option was refused: raised here

    # ------------------------------------------------------------------ with

    def __enter__(self) -> Run:
        self._claim()
        started = threading.Event()
        self._thread = threading.Thread(target=self._in_thread, args=(started,), name="aioflow run", daemon=True)
        self._thread.start()
        started.wait()
        if self._outcome.done() and not self._steering.started:
            self._retrieved = True
            self._outcome.result()  # the graph or an option was refused: raised here
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self.cancel()
        try:
            self._outcome.result()
        except BaseException:
            if kind is not None or self._retrieved:
                return
            raise
        finally:
            assert self._thread is not None
            self._thread.join()

    def _in_thread(self, started: threading.Event) -> None:
        """The helper thread (a greenlet in a gevent-patched process): the run, as `aioflow.execute_graph` runs it."""
        from .scheduler._sync import loop_for, run_execution

        async def main() -> Results:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._steering.when_started(started.set)
            return await self._main()

        options = self._options
        try:
            self._outcome.set_result(run_execution(main, options, uvloop=loop_for(self._graph, None)))
        except BaseException as exc:
            self._outcome.set_exception(exc)
        finally:
            self._feed.close()
            started.set()  # a run that could not start: its error is the outcome

    def result(self, timeout: float | None = None) -> Results:
        """Wait for the end of a run started with ``with``, and return its results or raise its error.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        self._retrieved = True
        return self._outcome.result(timeout)

    # ------------------------------------------------------------------ both

    def cancel(self, node_id: NodeId | None = None) -> bool:
        """Cancel one node's firings (``node_id``), or the whole run (no argument).

        A node's running firings fail with `aioflow.NodeCancelledError`,
        their tasks stopped as at a timeout (on a process pool, the worker
        is killed and replaced); its firings waiting to run fail too; its
        ``on_error`` links fire and the run goes on. Cancelling the run
        stops every worker, as Ctrl-C does; awaiting it then raises
        `asyncio.CancelledError` (``async with``) or ``CancelledError``.

        Returns whether there was something to cancel. Callable from any thread.
        """
        loop, task = self._loop, self._task
        if loop is None or task is None or task.done():
            return False
        if node_id is None:
            if _in_thread_of(loop):
                return task.cancel()
            loop.call_soon_threadsafe(task.cancel)
            return True
        answer = _in_loop(loop, lambda: self._steering.cancel(node_id), self._outcome)
        return bool(answer)

    @property
    def results(self) -> Results:
        """The results: of the nodes finished so far while the run goes on, else the run's (even if it failed)."""
        if self._outcome.done():
            try:
                return self._outcome.result()
            except BaseException as exc:
                results: Results | None = getattr(exc, "results", None)
                if results is not None:
                    return results
        loop = self._loop
        if loop is None:
            return Results({})
        return _in_loop(loop, self._steering.results, self._outcome) or Results({})

    @property
    def done(self) -> bool:
        """Whether the run is over."""
        return self._outcome.done()

    def events(self, buffer: int = BACKLOG) -> EventStream:
        """The run's events, from its start, for ``async for`` or ``for``; the stream ends with the run.

        A reader that falls more than ``buffer`` events behind loses the
        oldest it has not read: it reads one ``events.lost`` event in their
        place (``total``: how many). A reader that starts late first reads
        the events the handle kept (the last `BACKLOG`). Several readers may
        read at once, each its own stream. The run never waits for them.
        """
        if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
            raise OptionError("buffer", "an int >= 1", buffer)
        return self._feed.reader(buffer, self._graph_id())

    def _graph_id(self) -> str:
        graph_id = getattr(self._graph, "id", None)
        return graph_id if isinstance(graph_id, str) else ""

    def _claim(self) -> None:
        if self._loop is not None or self._thread is not None:
            msg = "a run handle is used once: call aioflow.start() again"
            raise RuntimeError(msg)

    def _settle(self, task: asyncio.Task[Results]) -> None:
        self._feed.close()
        if task.cancelled():
            self._outcome.set_exception(asyncio.CancelledError())
        elif task.exception() is not None:
            self._outcome.set_exception(task.exception())
        else:
            self._outcome.set_result(task.result())


def _in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], T], over: concurrent.futures.Future[Any]) -> T | None:
    """``fn()`` run in ``loop``'s thread (here, if this is it); ``None`` if the run is ``over`` first."""
    if _in_thread_of(loop):
        return fn()
    answer: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        try:
            answer.set_result(fn())
        except BaseException as exc:
            answer.set_exception(exc)

    try:
        loop.call_soon_threadsafe(call)
    except RuntimeError:  # the loop is closed
        return None
    # A loop that ends drops what it had not run: the run's end answers then.
    concurrent.futures.wait([answer, over], return_when=concurrent.futures.FIRST_COMPLETED)
    return answer.result() if answer.done() else None


def _in_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Both:
    """Two ``on_event`` callbacks in one: the caller's, then the handle's."""

    __slots__ = ("first", "second")

    def __init__(self, first: Callable[[Event], None], second: Callable[[Event], None]) -> None:
        self.first = first
        self.second = second

    def __call__(self, event: Event) -> None:
        self.first(event)
        self.second(event)


class _Feed:
    """A run's events for its readers: the last `BACKLOG` of them, and the streams reading them.

    `tap` is the run's ``on_event`` callback (the loop's thread); readers may
    be in any thread. One lock guards it all; `tap` holds it for O(readers).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backlog: deque[Event] = deque(maxlen=BACKLOG)
        self._fell_off = 0  # events no longer in the backlog
        self._streams: list[EventStream] = []
        self._closed = False

    def tap(self, event: Event) -> None:
        with self._lock:
            backlog = self._backlog
            if len(backlog) == BACKLOG:
                self._fell_off += 1
            backlog.append(event)
            for stream in self._streams:
                stream._put(event)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, []
        for stream in streams:
            stream._close()

    def reader(self, buffer: int, graph_id: str) -> EventStream:
        with self._lock:
            stream = EventStream(buffer, graph_id, self._backlog, self._fell_off)
            if self._closed:
                stream._close()
            else:
                self._streams.append(stream)
        return stream


class EventStream:
    """The events of a run, read with ``async for`` or ``for`` (`Run.events`); it ends when the run does.

    Attributes:
        lost: how many events this reader lost, having fallen too far behind.
    """

    def __init__(self, buffer: int, graph_id: str, backlog: deque[Event], fell_off: int) -> None:
        self._buffer = buffer
        self._graph_id = graph_id
        self._events: deque[Event] = deque(list(backlog)[-buffer:])
        self._missed = fell_off + max(0, len(backlog) - buffer)  # lost, not yet reported
        self.lost = self._missed
        self._ended = False
        self._ready = threading.Condition(threading.Lock())
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    # ------------------------------------------------------------------ the feed's side (holding its lock)

    def _put(self, event: Event) -> None:
        with self._ready:
            events = self._events
            if len(events) >= self._buffer:
                events.popleft()
                self._missed += 1
                self.lost += 1
            events.append(event)
            self._ready.notify()
            self._wake()

    def _close(self) -> None:
        with self._ready:
            self._ended = True
            self._ready.notify_all()
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        loop, future = waiter
        if _in_thread_of(loop):
            if not future.done():
                future.set_result(None)
        else:
            loop.call_soon_threadsafe(_resolve, future)

    # ------------------------------------------------------------------ the reader's side

    def _next(self) -> Event | None:
        """The next event, an ``events.lost`` event, or ``None`` if there is none yet. Holding ``_ready``."""
        if self._missed:
            lost = Event("events.lost", self._graph_id, time.monotonic(), total=self._missed, wall=time.time())
            self._missed = 0
            return lost
        if self._events:
            return self._events.popleft()
        return None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            with self._ready:
                event = self._next()
                if event is not None:
                    return event
                if self._ended:
                    raise StopAsyncIteration
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                self._waiter = (loop, future)
            try:
                await future
            finally:
                with self._ready:
                    if self._waiter is not None and self._waiter[1] is future:
                        self._waiter = None

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if _running_loop() is not None:
            msg = "read a run's events with 'async for' in a coroutine: 'for' would block its event loop"
            raise RuntimeError(msg)
        with self._ready:
            while True:
                event = self._next()
                if event is not None:
                    return event
                if self._ended:
                    raise StopIteration
                self._ready.wait()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
