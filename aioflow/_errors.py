"""Every exception aioflow raises, in one place.

The tree::

    AioflowError
    ├── GraphError (ValueError)            a graph could not be loaded, validated or run as written
    ├── OptionError (ValueError)           an execution or pool option is invalid
    ├── MissingExtraError (ImportError)    an optional package is not installed
    ├── JournalError                       a run journal file cannot be used (not a journal, another version, corrupt)
    ├── TaskInputError (TypeError)         a task was called without a required input (raised in the worker)
    ├── TransferError (TypeError, pickle.PicklingError)   a task, its inputs or outputs cannot be sent to or from a worker process
    │   └── UnsendableFunctionError        aioflow.parallel: the mapped function cannot be sent to a worker
    ├── RemoteError                        stands in for a task's exception that could not be sent back from its worker
    ├── DependencyError                    an Executor call did not run: a future it was given failed
    ├── SerialExecutionError (RuntimeError)   aioflow.parallel: a map would run serially, with if_serial="raise"
    ├── ExecutionError                     an execution stopped before its end; carries ``.results``
    │   ├── NodeError                      a node's task raised; the task's exception is ``__cause__``
    │   ├── ExecutionTimeoutError (TimeoutError)
    │   └── IterationLimitError (RuntimeError)   a loop exceeded ``max_iterations``
    └── PoolError
        ├── PoolClosedError (RuntimeError)  a closed pool was used
        ├── InitializerFailed (concurrent.futures.BrokenExecutor)   a pool's initializer raised: it cannot start workers
        └── WorkerLostError (concurrent.futures.process.BrokenProcessPool)   a worker process died

    TaskInterrupted (BaseException)        raised inside a ``thread`` pool task that is being stopped

`TaskInterrupted` is not an `AioflowError`, nor an `Exception`: a task that
catches ``Exception`` must not swallow it, as it does not swallow
``KeyboardInterrupt``. Inside the pools, their parts signal each other with
exceptions of their own (`aioflow.pools._outcomes`); `Pool.translate` turns
each into one of the classes above before it can reach a user.

Every class pickles round-trip (errors cross process boundaries): the keyword
fields given to ``__init__`` are kept and replayed by ``__reduce__``.

Where the standard library has an exception for the same failure, aioflow's
is also an instance of it, so that code written for `concurrent.futures`
catches aioflow's errors unchanged: a value that cannot be pickled is a
`pickle.PicklingError`, a worker that died a ``BrokenProcessPool``.
`InitializerFailed` lives in `aioflow._broken` and `WorkerLostError` in
`aioflow._lost`, each imported on first use
(``aioflow.WorkerLostError`` is lazy): the stdlib module that defines
``BrokenProcessPool`` imports `multiprocessing`, which runs on threads and
``import aioflow`` do not need.
"""

from __future__ import annotations

# pickle's C half defines the same PicklingError as pickle (which re-exports
# it), without the pure-Python module that a run on threads never needs.
from _pickle import PicklingError
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._results import Results

__all__ = [
    "AioflowError",
    "DependencyError",
    "ExecutionError",
    "ExecutionTimeoutError",
    "GraphError",
    "GraphvizError",
    "GraphvizNotFoundError",
    "IterationLimitError",
    "JournalError",
    "MissingExtraError",
    "NodeCancelledError",
    "NodeError",
    "NodeTimeoutError",
    "OptionError",
    "PoolClosedError",
    "PoolError",
    "RemoteError",
    "SerialExecutionError",
    "SerialExecutionWarning",
    "TaskInputError",
    "TaskInterrupted",
    "TransferError",
    "UnsendableFunctionError",
]


def format_node_id(node_id: object) -> str:
    """The way messages show a node id: ``'a'``, ``3`` or ``('sub', 'a')``."""
    return repr(node_id)


