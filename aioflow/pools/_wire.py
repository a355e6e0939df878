"""What travels between a process pool and its workers, written once for every process pool.

The ``process``, ``ndprocess``, ``multiprocessing``, ``ndmultiprocessing``
and ``billiard`` pools each move calls to worker processes in their own way
(a pipe per worker, `multiprocessing.Pool`'s task queue, billiard's jobs),
but what a worker sends back is the same for all (what its process is, and
how it starts, is `aioflow.pools._mp_start`'s):

- `dump_outcome`: a call's outcome as its worker sends it, ``(*head, ok,
  value)`` pickled. ``head`` is what the pool's messages carry before it (a
  job id); ``value`` is the call's result, or its exception packed by
  `aioflow.pools._outcomes.pack_error` (type, message and the worker's
  traceback travel beside it, and the caller gets an `aioflow.RemoteError`
  standing in for an exception that cannot come back). A result that cannot
  be pickled is sent as its pickling error, packed: whatever the failing
  ``__reduce__`` raised, ``SystemExit`` included, never ends the worker, and
  the pool turns it into `aioflow.TransferError` (`Pool.translate`). The
  caller reads it with `pickle.loads` and `aioflow.pools._outcomes.unpack_error`.
- `dump_call` and `load_call`: a call's function and arguments, on their way
  to the worker; `Sealed`: a call pickled ahead of time, for a pool whose own machinery
  pickles its jobs: the worker gets bytes, which it loads itself once it has
  said that it took the call. A call it cannot load fails that call alone.
- `clarify_daemonic`: a daemonic worker's task that starts a
  ``multiprocessing`` process fails with the stdlib's terse assertion
  ("daemonic processes are not allowed to have children"); the worker sends
  instead an error that says so and names the pools whose workers may.

Pickles are made with `ForkingPickler` (multiprocessing's reducers: a
task's pipes and shared memory travel as the stdlib sends them), at the
highest protocol.
"""

from __future__ import annotations

import io
import pickle
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from ._outcomes import pack_error

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DAEMONIC_ASSERTION",
    "Sealed",
    "clarify_daemonic",
    "dump_call",
    "dump_outcome",
    "dumps",
    "load_call",
]


def dumps(obj: Any) -> bytes:
    """``obj`` pickled as every process pool sends it (no copy of the pickle is made)."""
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


# --------------------------------------------------------------------------- in a worker


def dump_outcome(head: tuple[Any, ...], ok: bool, value: Any) -> bytes:
    """A call's outcome as its worker sends it: ``(*head, True, result)`` or ``(*head, False, packed exception)``.

    Args:
        head: what the pool's message carries first (a job id; ``()``: nothing).
        ok: whether ``value`` is the call's result (``True``) or the exception it raised.
        value: the result, or the exception.
    """
    if ok:
        try:
            return dumps((*head, True, value))
        except BaseException as exc:  # the result cannot be pickled; SystemExit too: the worker carries on
            value = exc
    return dumps((*head, False, pack_error(value)))


class Sealed:
    """A call's function and arguments, pickled as the bytes of their own pickle.

    A pool whose machinery pickles each job (billiard's task thread,
    `multiprocessing.Pool`'s) sends the call inside it as bytes: the worker
    takes the job at once, says so, and only then loads the call
    (`load_call`). A call it cannot load (a module that fails to import, an
    input that runs out of memory) then fails that call, reported as taken,
    instead of killing or confusing the pool's own worker loop.
    """

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __reduce__(self) -> tuple[Any, ...]:
        return bytes, (dump_call(self.fn, self.args, self.kwargs),)


def dump_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """A call as a worker receives it (`load_call` reads it)."""
    return dumps((fn, args, kwargs))


def load_call(data: bytes) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """In the worker: the function and arguments of a call made by `dump_call`, or carried by a `Sealed`."""
    fn, args, kwargs = pickle.loads(data)
    return fn, args, kwargs


#: The message of the assertion `multiprocessing.Process.start` raises in a daemonic process.
DAEMONIC_ASSERTION = "daemonic processes are not allowed to have children"

#: Per daemonic pool: what a task there tried to start, and what does work there.
_DAEMONIC_POOLS = {
    "multiprocessing": ("a process", ""),
    "billiard": ("a multiprocessing process", "billiard processes and pools work there, and for multiprocessing ones "),
}


def clarify_daemonic(exc: BaseException, pool_name: str) -> BaseException:
    """``exc``, or, for the stdlib's assertion about daemonic processes, an error that says what to do.

    Args:
        exc: what a task raised in a daemonic worker of the ``pool_name`` pool.
        pool_name: ``multiprocessing`` or ``billiard``.

    Returns:
        a `RuntimeError` naming the pools whose workers may start processes,
        its ``__cause__`` the assertion; any other exception as it is.
    """
    if not (isinstance(exc, AssertionError) and DAEMONIC_ASSERTION in str(exc)):
        return exc
    started, works = _DAEMONIC_POOLS[pool_name]
    msg = (
        f"a task tried to start {started}, but the workers of the {pool_name!r} pool are daemonic "
        f"({DAEMONIC_ASSERTION}); {works}run the graph with pool_type 'ndmultiprocessing', 'ndprocess' "
        "or 'process', whose workers may start processes and pools"
    )
    clear = RuntimeError(msg)
    clear.__cause__ = exc
    return clear
