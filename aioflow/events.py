"""Event records: what an execution reports while it runs.

Every execution, on every pool, reports the same events, one `Event` per
step, in order:

``graph.started`` -> (``node.queued`` -> ``node.started`` -> ``node.retried``* ->
``node.finished`` | ``node.failed`` | ``node.cancelled``)* -> ``graph.finished``

- ``node.queued``: a firing is ready (its inputs are there) and waits for
  room in its pool;
- ``node.started``: it is sent to its pool (a worker takes it when one is
  free);
- ``node.retried``: an attempt of the firing failed (``error``) and the
  node's ``retries`` run it again (the ``"aioflow"`` node attribute);
  ``attempt`` counts the attempts;
- ``node.cancelled``: the node was cancelled from outside
  (``run.cancel(node)``): ``error`` is the `aioflow.NodeCancelledError`;
- ``graph.finished``: always the last, however the run ended (``state``);
- ``events.lost``: only in a run handle's event stream, for a reader that
  fell too far behind: how many events it lost (``total``).

Three ways to consume them, from one source: a callback (``on_event=`` of
`aioflow.execute_graph` and `aioflow.execute_graph_async`, called in the
event loop's thread: an exception it raises stops the execution and is
raised to the caller), and the async and sync iterators of a run handle
(``run.events()``, `aioflow.start`). Costs nothing when nobody listens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Event", "EventKind", "RunState"]

EventKind = Literal[
    "graph.started",
    "graph.finished",
    "node.queued",
    "node.started",
    "node.retried",
    "node.finished",
    "node.failed",
    "node.cancelled",
    "events.lost",
]

#: The ``state`` of a ``graph.finished`` event: how the run ended.
RunState = Literal["finished", "failed", "timeout", "cancelled"]

#: The longest `Event.error_summary`, in characters.
SUMMARY_CHARS = 500


@dataclass(frozen=True)
class Event:
    """One step of an execution.

    Attributes:
        kind: what happened.
        graph_id: the graph.
        node_id: the node (``None`` for graph events).
        number: the node's execution number (1 the first time; loops count up).
        time: ``time.monotonic()`` when it happened.
        error: the exception, for ``node.failed``, ``node.cancelled`` and
            ``node.retried`` (`error_summary`: the one line to show).
        total: for ``graph.started``, the number of nodes (loops and
            conditions may run more or fewer).
        worker_pid / worker_host: for the end of a firing and ``node.retried``,
            the process that ran the task, when the pool tells it: this
            process on the ``thread`` and ``gevent`` pools, the worker on the
            other local pools and on ``dask`` (the worker that holds its
            result); ``None`` on ``parsl`` and ``mpi``, for a failed ``dask``
            call, for a firing answered without running (a resumed or cached
            run), and for a call the pool refused or never gave a worker.
        attempt: for node events, the attempt of the firing it is about: 1,
            then 2, 3... as the node's ``retries`` run it again
            (``node.retried`` is about the attempt that failed).
        seq: for node events, the firing's sequence number in the run (0,
            1, 2... in the order the firings were made; each firing of a loop
            has its own), as a journal keeps it (`aioflow.journal.FiringRecord.seq`).
        wall: ``time.time()`` when it happened (for showing; `time` is for
            measuring).
        state: for ``graph.finished``, how the run ended: ``finished``,
            ``failed`` (a node's failure or an error stopped it),
            ``timeout`` or ``cancelled``.
    """

    kind: EventKind
    graph_id: str
    time: float
    node_id: Any = None
    number: int = 0
    error: BaseException | None = field(default=None, repr=False)
    total: int = 0
    worker_pid: int | None = None
    worker_host: str | None = None
    attempt: int = 1
    seq: int = 0
    wall: float = 0.0
    state: RunState | None = None

    @property
    def error_summary(self) -> str | None:
        """``Type: message`` of `error`, on one line and at most `SUMMARY_CHARS` long; ``None`` without an error."""
        error = self.error
        if error is None:
            return None
        text = " ".join(str(error).split())
        line = f"{type(error).__name__}: {text}" if text else type(error).__name__
        return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"


_new = object.__new__


def node_event(
    kind: EventKind,
    graph_id: str,
    time: float,
    node_id: Any,
    number: int,
    error: BaseException | None,
    worker_pid: int | None,
    worker_host: str | None,
    attempt: int = 1,
    seq: int = 0,
    wall: float = 0.0,
) -> Event:
    """A node's `Event`, as ``Event(...)`` makes it, at a third of the cost: the engine makes two per firing.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; this fills the instance's ``__dict__`` at once
    (`Event` has no ``__post_init__`` to run).
    """
    event: Event = _new(Event)
    event.__dict__.update(
        kind=kind, graph_id=graph_id, time=time, node_id=node_id, number=number, error=error, total=0,
        worker_pid=worker_pid, worker_host=worker_host, attempt=attempt, seq=seq, wall=wall, state=None,
    )  # fmt: skip
    return event
