"""The state of a run as the live web view shows it, fed by events, and pushed to browsers in batches.

Actors and what each owns:

- The run's event-loop thread calls `Feed.on_event` for each event. It
  updates one node's record and the run's totals under the feed's lock, and
  marks the node changed: O(1), whatever the graph's size or the number of
  browsers. On the first change after a batch it calls the feed's ``notify``
  (the server sets it to one ``call_soon_threadsafe``): threads are crossed
  once per batch, never per event.
- The server's loop (its own thread) runs `pump`: woken by ``notify``, it
  waits until `BATCH_INTERVAL` has passed since the last batch, then takes
  every change at once (`Feed.take_changes`, under the lock, in time linear
  in the nodes that changed) and hands the batch to the run's `Channel`.
- The `Channel`, in the server's loop only (no lock), keeps a mirror of the
  state as last published, from which every snapshot is made, and one
  `Subscription` per browser connection.

A subscription holds at most `QUEUE_BOUND` batches. When a browser reads too
slowly and its queue is full, the queue is dropped and the subscription is
marked to get a fresh snapshot instead; nothing more is queued for it until
it has taken that snapshot (made from the mirror at that moment, so newer
than anything dropped). A slow browser thus costs a bounded amount of
memory and nothing at all to the run.

A batch and a snapshot carry the same JSON: ``{"version": N, "run": {...},
"nodes": {key: record}}``; a batch holds the nodes that changed, a snapshot
every node. Records are whole (never differences), so applying one twice, or
a batch older than a snapshot, is harmless.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ...events import Event
    from ...graph import NodeId

__all__ = [
    "BATCH_INTERVAL",
    "NODE_STATES",
    "QUEUE_BOUND",
    "RUN_STATES",
    "Changes",
    "Channel",
    "Feed",
    "Subscription",
    "pump",
]

#: Batches are pushed at most once per this many seconds: ten updates a second look live, and a run of
#: thousands of short tasks costs the browsers ten messages a second, not thousands.
BATCH_INTERVAL = 0.1

#: Batches a browser connection may have waiting (6.4 s of changes at `BATCH_INTERVAL`): past that it is
#: behind for good, and a snapshot (the size of one batch of every node) is cheaper to send than the backlog.
QUEUE_BOUND = 64

#: What a node's box can show.
NODE_STATES = ("pending", "queued", "running", "retried", "finished", "failed", "cancelled")
#: What a run can be in (``timeout``: only as a journal records it).
RUN_STATES = ("running", "finished", "failed", "cancelled", "timeout")


# The end of a firing: the node's state, and the run's count it adds to.
_ENDS = {"node.finished": "finished", "node.failed": "failed", "node.cancelled": "cancelled"}
_COUNTS = {"finished": "done", "failed": "failed", "cancelled": "cancelled"}


@dataclass
class Changes:
    """What changed since the last batch: the run's record (always), and the records of the nodes that changed."""

    run: dict[str, Any]
    nodes: dict[str, dict[str, Any]]


class _Node:
    """One node's state, as the feed keeps it between batches."""

    __slots__ = (
        "attempts", "ended", "exception", "firings", "running", "started", "state", "worker_host", "worker_pid",
    )  # fmt: skip

    def __init__(self) -> None:
        self.state = "pending"
        self.firings = 0
        self.attempts = 0
        self.running = 0  # its firings between node.started and their end
        self.started: float | None = None  # wall-clock time of the first start
        self.ended: float | None = None  # of the last end
        self.worker_pid: int | None = None
        self.worker_host: str | None = None
        self.exception: BaseException | None = None  # formatted when a batch is taken, not in the run's thread

    def record(self) -> dict[str, Any]:
        """The JSON record (the error's text and traceback added by the caller)."""
        started, ended = self.started, self.ended
        return {
            "state": self.state,
            "firings": self.firings,
            "attempts": self.attempts,
            "started": started,
            "ended": ended,
            "duration": ended - started if started is not None and ended is not None and ended >= started else None,
            "worker_pid": self.worker_pid,
            "worker_host": self.worker_host,
            "error": None,
            "traceback": None,
        }


def describe(exception: BaseException) -> tuple[str, str]:
    """An error's one-line summary and its full traceback text (its causes included)."""
    summary = f"{type(exception).__name__}: {exception}" if str(exception) else type(exception).__name__
    return summary, "".join(traceback.format_exception(exception))


