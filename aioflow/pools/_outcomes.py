"""What comes back from a worker process: a task's exception, and the worker's death.

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
as with CPython's ``_RemoteTraceback``.

A worker that dies is `WorkerDied`: its pid and the exit code or signal that
actually ended it, read from that worker's own exit status. Every process
pool fails the dead worker's call with it, and only that call.
"""

from __future__ import annotations

import concurrent.futures
import logging
import pickle
import signal
import traceback
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .._errors import RemoteError

__all__ = [
    "PackedError",
    "RemoteTraceback",
    "WorkerDied",
    "describe_exit",
    "idle_exit_level",
    "pack_error",
    "signal_name",
    "unpack_error",
]


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
