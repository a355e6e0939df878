"""Execution hooks: each seam of a run, what it is given, and what an exception in it does."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

import pytest
from graphs import COUNTING_LOOP, node, rv

import aioflow
from aioflow import GraphError, NodeError, OptionError
from aioflow.scheduler import ExecutionHooks, Step, execute_graph_async

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from aioflow.graph import Graph, Node
    from aioflow.scheduler._state import ExecutionState, Firing

# Most tests here are about the driver, not the pool: one pool is enough.
pytestmark = pytest.mark.parametrize("pool_config", [{"pool_type": "thread", "max_workers": 2}], ids=["thread"])

# a(x=1) -> b -> c: inc, inc, inc.
CHAIN = {
    "graph": {"id": "chain"},
    "nodes": [node("a", default_inputs=[{"name": "x", "value": 1}]), node("b"), node("c")],
    "links": [rv("a", "b"), rv("b", "c")],
}


async def run(pool_config: dict[str, Any], graph: Any, *hooks: ExecutionHooks, **options: Any) -> aioflow.Results:
    return await execute_graph_async(graph, hooks=list(hooks), **{**pool_config, **options})


class Recorder(ExecutionHooks):
    """Observes every step."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def observe(self, step: Step) -> None:
        self.steps.append(step)


async def test_observers_see_every_event_in_order_with_its_firing_and_outputs(pool_config: dict[str, Any]) -> None:
    """What a journal records: the firing (its order in the run, its inputs) and, once finished, its outputs."""
    recorder = Recorder()
    events: list[aioflow.Event] = []
    results = await run(pool_config, CHAIN, recorder, on_event=events.append)
    assert results == {"return_value": 4}
    kinds = [(s.event.kind, s.event.node_id) for s in recorder.steps]
    assert kinds == [
        ("graph.started", None),
        ("node.queued", "a"),
        ("node.started", "a"),
        ("node.finished", "a"),
        ("node.queued", "b"),
        ("node.started", "b"),
        ("node.finished", "b"),
        ("node.queued", "c"),
        ("node.started", "c"),
        ("node.finished", "c"),
        ("graph.finished", None),
    ]
    assert [s.event for s in recorder.steps] == events  # on_event gets the very same events, after the hooks
    firings = {(s.event.kind, s.event.node_id): s.firing for s in recorder.steps}
    assert firings["node.started", "b"] is firings["node.finished", "b"]
    assert [firings["node.started", n].order for n in "abc"] == [0, 1, 2]  # type: ignore[union-attr]
    assert firings["node.started", "b"].inputs == {"x": 2}  # type: ignore[union-attr]
    outputs = {s.event.node_id: s.outputs for s in recorder.steps if s.event.kind == "node.finished"}
    assert outputs == {"a": {"return_value": 2}, "b": {"return_value": 3}, "c": {"return_value": 4}}
    assert all(s.firing is None for s in recorder.steps if s.event.kind.startswith("graph."))


class NoQueue(Recorder):
    """An observer that does not read ``node.queued``."""

    wants_queued = False


async def test_queued_events_are_made_only_for_an_observer_that_wants_them(pool_config: dict[str, Any]) -> None:
    alone = NoQueue()
    await run(pool_config, CHAIN, alone)
    assert [s.event.kind for s in alone.steps].count("node.queued") == 0
    assert [s.event.kind for s in alone.steps].count("node.started") == 3
    beside, events = NoQueue(), list[aioflow.Event]()
    await run(pool_config, CHAIN, beside, on_event=events.append)  # the callback reads every kind
    assert [e.kind for e in events].count("node.queued") == 3
    assert [s.event for s in beside.steps] == events


async def test_a_failed_firing_is_observed_with_its_error(pool_config: dict[str, Any]) -> None:
    recorder = Recorder()
    graph = {"graph": {"id": "g"}, "nodes": [node("a", "tasks.fail")]}
    with pytest.raises(NodeError):
        await run(pool_config, graph, recorder)
    (failed,) = [s for s in recorder.steps if s.event.kind == "node.failed"]
    assert failed.firing is not None
    assert failed.firing.node_id == "a"
    assert isinstance(failed.event.error, ValueError)
    assert failed.outputs is None
    assert recorder.steps[-1].event.kind == "graph.finished"


