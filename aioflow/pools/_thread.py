"""The ``thread`` pool: a `concurrent.futures.ThreadPoolExecutor` whose running tasks can be interrupted.

Threads cannot be killed. To stop a running task (timeout, cancellation,
Ctrl-C), the pool raises `TaskInterrupted` inside the thread that runs it
(``PyThreadState_SetAsyncExc``). Python code sees it at its next bytecode, so
a task blocked inside one long C call (``time.sleep(3600)``, a blocking read)
only stops when that call returns. The pool waits `INTERRUPT_GRACE` seconds
for interrupted threads, then gives up on them with a warning naming the
thread; use a process pool when tasks must be stoppable at any moment.

Who owns what: ``_running`` (thread ident -> True while it runs a task) is
guarded by ``_running_lock``; an interruption is only ever sent to a thread in
that set, under the lock, and a thread leaving the set clears any pending one.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ._base import Pool, PoolOptions

__all__ = ["INTERRUPT_GRACE", "TaskInterrupted", "ThreadPool"]

logger = logging.getLogger("aioflow.pools")

#: Seconds to wait for interrupted threads to finish. Python-level code stops
#: within microseconds; anything longer is stuck in a C call we cannot break.
INTERRUPT_GRACE = 5.0


class TaskInterrupted(BaseException):  # noqa: N818 - a BaseException, like KeyboardInterrupt
    """Raised inside a thread-pool task that the execution no longer waits for.

    A `BaseException`, so that a task's ``except Exception`` does not swallow it.
    """


def _async_raise(ident: int, exc_type: type[BaseException] | None) -> None:
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type else None)


class _InterruptibleThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running: set[int] = set()
        self._running_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return super().submit(self._tracked, fn, args, kwargs)

    def _tracked(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        ident = threading.get_ident()
        with self._running_lock:
            self._running.add(ident)
        try:
            return fn(*args, **kwargs)
        finally:
            with self._running_lock:
                self._running.discard(ident)
                _async_raise(ident, None)  # clear an interruption that came too late

    def interrupt_running(self) -> list[threading.Thread]:
        """Interrupt every running task; return the threads that were running one."""
        with self._running_lock:
            idents = set(self._running)
            for ident in idents:
                _async_raise(ident, TaskInterrupted)
        return [t for t in list(self._threads) if t.ident in idents]


class ThreadPool(Pool):
    """Tasks run in threads of this process: no pickling, shared memory, the GIL."""

    name = "thread"

    def _validate(self, options: PoolOptions) -> None:
        from .._errors import OptionError

        if options.context is not None:
            raise OptionError("context", "None for the 'thread' pool (start methods apply to process pools)", options.context)

    def _create_executor(self) -> concurrent.futures.Executor:
        # The stdlib's default: enough threads for I/O-bound tasks without
        # oversubscribing small machines.
        max_workers = self.options.max_workers or min(32, (os.cpu_count() or 1) + 4)
        return _InterruptibleThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="aioflow-thread", **self.options.extra
        )

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, _InterruptibleThreadPoolExecutor)
        executor.shutdown(wait=False, cancel_futures=True)
        busy = executor.interrupt_running()
        deadline = time.monotonic() + INTERRUPT_GRACE
        for thread in list(executor._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in busy if t.is_alive()]
        if stuck:
            logger.warning(
                "thread(s) %s did not stop within %.0f s (a task blocked in a C call); "
                "they finish in the background. Use a process pool for tasks that must be stoppable.",
                ", ".join(stuck),
                INTERRUPT_GRACE,
            )