class Feed:
    """A run's state for the page, fed by `on_event` (see the module docstring for who calls what, where).

    Args:
        graph_id / label: the graph.
        keys: node id -> the key the page knows it by (`aioflow.observe._ui._drawing.node_keys`).
        wall / monotonic: clocks; events carry ``time.monotonic()`` times, the page wall-clock ones.
    """

    def __init__(
        self,
        graph_id: str,
        label: str,
        keys: Mapping[NodeId, str],
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = dict(keys)
        self._nodes = {key: _Node() for key in self._keys.values()}
        self._offset = wall() - monotonic()  # event time + offset = wall-clock time
        self._wall = wall
        self._lock = threading.Lock()
        self._dirty: set[str] = set(self._nodes)  # the first batch carries every node
        self._pending = True
        self._notify: Callable[[], None] | None = None
        self._run: dict[str, Any] = {
            "graph_id": graph_id,
            "label": label,
            "state": "running",
            "started": None,
            "ended": None,
            "total": len(self._nodes),
            "done": 0,
            "failed": 0,
            "cancelled": 0,
            "running": 0,
            "message": None,
            "cancellable": False,
        }
        self._handlers: dict[str, Callable[[Event], None]] = {
            "graph.started": self._graph_started,
            "graph.finished": self._graph_finished,
            "node.queued": self._node_queued,
            "node.started": self._node_started,
            "node.retried": self._node_retried,
            "node.finished": self._node_ended,
            "node.failed": self._node_ended,
            "node.cancelled": self._node_ended,
        }

    # ------------------------------------------------------------------ the run's thread

    def on_event(self, event: Event) -> None:
        """Take one event into the state; an event of a kind it does not know is ignored. O(1)."""
        handler = self._handlers.get(event.kind)
        if handler is None:
            return
        with self._lock:
            handler(event)
            first = not self._pending
            self._pending = True
        if first:
            self._wake()

    def _wake(self) -> None:
        notify = self._notify
        if notify is not None:
            notify()

    def _node(self, node_id: Any) -> tuple[str, _Node]:
        key = self._keys.get(node_id)
        if key is None:  # a node the graph given did not list: shown in the data, not drawn
            from ._drawing import node_key

            key = self._keys[node_id] = node_key(node_id)
            self._nodes.setdefault(key, _Node())
        self._dirty.add(key)
        return key, self._nodes[key]

    def _wall_time(self, event: Event) -> float:
        return event.wall or event.time + self._offset

    def _ended_count(self) -> int:
        run = self._run
        return int(run["done"] + run["failed"] + run["cancelled"] + run["running"])

    def _graph_started(self, event: Event) -> None:
        run = self._run
        run["started"] = self._wall_time(event)
        run["total"] = max(event.total, self._ended_count())

    def _graph_finished(self, event: Event) -> None:
        # Its state says how the run ended; `end` may add why. Without one, the state stays
        # "running" until `end` says.
        run = self._run
        run["ended"] = self._wall_time(event)
        if event.state in RUN_STATES:
            run.update(state=event.state, cancellable=False)

    def _node_queued(self, event: Event) -> None:
        _, node = self._node(event.node_id)
        if node.running == 0:
            node.state = "queued"

    def _node_started(self, event: Event) -> None:
        _, node = self._node(event.node_id)
        wall = self._wall_time(event)
        if node.started is None:
            node.started = wall
        node.running += 1
        node.state = "running"
        node.firings = max(node.firings, event.number)
        node.attempts = event.attempt
        run = self._run
        run["running"] += 1
        run["total"] = max(run["total"], self._ended_count())

    def _node_retried(self, event: Event) -> None:
        _, node = self._node(event.node_id)
        node.state = "retried"
        node.attempts = event.attempt + 1  # the attempt that failed; the next one runs
        node.exception = event.error

    def _node_ended(self, event: Event) -> None:
        """``node.finished``, ``node.failed``, ``node.cancelled``: the end of a firing."""
        _, node = self._node(event.node_id)
        state = _ENDS[event.kind]
        run = self._run
        if node.running:
            node.running -= 1
            run["running"] -= 1
        elif state == "cancelled" and node.state == "failed":
            return  # the same firing's node.failed came first: counted once
        node.ended = self._wall_time(event)
        node.attempts = event.attempt
        node.firings = max(node.firings, event.number)
        if event.worker_pid is not None:
            node.worker_pid, node.worker_host = event.worker_pid, event.worker_host
        node.exception = event.error if state != "finished" else None
        run[_COUNTS[state]] += 1
        node.state = "running" if node.running else state
        run["total"] = max(run["total"], self._ended_count())

    # ------------------------------------------------------------------ any thread

    def set_notify(self, notify: Callable[[], None] | None) -> None:
        """Call ``notify()`` (from the run's thread) on the first change after each batch; once now if one waits."""
        with self._lock:
            self._notify = notify
            pending = self._pending
        if pending and notify is not None:
            notify()

    def set_cancellable(self, cancellable: bool) -> None:
        """Say whether the page may offer to cancel the run."""
        self._update_run(cancellable=cancellable)

    def note(self, message: str | None) -> None:
        """Show ``message`` beside the run's state (``cancelling...``)."""
        self._update_run(message=message)

    def end(self, state: str, message: str | None = None) -> None:
        """Record how the run ended; its nodes still running or waiting are marked ``cancelled``."""
        if state not in RUN_STATES:
            msg = f"'state' must be one of {', '.join(RUN_STATES)} (got {state!r})"
            raise ValueError(msg)
        with self._lock:
            run = self._run
            run.update(state=state, message=message, cancellable=False, running=0)
            if run["ended"] is None:
                run["ended"] = self._wall()
            for key, node in self._nodes.items():
                if node.running or node.state in ("queued", "retried"):
                    node.running = 0
                    node.state = "cancelled"
                    self._dirty.add(key)
            first = not self._pending
            self._pending = True
        if first:
            self._wake()

    def _update_run(self, **fields: Any) -> None:
        with self._lock:
            self._run.update(fields)
            first = not self._pending
            self._pending = True
        if first:
            self._wake()

    def take_changes(self) -> Changes | None:
        """What changed since the last call (everything, the first time); ``None`` if nothing did."""
        with self._lock:
            if not self._pending:
                return None
            self._pending = False
            dirty, self._dirty = self._dirty, set()
            nodes = self._nodes
            taken = [(key, nodes[key].record(), nodes[key].exception) for key in dirty]
            run = dict(self._run)
        # Tracebacks are formatted here, outside the lock and the run's thread.
        for _, record, exception in taken:
            if exception is not None:
                record["error"], record["traceback"] = describe(exception)
        return Changes(run, {key: record for key, record, _ in taken})


@dataclass
class _Message:
    kind: Literal["snapshot", "batch", "close"]
    data: str


_CLOSE = _Message("close", "")


class Subscription:
    """One browser connection's queue of batches (`QUEUE_BOUND` at most), in the server's loop."""

    def __init__(self, channel: Channel, bound: int) -> None:
        self._channel = channel
        self._bound = bound
        self._items: deque[str] = deque()
        self._wake = asyncio.Event()
        self.needs_snapshot = True  # the first message is always a snapshot
        self.closed = False
        #: How many times the queue was dropped for a snapshot.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def _offer(self, batch: str) -> None:
        if self.needs_snapshot or self.closed:
            return  # the snapshot it will get is newer than this batch
        if len(self._items) >= self._bound:
            self._items.clear()
            self.needs_snapshot = True
            self.dropped += 1
        else:
            self._items.append(batch)
        self._wake.set()

    def _close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next(self, timeout: float | None = None) -> _Message | None:
        """The next message: a snapshot, a batch, or close (after everything queued); ``None`` after ``timeout`` s."""
        while True:
            if self.needs_snapshot:
                self.needs_snapshot = False
                self._items.clear()
                return _Message("snapshot", self._channel.snapshot_text())
            if self._items:
                return _Message("batch", self._items.popleft())
            if self.closed:
                return _CLOSE
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None


class Channel:
    """One run as browsers see it, in the server's loop only: the state last published, and the subscriptions.

    Args:
        initial: the first state (every node).
        bound: the most batches a subscription holds (`QUEUE_BOUND`).
        wall: the clock whose time every message carries (``now``), so that
            the page can show the time elapsed in the server's clock.
    """

    def __init__(self, initial: Changes, *, bound: int = QUEUE_BOUND, wall: Callable[[], float] = time.time) -> None:
        self.version = 0
        self.run: dict[str, Any] = dict(initial.run)
        self.nodes: dict[str, dict[str, Any]] = dict(initial.nodes)
        self._bound = bound
        self._wall = wall
        self.subscriptions: set[Subscription] = set()

    def apply(self, changes: Changes) -> None:
        """Publish a batch: update the mirror, offer the batch to every subscription."""
        self.version += 1
        self.run = changes.run
        self.nodes.update(changes.nodes)
        if not self.subscriptions:
            return
        text = self._encode(changes.run, changes.nodes)
        for subscription in self.subscriptions:
            subscription._offer(text)

    def snapshot(self) -> dict[str, Any]:
        """The whole state, as JSON data."""
        return {"version": self.version, "now": self._wall(), "run": self.run, "nodes": self.nodes}

    def snapshot_text(self) -> str:
        return self._encode(self.run, self.nodes)

    def _encode(self, run: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> str:
        return json.dumps(
            {"version": self.version, "now": self._wall(), "run": run, "nodes": nodes},
            default=repr,
            allow_nan=False,
            separators=(",", ":"),
        )

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self._bound)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def close(self) -> None:
        """Every subscription ends once it has sent what it holds."""
        for subscription in self.subscriptions:
            subscription._close()


async def pump(feed: Feed, channel: Channel, interval: float = BATCH_INTERVAL) -> None:
    """Move the feed's changes to the channel, one batch at most every ``interval`` s. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def notify() -> None:  # in the run's thread
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the server's loop is closed: nobody is watching any more
            pass

    feed.set_notify(notify)
    last = -interval
    try:
        while True:
            await wake.wait()
            wake.clear()
            delay = last + interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last = loop.time()
            flush(feed, channel)
    finally:
        feed.set_notify(None)


def flush(feed: Feed, channel: Channel) -> None:
    """Publish what changed now, without waiting for the next batch (in the server's loop)."""
    changes = feed.take_changes()
    if changes is not None:
        channel.apply(changes)
