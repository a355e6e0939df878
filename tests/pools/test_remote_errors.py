"""A task's exception that cannot be sent back still reaches the caller: type, message and traceback.

On every process pool alike, an exception whose ``__init__`` takes other
arguments than its message, or whose ``__reduce__`` raises, arrives as
`aioflow.RemoteError` with the original type name, message and the worker's
traceback, instead of a bare ``TypeError`` from the unpickler. The pool and
the other branches of the graph are not affected.
"""

from __future__ import annotations

from typing import Any

import pytest
from graphs import method_node

import aioflow
from aioflow.pools._outcomes import RemoteTraceback, pack_error, unpack_error

POOLS = [
    pytest.param("process", "spawn", id="process-spawn"),
    pytest.param("process", "forkserver", id="process-forkserver"),
    pytest.param("ndprocess", "fork", id="ndprocess-fork"),
    pytest.param("multiprocessing", "fork", id="multiprocessing-fork"),
    pytest.param("ndmultiprocessing", "spawn", id="ndmultiprocessing-spawn"),
    pytest.param("billiard", "fork", id="billiard-fork"),
    pytest.param("billiard", "spawn", id="billiard-spawn"),
]

BAD = [
    ("raise_two_arg", "remote_error_tasks.TwoArgError", "detector offline (code 7)"),
    ("raise_refuses_pickling", "remote_error_tasks.RefusesPickling", "beam dump"),
]


def task(name: str) -> str:
    """By module name, so that the caller can import the exception classes too."""
    return f"remote_error_tasks.{name}"


@pytest.mark.parametrize(("pool_type", "context"), POOLS)
@pytest.mark.parametrize(("raiser", "type_name", "message"), BAD)
def test_unsendable_exception_arrives_as_remote_error(
    pool_type: str, context: str, raiser: str, type_name: str, message: str
) -> None:
    """The node fails with RemoteError naming the task's type and message; the healthy branch finishes."""
    graph = {
        "graph": {"id": "unsendable"},
        "nodes": [method_node("bad", task(raiser)), method_node("good", task("value"), x=3)],
    }
    results = aioflow.execute_graph(
        graph,
        pool_type=pool_type,
        context=context,
        max_workers=2,
        raise_on_error=False,
        outputs=[{"all": True}],
        merge_outputs=False,
    )
    assert results["good"]["return_value"] == 3
    error = results.errors["bad"]
    assert isinstance(error, aioflow.RemoteError), repr(error)
    assert error.type_name == type_name
    assert error.original == message
    assert message in str(error)
    assert raiser in error.remote_traceback
    assert isinstance(error.__cause__, RemoteTraceback)
    assert raiser in str(error.__cause__)


@pytest.mark.parametrize(("pool_type", "context"), POOLS)
def test_pool_still_runs_after_an_unsendable_exception(pool_type: str, context: str) -> None:
    """One pool runs a failing execution, then a healthy one: the worker that sent the stand-in is fine."""
    bad = {"nodes": [method_node("bad", task("raise_two_arg"))]}
    good = {"nodes": [method_node("good", task("value"), x=5)]}
    with aioflow.open_pool(pool_type, max_workers=1, context=context) as pool:
        with pytest.raises(aioflow.NodeError) as info:
            aioflow.execute_graph(bad, pool=pool)
        assert isinstance(info.value.error, aioflow.RemoteError)
        assert aioflow.execute_graph(good, pool=pool)["return_value"] == 5


@pytest.mark.parametrize(("pool_type", "context"), POOLS)
def test_picklable_exception_arrives_as_itself(pool_type: str, context: str) -> None:
    """Exceptions that survive pickling keep their type, with the worker's traceback as __cause__."""
    graph = {"nodes": [method_node("bad", task("raise_fine"))]}
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(graph, pool_type=pool_type, context=context, max_workers=1)
    error = info.value.error
    assert type(error).__name__ == "Fine"
    assert str(error) == "plain and picklable"
    assert isinstance(error.__cause__, RemoteTraceback)


class _Local(Exception):
    pass


def test_pack_error_round_trip_and_stand_in() -> None:
    """Unit: a picklable exception unpacks as itself; a class that cannot be found unpacks as a stand-in."""
    import pickle

    fine = unpack_error(pickle.loads(pickle.dumps(pack_error(ValueError("v")))))
    assert type(fine) is ValueError
    assert str(fine) == "v"

    def local() -> type[Exception]:
        class Hidden(Exception):  # not reachable by its qualified name: cannot be pickled by reference
            pass

        return Hidden

    packed = pack_error(local()("hidden"))
    assert packed.data is None
    assert "Hidden" in packed.problem or "pickle" in packed.problem.lower()
    stand_in = unpack_error(pickle.loads(pickle.dumps(packed)))
    assert isinstance(stand_in, aioflow.RemoteError)
    assert stand_in.type_name.endswith("Hidden")
    assert stand_in.original == "hidden"


def test_an_exception_whose_str_raises_is_still_reported() -> None:
    """Even a __str__ that raises does not lose the exception."""

    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    packed: Any = pack_error(BadStr())
    assert "str() of the exception failed" in packed.message


def test_the_cause_is_the_worker_traceback_even_when_the_chain_pickles() -> None:
    """Where pickling keeps ``__cause__`` (tblib, installed by Dask), the worker's traceback still becomes it."""
    import pickle

    from remote_error_tasks import KeepsCause

    exc = KeepsCause("outer")
    exc.__cause__ = AssertionError("inner")
    back = unpack_error(pickle.loads(pickle.dumps(pack_error(exc))))
    assert isinstance(back, KeepsCause)
    assert isinstance(back.__cause__, RemoteTraceback)
    assert "AssertionError: inner" in str(back.__cause__)
