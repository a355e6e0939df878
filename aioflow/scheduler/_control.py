"""Per-node control in a run: which failed attempts run again and when, and which ready firing goes first.

The settings come from the nodes' ``"aioflow"`` attribute over the run's
``node_defaults`` (`aioflow.graph._control`). `RunControl` holds one run's:
it resolves the ``retry_on`` exception classes when the run starts, keeps
the errors of each firing's attempts, and answers the driver
(`aioflow.scheduler._run`): "this attempt failed: does it run again, and
after how long?". `ReadyQueue` is the queue of ready firings of a run
whose nodes have priorities. Neither does I/O or knows asyncio.
"""

from __future__ import annotations

import bisect
import builtins
import importlib
from collections import deque
from typing import TYPE_CHECKING, Any

from .._errors import GraphError, NodeCancelledError, NodeTimeoutError, RemoteError
from ..graph._control import CONTROL_KEY, NodeControl

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from ..graph import Graph, NodeId
    from ._state import Firing

__all__ = ["ReadyQueue", "RunControl"]


class RunControl:
    """One run's per-node control: timeouts, retries and priorities of the nodes that set them.

    Args:
        graph: the graph (for messages).
        controls: node id -> its settings, for the nodes that have any
            (`aioflow.graph._control.node_controls`).

    Raises:
        GraphError: a ``retry_on`` entry cannot be imported here, or is not
            an exception class (each one named, with its node).
    """

    def __init__(self, graph: Graph, controls: Mapping[NodeId, NodeControl]) -> None:
        self.controls = controls
        # Node id -> its timeout, for the nodes that have one (the driver asks per call).
        self.timeout_of: dict[NodeId, float] = {}
        self.retries = False
        self.priorities = False
        self._retry_on: dict[tuple[str, ...], tuple[type[BaseException], ...]] = {}
        problems = []
        for nid, control in controls.items():
            if control.timeout is not None:
                self.timeout_of[nid] = control.timeout
            if control.retries:
                self.retries = True
            if control.priority:
                self.priorities = True
            names = control.retry_on
            if names is None or names in self._retry_on:
                continue
            classes = []
            for name in names:
                try:
                    classes.append(_exception_class(name))
                except (ImportError, AttributeError, TypeError) as exc:
                    problems.append(f"node {nid!r}: {CONTROL_KEY!r}: 'retry_on': {name!r} {exc}")
            self._retry_on[names] = tuple(classes)
        if problems:
            raise GraphError(graph.id, problems)
        self.timeouts = bool(self.timeout_of)
        # Firing order -> the errors of its failed attempts so far: empty while
        # no attempt has failed (every firing's attempt is then 1).
        self.failing: dict[int, list[BaseException]] = {}
        # Node id -> the errors of every failed attempt of its firings (`Results.attempts`).
        self.failed_attempts: dict[NodeId, list[BaseException]] = {}

    def attempt(self, firing: Firing) -> int:
        """The attempt of ``firing`` to be sent next: 1, then 2... after each failed one."""
        errors = self.failing.get(firing.order)
        return 1 if errors is None else len(errors) + 1

    def failed(self, firing: Firing, error: BaseException) -> float | None:
        """An attempt of ``firing`` failed with ``error``: seconds to wait before it runs again, or ``None`` (it fails).

        A failure is retried while the node has retries left and the
        failure is one its ``retry_on`` names (without ``retry_on``: any but
        a timeout); a cancellation never is.
        """
        errors = self.failing.setdefault(firing.order, [])
        errors.append(error)
        self.failed_attempts.setdefault(firing.node_id, []).append(error)
        control = self.controls.get(firing.node_id)
        if control is None or len(errors) > control.retries or not self._retried(control, error):
            return None
        return control.retry_delay.before(len(errors))

    def errors(self, firing: Firing) -> tuple[BaseException, ...]:
        """The errors of ``firing``'s failed attempts, in order; forgotten here (the firing is over)."""
        return tuple(self.failing.pop(firing.order, ()))

    def done(self, firing: Firing) -> None:
        """``firing`` is over (it succeeded, or was answered): forget its attempts."""
        if self.failing:
            self.failing.pop(firing.order, None)

    def _retried(self, control: NodeControl, error: BaseException) -> bool:
        if isinstance(error, NodeCancelledError):
            return False  # cancelled from outside: never run again
        if control.retry_on is None:
            return not isinstance(error, NodeTimeoutError)
        classes = self._retry_on[control.retry_on]
        if isinstance(error, classes):
            return True
        # An exception that could not come back from its worker: by its type's name.
        return isinstance(error, RemoteError) and any(
            error.type_name == f"{c.__module__}.{c.__qualname__}" for c in classes
        )