async def test_an_observer_that_raises_stops_the_run_and_its_exception_is_raised(pool_config: dict[str, Any]) -> None:
    class Broken(ExecutionHooks):
        def observe(self, step: Step) -> None:
            if step.event.kind == "node.finished":
                raise LookupError("observer broke")

    recorder = Recorder()
    with pytest.raises(LookupError, match="observer broke"):
        await run(pool_config, CHAIN, Broken(), recorder)
    started = [s.event.node_id for s in recorder.steps if s.event.kind == "node.started"]
    assert started == ["a"]  # nothing ran after the failing observer
    assert not any(s.event.kind == "node.finished" for s in recorder.steps)  # later hooks miss that event


class Answers(ExecutionHooks):
    """Gives the outputs of the firings of some nodes, as a journal that resumes a run would."""

    def __init__(self, outputs: Mapping[Any, Mapping[Any, Any]]) -> None:
        self.outputs = outputs
        self.asked: list[tuple[Any, int]] = []

    def answer(self, node: Node, firing: Firing) -> Mapping[Any, Any] | None:
        self.asked.append((node.id, firing.order))
        return self.outputs.get(node.id)


async def test_a_hook_answers_a_firing_in_place_of_running_it(pool_config: dict[str, Any]) -> None:
    """b's task would fail: its answer is taken as its outputs, and c runs on them."""
    graph = {
        "graph": {"id": "resumed"},
        "nodes": [node("a", default_inputs=[{"name": "x", "value": 1}]), node("b", "tasks.fail"), node("c")],
        "links": [rv("a", "b"), rv("b", "c")],
    }
    answers = Answers({"b": {"return_value": 10}})
    recorder = Recorder()
    results = await run(pool_config, graph, answers, recorder)
    assert results == {"return_value": 11}
    assert results.executions == {"a": 1, "b": 1, "c": 1}
    assert answers.asked == [("a", 0), ("b", 1), ("c", 2)]
    finished_b = [s for s in recorder.steps if s.event.kind == "node.finished" and s.event.node_id == "b"]
    assert [s.outputs for s in finished_b] == [{"return_value": 10}]


async def test_an_answered_firing_in_a_loop_decides_what_fires_next(pool_config: dict[str, Any]) -> None:
    """In a loop, the conditions read the answered outputs: answering again's second firing ends the loop there."""

    class Answers2(ExecutionHooks):
        def answer(self, node: Node, firing: Firing) -> Mapping[Any, Any] | None:
            if node.id == "again" and firing.number == 2:
                return {"_ppfdict": {"value": 4, "limit": 4, "small": False}}
            return None

    plain = await run(pool_config, COUNTING_LOOP)
    assert plain == {"_ppfdict": {"value": 4, "limit": 4, "small": False}}
    assert plain.executions == {"start": 1, "again": 3, "end": 1}
    answered = await run(pool_config, COUNTING_LOOP, Answers2())
    assert answered == plain
    assert answered.executions == {"start": 1, "again": 2, "end": 1}


async def test_an_answer_that_raises_stops_the_run(pool_config: dict[str, Any]) -> None:
    class Broken(ExecutionHooks):
        def answer(self, node: Node, firing: Firing) -> Mapping[Any, Any] | None:
            raise LookupError(f"no record of {node.id!r}")

    recorder = Recorder()
    with pytest.raises(LookupError, match="no record of 'a'"):
        await run(pool_config, CHAIN, Broken(), recorder)
    kinds = [s.event.kind for s in recorder.steps]
    assert kinds == ["graph.started", "node.queued", "node.started", "graph.finished"]
    assert recorder.steps[-1].event.state == "failed"


async def test_a_hook_selects_the_results_from_the_final_state(pool_config: dict[str, Any]) -> None:
    seen: list[ExecutionState] = []

    class Everything(ExecutionHooks):
        def results(self, state: ExecutionState) -> aioflow.Results:
            seen.append(state)
            return aioflow.Results(dict(state.outputs))

    results = await run(pool_config, CHAIN, Everything())
    assert results == {"a": {"return_value": 2}, "b": {"return_value": 3}, "c": {"return_value": 4}}
    assert len(seen) == 1


async def test_a_failed_run_carries_the_hooks_results(pool_config: dict[str, Any]) -> None:
    class Executions(ExecutionHooks):
        def results(self, state: ExecutionState) -> aioflow.Results:
            return aioflow.Results({"ran": sorted(state.executions)})

    graph = {"graph": {"id": "g"}, "nodes": [node("a"), node("b", "tasks.fail")], "links": [rv("a", "b")]}
    with pytest.raises(NodeError) as info:
        await run(pool_config, graph, Executions())
    assert info.value.results == {"ran": ["a", "b"]}


