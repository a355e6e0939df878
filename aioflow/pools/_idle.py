"""The idle-worker policy of the scaling pools: the most recently idle worker takes the next call.

A pool that starts workers as calls need them (``scaling_workers``) keeps
the workers it started in a `Workers`, which says which of them are busy and
which are idle, and since when. One rule holds in every pool that uses it:

- a call goes to the worker that became idle last (a stack, as trio's
  thread cache does). A chain of calls, each submitted once the previous one
  has finished, stays on one warm worker, and the workers that a burst
  started and no longer needs stay at the bottom, untouched, so that they
  retire after ``idle_timeout``; a queue (the first idle first) would hand
  the trickle of calls to each of them in turn, and none would ever retire;
- a worker counts as idle from the moment its call has finished, before
  the pool resolves the call's future. A caller who submits the next call
  from the future's done-callback, or once ``result()`` returns, finds it
  idle: no second worker starts for a chain;
- a worker idle for ``idle_timeout`` seconds or more is *expired*: it leaves
  the set and retires (`Workers.expired`, `Workers.next_expiry`); in a pool
  whose workers time their own wait, it retires itself
  (`Workers.leave_if_idle`); in a pool that retires a worker by handing it a
  job, as many retirement jobs go out as workers have expired
  (`Workers.expiry`), each to the least recently idle worker
  (`Workers.take_oldest`).

Who uses it: the ``thread`` pool (`aioflow.pools._thread`: each idle thread
waits on a lock of its own, and ``submit`` wakes the one on top), the
``process`` and ``ndprocess`` pools' dispatcher
(`aioflow.pools._workers.WorkerProcessExecutor`), and the ``billiard`` pool's
switchboard (`aioflow.pools._billiard_internals`), which hands a job to the
most recently idle worker and a retirement job to the least recently idle
one. The ``multiprocessing`` pools cannot use it: a `multiprocessing.Pool`
worker takes its next call from a queue that all its workers read, and
whichever worker's read comes first gets it.

A `Workers` has no lock: the pool guards it with its own. Workers are told
apart by identity (any hashable object).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Workers"]

W = TypeVar("W")


class Workers(Generic[W]):
    """The live workers of one pool, busy or idle; the idle ones in the order they became idle.

    Args:
        idle_timeout: seconds after which an idle worker expires (``None``: never).
    """

    __slots__ = ("_busy", "_idle", "idle_timeout")

    def __init__(self, idle_timeout: float | None = None) -> None:
        self.idle_timeout = idle_timeout
        self._busy: dict[W, None] = {}
        # Worker -> when it became idle; insertion order is that order (the last is on top).
        self._idle: dict[W, float] = {}

    def __len__(self) -> int:
        """How many workers are live, busy and idle."""
        return len(self._busy) + len(self._idle)

    def __iter__(self) -> Iterator[W]:
        """The live workers: the busy ones, then the idle ones from the least recently idle."""
        return iter([*self._busy, *self._idle])

    def __contains__(self, worker: object) -> bool:
        return worker in self._busy or worker in self._idle

    def busy(self) -> list[W]:
        """The workers that have a call (or are starting up)."""
        return list(self._busy)

    @property
    def idle_count(self) -> int:
        """How many live workers have no call."""
        return len(self._idle)

    def add(self, worker: W) -> None:
        """A worker has started: it is live and busy (with its first call, or starting up until `idle`)."""
        self._busy[worker] = None

    def idle(self, worker: W) -> None:
        """``worker`` has finished its call: it goes on top of the idle ones.

        Call it before resolving the call's future (see the module's docstring).
        """
        self._busy.pop(worker, None)
        self._idle.pop(worker, None)
        self._idle[worker] = time.monotonic()

    def take(self) -> W | None:
        """The most recently idle worker, now busy; ``None`` when none is idle."""
        if not self._idle:
            return None
        worker, _ = self._idle.popitem()
        self._busy[worker] = None
        return worker

    def take_oldest(self) -> W | None:
        """The least recently idle worker, now busy; ``None`` when none is idle.

        For a pool that retires a worker by handing it a call of its own
        (billiard's retirement job): the worker that would expire first goes.
        """
        if not self._idle:
            return None
        worker = next(iter(self._idle))
        del self._idle[worker]
        self._busy[worker] = None
        return worker

    def remove(self, worker: W) -> bool:
        """``worker`` leaves the pool (it died, was killed, or retires); whether it was live."""
        if worker in self._busy:
            del self._busy[worker]
            return True
        return self._idle.pop(worker, None) is not None

    def leave_if_idle(self, worker: W) -> bool:
        """``worker`` leaves if it is idle; whether it did.

        For a worker that times its own wait (a thread): when its wait ends
        with no call, it retires only if no caller has taken it meanwhile.
        """
        return self._idle.pop(worker, None) is not None

    def expired(self) -> list[W]:
        """The workers idle for ``idle_timeout`` or longer, least recently idle first: they leave, to retire."""
        if self.idle_timeout is None:
            return []
        limit = time.monotonic() - self.idle_timeout
        leaving = []
        for worker, since in self._idle.items():
            if since > limit:
                break  # the others became idle later still
            leaving.append(worker)
        for worker in leaving:
            del self._idle[worker]
        return leaving

    def expiry(self) -> tuple[int, float | None]:
        """How many idle workers have expired, left idle; and seconds until the next one expires (``None``: none).

        For a pool that retires a worker by handing it a call of its own
        (`take_oldest`): the expired workers stay idle until they take it.
        """
        if self.idle_timeout is None:
            return 0, None
        now = time.monotonic()
        expired = 0
        for since in self._idle.values():
            left = since + self.idle_timeout - now
            if left > 0:
                return expired, left
            expired += 1
        return expired, None

    def next_expiry(self) -> float | None:
        """Seconds until the least recently idle worker expires; ``None`` when none is idle or none expires."""
        if self.idle_timeout is None or not self._idle:
            return None
        oldest = next(iter(self._idle.values()))
        return max(0.0, oldest + self.idle_timeout - time.monotonic())

    def clear(self) -> list[W]:
        """Every live worker, all of which leave (the pool stops)."""
        workers = list(self)
        self._busy.clear()
        self._idle.clear()
        return workers
