"""`shielded`: await cleanup to its end, whatever cancels the awaiting task meanwhile.

The driver's cleanup (stopping the calls still in the pool, closing a pool it
opened, fetching the outputs kept on the workers) must finish even when the
execution is being cancelled: a half-stopped pool leaks workers. The cleanup
runs as a task of its own; the awaiting task absorbs every cancellation that
arrives meanwhile (Ctrl-C's, an enclosing ``asyncio.timeout``'s, an anyio
cancel scope's, which repeats its request until the task leaves the scope)
and raises the first of them once the cleanup is over, so that no
cancellation is lost.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

__all__ = ["shielded"]

T = TypeVar("T")


async def shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in a task of its own, though the awaiting task be cancelled meanwhile.

    Returns what ``coro`` returns, or raises what it raises. If the awaiting
    task was cancelled while it waited, that cancellation is raised once
    ``coro`` is over (with what ``coro`` raised, if anything, as its
    context), except that a ``KeyboardInterrupt`` or ``SystemExit`` raised by
    ``coro`` takes precedence: the caller's handler for them must run.
    """
    inner = asyncio.ensure_future(coro)
    cancelled: asyncio.CancelledError | None = None
    while not inner.done():
        try:
            await asyncio.wait((inner,))
        except asyncio.CancelledError as exc:
            if cancelled is None:
                cancelled = exc
    if cancelled is None:
        return inner.result()
    if not inner.cancelled():
        error = inner.exception()
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise error
        if error is not None and cancelled.__context__ is None:
            cancelled.__context__ = error
    raise cancelled