class AioflowError(Exception):
    """Base class of every aioflow error."""

    # The keyword arguments __init__ was called with, replayed by __reduce__.
    _fields: dict[str, Any]

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self._fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._fields), self.__dict__)


def _rebuild(cls: type[AioflowError], message: str, fields: dict[str, Any]) -> AioflowError:
    err = cls.__new__(cls)
    AioflowError.__init__(err, message, **fields)
    return err


class GraphError(AioflowError, ValueError):
    """A graph could not be loaded, validated or executed as written.

    Attributes:
        graph_id: the graph's id (or its source, when the id is not known yet).
        problems: every problem found, one line each.
    """

    graph_id: str
    problems: tuple[str, ...]

    def __init__(self, graph_id: str, problems: Iterable[str]) -> None:
        problems = tuple(problems)
        if len(problems) == 1:
            msg = f"graph {graph_id!r}: {problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            msg = f"graph {graph_id!r}: {len(problems)} problems:\n{lines}"
        super().__init__(msg, graph_id=graph_id, problems=problems)


class OptionError(AioflowError, ValueError):
    """An option has a value it cannot take, e.g. ``'scaling_workers' must be True or False (got 1 of type int)``.

    ``message`` replaces the usual wording where users expect another (the
    stdlib's ``max_workers must be greater than 0``).
    """

    def __init__(self, option: str, expected: str, got: object, message: str | None = None) -> None:
        msg = message or f"{option!r} must be {expected} (got {got!r} of type {type(got).__name__})"
        super().__init__(msg, option=option, expected=expected, got=got)


class MissingExtraError(AioflowError, ImportError):
    """An optional package is needed for what was asked and is not installed."""

    def __init__(self, what: str, package: str, extra: str) -> None:
        msg = f"{what} needs the {package!r} package: pip install 'aioflow[{extra}]'"
        super().__init__(msg, what=what, package=package, extra=extra)


