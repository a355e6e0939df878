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
it, whatever the Python version.

Actors and ownership are those of `ProcessPool`, which this pool inherits
from unchanged: workers ignore SIGINT and exit with their owner
(``_worker_initializer``), and stopping running tasks kills every worker
together with the processes its task started (``kill_process_trees``), then
shuts the executor down. Processes a task starts are the task's to join; if
the task is stopped, they die with its worker.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import sys
from typing import Any

from ._mp_internals import ForkServerProcess, SpawnProcess
from ._process import ProcessPool

__all__ = ["NonDaemonicProcessPool", "non_daemonic_context"]


class _NonDaemonic:
    """Mixin for a ``multiprocessing`` process class: the process is never daemonic."""

    _config: dict[str, Any]

    @property
    def daemon(self) -> bool:
        """Always ``False``."""
        return False

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        # Ignored on purpose: a daemonic worker could not start the processes
        # its tasks need. ``_config`` is what the child process inherits.
        self._config["daemon"] = False


class NonDaemonicSpawnProcess(_NonDaemonic, SpawnProcess):
    """A spawned process that is never daemonic (importable by name: spawned children unpickle it)."""


class _NonDaemonicSpawnContext(multiprocessing.context.SpawnContext):
    Process = NonDaemonicSpawnProcess


_CONTEXTS: dict[str, multiprocessing.context.BaseContext] = {"spawn": _NonDaemonicSpawnContext()}

if sys.platform != "win32":

    class NonDaemonicForkProcess(_NonDaemonic, multiprocessing.context.ForkProcess):
        """A forked process that is never daemonic."""

    class NonDaemonicForkServerProcess(_NonDaemonic, ForkServerProcess):
        """A process started by the fork server that is never daemonic (the server unpickles it)."""

    class _NonDaemonicForkContext(multiprocessing.context.ForkContext):
        Process = NonDaemonicForkProcess

    class _NonDaemonicForkServerContext(multiprocessing.context.ForkServerContext):
        Process = NonDaemonicForkServerProcess

    _CONTEXTS["fork"] = _NonDaemonicForkContext()
    _CONTEXTS["forkserver"] = _NonDaemonicForkServerContext()


def non_daemonic_context(method: str | None = None) -> multiprocessing.context.BaseContext:
    """The multiprocessing context of start method ``method`` whose processes are never daemonic.

    Args:
        method: ``spawn``, ``fork`` or ``forkserver``; ``None``: the platform default.

    Raises:
        ValueError: the start method is not available here.
    """
    name = method or multiprocessing.get_start_method()
    try:
        return _CONTEXTS[name]
    except KeyError:
        msg = f"cannot find context for {name!r}"
        raise ValueError(msg) from None


class NonDaemonicProcessPool(ProcessPool):
    """Tasks run in non-daemonic worker processes, so they may start processes and pools of their own."""

    name = "ndprocess"

    def _mp_context(self) -> Any:
        return non_daemonic_context(self._start_method())
