"""Calls and futures as the pools and the engine's faces share them: whose call it is, and how it ends.

`Owned` marks a call with the execution it belongs to, so that a pool can
stop one execution's calls alone (or one call: `OneCall`, `owned_by`); `in_place` puts the results a chained
call waited for into its arguments. `settle` and `cancel_queued` end a
`concurrent.futures.Future` from whichever thread learns its outcome, as
an executor's worker would. `note_worker` notes on a call's future which
worker process took it, on this machine or a cluster's (`noted_worker` reads it). A worker process imports this module with its
pool's: it imports nothing but `concurrent.futures`.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "OneCall",
    "Owned",
    "cancel_queued",
    "in_place",
    "note_worker",
    "noted_worker",
    "owned_by",
    "settle",
    "this_host",
]

# The attribute of a call's future that names its worker (`note_worker`).
_WORKER = "_aioflow_worker"

_HOST: list[str] = []


def this_host() -> str:
    """This machine's host name, as a worker's is reported."""
    if not _HOST:
        import socket  # here: a worker process imports this module, and never asks

        _HOST.append(socket.gethostname())
    return _HOST[0]


def note_worker(future: concurrent.futures.Future[Any], pid: int, host: str | None = None) -> None:
    """Note on a call's future the process that took the call: its pid and host (by default, this machine)."""
    setattr(future, _WORKER, (pid, this_host() if host is None else host))


def noted_worker(future: concurrent.futures.Future[Any]) -> tuple[int, str] | None:
    """What `note_worker` noted on ``future``, if anything."""
    worker: tuple[int, str] | None = getattr(future, _WORKER, None)
    return worker


class OneCall:
    """The owner of one call of an execution, so that the call can be stopped alone (a node's timeout).

    Stopping the execution (``parent``) stops it too: see `owned_by`.
    """

    __slots__ = ("parent",)

    def __init__(self, parent: object) -> None:
        self.parent = parent


def owned_by(owner_of_call: object, owner: object) -> bool:
    """Whether a call of ``owner_of_call`` is ``owner``'s: the same owner, or one call (`OneCall`) of it."""
    return owner_of_call is owner or (type(owner_of_call) is OneCall and owner_of_call.parent is owner)


class Owned:
    """A callable submitted on behalf of an owner (an execution), so it can be stopped alone.

    An executor that knows it (the ``process`` pool's, the ``dask`` pool's) unwraps it before
    sending: only ``fn`` travels to the worker.
    """

    __slots__ = ("fn", "owner", "remote")

    def __init__(self, owner: object, fn: Callable[..., Any], *, remote: bool = False) -> None:
        self.owner = owner
        self.fn = fn
        # The result stays on the worker (`Pool.bind_remote`).
        self.remote = remote

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def in_place(args: tuple[Any, ...], positions: tuple[int, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with ``values`` at ``positions``: the results of the calls a chained call waited for, in their places."""
    if not positions:
        return args
    filled = list(args)
    for position, value in zip(positions, values, strict=True):
        filled[position] = value
    return tuple(filled)


def settle(future: concurrent.futures.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Give a future its outcome, unless it was cancelled (or settled by another thread) meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass  # nobody waits for this outcome any more


def cancel_queued(future: concurrent.futures.Future[Any]) -> None:
    """Cancel a call that no worker has taken, so that `concurrent.futures.wait` and ``as_completed`` see it end.

    `Future.cancel` alone leaves the future ``CANCELLED``: the waiters those
    functions install hear of a cancellation only from
    `Future.set_running_or_notify_cancel`, which an executor calls when a
    worker takes the call, and this one never will be. (Only for a future no
    one has called ``set_running_or_notify_cancel`` on yet: a queued call's.)
    """
    if future.cancel():
        future.set_running_or_notify_cancel()
