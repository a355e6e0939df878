"""What comes back from a worker process, and the signals between a pool's parts, none of which reaches a user.

A task's exception is pickled in the worker and rebuilt in the caller. Not
every exception survives that trip: one whose ``__init__`` takes arguments
other than its message cannot be rebuilt from its ``args``, one whose
``__reduce__`` raises cannot be pickled at all, and one whose class the
caller cannot import cannot be unpickled there. The stdlib would then raise
a bare ``TypeError`` about ``__init__`` in the caller, with the task's
exception type, message and traceback gone.

So the worker packs an exception with `pack_error`: beside the pickled
exception it sends its type's qualified name, its message and the worker's
traceback text, and it checks in the worker that the pickle loads back (the
common failures show there, where the class is importable). The caller's
`unpack_error` rebuilds the exception when it can, and otherwise returns a
`aioflow.RemoteError` that keeps all three: the caller always learns what
the task raised, where, and why the exception itself could not come back.
Either way the worker's traceback is the ``__cause__`` (a `RemoteTraceback`),
as with CPython's ``_RemoteTraceback``. A result whose class cannot be
imported here is described by `not_loadable`, and the messages of a worker
that may die in the middle of one are read whole by an `Inbox`.

A worker that dies is `WorkerDied`: its pid and the exit code or signal that
actually ended it, read from that worker's own exit status. Every process
pool fails the dead worker's call with it, and only that call.

The signals. A pool's executor tells the pool what went wrong with a call
through the exceptions below. They are internal: `Pool.translate`, which
``execute_graph`` and `aioflow.Executor` apply to every failed call, turns
each into an error of `aioflow._errors` before it reaches a user.

- `WorkerDied` (the worker running the call died) becomes
  `aioflow.WorkerLostError`, with the worker's pid, exit code and signal;
- `TransferFailed` (the call, or its outcome, could not be pickled or
  unpickled), and `ResultNotLoadable` (a result whose class cannot be
  imported here), become `aioflow.TransferError`;
- `BrokenMultiprocessingPool` and `BrokenBilliardPool` (the pool can start
  no worker, or was stopped before the call finished) become
  `aioflow.WorkerLostError`, and the broken executor is discarded: the next
  call gets a new one;
- `DaskTaskLost` (a Dask worker died while it ran the call, or the cluster
  dropped it) becomes `aioflow.WorkerLostError`, its ``__cause__`` Dask's
  own exception.

`RemoteTraceback` is never raised: it is the ``__cause__`` of the exception
a call raised in a worker, and holds that worker's traceback.
`InterruptTaken` is raised in a thread of the ``thread`` pool only to take a
pending interruption there, and caught at once. Those that
mean the call's worker or pool is gone derive from
`concurrent.futures.BrokenExecutor`.
"""

from __future__ import annotations

# pickle's C half: pickle's own loads and Unpickler (pickle re-exports them),
# without the pure-Python module that a run on threads never needs.
import _pickle as pickle
import concurrent.futures
import contextlib
import io
import logging
import os
import re
import signal
import struct
import traceback
from typing import Any

from .._errors import RemoteError

__all__ = [
    "BrokenBilliardPool",
    "BrokenMultiprocessingPool",
    "DaskTaskLost",
    "Inbox",
    "InterruptTaken",
    "PackedError",
    "RemoteTraceback",
    "ResultNotLoadable",
    "TransferFailed",
    "WorkerDied",
    "describe_exit",
    "idle_exit_level",
    "not_loadable",
    "pack_error",
    "signal_name",
    "unpack_error",
    "unpicklable_type",
]

#: The most a read of a worker's pipe takes at once (a pipe's default capacity).
_READ_SIZE = 1 << 16


