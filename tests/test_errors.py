"""The exception tree: stdlib bases, messages built from fields, pickling round trips."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import pickle

import pytest

import aioflow
from aioflow import (
    AioflowError,
    DependencyError,
    ExecutionError,
    ExecutionTimeoutError,
    GraphError,
    InitializerFailed,
    IterationLimitError,
    MissingExtraError,
    NodeError,
    NodeTimeoutError,
    OptionError,
    PoolClosedError,
    PoolError,
    Results,
    TaskInputError,
    TaskInterrupted,
    TransferError,
    WorkerLostError,
)

RESULTS = Results({"a": 1}, errors={"b": ValueError("x")}, executions={"a": 1, "b": 1})

INSTANCES = [
    GraphError("g", ["one problem"]),
    GraphError("g", ["first", "second"]),
    OptionError("max_workers", "an int >= 1", 0),
    MissingExtraError("pool 'dask'", "distributed", "dask"),
    TaskInputError("fit", "missing the required input(s) 'x'", ["x"]),
    NodeError("g", "n", ValueError("boom"), RESULTS),
    NodeError("g", "n", ValueError("third"), RESULTS, [OSError("first"), OSError("second"), ValueError("third")]),
    NodeTimeoutError("g", "n", 1.5, "its worker process was killed"),
    ExecutionTimeoutError("g", 2.5, ["n1", ("sub", "n2")], RESULTS),
    IterationLimitError("g", "loop", 10, RESULTS),
    WorkerLostError("graph 'g': node 'n' lost its worker process", node_id="n"),
    TransferError("graph 'g': node 'n'", "_thread.lock", "cannot pickle '_thread.lock' object"),
    DependencyError("fit", "ValueError: boom"),
    PoolClosedError("process"),
    InitializerFailed("the pool's initializer failed in worker process 42: ValueError('x')"),
]


@pytest.mark.parametrize("error", INSTANCES, ids=lambda e: type(e).__name__)
def test_every_error_pickles_round_trip(error: AioflowError) -> None:
    """Errors cross process boundaries: type, message and fields survive pickling."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    for name, value in error._fields.items():
        if isinstance(value, BaseException):
            assert type(getattr(copy, name)) is type(value)
        elif isinstance(value, tuple) and value and isinstance(value[0], BaseException):
            assert [(type(e), str(e)) for e in getattr(copy, name)] == [(type(e), str(e)) for e in value]
        else:
            assert getattr(copy, name) == value


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (GraphError, (AioflowError, ValueError)),
        (OptionError, (AioflowError, ValueError)),
        (MissingExtraError, (AioflowError, ImportError)),
        (TaskInputError, (AioflowError, TypeError)),
        (TransferError, (AioflowError, TypeError, pickle.PicklingError)),
        (NodeError, (ExecutionError,)),
        (ExecutionTimeoutError, (ExecutionError, TimeoutError)),
        (NodeTimeoutError, (AioflowError, TimeoutError)),
        (IterationLimitError, (ExecutionError, RuntimeError)),
        (WorkerLostError, (PoolError, concurrent.futures.BrokenExecutor, concurrent.futures.process.BrokenProcessPool)),
        (PoolClosedError, (PoolError, RuntimeError)),
        (InitializerFailed, (PoolError, concurrent.futures.BrokenExecutor)),
    ],
)
def test_errors_derive_from_the_matching_stdlib_class(cls: type, bases: tuple[type, ...]) -> None:
    """Existing except clauses for the stdlib classes keep catching aioflow errors."""
    assert issubclass(cls, AioflowError)
    for base in bases:
        assert issubclass(cls, base)


def test_a_node_error_names_its_attempts() -> None:
    """A node that failed after retries says how many attempts it had; its errors are all there, in order."""
    errors = [OSError("first"), ValueError("second")]
    error = NodeError("g", "n", errors[-1], RESULTS, errors)
    assert str(error) == "graph 'g': node 'n' failed (attempt 2 of 2): ValueError: second"
    assert error.attempts == tuple(errors)
    assert NodeError("g", "n", errors[0], RESULTS).attempts == (errors[0],)


def test_task_interrupted_is_not_swallowed_by_except_exception() -> None:
    """What a thread-pool task receives when it is stopped: outside the Exception tree, as KeyboardInterrupt."""
    assert issubclass(TaskInterrupted, BaseException)
    assert not issubclass(TaskInterrupted, Exception)
    assert TaskInterrupted.__module__ == "aioflow"
    assert type(pickle.loads(pickle.dumps(TaskInterrupted()))) is TaskInterrupted


def test_the_pools_own_the_same_classes() -> None:
    """aioflow.pools exports InitializerFailed, the thread pool raises TaskInterrupted: aioflow's own classes."""
    from aioflow.pools._thread import TaskInterrupted as raised_by_the_thread_pool

    assert aioflow.pools.InitializerFailed is InitializerFailed
    assert raised_by_the_thread_pool is TaskInterrupted


def test_messages_follow_one_template() -> None:
    """Messages say where, what, and expected versus got."""
    assert str(OptionError("max_workers", "an int >= 1", 0)) == "'max_workers' must be an int >= 1 (got 0 of type int)"
    assert str(OptionError("max_workers", "an int >= 1", 0, "max_workers must be greater than 0")) == (
        "max_workers must be greater than 0"
    )
    assert str(MissingExtraError("pool 'dask'", "distributed", "dask")) == (
        "pool 'dask' needs the 'distributed' package: pip install 'aioflow[dask]'"
    )
    assert str(GraphError("g", ["a", "b"])) == "graph 'g': 2 problems:\n  - a\n  - b"
    assert str(PoolClosedError("thread")) == "the 'thread' pool is closed; open a new one with aioflow.open_pool()"
    assert str(NodeError("g", ("s", 1), KeyError("k"), RESULTS)) == "graph 'g': node ('s', 1) failed: KeyError: 'k'"


def test_results_pickle_with_their_errors() -> None:
    """Results keep errors and executions through pickling."""
    copy = pickle.loads(pickle.dumps(RESULTS))
    assert copy == {"a": 1}
    assert list(copy.errors) == ["b"]
    assert copy.executions == {"a": 1, "b": 1}
    assert copy.failed


def test_missing_is_a_falsy_singleton_across_pickling() -> None:
    """MISSING keeps its identity through pickling and is falsy."""
    assert pickle.loads(pickle.dumps(aioflow.MISSING)) is aioflow.MISSING
    assert not aioflow.MISSING
    assert repr(aioflow.MISSING) == "MISSING"
