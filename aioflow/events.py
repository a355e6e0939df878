"""Event records: what an execution reports while it runs.

Pass ``on_event=callback`` to `aioflow.execute_graph` or
`aioflow.execute_graph_async`; the callback is called in the event loop's
thread, in order, with one `Event` per step:

``graph.started`` -> (``node.started`` -> ``node.retried``* -> ``node.finished`` | ``node.failed``)* -> ``graph.finished``

``node.retried``: an attempt of the firing failed (``error``) and the node's
``retries`` run it again (the ``"aioflow"`` node attribute); ``attempt``
counts the attempts.

Costs nothing when nobody listens. An exception raised by the callback stops
the execution and is raised to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Event", "EventKind"]

EventKind = Literal["graph.started", "graph.finished", "node.started", "node.retried", "node.finished", "node.failed"]


@dataclass(frozen=True)
class Event:
    """One step of an execution.

    Attributes:
        kind: what happened.
        graph_id: the graph.
        node_id: the node (``None`` for graph events).
        number: the node's execution number (1 the first time; loops count up).
        time: ``time.monotonic()`` when it happened.
        error: the exception, for ``node.failed`` and ``node.retried``.
        total: for ``graph.started``, the number of nodes (loops and
            conditions may run more or fewer).
        worker_pid / worker_host: for ``node.finished`` and ``node.failed``,
            the process that ran the task, when the pool tells it: this
            process on the ``thread`` and ``gevent`` pools, the worker on the
            other local pools; ``None`` on the cluster pools, for a firing
            answered without running (a resumed or cached run), and for a
            call the pool refused or never gave a worker.
        attempt: for node events, the attempt of the firing it is about: 1,
            then 2, 3... as the node's ``retries`` run it again
            (``node.retried`` is about the attempt that failed).
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
) -> Event:
    """A node's `Event`, as ``Event(...)`` makes it, at a third of the cost: the engine makes two per firing.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; this fills the instance's ``__dict__`` at once
    (`Event` has no ``__post_init__`` to run).
    """
    event: Event = _new(Event)
    event.__dict__.update(
        kind=kind, graph_id=graph_id, time=time, node_id=node_id, number=number, error=error, total=0,
        worker_pid=worker_pid, worker_host=worker_host, attempt=attempt,
    )  # fmt: skip
    return event
