"""The pause of the cyclic garbage collector that loading holds while it builds a graph.

Loading allocates millions of small containers (dicts, lists, tuples, records)
and frees almost none of them: each automatic collection rescans everything
allocated so far and finds nothing to collect. With the collector running,
loading the benchmarks' large graphs (a 100,000-node chain, a 100,000-node
random DAG, the 990,000-link lattice) takes about twice as long.

The collector has one switch for the whole process (`gc.disable`), so the
pause is process-wide too. While a load holds it, what other threads see:

- no allocation, in any thread, starts an automatic collection; an explicit
  `gc.collect()` still runs;
- loads running at the same time in several threads share one pause: the
  first to enter turns the collector off, the last to leave turns it back on,
  and only if it was on when the first entered, so the collector comes back
  as the caller left it, and never on while a load is still running;
- a `gc.disable()` that other code calls while a pause is held is undone
  when the pause ends (if the collector was on when the pause began), and a
  `gc.enable()` ends the pause early (loading is then only slower): the gc
  module keeps no count of who turned it off, so a pause cannot tell such
  calls from its own.

Imports: nothing of aioflow.
"""

from __future__ import annotations

import gc
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["COLLECTOR_PAUSE", "CollectorPause"]


class CollectorPause:
    """A context manager that keeps the cyclic garbage collector off while any holder is inside it.

    Reentrant and thread-safe: holders are counted under a lock, and the
    collector is switched only by the first to enter and the last to leave,
    whatever the order in which holders leave and whether they leave by an
    exception.
    """

    __slots__ = ("_holders", "_lock", "_resume")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        # Whether the collector was on when the first holder entered.
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if not self._holders:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with self._lock:
            self._holders -= 1
            if not self._holders and self._resume:
                gc.enable()


#: The pause every `load_graph` holds: one for the process, as the collector is one.
COLLECTOR_PAUSE = CollectorPause()
