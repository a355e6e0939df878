"""`aioflow.Pool`: the pool users hold, as docs/api.md documents it.

A `Pool` owns one `concurrent.futures.Executor`, created on first use, so
that opening a pool is cheap and validation happens before any worker
starts. Its public interface is what `open_pool` returns and users call:
`name`, `options`, `capacity`, `closed`, `executor`, `close`/`aclose`,
`abort`/`aabort`, and ``with``/``async with``. Every other public member
comes from `EngineProtocol` (`aioflow.pools._protocol`), the engine's
private protocol with its pools.

Life cycle and ownership: whoever opens a pool closes it (`Pool.aclose`,
`Pool.close`, or leaving its ``with`` block). `Pool.abort` stops what is
running now (workers are killed or threads interrupted) and leaves the pool
usable: the next submission starts fresh workers.

A pool type subclasses `Pool`: it sets `name`, implements `_create_executor`
and `_abort_running`, and may override `_validate`, `_default_max_workers`
and the engine's side (`EngineProtocol`).
"""

from __future__ import annotations

import abc
import os
from typing import TYPE_CHECKING, ClassVar

from .._errors import PoolClosedError, PoolError
from ._protocol import EngineProtocol
from ._threads import run_in_own_thread

if TYPE_CHECKING:
    import concurrent.futures
    from types import TracebackType

    from ._options import PoolOptions

__all__ = ["Pool"]


class Pool(EngineProtocol, abc.ABC):
    """A named kind of worker pool behind one executor: what `aioflow.open_pool` returns.

    Subclasses set `name`, implement `_create_executor` and `_abort_running`,
    and may override `_validate`.
    """

    #: The ``pool_type`` string users type.
    name: ClassVar[str]

    #: The validated options the pool was opened with.
    options: PoolOptions

    def __init__(self, options: PoolOptions) -> None:
        super().__init__()
        self.options = options
        if self.uses_processes:
            _refuse_under_gevent(self.name)
        self._validate(options)
        self._closed = False

    # -------------------------------------------------------------- for pool types

    def _validate(self, options: PoolOptions) -> None:
        """Raise `OptionError` for options this pool cannot honour."""

    @abc.abstractmethod
    def _create_executor(self) -> concurrent.futures.Executor:
        """Build the executor. Called on first use and after `abort`."""

    @abc.abstractmethod
    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        """Stop every running task of ``executor`` and shut it down. Blocking."""

    def _default_max_workers(self) -> int:
        """The number of workers when ``max_workers`` is not given."""
        return os.cpu_count() or 1

    # -------------------------------------------------------------- public

    @property
    def executor(self) -> concurrent.futures.Executor:
        """The executor tasks are offloaded to (started on first access).

        Raises:
            PoolClosedError: the pool was closed (a `RuntimeError`).
        """
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._closed:
                    raise PoolClosedError(self.name)
                if self._executor is None:
                    self._executor = self._create_executor()
                executor = self._executor
        return executor

    @property
    def closed(self) -> bool:
        """Whether the pool was closed."""
        return self._closed

    @property
    def capacity(self) -> int:
        """How many tasks the pool runs at once: ``max_workers``, or the pool's default."""
        return self.options.max_workers or self._default_max_workers()

    def abort(self, owner: object | None = None) -> None:
        """Stop what is running now; the pool stays usable: the next task starts fresh workers. Blocking.

        ``owner`` is the engine's (`EngineProtocol`): an execution that
        stops its own calls only. Users call it without.
        """
        executor, whole = self._take_for_abort(owner)
        if executor is None:
            return
        if whole:
            self._abort_running(executor)
        else:
            self._abort_owner(executor, owner)

    async def aabort(self, owner: object | None = None) -> None:
        """`abort` without blocking the event loop."""
        executor, whole = self._take_for_abort(owner)
        if executor is None:
            return
        if whole:
            await run_in_own_thread(self._abort_running, executor)
        else:
            await run_in_own_thread(self._abort_owner, executor, owner)

    def close(self) -> None:
        """Wait for the submitted tasks, then stop the workers. Blocking."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """`close` without blocking the event loop."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            await run_in_own_thread(executor.shutdown, True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.abort()
        self.close()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            await self.aabort()
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._executor else "idle")
        return f"<{type(self).__name__} {self.name!r} max_workers={self.options.max_workers} {state}>"


def _refuse_under_gevent(name: str) -> None:
    from .._gevent_bridge import is_patched

    if is_patched():
        msg = (
            f"the {name!r} pool cannot run in a process that gevent has monkey-patched "
            "(multiprocessing's queues and locks hang there); use pool_type='gevent' (the default there) or 'thread'"
        )
        raise PoolError(msg)
