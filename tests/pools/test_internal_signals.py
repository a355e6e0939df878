"""The signals between a pool's parts stay inside the pools: users get aioflow's public errors.

Every exception class the pools define lives in `aioflow.pools._outcomes`,
`Pool.translate` turns each into an error of `aioflow._errors`, and none
reaches a user of ``execute_graph`` or `aioflow.Executor` on the pools that
raise them. (The Dask pool's `DaskTaskLost`: tests/clusters/test_dask.py,
where the node's error is a `WorkerLostError` whose ``__cause__`` it is.)
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import TYPE_CHECKING, Any

import mp_tasks
import pytest
import tasks
from graphs import method_node

import aioflow
import aioflow.pools
from aioflow.pools import _outcomes

if TYPE_CHECKING:
    from collections.abc import Callable

#: Every internal signal of the pools.
INTERNAL = (
    _outcomes.WorkerDied,
    _outcomes.TransferFailed,
    _outcomes.RemoteTraceback,
    _outcomes.BrokenMultiprocessingPool,
    _outcomes.BrokenBilliardPool,
    _outcomes.DaskTaskLost,
)

PROCESS_POOLS = ["process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard"]

# Generous: only a hang reaches it.
DEADLINE = 60


def test_every_exception_class_of_the_pools_is_in_outcomes() -> None:
    """No pool module defines an exception class of its own: the signals are gathered in one module."""
    found = {}
    for info in pkgutil.iter_modules(aioflow.pools.__path__, "aioflow.pools."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[name] = module.__name__
    assert found
    assert set(found.values()) == {"aioflow.pools._outcomes"}, found
    assert {cls.__name__ for cls in INTERNAL} <= set(found)


SIGNALS = [
    pytest.param(_outcomes.WorkerDied(42, -9), aioflow.WorkerLostError, id="WorkerDied"),
    pytest.param(_outcomes.TransferFailed("Lock", "cannot pickle"), aioflow.TransferError, id="TransferFailed"),
    pytest.param(_outcomes.ResultNotLoadable("m.Point", "no module m"), aioflow.TransferError, id="ResultNotLoadable"),
    pytest.param(_outcomes.BrokenMultiprocessingPool("stopped"), aioflow.WorkerLostError, id="BrokenMultiprocessing"),
    pytest.param(_outcomes.BrokenBilliardPool("stopped"), aioflow.WorkerLostError, id="BrokenBilliardPool"),
    pytest.param(_outcomes.DaskTaskLost("the cluster dropped the task"), aioflow.WorkerLostError, id="DaskTaskLost"),
]


@pytest.mark.parametrize(("signal", "public"), SIGNALS)
def test_translate_turns_each_signal_into_a_public_error(signal: BaseException, public: type[Exception]) -> None:
    pool = aioflow.open_pool("thread")
    error = pool.translate(signal, pool.executor, "graph 'g': node 'n'", node_id="n")
    pool.close()
    assert isinstance(error, public), repr(error)
    assert not isinstance(error, INTERNAL)
    assert error.__cause__ is signal or error.__cause__ is signal.__cause__
    assert str(error).startswith("graph 'g': node 'n'")


def test_a_dead_worker_s_fields_come_from_its_signal() -> None:
    pool = aioflow.open_pool("thread")
    error = pool.translate(_outcomes.WorkerDied(42, -9), pool.executor, "graph 'g': node 'n'", node_id="n")
    pool.close()
    assert isinstance(error, aioflow.WorkerLostError)
    assert (error.node_id, error.pid, error.exitcode, error.signal) == ("n", 42, -9, "SIGKILL")


# What a call does to its worker, what the pool needs for it, and the public error the user gets.
SCENARIOS: dict[str, tuple[Callable[..., Any], str, dict[str, Any], type[Exception]]] = {
    # the worker dies in the call (WorkerDied)
    "dies": (mp_tasks.exit_worker, "mp_tasks.exit_worker", {}, aioflow.WorkerLostError),
    # the result cannot be loaded here (ResultNotLoadable, or TransferFailed)
    "unloadable": (mp_tasks.make_unloadable, "mp_tasks.make_unloadable", {}, aioflow.TransferError),
    # every worker dies as it starts (BrokenMultiprocessingPool, BrokenBilliardPool, WorkerDied)
    "dies at start": (tasks.inc, "tasks.inc", {"initializer": mp_tasks.die_at_start}, aioflow.WorkerLostError),
}


def _through_execute_graph(pool_type: str, scenario: str) -> BaseException:
    _, identifier, options, _ = SCENARIOS[scenario]
    graph = {"graph": {"id": "signals"}, "nodes": [method_node("a", identifier)]}
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(
            graph, pool_type=pool_type, context="fork", max_workers=1, pool_options=options, timeout=DEADLINE
        )
    return info.value.error


def _through_the_executor(pool_type: str, scenario: str) -> BaseException:
    fn, _, options, _ = SCENARIOS[scenario]
    with aioflow.Executor(pool_type, max_workers=1, context="fork", pool_options=options) as executor:
        error = executor.submit(fn).exception(timeout=DEADLINE)
    assert error is not None
    return error


@pytest.mark.timeout(2 * DEADLINE, method="thread")
@pytest.mark.parametrize("face", [_through_execute_graph, _through_the_executor], ids=["execute_graph", "Executor"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("pool_type", PROCESS_POOLS)
def test_no_signal_reaches_a_user(pool_type: str, scenario: str, face: Callable[[str, str], BaseException]) -> None:
    error = face(pool_type, scenario)
    assert isinstance(error, SCENARIOS[scenario][3]), repr(error)
    assert not isinstance(error, INTERNAL), repr(error)
