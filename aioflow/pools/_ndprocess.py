"""The ``ndprocess`` pool: the ``process`` pool with workers that are never daemonic.

A daemonic process may not start processes of its own (``multiprocessing``
refuses: "daemonic processes are not allowed to have children"), so a task
that opens a ``multiprocessing.Pool`` or starts a ``multiprocessing.Process``
needs a non-daemonic worker.

On CPython 3.9 and later (checked on 3.11), ``ProcessPoolExecutor`` creates
its workers without a ``daemon`` flag, so they inherit the flag of the
process that creates them: non-daemonic when the pool is opened in the main
process. That is an implementation detail, not a documented promise, and it
did not hold before 3.9 (workers were made daemonic). This pool
makes the guarantee explicit: its executor gets a multiprocessing context
whose ``Process`` class reports ``daemon=False`` and ignores any attempt to set
it, whatever the Python version (`aioflow.pools._mp_start.non_daemonic_context`,
whose processes the ``ndmultiprocessing`` pool's workers are too).

Actors and ownership are those of `ProcessPool`, which this pool inherits
from unchanged: workers ignore SIGINT and exit with their owner
(``_worker_initializer``), and stopping running tasks kills every worker
together with the processes its task started (``kill_process_trees``), then
shuts the executor down. Processes a task starts are the task's to join; if
the task is stopped, they die with its worker.
"""

from __future__ import annotations

from typing import Any

from ._mp_start import non_daemonic_context
from ._process import ProcessPool

__all__ = ["NonDaemonicProcessPool"]


class NonDaemonicProcessPool(ProcessPool):
    """Tasks run in non-daemonic worker processes, so they may start processes and pools of their own."""

    name = "ndprocess"

    def _mp_context(self) -> Any:
        return non_daemonic_context(self._start_method())