class RemoteTraceback(Exception):
    """The worker's traceback text, attached as ``__cause__`` of a call's exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------- a task's exception


class PackedError:
    """A task's exception as it travels from a worker: the pickle, and what to say if it cannot be rebuilt.

    Attributes:
        data: the pickled exception, or ``None`` when it could not be pickled
            (or its pickle did not load back) in the worker.
        type_name: ``module.QualifiedName`` of the exception's type.
        message: ``str()`` of the exception.
        text: the worker's formatted traceback.
        problem: why ``data`` is missing (``TypeError: ...``), or ``""``.
    """

    __slots__ = ("data", "message", "problem", "text", "type_name")

    def __init__(self, data: bytes | None, type_name: str, message: str, text: str, problem: str) -> None:
        self.data = data
        self.type_name = type_name
        self.message = message
        self.text = text
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return PackedError, (self.data, self.type_name, self.message, self.text, self.problem)


def pack_error(exc: BaseException, text: str | None = None) -> PackedError:
    """In a worker: pack ``exc`` (with ``text``, the traceback, or the current one formatted)."""
    if text is None:
        text = "".join(traceback.format_exception(exc))
    # Here, not at the top: the thread pool imports this module, and a thread
    # run imports no multiprocessing.
    from multiprocessing.reduction import ForkingPickler

    data: bytes | None
    try:
        data = bytes(ForkingPickler.dumps(exc))
        pickle.loads(data)  # what the caller will do: fail here, where the reason can still be told
    except BaseException as problem:
        data = None
        reason = _describe(problem)
    else:
        reason = ""
    return PackedError(data, _type_name(type(exc)), _message(exc), text, reason)


def unpack_error(packed: PackedError) -> BaseException:
    """In the caller: the task's exception, or a `aioflow.RemoteError` standing in for it.

    The worker's traceback is the result's ``__cause__``, always: its text holds
    the exception's own chain. (Whether a chain survives pickling depends on the
    process: tblib, which Dask and Parsl install, pickles ``__cause__`` too.)
    """
    problem = packed.problem
    if packed.data is not None:
        try:
            exc = pickle.loads(packed.data)
        except BaseException as error:  # e.g. a class this process cannot import
            problem = _describe(error)
        else:
            if isinstance(exc, BaseException):
                exc.__cause__ = RemoteTraceback(packed.text)
                return exc
            problem = f"it unpickled as a {type(exc).__name__}, not an exception"
    stand_in = RemoteError(packed.type_name, packed.message, packed.text, problem)
    stand_in.__cause__ = RemoteTraceback(packed.text)
    return stand_in


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException as error:  # a __str__ that raises must not lose the exception
        return f"<str() of the exception failed: {_describe(error)}>"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_message(exc)}"


# --------------------------------------------------------------------------- a worker's death

_LIKELY_CAUSES = {
    "SIGKILL": "the out-of-memory killer, or someone killed it",
    "SIGSEGV": "a crash in native code",
    "SIGBUS": "a crash in native code",
    "SIGABRT": "native code aborted",
    "SIGTERM": "someone terminated it",
}


def signal_name(exitcode: int) -> str:
    """The signal behind a negative multiprocessing exit code: ``SIGKILL`` for -9."""
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def describe_exit(pid: int, exitcode: int | None) -> str:
    """``pid 42, killed by SIGKILL (the out-of-memory killer, or someone killed it)``."""
    if exitcode is None:
        return f"pid {pid}, exit status unknown"
    if exitcode < 0:
        name = signal_name(exitcode)
        cause = _LIKELY_CAUSES.get(name)
        return f"pid {pid}, killed by {name}" + (f" ({cause})" if cause else "")
    return f"pid {pid}, exit code {exitcode} (the task called os._exit() or sys.exit() in a worker?)"


#: Signals that stop a process on purpose: a worker they end while idle was stopped, not lost.
_STOP_SIGNALS = frozenset({-signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP})


def idle_exit_level(exitcode: int | None) -> int:
    """The log level for a worker that ended while it ran no call.

    ``logging.INFO`` when a stop signal ended it (SIGTERM, SIGINT or SIGHUP:
    someone stopped it on purpose, e.g. ``kill`` of the whole process group,
    which the program receives too), ``logging.WARNING`` otherwise (SIGKILL
    from the out-of-memory killer, a crash, an exit).
    """
    return logging.INFO if exitcode in _STOP_SIGNALS else logging.WARNING


class WorkerDied(concurrent.futures.BrokenExecutor):
    """The worker process running a call died. The executor itself is still usable.

    Attributes:
        pid: the worker's process id.
        exitcode: its exit code, negative for a signal (``-9``: SIGKILL), or
            ``None`` if it could not be read.
        detail: ``pid 42, killed by SIGKILL (...)``.
    """

    def __init__(self, pid: int, exitcode: int | None) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.detail = describe_exit(pid, exitcode)
        super().__init__(f"the worker process running the call died: {self.detail}")

    @property
    def signal(self) -> str | None:
        """The name of the signal that killed the worker (``"SIGKILL"``), or ``None``."""
        return signal_name(self.exitcode) if self.exitcode is not None and self.exitcode < 0 else None

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.pid, self.exitcode)


# --------------------------------------------------------------------------- what a pool's parts tell the pool


class TransferFailed(Exception):
    """A call, or its outcome, could not be pickled or unpickled on its way between processes.

    The form a pool's executor gives it; `Pool.translate` turns it into an
    `aioflow.TransferError` that names the call. Its ``__cause__`` is the
    pickling error (whatever the failing ``__reduce__`` raised, ``SystemExit``
    included: it never reaches the caller as such).

    Attributes:
        type_name: the type of the value that failed (``"?"`` when unknown).
        detail: what failed, and how.
    """

    def __init__(self, type_name: str, detail: str) -> None:
        super().__init__(detail)
        self.type_name = type_name
        self.detail = detail

    @classmethod
    def wrapping(cls, what: str, error: BaseException) -> TransferFailed:
        """``what`` (``the call could not be unpickled in the worker``) failed with ``error``."""
        failed = cls(unpicklable_type(error) or "?", f"{what}: {type(error).__name__}: {error}")
        failed.__cause__ = error
        return failed

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.type_name, self.detail)


class ResultNotLoadable(TransferFailed):
    """A call's result reached this process but cannot be unpickled here (its class cannot be imported)."""

    def __init__(self, type_name: str, detail: str) -> None:
        super().__init__(type_name, detail)
        self.args = (f"the call's result, of type {type_name!r}, cannot be loaded in the calling process: {detail}",)


