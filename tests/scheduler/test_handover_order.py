"""Finished firings reach the state machine in the order they were made, whatever order they finish in.

The pool here finishes calls in an order chosen by the test: each burst of
calls (those the driver submits in one pass) runs in reverse, in the event
loop's thread, once the driver has submitted all of them. Without the
ordered hand-over, the later firing's outcome would reach the state machine
first, and what fires next would depend on which call finished first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, Any

import prop_tasks
import pytest
import reference
from graphs import node, rv
from hypothesis import given
from test_properties import BUDGET, EXECUTION, Doc, canonical_errors, executable_graphs, load_or_refuse, run_reference

import aioflow
from aioflow.pools import Pool, PoolOptions
from aioflow.scheduler import ExecutionHooks, execute_graph_async
from aioflow.scheduler._state import ExecutionState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aioflow.events import Event


class _Reversing(concurrent.futures.Executor):
    """Runs each burst of calls in reverse order, in the event loop's thread, after the burst is submitted."""

    def __init__(self) -> None:
        self._burst: list[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if not self._burst:
            asyncio.get_running_loop().call_soon(self._run_burst)
        self._burst.append((future, fn, args))
        return future

    def _run_burst(self) -> None:
        burst, self._burst = self._burst, []
        for future, fn, args in reversed(burst):
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        burst, self._burst = self._burst, []
        for future, _, _ in burst:
            future.cancel()


class ReversingPool(Pool):
    """An in-process pool that finishes each burst of calls last-submitted first."""

    name = "reversing-test"

    def _create_executor(self) -> concurrent.futures.Executor:
        return _Reversing()

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        executor.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def pool() -> Iterator[ReversingPool]:
    opened = ReversingPool(PoolOptions(max_workers=4))
    try:
        yield opened
    finally:
        opened.close()


@EXECUTION
@given(executable_graphs(max_nodes=14, loops=True))
def test_every_graph_gives_the_sequential_reference_in_any_finishing_order(doc: Doc) -> None:
    """Conditions, loops, optional and error links: the outputs, errors and execution counts of the reference."""
    graph = load_or_refuse(doc)
    if graph is None:
        return
    ref = run_reference(graph, doc)
    if ref is None:
        return  # aioflow refuses it: tested in test_properties
    pool = ReversingPool(PoolOptions(max_workers=4))
    try:
        got = aioflow.execute_graph(
            graph,
            pool=pool,
            startargs=doc.get("startargs"),
            outputs=[{"all": True}],
            merge_outputs=False,
            raise_on_error=False,
            max_iterations=BUDGET + 1,
            uvloop=False,
        )
    finally:
        pool.close()
    expected = reference.select_outputs(graph, ref, [{"all": True}], merge_outputs=False)
    assert prop_tasks.canonical(dict(got)) == prop_tasks.canonical(expected)
    assert canonical_errors(got.errors) == canonical_errors(ref.errors)
    assert got.executions == ref.executions


def optional(source: str, target: str, name: str) -> dict[str, Any]:
    return {**rv(source, target, name), "required": False}


# "late" and "early" start; "sum" waits for "early" (required) and takes
# "late" as an optional input: delivered before its first firing, it is
# buffered and fires "sum" with both. ewokscore's self_trigger example has
# this shape. "late" is declared first, so its firing is made first.
BUFFERED = {
    "graph": {"id": "buffered"},
    "nodes": [node("late", "tasks.identity"), node("early", "tasks.identity"), node("sum", "tasks.add")],
    "links": [optional("late", "sum", "a"), rv("early", "sum", "b")],
}


def finished_events(events: list[Event]) -> list[tuple[Any, int]]:
    return [(e.node_id, e.number) for e in events if e.kind in ("node.finished", "node.failed")]


async def test_an_optional_input_made_first_is_buffered_even_when_it_finishes_last(pool: ReversingPool) -> None:
    """ "early" finishes first, yet "late" is handed over first: "sum" fires once, with both inputs."""
    events: list[Event] = []
    inputs = [{"id": "late", "name": "value", "value": 40}, {"id": "early", "name": "value", "value": 2}]
    result = await aioflow.execute_graph_async(BUFFERED, inputs=inputs, pool=pool, on_event=events.append)
    assert result == {"return_value": 42}
    assert result.executions == {"late": 1, "early": 1, "sum": 1}
    assert finished_events(events) == [("late", 1), ("early", 1), ("sum", 1)]


# Two start nodes feed "join" through optional links only: it fires on every
# delivery, so twice, and both firings are made in one pass and finish in reverse.
TWICE = {
    "graph": {"id": "twice"},
    "nodes": [node("x", "tasks.identity"), node("y", "tasks.identity"), node("join", "tasks.echo")],
    "links": [optional("x", "join", "x"), optional("y", "join", "y")],
}


async def test_a_node_fired_twice_is_handed_over_in_firing_order(pool: ReversingPool) -> None:
    """Every outcome is handed over in the order of its firing; the node's outputs are its last firing's."""
    events: list[Event] = []
    inputs = [{"id": "x", "name": "value", "value": 1}, {"id": "y", "name": "value", "value": 2}]
    result = await aioflow.execute_graph_async(TWICE, inputs=inputs, pool=pool, on_event=events.append)
    assert finished_events(events) == [("x", 1), ("y", 1), ("join", 1), ("join", 2)]
    assert result == {"return_value": {"args": [], "kwargs": {"y": 2}}}


async def test_a_failure_is_handed_over_in_its_turn(pool: ReversingPool) -> None:
    """A failure that finishes first waits for the firings made before it, then stops the execution."""
    graph = {
        "graph": {"id": "failing"},
        "nodes": [node("ok", "tasks.identity"), node("boom", "tasks.fail"), node("after", "tasks.identity")],
        "links": [optional("ok", "after", "value")],
    }
    events: list[Event] = []
    with pytest.raises(aioflow.NodeError) as info:
        await aioflow.execute_graph_async(graph, pool=pool, on_event=events.append)
    assert info.value.node_id == "boom"
    assert finished_events(events) == [("ok", 1), ("boom", 1)]


async def test_order_is_not_enforced_where_it_cannot_matter(pool: ReversingPool) -> None:
    """Acyclic, every link required: each node fires once, so outcomes are handed over as they finish."""
    graph = {
        "graph": {"id": "join"},
        "nodes": [node("a", "tasks.identity"), node("b", "tasks.identity"), node("sum", "tasks.add")],
        "links": [rv("a", "sum", "a"), rv("b", "sum", "b")],
    }
    assert not ExecutionState(aioflow.load_graph(graph)).order_matters
    assert ExecutionState(aioflow.load_graph(BUFFERED)).order_matters
    events: list[Event] = []
    inputs = [{"id": "a", "name": "value", "value": 1}, {"id": "b", "name": "value", "value": 2}]
    result = await aioflow.execute_graph_async(graph, inputs=inputs, pool=pool, on_event=events.append)
    assert result == {"return_value": 3}
    assert finished_events(events) == [("b", 1), ("a", 1), ("sum", 1)]


async def test_the_state_records_the_order_of_last_executions_and_the_first_unhandled_failures(
    pool: ReversingPool,
) -> None:
    """`finished` lists nodes by their last hand-over; `error_data` keeps each first unhandled failure's data."""
    graph = {
        "graph": {"id": "records"},
        "nodes": [node("x", "tasks.identity"), node("y", "tasks.identity"), node("join", "tasks.fail")],
        "links": [optional("x", "join", "x"), optional("y", "join", "y")],
    }
    seen: list[ExecutionState] = []

    class Select(ExecutionHooks):
        def results(self, state: ExecutionState) -> aioflow.Results:
            seen.append(state)
            return aioflow.Results({"selected": True})

    inputs = [{"id": "x", "name": "value", "value": 1}, {"id": "y", "name": "value", "value": 2}]
    result = await execute_graph_async(graph, inputs=inputs, pool=pool, raise_on_error=False, hooks=[Select()])
    assert result == {"selected": True}
    (state,) = seen
    assert list(state.finished.items()) == [("x", True), ("y", True), ("join", False)]
    first = state.error_data["join"]  # join failed twice: with x, then with y
    assert set(first) == {"x", "WorkflowException", "WorkflowExceptionInstance"}
    assert first["x"] == 1
    assert str(first["WorkflowExceptionInstance"]) == "failed on purpose with ['x']"
    assert first["WorkflowException"]["errorMessage"] == "failed on purpose with ['x']"
    assert str(state.errors["join"]) == "failed on purpose with ['y']"
