"""`WorkerLostError`: a worker process died while it ran a task.

A module of its own because the class is also a
`concurrent.futures.process.BrokenProcessPool` (code written for the stdlib's
process pool catches it unchanged), and the stdlib module that defines that
class imports `multiprocessing`: about 10 ms that ``import aioflow`` and runs
on threads do not pay. ``aioflow.WorkerLostError`` imports it on first use.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._errors import PoolError

__all__ = ["WorkerLostError"]


class WorkerLostError(PoolError, BrokenProcessPool):
    """A worker process died while it ran a task (killed, crashed or exited).

    A `concurrent.futures.process.BrokenProcessPool` (so a
    `concurrent.futures.BrokenExecutor`), as the stdlib raises for the same
    event; unlike the stdlib's pool, only the dead worker's call fails, and
    the pool carries on.

    Every pool sets the same attributes; those it cannot know are ``None``.

    Attributes:
        node_id: the node whose task the worker was running (graph executions).
        pid: the worker's process id.
        exitcode: the worker's exit code, negative for a signal (``-9``).
        signal: the name of the signal that ended the worker (``"SIGKILL"``).
    """

    node_id: Any = None
    pid: int | None = None
    exitcode: int | None = None
    signal: str | None = None

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