class JournalError(AioflowError):
    """A run journal cannot be used: not a journal, another schema version, corrupt, or a write failed.

    Attributes:
        path: the journal file.
        reason: what is wrong.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"journal {path!r}: {reason}", path=path, reason=reason)


class GraphvizError(AioflowError, RuntimeError):
    """Graphviz's ``dot`` program could not draw a graph: it failed, or did not finish in time.

    Attributes:
        program: the ``dot`` program that was run.
        reason: what went wrong, with what ``dot`` wrote on stderr.
    """

    program: str
    reason: str

    def __init__(self, program: str, reason: str) -> None:
        super().__init__(f"Graphviz's {program!r} could not draw the graph: {reason}", program=program, reason=reason)


class GraphvizNotFoundError(GraphvizError):
    """Graphviz's ``dot`` program is not installed, or ``AIOFLOW_DOT`` names no program.

    Attributes:
        program: the program looked for: ``dot``, or the value of ``AIOFLOW_DOT``.
        reason: why it cannot be used.
    """

    def __init__(self, program: str, reason: str) -> None:
        AioflowError.__init__(
            self, f"drawing a graph needs Graphviz's `dot` program: {reason}", program=program, reason=reason
        )


class TaskInputError(AioflowError, TypeError):
    """A task cannot be called with the inputs it was given (a required one is missing,
    or one it does not accept was passed).

    Raised inside the worker, so it becomes the ``__cause__`` of a `NodeError`.

    Attributes:
        task: the node's label.
        missing: the names of the required inputs that were missing.
    """

    def __init__(self, task: str, detail: str, missing: Iterable[str] = ()) -> None:
        super().__init__(f"task {task!r}: {detail}", task=task, detail=detail, missing=tuple(missing))


class TransferError(AioflowError, TypeError, PicklingError):
    """A task, one of its inputs or its outputs cannot be sent to or from a worker process.

    Also a `pickle.PicklingError`, the error `concurrent.futures`' process pool
    gives for a value it cannot pickle.

    Attributes:
        where: the graph and node.
        type_name: the type of the value that could not be pickled (``"?"`` when unknown).
    """

    def __init__(self, where: str, type_name: str, detail: str) -> None:
        msg = (
            f"{where}: a value of type {type_name!r} cannot be sent between processes ({detail}); "
            "use pool_type='thread', or pass picklable values and importable module-level functions"
        )
        super().__init__(msg, where=where, type_name=type_name, detail=detail)


class ExecutionError(AioflowError):
    """An execution stopped before its end.

    Attributes:
        graph_id: the graph being executed.
        results: the `aioflow.Results` of the nodes that did finish, selected
            with the execution's ``outputs``/``merge_outputs``.
    """

    graph_id: str
    results: Results


class NodeError(ExecutionError):
    """A node's task raised. The task's own exception is ``__cause__``.

    Attributes:
        node_id: the failed node.
        error: the task's exception (the same object as ``__cause__``): that
            of its last attempt.
        attempts: the error of every attempt, in order (the last is
            ``error``): one for a node without retries.
    """

    node_id: Any
    error: BaseException
    attempts: tuple[BaseException, ...]

    def __init__(
        self,
        graph_id: str,
        node_id: Any,
        error: BaseException,
        results: Results,
        attempts: Iterable[BaseException] = (),
    ) -> None:
        attempts = tuple(attempts) or (error,)
        what = f"{type(error).__name__}: {error}"
        tried = f" (attempt {len(attempts)} of {len(attempts)})" if len(attempts) > 1 else ""
        msg = f"graph {graph_id!r}: node {format_node_id(node_id)} failed{tried}: {what}"
        super().__init__(msg, graph_id=graph_id, node_id=node_id, error=error, results=results, attempts=attempts)


class NodeTimeoutError(AioflowError, TimeoutError):
    """One attempt of a node's task ran past the node's ``timeout`` (its ``"aioflow"`` attribute).

    The node fails with it at its deadline. On a process pool the worker
    that ran the task was killed, with the processes the task started, and
    replaced; on the ``thread`` pool the task was interrupted where Python
    code runs (`TaskInterrupted`), and may still run if it was blocked in a
    C call (``stopped`` says which).

    Attributes:
        node_id: the node.
        timeout: its limit, in seconds.
        stopped: how the running task was stopped, in words.
    """

    node_id: Any
    timeout: float
    stopped: str

    def __init__(self, graph_id: str, node_id: Any, timeout: float, stopped: str) -> None:
        msg = f"graph {graph_id!r}: node {format_node_id(node_id)} ran past its timeout of {timeout:g} s ({stopped})"
        super().__init__(msg, graph_id=graph_id, node_id=node_id, timeout=timeout, stopped=stopped)


class NodeCancelledError(AioflowError):
    """A node's firing was cancelled from outside while the execution went on (``run.cancel(node_id)``).

    The node fails with it: its ``on_error`` links fire, and the execution
    goes on as after any failure. Its task was stopped as for a timeout (see
    `NodeTimeoutError`; ``stopped`` says how), or had not started.

    Attributes:
        node_id: the node.
        stopped: how its task was stopped, in words.
    """

    node_id: Any
    stopped: str

    def __init__(self, graph_id: str, node_id: Any, stopped: str) -> None:
        msg = f"graph {graph_id!r}: node {format_node_id(node_id)} was cancelled ({stopped})"
        super().__init__(msg, graph_id=graph_id, node_id=node_id, stopped=stopped)


class ExecutionTimeoutError(ExecutionError, TimeoutError):
    """The execution ran longer than its ``timeout``; running tasks were stopped.

    Attributes:
        timeout: the limit, in seconds.
        running: the nodes that were still running when it expired.
    """

    timeout: float
    running: tuple[Any, ...]

    def __init__(self, graph_id: str, timeout: float, running: Iterable[Any], results: Results) -> None:
        running = tuple(running)
        where = ", ".join(format_node_id(n) for n in running) or "none"
        msg = f"graph {graph_id!r}: timed out after {timeout:g} s (nodes still running: {where})"
        super().__init__(msg, graph_id=graph_id, timeout=timeout, running=running, results=results)


class IterationLimitError(ExecutionError, RuntimeError):
    """A node was about to run more than ``max_iterations`` times (a runaway loop)."""

    node_id: Any
    max_iterations: int

    def __init__(self, graph_id: str, node_id: Any, max_iterations: int, results: Results) -> None:
        msg = (
            f"graph {graph_id!r}: node {format_node_id(node_id)} would run more than "
            f"max_iterations={max_iterations} times; check the loop's exit condition "
            "or raise max_iterations"
        )
        super().__init__(msg, graph_id=graph_id, node_id=node_id, max_iterations=max_iterations, results=results)


class RemoteError(AioflowError):
    """Stands in for a task's exception that could not be sent back from its worker process.

    A task raised an exception that cannot be pickled (its ``__reduce__``
    raises), cannot be rebuilt from its pickle (its ``__init__`` takes other
    arguments than its message), or whose class cannot be imported here. The
    worker's traceback is ``__cause__``, as for any exception from a worker.

    Attributes:
        type_name: the task's exception type, ``module.QualifiedName``.
        original: the task's exception's message (its ``str()``).
        remote_traceback: the worker's formatted traceback.
        reason: why the exception itself could not come back.
    """

    type_name: str
    original: str
    remote_traceback: str
    reason: str

    def __init__(self, type_name: str, original: str, remote_traceback: str, reason: str) -> None:
        msg = f"{type_name}: {original} (the exception could not be sent back from the worker: {reason})"
        super().__init__(msg, type_name=type_name, original=original, remote_traceback=remote_traceback, reason=reason)


class DependencyError(AioflowError):
    """A call submitted to `aioflow.Executor` did not run: a future among its arguments failed.

    The failed future's exception is ``__cause__``.

    Attributes:
        task: the function that did not run.
        reason: the dependency's error, as ``Type: message``.
    """

    task: str
    reason: str

    def __init__(self, task: str, reason: str) -> None:
        msg = f"task {task} did not run: a future among its arguments failed ({reason})"
        super().__init__(msg, task=task, reason=reason)


class PoolError(AioflowError):
    """A worker pool failed."""


class PoolClosedError(PoolError, RuntimeError):
    """A closed pool was used: its executor asked for, or a call or a fetch sent to it.

    A `RuntimeError`, as the standard library's executors raise for a call
    submitted after their shutdown.

    Attributes:
        pool: the pool's type (``"thread"``, ``"process"``...).
        detail: what to do, or what was lost.
    """

    pool: str
    detail: str

    def __init__(self, pool: str, detail: str = "open a new one with aioflow.open_pool()") -> None:
        super().__init__(f"the {pool!r} pool is closed; {detail}", pool=pool, detail=detail)


class TaskInterrupted(BaseException):
    """Raised inside a ``thread`` pool task that its execution no longer waits for.

    The pool raises it in the thread that runs the task when the execution
    stops early (a timeout, a cancellation, Ctrl-C, a failed node); in a
    gevent-patched process, where the pool's threads are greenlets, in the
    task's greenlet. A `BaseException`, neither
    an `Exception` nor an `AioflowError`, so that a task's ``except
    Exception`` does not swallow it: the task stops at its next bytecode.
    A task may catch it to clean up, and should re-raise it.
    """


# --------------------------------------------------------------------------- aioflow.parallel

# What to tell users who do want the serial run.
_RUN_ANYWAY = "pass if_serial='warn' or if_serial='ignore' to run it in this process anyway"


class SerialExecutionError(AioflowError, RuntimeError):
    """A parallel map would run serially (inside a worker of another map, or an MPI job of one worker), with ``if_serial='raise'``.

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