def _exception_class(name: str) -> type[BaseException]:
    """The exception class an import path names: ``OSError``, ``package.module.Error``, ``package.module:Outer.Error``."""
    if ":" in name:
        module_name, _, path = name.partition(":")
        target: Any = importlib.import_module(module_name)
    elif "." not in name:
        target, path = builtins, name
    else:
        module_name, _, path = name.rpartition(".")
        target = importlib.import_module(module_name)
    for part in path.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, BaseException)):
        msg = f"is not an exception class (it is {target!r})"
        raise TypeError(msg)
    return target


class ReadyQueue:
    """The firings ready to be sent, the highest priority first; among equal ones, first in, first out.

    It stands in for the driver's deque of ready firings (the methods it uses
    of one), for a run whose nodes have priorities: a deque per priority, and
    the priorities present, in order (a graph has few distinct ones: adding
    and taking a firing cost O(1) but for a new priority).
    """

    __slots__ = ("_buckets", "_levels", "_priority", "_size", "_top")

    def __init__(self, control: RunControl) -> None:
        self._priority = {nid: c.priority for nid, c in control.controls.items() if c.priority}
        self._buckets: dict[int, deque[Firing]] = {}
        self._levels: list[int] = []  # the priorities with firings, ascending
        self._size = 0
        self._top: deque[Firing] = deque()  # the bucket of the highest priority (empty: none)

    def _bucket(self, firing: Firing) -> deque[Firing]:
        level = self._priority.get(firing.node_id, 0)
        bucket = self._buckets.get(level)
        if bucket is None:
            bucket = self._buckets[level] = deque()
            bisect.insort(self._levels, level)
            if self._levels[-1] == level:
                self._top = bucket
        return bucket

    def append(self, firing: Firing) -> None:
        self._bucket(firing).append(firing)
        self._size += 1

    def extend(self, firings: Iterable[Firing]) -> None:
        for firing in firings:
            self._bucket(firing).append(firing)
            self._size += 1

    def appendleft(self, firing: Firing) -> None:
        self._bucket(firing).appendleft(firing)
        self._size += 1

    def popleft(self) -> Firing:
        top = self._top
        firing = top.popleft()  # IndexError when empty, as a deque's
        self._size -= 1
        if not top:
            del self._buckets[self._levels.pop()]
            self._top = self._buckets[self._levels[-1]] if self._levels else top
        return firing

    def __getitem__(self, index: int) -> Firing:
        if index != 0 or not self._size:
            raise IndexError(index)
        return self._top[0]

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[Firing]:
        """The firings, in the order they would be sent."""
        return (firing for level in reversed(self._levels) for firing in self._buckets[level])

    def without(self, nid: NodeId) -> ReadyQueue:
        """This queue but the firings of ``nid`` (a cancelled node's)."""
        kept = ReadyQueue.__new__(ReadyQueue)
        kept._priority, kept._buckets, kept._levels, kept._size, kept._top = self._priority, {}, [], 0, deque()
        for firing in self:
            if firing.node_id != nid:
                kept._bucket(firing).append(firing)
                kept._size += 1
        return kept