class BrokenMultiprocessingPool(concurrent.futures.BrokenExecutor):
    """The ``multiprocessing`` pool cannot start workers, or was stopped, before a call finished."""


class BrokenBilliardPool(concurrent.futures.BrokenExecutor):
    """The billiard pool can no longer run jobs (its workers die before taking any), or was stopped."""


class InterruptTaken(BaseException):
    """What the ``thread`` pool sends its own thread to take a pending asynchronous exception; caught there at once.

    See ``aioflow.pools._thread._consume_async_exc``.
    """


class DaskTaskLost(concurrent.futures.BrokenExecutor):
    """A call's worker died (`distributed.KilledWorker`) or the cluster dropped the call.

    The pool turns it into `aioflow.WorkerLostError`; its ``__cause__`` is
    Dask's own exception.
    """


# "cannot pickle '_thread.lock' object", "Can't pickle <function <lambda> ...>",
# "Can't pickle local object 'f.<locals>.g'" (compiled by `re` on first use, and cached)
_PICKLE_TYPE = r"[Cc]an(?:not|'t) pickle (?:local object )?'?<?([\w.<>]+)"


def unpicklable_type(exc: BaseException) -> str | None:
    """The type named by a pickling failure (``cannot pickle 'X' object``), or None."""
    if not isinstance(exc, (pickle.PicklingError, TypeError, AttributeError)):
        return None
    text = str(exc)
    match = re.search(_PICKLE_TYPE, text)
    if match:
        return match.group(1)
    if "pickle" in text.lower():
        return "?"
    return None


def not_loadable(data: bytes, error: BaseException) -> ResultNotLoadable:
    """What to say of an outcome that cannot be unpickled here: the class it names that cannot be imported."""
    tracer = _GlobalTracer(io.BytesIO(data))
    with contextlib.suppress(Exception):
        tracer.load()
    detail = f"its class cannot be imported in the calling process ({type(error).__name__}: {error})"
    return ResultNotLoadable(tracer.missing or "?", detail)


class _GlobalTracer(pickle.Unpickler):
    """Loads a pickle and keeps the first global (``module.name``) it could not find."""

    missing: str | None = None

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except Exception:
            if self.missing is None:
                self.missing = f"{module}.{name}"
            raise


# --------------------------------------------------------------------------- a worker's messages, whole


class Inbox:
    """The whole messages a worker's pipe holds, read without ever blocking.

    A worker killed in the middle of a message leaves half of it: a blocking
    read would wait for the rest, forever if a process the task started still
    holds the pipe open. Messages are framed as `Connection.send_bytes` frames
    them (multiprocessing's and billiard's alike): a big-endian ``int32``
    length, or ``-1`` then an ``uint64`` one.
    """

    __slots__ = ("_buffer", "eof", "fd")

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._buffer = bytearray()
        self.eof = False  # the worker's end is closed: nothing more will come

    def receive(self) -> list[bytes]:
        """Read what the pipe holds now; return the messages completed."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
            self._buffer += chunk
        return self._whole_messages()

    def _whole_messages(self) -> list[bytes]:
        buffer = self._buffer
        messages = []
        start = 0
        while len(buffer) - start >= 4:
            (size,) = struct.unpack_from("!i", buffer, start)
            head = 4
            if size == -1:
                if len(buffer) - start < 12:
                    break
                (size,) = struct.unpack_from("!Q", buffer, start + 4)
                head = 12
            if len(buffer) - start - head < size:
                break
            messages.append(bytes(buffer[start + head : start + head + size]))
            start += head + size
        del buffer[:start]
        return messages
