"""The ``thread`` pool: a `concurrent.futures.ThreadPoolExecutor` whose running tasks can be interrupted.

Threads cannot be killed. To stop a running task (timeout, cancellation,
Ctrl-C), the pool raises `TaskInterrupted` inside the thread that runs it
(``PyThreadState_SetAsyncExc``). Python code sees it at its next bytecode, so
a task blocked inside one long C call (``time.sleep(3600)``, a blocking read)
only stops when that call returns. The pool waits `INTERRUPT_GRACE` seconds
for interrupted threads, then gives up on them with a warning naming the
thread; use a process pool when tasks must be stoppable at any moment.

Who owns what: ``_running`` (thread ident -> the owner of the task it runs)
is guarded by ``_running_lock``; an interruption is only ever sent to a
thread in that map, under the lock, and a thread leaving the map clears any
pending one.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import OptionError
from ._base import Pool, PoolOptions

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["INTERRUPT_GRACE", "TaskInterrupted", "ThreadPool"]

T = TypeVar("T")

logger = logging.getLogger("aioflow.pools")

#: Seconds to wait for interrupted threads to finish. Python-level code stops
#: within microseconds; anything longer is stuck in a C call we cannot break.
INTERRUPT_GRACE = 5.0


class TaskInterrupted(BaseException):
    """Raised inside a thread-pool task that the execution no longer waits for.

    A `BaseException`, so that a task's ``except Exception`` does not swallow it.
    """


def _async_raise(ident: int, exc_type: type[BaseException] | None) -> None:
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type else None)


class _InterruptibleThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running: dict[int, object] = {}
        self._running_changed = threading.Condition(threading.Lock())

    def run_owned(self, owner: object, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in this worker thread, recorded as ``owner``'s."""
        ident = threading.get_ident()
        with self._running_changed:
            self._running[ident] = owner
        try:
            return fn(*args)
        finally:
            with self._running_changed:
                self._running.pop(ident, None)
                _async_raise(ident, None)  # clear an interruption that came too late
                self._running_changed.notify_all()

    def interrupt(self, owner: object | None = None) -> list[str]:
        """Interrupt the running tasks of ``owner`` (all when None), wait for them.

        Returns the names of the threads still running one of them after
        `INTERRUPT_GRACE` seconds.
        """

        def busy() -> set[int]:
            return {i for i, o in self._running.items() if owner is None or o is owner}

        with self._running_changed:
            for ident in busy():
                _async_raise(ident, TaskInterrupted)
            self._running_changed.wait_for(lambda: not busy(), timeout=INTERRUPT_GRACE)
            stuck = busy()
        return [t.name for t in list(self._threads) if t.ident in stuck]


class ThreadPool(Pool):
    """Tasks run in threads of this process: no pickling, shared memory, the GIL."""

    name = "thread"

    def _validate(self, options: PoolOptions) -> None:
        if options.context is not None:
            raise OptionError(
                "context", "None for the 'thread' pool (start methods apply to process pools)", options.context
            )

    def _create_executor(self) -> concurrent.futures.Executor:
        # The stdlib's default: enough threads for I/O-bound tasks without
        # oversubscribing small machines.
        max_workers = self.options.max_workers or min(32, (os.cpu_count() or 1) + 4)
        executor = _InterruptibleThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="aioflow-thread", **self.options.extra
        )
        if not self.options.scaling_workers:
            # Start every thread now; by default the executor starts one per
            # submission until max_workers, reusing idle threads first.
            for _ in range(max_workers):
                executor._adjust_thread_count()
        return executor

    def bind(self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., T]) -> Callable[..., T]:
        assert isinstance(executor, _InterruptibleThreadPoolExecutor)
        return functools.partial(executor.run_owned, owner, fn)

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, _InterruptibleThreadPoolExecutor)
        executor.shutdown(wait=False, cancel_futures=True)
        stuck = executor.interrupt()
        _warn_stuck(stuck)
        for thread in list(executor._threads):
            if thread.name not in stuck:
                thread.join(INTERRUPT_GRACE)

    def _abort_owner(self, executor: concurrent.futures.Executor, owner: object) -> None:
        assert isinstance(executor, _InterruptibleThreadPoolExecutor)
        _warn_stuck(executor.interrupt(owner))


def _warn_stuck(names: list[str]) -> None:
    if names:
        logger.warning(
            "thread(s) %s did not stop within %.0f s (a task blocked in a C call); "
            "they finish in the background. Use a process pool for tasks that must be stoppable.",
            ", ".join(names),
            INTERRUPT_GRACE,
        )
