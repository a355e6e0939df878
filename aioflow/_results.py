"""What an execution returns: the selected outputs, plus the errors that happened."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MISSING", "MissingType", "Results"]


class MissingType:
    """The type of `MISSING`: an output or input that has no value.

    Falsy, equal only to itself, and a singleton across pickling (so it keeps
    its identity when it comes back from a worker process).
    """

    _instance: MissingType | None = None

    def __new__(cls) -> MissingType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


#: An output the node never set, or an input that nothing provided.
MISSING: Final = MissingType()


class Results(dict[Any, Any]):
    """The return value of an execution: a plain ``dict`` of the selected outputs.

    It is exactly what ``outputs=``/``merge_outputs=`` select (see the graph
    format docs), with two extra attributes:

    Attributes:
        errors: node id -> the exception of every node that failed without an
            ``on_error`` handler. Empty when everything succeeded.
        executions: node id -> how many times the node ran (loops run a node
            more than once; nodes that never ran are absent).
        attempts: node id -> the error of every failed attempt of the node's
            firings, in order, for the nodes that had one and have
            ``retries`` (the ``"aioflow"`` node attribute), whether a later
            attempt succeeded or not. Empty otherwise.
    """

    errors: dict[Any, BaseException]
    executions: dict[Any, int]
    attempts: dict[Any, tuple[BaseException, ...]]

    def __init__(
        self,
        data: dict[Any, Any] | None = None,
        *,
        errors: dict[Any, BaseException] | None = None,
        executions: dict[Any, int] | None = None,
        attempts: dict[Any, tuple[BaseException, ...]] | None = None,
    ) -> None:
        super().__init__(data or {})
        self.errors = dict(errors or {})
        self.executions = dict(executions or {})
        self.attempts = dict(attempts or {})

    @property
    def failed(self) -> bool:
        """Whether some node failed without an ``on_error`` handler."""
        return bool(self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            Results,
            (dict(self),),
            {"errors": self.errors, "executions": self.executions, "attempts": self.attempts},
        )

    def __repr__(self) -> str:
        base = dict.__repr__(self)
        if self.errors:
            failed = ", ".join(repr(n) for n in self.errors)
            return f"Results({base}, failed=[{failed}])"
        return f"Results({base})"
