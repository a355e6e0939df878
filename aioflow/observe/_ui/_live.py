"""The live web view of one run in this process: its page, fed by the run's events, and a Cancel button.

::

    with LiveView(graph) as view:                     # serving from now on
        print(view.url)
        results = view.run(aioflow.start, graph, pool_type="process")

`LiveView.run` takes the function that starts a run (``aioflow.start``,
whose handle gives ``cancel()`` and ``result()``) from its caller: this
layer does not import the faces above it. Leaving the block publishes the
last state and stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any, Protocol, Self

from ..._errors import ExecutionTimeoutError
from ._drawing import graph_document, node_keys
from ._feed import BATCH_INTERVAL, QUEUE_BOUND, Channel, Feed, flush, pump
from ._server import KEEPALIVE, SiteError, ViewServer

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from ..._results import Results
    from ...events import Event
    from ...graph import Graph, NodeId

__all__ = ["LiveSite", "LiveView", "RunHandle"]


class RunHandle(Protocol):
    """What `LiveView.run` needs of a run's handle (``aioflow.start(...)`` entered with ``with``)."""

    def cancel(self, node_id: NodeId | None = None) -> bool: ...

    def result(self, timeout: float | None = None) -> Results: ...


class LiveSite:
    """One run, served from its `Feed` (see `aioflow.observe._ui._server.Site`)."""

    mode = "live"

    def __init__(self, graph: Graph, *, bound: int = QUEUE_BOUND, interval: float = BATCH_INTERVAL) -> None:
        keys = node_keys(graph.nodes)
        self.document = graph_document(graph, keys)
        self.feed = Feed(graph.id, graph.label, keys)
        self.channel_: Channel | None = None
        self._bound = bound
        self._interval = interval
        self._pump: asyncio.Task[None] | None = None
        #: The run's ``cancel``, while it can be called (set from the run's caller, read in the server's loop).
        self.canceller: Callable[[], bool] | None = None
        #: Whether the page asked to cancel the run.
        self.cancel_requested = False

    def info(self) -> dict[str, Any]:
        return {"mode": self.mode, "title": self.document["label"]}

    async def start(self) -> None:
        initial = self.feed.take_changes()
        assert initial is not None  # the first call takes every node
        channel = self.channel_ = Channel(initial, bound=self._bound)
        self._pump = asyncio.create_task(pump(self.feed, channel, self._interval), name="aioflow live view pump")

    async def publish(self) -> None:
        flush(self.feed, await self.channel(None))

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        channel = await self.channel(None)
        flush(self.feed, channel)
        channel.close()

    async def runs(self) -> list[dict[str, Any]]:
        raise SiteError(404, "this view shows one run: there is no list of runs")

    async def graph(self, run_id: str | None) -> dict[str, Any]:
        return self.document

    async def channel(self, run_id: str | None) -> Channel:
        assert self.channel_ is not None
        return self.channel_

    async def state(self, run_id: str | None) -> dict[str, Any]:
        return (await self.channel(run_id)).snapshot()

    async def cancel(self, run_id: str | None) -> dict[str, Any]:
        canceller = self.canceller
        if canceller is None or not canceller():
            raise SiteError(409, "there is no running run to cancel: it has not started, or it is over")
        self.cancel_requested = True
        self.feed.note("cancelling...")
        return {"cancelled": True}


def _ending(exc: BaseException, from_page: bool) -> tuple[str, str | None]:
    """The run's final state and message, for the error its ``result()`` raised."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", "cancelled from the live view" if from_page else "cancelled"
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled", "interrupted"
    if isinstance(exc, ExecutionTimeoutError):
        return "timeout", str(exc)
    return "failed", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class LiveView:
    """The live web view of one run of ``graph``, served while the block runs.

    Args:
        graph: the graph the run executes (its nodes are drawn before it starts).
        host / port / token: where to listen and who may look
            (`aioflow.observe._ui._server.ViewServer`).
        keepalive / interval / bound: the event streams' keep-alive period,
            the batch interval and the queue bound (defaults in `_feed`).

    Raises:
        MissingExtraError: Starlette or uvicorn is not installed.
        OptionError: the address cannot be listened on.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        keepalive: float = KEEPALIVE,
        interval: float = BATCH_INTERVAL,
        bound: int = QUEUE_BOUND,
    ) -> None:
        self.site = LiveSite(graph, bound=bound, interval=interval)
        self.server = ViewServer(self.site, host=host, port=port, token=token, keepalive=keepalive)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def feed(self) -> Feed:
        return self.site.feed

    def on_event(self, event: Event) -> None:
        """The callback to pass as ``on_event``: O(1), in the run's thread."""
        self.site.feed.on_event(event)

    def run(
        self,
        start: Callable[..., AbstractContextManager[RunHandle]],
        graph: Any,
        *,
        on_event: Callable[[Event], None] | None = None,
        **options: Any,
    ) -> Results:
        """Run ``graph`` with ``start(graph, on_event=..., **options)``, the page following it; its results.

        The page's Cancel button cancels the run while it goes on. Whatever
        the outcome, the run's end is shown on the page before this returns
        or raises.

        Raises:
            Whatever the run's ``result()`` raises (``asyncio.CancelledError``
            when it was cancelled).
        """
        feed = self.site.feed
        events = feed.on_event if on_event is None else _both(feed.on_event, on_event)
        try:
            with start(graph, on_event=events, **options) as handle:
                self.site.canceller = handle.cancel
                feed.set_cancellable(True)
                try:
                    results = handle.result()
                finally:
                    self.site.canceller = None
        except BaseException as exc:
            feed.end(*_ending(exc, self.site.cancel_requested))
            self.publish()
            raise
        feed.end("failed" if results.errors else "finished")
        self.publish()
        return results

    def publish(self) -> None:
        """Push the changes not yet sent now, without waiting for the next batch."""
        with contextlib.suppress(RuntimeError, TimeoutError):  # the server stopped: nobody to tell
            self.server.call(self.site.publish)

    def end(self, state: str, message: str | None = None) -> None:
        """Show that the run ended so (see `Feed.end`)."""
        self.site.feed.end(state, message)

    def wait_until_interrupted(self) -> None:
        """Keep serving until SIGINT (Ctrl-C); return then. Call from the main thread."""
        import signal

        stopped = threading.Event()

        def on_sigint(signum: int, frame: object) -> None:
            stopped.set()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            while not stopped.wait(0.5):
                pass
        finally:
            signal.signal(signal.SIGINT, previous)

    def close(self) -> None:
        """Publish the last state, end the event streams, stop the server."""
        self.server.stop()

    def __enter__(self) -> Self:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _both(first: Callable[[Event], None], second: Callable[[Event], None]) -> Callable[[Event], None]:
    def on_event(event: Event) -> None:
        first(event)
        second(event)

    return on_event
