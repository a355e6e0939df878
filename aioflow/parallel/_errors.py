"""The errors and the warning only `aioflow.parallel` raises.

They sit in the tree of `aioflow._errors`::

    AioflowError
    ├── SerialExecutionError (RuntimeError)     a parallel map would run in this process, one item at a time
    └── TransferError (TypeError)
        └── UnsendableFunctionError             the mapped function cannot be sent to a worker process

Both pickle round-trip (``AioflowError.__reduce__`` replays the keyword fields).
"""

from __future__ import annotations

from .._errors import AioflowError, TransferError

__all__ = ["SerialExecutionError", "SerialExecutionWarning", "UnsendableFunctionError"]

# What to tell users who do want the serial run.
_RUN_ANYWAY = "pass if_serial='warn' or if_serial='ignore' to run it in this process anyway"


class SerialExecutionError(AioflowError, RuntimeError):
    """A parallel map would run serially (one worker, one item, or already inside a worker), with ``if_serial='raise'``.

    Attributes:
        function: the mapped function's name.
        reason: why the run would be serial.
        advice: what gives a parallel run.
    """

    function: str
    reason: str
    advice: str

    def __init__(self, function: str, reason: str, advice: str) -> None:
        msg = f"aioflow.parallel: mapping {function} would run in serial: {reason}; {advice}, or {_RUN_ANYWAY}"
        super().__init__(msg, function=function, reason=reason, advice=advice)


class SerialExecutionWarning(UserWarning):
    """A parallel map runs serially in this process (``if_serial='warn'``)."""


class UnsendableFunctionError(TransferError):
    """The mapped function cannot be pickled, even by value (cloudpickle), so no worker process can run it.

    Attributes:
        function: the function's qualified name.
        detail: the pickling error.
    """

    function: str

    def __init__(self, function: str, detail: str) -> None:
        msg = (
            f"aioflow.parallel: the function {function} cannot be sent to a worker process ({detail}); "
            "define it at module level, without references to locks, open files or other unpicklable objects, "
            "or use a thread backend: aioflow.parallel.set_parallel_backend('thread')"
        )
        AioflowError.__init__(self, msg, function=function, detail=detail, where=function, type_name="function")
