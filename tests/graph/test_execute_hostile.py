"""Executing hostile graphs and options: only aioflow's errors leave execute_graph, with the results that exist.

A graph that loads must run or fail with an aioflow error naming the place;
an exception of aioflow's own making (a bug) becomes an `ExecutionError`
carrying the results of the nodes that finished, while Ctrl-C stays Ctrl-C.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import aioflow
from aioflow import ExecutionError, GraphError, NodeError, OptionError
from aioflow.scheduler._state import ExecutionState


def node(nid: Any, func: str = "tasks.inc", **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": func, **attrs}


def chain(*ids: str) -> dict[str, Any]:
    mapping = [{"source_output": "return_value", "target_input": "x"}]
    return {
        "graph": {"id": "chain"},
        "nodes": [node(i) for i in ids],
        "links": [{"source": s, "target": t, "data_mapping": mapping} for s, t in itertools.pairwise(ids)],
    }


def execute(graph: Any, **options: Any) -> aioflow.Results:
    return aioflow.execute_graph(graph, **{"pool_type": "thread", "max_workers": 2, "timeout": 60, **options})


def test_a_mapping_from_an_output_named_by_a_dict_is_refused_before_running() -> None:
    """It once loaded, then execute_graph raised a bare ExceptionGroup(TypeError('unhashable type'))."""
    graph = chain("a", "b")
    graph["links"][0]["data_mapping"][0]["source_output"] = {"x": 1}
    with pytest.raises(GraphError, match=r"link 'a' -> 'b': data_mapping\[0\]: 'source_output' must be a string"):
        execute(graph)


def test_an_output_name_of_the_wrong_type_is_refused_before_running() -> None:
    """outputs= names are checked with the selectors: an unhashable one once failed at the end of the run."""
    with pytest.raises(GraphError, match=r"outputs\[0\]: 'name' must be a string or an int \(got \{'x': 1\}\)"):
        execute(chain("a"), outputs=[{"all": True, "name": {"x": 1}}])


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"load_options": {"inputs": []}}, "'load_options' must be a dict with keys among representation"),
        ({"load_options": [1]}, "'load_options' must be a dict"),
        ({"startargs": [1]}, "'startargs' must be a dict of input names and values"),
        ({"on_event": 5}, "'on_event' must be a callable"),
        ({"pool": 5, "pool_type": None, "max_workers": None}, "'pool' must be a pool from aioflow.open_pool()"),
    ],
)
def test_options_of_the_wrong_type(options: dict[str, Any], words: str) -> None:
    """Each once escaped as a TypeError or an AttributeError from inside the engine."""
    with pytest.raises(OptionError, match=words):
        execute(chain("a"), **options)


def fail_when_b_succeeds(error: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the scheduler's state machine raise ``error`` when node 'b' finishes (a stand-in for a bug)."""
    succeeded = ExecutionState.succeeded

    def broken(self: ExecutionState, firing: Any, *args: Any, **kwargs: Any) -> Any:
        if firing.node_id == "b":
            raise error
        return succeeded(self, firing, *args, **kwargs)

    monkeypatch.setattr(ExecutionState, "succeeded", broken)


def test_a_bug_in_the_scheduler_is_an_execution_error_with_the_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal exception stops the execution and comes out as an ExecutionError naming the node."""
    bug = TypeError("unhashable type: 'dict'")
    fail_when_b_succeeds(bug, monkeypatch)
    with pytest.raises(ExecutionError) as info:
        execute(chain("a", "b", "c"), outputs=[{"all": True}], merge_outputs=False)
    err = info.value
    assert type(err) is ExecutionError  # not a NodeError: no task failed
    assert not isinstance(err, NodeError)
    assert err.__cause__ is bug
    assert err.graph_id == "chain"
    assert getattr(err, "node_id", None) == "b"
    assert err.results == {"a": {"return_value": 1}}
    assert str(err).startswith(
        "graph 'chain': internal error while handling node 'b': TypeError: unhashable type: 'dict'; this is a bug"
    )
    # The autouse leak check verifies that the pool's threads are gone.


async def test_a_bug_in_the_scheduler_under_execute_graph_async(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through the async API, with a pool the caller keeps open."""
    fail_when_b_succeeds(KeyError("lost"), monkeypatch)
    async with aioflow.open_pool("thread", max_workers=2) as pool:
        with pytest.raises(ExecutionError, match="internal error while handling node 'b': KeyError") as info:
            await aioflow.execute_graph_async(chain("a", "b"), pool=pool, outputs=[{"id": "a"}])
        assert info.value.results == {"return_value": 1}
        # The pool is still usable after the internal error.
        assert await aioflow.execute_graph_async(chain("a"), pool=pool) == {"return_value": 1}


def test_ctrl_c_in_the_scheduler_stays_a_keyboard_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net converts exceptions, never KeyboardInterrupt: Ctrl-C stays Ctrl-C."""
    fail_when_b_succeeds(KeyboardInterrupt(), monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        execute(chain("a", "b", "c"))
