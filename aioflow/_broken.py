"""`InitializerFailed`: a pool's initializer raised, so the pool cannot start workers.

A module of its own because the class is also a
`concurrent.futures.BrokenExecutor` (code written for the stdlib's
executors catches it unchanged), and ``concurrent.futures`` imports
``logging`` and ``traceback``: 3.5 ms that ``import aioflow`` does not pay.
``aioflow.InitializerFailed`` imports it on first use; the pools, which
import ``concurrent.futures`` anyway, import it at once.
"""

from __future__ import annotations

import concurrent.futures

from ._errors import PoolError

__all__ = ["InitializerFailed"]


class InitializerFailed(PoolError, concurrent.futures.BrokenExecutor):
    """The ``initializer`` of ``pool_options`` raised in a new worker: the pool cannot start workers.

    A `concurrent.futures.BrokenExecutor`, as the standard library's
    executors raise when their initializer fails. Its ``__cause__`` is the
    initializer's exception.
    """

    @classmethod
    def caused_by(cls, message: str, cause: BaseException | None) -> InitializerFailed:
        """A new instance for one call (each raise gets its own traceback), with ``cause`` as ``__cause__``."""
        error = cls(message)
        error.__cause__ = cause
        return error
