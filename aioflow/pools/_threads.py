"""`run_in_own_thread`: a blocking call awaited from the event loop, in a thread that ends with it.

The pools shut their executors down with it, and `aioflow.Executor` its
own shutdown: a thread from the loop's default executor would outlive the
execution, and the test suite's leak check counts threads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_in_own_thread"]

T = TypeVar("T")


async def run_in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a short-lived thread of its own, without blocking the loop.

    Used for pool shutdown: a thread from the loop's default executor would
    outlive the execution, this one ends with the call. Cancelling the
    awaiting task does not stop the call: it is waited for (shielded), because
    a half-shut pool would leak workers.
    """
    import asyncio  # here: worker processes import the pools' modules, and never need asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def resolve(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(resolve, None, exc)
        else:
            loop.call_soon_threadsafe(resolve, result, None)

    thread = threading.Thread(target=target, name=f"aioflow-{getattr(fn, '__name__', 'call')}", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.shield(future)
        raise
    finally:
        # The thread has posted its result: joining it takes no time.
        thread.join()