async def test_results_that_raise_are_raised_as_they_are(pool_config: dict[str, Any]) -> None:
    class Broken(ExecutionHooks):
        def results(self, state: ExecutionState) -> aioflow.Results | None:
            raise LookupError("no results")

    with pytest.raises(LookupError, match="no results"):
        await run(pool_config, CHAIN, Broken())


async def test_prepare_gives_the_graph_that_runs_before_the_preflight(pool_config: dict[str, Any]) -> None:
    """A graph with no start node is refused, unless a hook marks one."""
    ring = {
        "graph": {"id": "ring"},
        "nodes": [
            {"id": "a", "task_type": "ppfmethod", "task_identifier": "tasks.ppf_inc_until", "default_inputs": []},
            {"id": "b", "task_type": "ppfmethod", "task_identifier": "tasks.ppf_inc_until"},
        ],
        "links": [loop_link("a", "b"), loop_link("b", "a")],
    }
    with pytest.raises(GraphError, match="has no start node"):
        await run(pool_config, ring)

    class StartAtA(ExecutionHooks):
        def prepare(self, graph: Graph) -> Graph:
            nodes = dict(graph.nodes)
            nodes["a"] = dataclasses.replace(nodes["a"], force_start_node=True)
            return dataclasses.replace(graph, nodes=nodes)

    results = await run(pool_config, ring, StartAtA(), outputs=[{"all": True}], merge_outputs=False)
    assert results.executions == {"a": 2, "b": 1}  # a: 1, b: 2, a: 3 (no longer below the limit of 3)
    assert results["a"] == {"_ppfdict": {"value": 3, "small": False}}


def loop_link(source: str, target: str) -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "map_all_data": True,
        "conditions": [{"source_output": "small", "value": True}],
    }


class Wrap(ExecutionHooks):
    """Records when its context is entered and left, and with what."""

    def __init__(self, log: list[Any], name: str = "wrap") -> None:
        self.log = log
        self.name = name

    @contextlib.asynccontextmanager
    async def running(self, graph: Graph) -> AsyncIterator[None]:
        self.log.append((self.name, "enter", graph.id))
        try:
            yield
        except BaseException as exc:
            self.log.append((self.name, "exit", type(exc).__name__))
            raise
        self.log.append((self.name, "exit", None))


async def test_running_wraps_the_run_and_sees_how_it_ended(pool_config: dict[str, Any]) -> None:
    log: list[Any] = []
    await run(pool_config, CHAIN, Wrap(log, "outer"), Wrap(log, "inner"))
    assert log == [
        ("outer", "enter", "chain"),
        ("inner", "enter", "chain"),
        ("inner", "exit", None),
        ("outer", "exit", None),
    ]
    log.clear()
    with pytest.raises(NodeError):
        await run(pool_config, {"graph": {"id": "bad"}, "nodes": [node("a", "tasks.fail")]}, Wrap(log))
    assert log == [("wrap", "enter", "bad"), ("wrap", "exit", "NodeError")]


async def test_a_running_hook_that_fails_on_entry_runs_nothing(pool_config: dict[str, Any]) -> None:
    class Refuses(ExecutionHooks):
        @contextlib.asynccontextmanager
        async def running(self, graph: Graph) -> AsyncIterator[None]:
            raise LookupError("no database")
            yield

    log: list[Any] = []
    recorder = Recorder()
    with pytest.raises(LookupError, match="no database"):
        await run(pool_config, CHAIN, Wrap(log), Refuses(), recorder)
    assert log == [("wrap", "enter", "chain"), ("wrap", "exit", "LookupError")]
    assert recorder.steps == []


async def test_a_running_hook_may_not_swallow_the_runs_exception(pool_config: dict[str, Any]) -> None:
    class Swallows(ExecutionHooks):
        @contextlib.asynccontextmanager
        async def running(self, graph: Graph) -> AsyncIterator[None]:
            with contextlib.suppress(NodeError):
                yield

    with pytest.raises(RuntimeError, match="swallowed the exception that ended the run") as info:
        await run(pool_config, {"graph": {"id": "bad"}, "nodes": [node("a", "tasks.fail")]}, Swallows())
    assert isinstance(info.value.__context__, NodeError)


async def test_hooks_must_be_a_list_of_execution_hooks(pool_config: dict[str, Any]) -> None:
    for bad in (Recorder(), [object()], "hooks"):
        with pytest.raises(OptionError, match="hooks"):
            await run_raw(pool_config, CHAIN, hooks=bad)


async def run_raw(pool_config: dict[str, Any], graph: Any, **options: Any) -> aioflow.Results:
    return await execute_graph_async(graph, **{**pool_config, **options})
