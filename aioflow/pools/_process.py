"""The ``process`` pool: worker processes that scale, retire when idle, and can be stopped at once.

Data flow: the scheduler's ``run_in_executor`` hands a small task call to
the pool's `aioflow.pools._workers.WorkerProcessExecutor`, whose dispatcher
thread pickles it to an idle worker over that worker's own pipe; the worker
runs it and sends back the outputs (or the exception, with the worker's
traceback as ``__cause__``).

Workers ignore SIGINT: Ctrl-C reaches the whole foreground process group, and
the parent, not each worker, decides what stops. Stopping an execution's
running tasks (timeout, cancellation, Ctrl-C, a failed node) kills the
workers running them together with the processes those tasks started (the
whole tree, via psutil); on a pool no other execution is using, every
worker goes and the pool builds a new executor on next use. A worker that
dies fails only its own task (`aioflow.WorkerLostError` with its pid and
exit code or signal); the other workers carry on.

The workers start with `aioflow.pools._lifecycle.worker_initializer`, whose
docstring says how no process a task starts outlives its worker.
"""

from __future__ import annotations

import multiprocessing
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import OptionError
from ._base import Pool
from ._futures import Owned
from ._workers import WorkerProcessExecutor

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

    from ._options import PoolOptions

T = TypeVar("T")

__all__ = ["ProcessPool"]


class ProcessPool(Pool):
    """Tasks run in worker processes: real parallelism; inputs and outputs are pickled.

    ``pool_options``: ``initializer`` and ``initargs`` (run in each new worker),
    and ``max_tasks_per_child`` (a worker retires after that many calls, for
    tasks that leak memory). As with the stdlib's ``ProcessPoolExecutor``,
    ``max_tasks_per_child`` needs the ``spawn`` or ``forkserver`` start method,
    and makes ``spawn`` the default.
    """

    name = "process"
    uses_processes = True

    def _validate(self, options: PoolOptions) -> None:
        unknown = set(options.extra) - {"initializer", "initargs", "max_tasks_per_child"}
        if unknown:
            raise OptionError(
                "pool_options", "a dict with keys among initializer, initargs, max_tasks_per_child", options.extra
            )
        limit = options.extra.get("max_tasks_per_child")
        if limit is None:
            return
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise OptionError("max_tasks_per_child", "an int >= 1 or None", limit)
        if options.context == "fork":
            raise OptionError(
                "context",
                "'spawn' or 'forkserver' with max_tasks_per_child (as for the stdlib's ProcessPoolExecutor)",
                options.context,
            )

    def _create_executor(self) -> concurrent.futures.Executor:
        extra = dict(self.options.extra)
        # Default (Pool._default_max_workers): one worker per CPU, as the stdlib.
        return WorkerProcessExecutor(
            max_workers=self.capacity,
            mp_context=self._mp_context(),
            initializer=extra.get("initializer"),
            initargs=tuple(extra.get("initargs", ())),
            scaling=self.options.scaling_workers,
            idle_timeout=self.options.idle_timeout,
            max_tasks_per_child=extra.get("max_tasks_per_child"),
        )

    def _start_method(self) -> str | None:
        """The ``context`` option; without one, ``spawn`` when workers retire after ``max_tasks_per_child``."""
        if self.options.context is None and self.options.extra.get("max_tasks_per_child") is not None:
            return "spawn"
        return self.options.context

    def _mp_context(self) -> Any:
        """The multiprocessing context the workers start from (a worker that dies as it starts is a dead worker).

        ``fork`` is the stdlib's: a forked child has no start-up data to die
        reading, and a run on it imports none of the other start methods.
        """
        method = self._start_method() or multiprocessing.get_start_method()
        if method == "fork":
            return multiprocessing.get_context("fork")
        from ._mp_start import start_context

        return start_context(method)

    def bind(self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., T]) -> Callable[..., T]:
        return Owned(owner, fn)

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, WorkerProcessExecutor)
        executor.terminate()

    def _abort_owner(self, executor: concurrent.futures.Executor, owner: object) -> None:
        assert isinstance(executor, WorkerProcessExecutor)
        executor.kill_owner(owner)
