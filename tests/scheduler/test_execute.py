"""Executing graphs: the spec's semantics on every pool configuration."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pytest

import aioflow
from aioflow import MISSING, GraphError, IterationLimitError, MissingExtraError, NodeError, TaskInputError

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import ExecuteFn
from graphs import COUNTING_LOOP, defaults, node, rv

DIAMOND = {
    "graph": {"id": "diamond"},
    "nodes": [node("a"), node("b"), node("c"), node("d", "tasks.add")],
    "links": [rv("a", "b"), rv("a", "c"), rv("b", "d", "a"), rv("c", "d", "b")],
}


async def test_positional_inputs(execute: ExecuteFn) -> None:
    """Int input names are positional arguments, in order."""
    graph = {
        "nodes": [
            node(
                "a",
                "tasks.echo",
                default_inputs=[{"name": 1, "value": "b"}, {"name": "0", "value": "a"}, {"name": "k", "value": 1}],
            )
        ],
    }
    assert await execute(graph) == {"return_value": {"args": ["a", "b"], "kwargs": {"k": 1}}}


async def test_missing_required_input_is_a_clear_node_error(execute: ExecuteFn) -> None:
    """A method called without a parameter it requires fails with TaskInputError as cause."""
    graph = {"graph": {"id": "g"}, "nodes": [node("a", "tasks.needs_x")]}
    with pytest.raises(NodeError) as info:
        await execute(graph)
    assert isinstance(info.value.__cause__, TaskInputError)
    assert "missing the required input(s) 'x'" in str(info.value)
    assert info.value.node_id == "a"


async def test_failed_node_keeps_finished_results(execute: ExecuteFn) -> None:
    """NodeError names graph and node, has the task error as cause and the finished nodes' results."""
    graph = {
        "graph": {"id": "partial"},
        "nodes": [node("a"), node("b", "tasks.fail"), node("c", "tasks.inc")],
        "links": [rv("a", "b"), rv("a", "c")],
    }
    with pytest.raises(NodeError) as info:
        await execute(graph, outputs=[{"all": True}], merge_outputs=False)
    err = info.value
    assert str(err).startswith("graph 'partial': node 'b' failed: ValueError: failed on purpose")
    assert isinstance(err.__cause__, ValueError)
    assert err.results["a"] == {"return_value": 1}
    assert err.results["b"] == {}


async def test_raise_on_error_false_runs_other_branches(execute: ExecuteFn) -> None:
    """Without raise_on_error, other branches finish, successors of the failure do not run."""
    graph = {
        "nodes": [node("a"), node("b", "tasks.fail"), node("after_b"), node("c"), node("after_c")],
        "links": [rv("a", "b"), rv("b", "after_b"), rv("a", "c"), rv("c", "after_c")],
    }
    results = await execute(graph, raise_on_error=False, outputs=[{"all": True}], merge_outputs=False)
    assert results == {"a": {"return_value": 1}, "b": {}, "c": {"return_value": 2}, "after_c": {"return_value": 3}}
    assert list(results.errors) == ["b"]
    assert isinstance(results.errors["b"], ValueError)
    assert "after_b" not in results.executions


async def test_on_error_link_handles_the_failure(execute: ExecuteFn) -> None:
    """An on_error handler runs with WorkflowException; the execution succeeds."""
    graph = {
        "nodes": [node("a"), node("b", "tasks.fail"), node("h", "tasks.echo")],
        "links": [rv("a", "b"), {"source": "b", "target": "h", "on_error": True, "map_all_data": True}],
    }
    results = await execute(graph)
    kwargs = results["return_value"]["kwargs"]
    assert kwargs["x"] == 1
    assert "failed on purpose" in kwargs["WorkflowException"]["errorMessage"]
    assert isinstance(kwargs["WorkflowExceptionInstance"], ValueError)
    assert results.errors == {}


async def test_default_error_node_catches_every_failure(execute: ExecuteFn) -> None:
    """With a default error node, a failure anywhere ends in the handler (ewoksppf test 24)."""
    graph = {
        "nodes": [
            node("a"),
            node("b", "tasks.fail"),
            node(
                "handler",
                "tasks.identity",
                default_error_node=True,
                default_error_attributes={
                    "data_mapping": [{"source_output": "WorkflowExceptionInstance", "target_input": "value"}]
                },
            ),
        ],
        "links": [rv("a", "b")],
    }
    results = await execute(graph)
    assert isinstance(results["return_value"], ValueError)


async def test_conditions_route_and_else_value(execute: ExecuteFn) -> None:
    """ppfmethod outputs are tested inside _ppfdict; the else branch takes the rest."""

    def route_graph(d: int) -> dict[str, Any]:
        return {
            "nodes": [
                {
                    "id": "route",
                    "task_type": "ppfmethod",
                    "task_identifier": "tasks.ppf_route",
                    "default_inputs": defaults(d=d),
                },
                {
                    "id": "small",
                    "task_type": "ppfmethod",
                    "task_identifier": "tasks.ppf_add",
                    "default_inputs": defaults(a=100),
                },
                {"id": "other", "task_type": "ppfport"},
            ],
            "links": [
                {
                    "source": "route",
                    "target": "small",
                    "map_all_data": True,
                    "conditions": [{"source_output": "d", "value": 7}],
                },
                {
                    "source": "route",
                    "target": "other",
                    "map_all_data": True,
                    "conditions": [{"source_output": "d", "value": None}],
                },
            ],
        }

    small = await execute(route_graph(7))
    assert small == {"_ppfdict": {"a": 100, "d": 7}}
    assert small.executions == {"route": 1, "small": 1}
    other = await execute(route_graph(8))
    assert other == {"_ppfdict": {"d": 8}}


async def test_ppfmethod_must_return_a_dict(execute: ExecuteFn) -> None:
    """A ppfmethod returning None fails its node."""
    graph = {"nodes": [{"id": "p", "task_type": "ppfmethod", "task_identifier": "tasks.ppf_none"}]}
    with pytest.raises(NodeError, match="must return a dict"):
        await execute(graph)


async def test_loop_until_condition(execute: ExecuteFn) -> None:
    """A loop closed by a conditional link runs until the condition stops holding; results are the last outputs."""
    results = await execute(COUNTING_LOOP)
    assert results == {"_ppfdict": {"value": 4, "limit": 4, "small": False}}
    assert results.executions == {"start": 1, "again": 3, "end": 1}


async def test_spec_timing_example_17(execute: ExecuteFn) -> None:
    """t1->t2->t3 --[value==3]--> t4->t5->t2: t2 fires with t1's data, then with t5's on top (spec §6.3)."""
    ppf = "tasks.ppf_add"
    graph = {
        "nodes": [
            {"id": "t1", "task_type": "ppfmethod", "task_identifier": ppf, "default_inputs": defaults(a=0, b=1)},
            {"id": "t2", "task_type": "ppfmethod", "task_identifier": ppf},
            {"id": "t3", "task_type": "ppfmethod", "task_identifier": ppf},
            {"id": "t4", "task_type": "ppfmethod", "task_identifier": ppf},
            {"id": "t5", "task_type": "ppfmethod", "task_identifier": ppf},
        ],
        "links": [
            {"source": "t1", "target": "t2", "map_all_data": True},
            {"source": "t2", "target": "t3", "map_all_data": True},
            {"source": "t3", "target": "t4", "map_all_data": True, "conditions": [{"source_output": "a", "value": 3}]},
            {"source": "t4", "target": "t5", "map_all_data": True},
            {"source": "t5", "target": "t2", "map_all_data": True},
        ],
    }
    results = await execute(graph, max_iterations=10)
    # Each node adds b=1 to a. t1: 1; t2: 2; t3: 3 -> t4: 4; t5: 5 -> t2 (t1's
    # data under t5's): 6; t3: 7, the condition fails and the loop ends. t3,
    # the node with an uncovered condition, is the end node.
    assert results == {"_ppfdict": {"a": 7, "b": 1}}
    assert results.executions == {"t1": 1, "t2": 2, "t3": 2, "t4": 1, "t5": 1}


async def test_iteration_limit_stops_a_runaway_loop(execute: ExecuteFn) -> None:
    """A loop that never ends is stopped by max_iterations with a clear error and the results so far."""
    graph = {
        "graph": {"id": "forever"},
        "nodes": [node("a", "tasks.identity", force_start_node=True, default_inputs=defaults(value=True))],
        "links": [
            {
                "source": "a",
                "target": "a",
                "map_all_data": False,
                "conditions": [{"source_output": "return_value", "value": True}],
            }
        ],
    }
    with pytest.raises(IterationLimitError, match="node 'a' would run more than max_iterations=5 times") as info:
        await execute(graph, max_iterations=5)
    assert info.value.results.executions == {"a": 5}


async def test_blocked_cycle_is_refused_before_running(execute: ExecuteFn) -> None:
    """A cycle of required links cannot run: GraphError names its nodes."""
    graph = {
        "graph": {"id": "stuck"},
        "nodes": [node("s"), node("a"), node("b")],
        "links": [rv("s", "a"), rv("a", "b"), rv("b", "a", "y")],
    }
    with pytest.raises(GraphError, match="the cycle 'a' -> 'b' can never run"):
        await execute(graph)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"return_value": 4}),
        ({"merge_outputs": False}, {"d": {"return_value": 4}}),
        (
            {"outputs": [{"all": True}], "merge_outputs": False},
            {"a": {"return_value": 1}, "b": {"return_value": 2}, "c": {"return_value": 2}, "d": {"return_value": 4}},
        ),
        ({"outputs": [{"all": True}]}, {"return_value": 4}),
        ({"outputs": [{"id": "b", "name": "return_value", "new_name": "bee"}]}, {"bee": 2}),
        (
            {"outputs": [{"id": "b", "name": "return_value", "new_name": "bee"}], "merge_outputs": False},
            {"b": {"bee": 2}},
        ),
        ({"outputs": [{"id": "b", "name": "nope"}]}, {"nope": MISSING}),
        ({"outputs": []}, {}),
    ],
)
async def test_outputs_and_merge_outputs(execute: ExecuteFn, options: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every outputs= form of spec §6.6 returns what it selects."""
    assert await execute(DIAMOND, **options) == expected


async def test_unknown_output_id_is_refused_before_running(execute: ExecuteFn) -> None:
    """A typo in outputs= is reported before any task runs."""
    with pytest.raises(GraphError, match=r"outputs\[0\]: no node 'dd' \(did you mean 'd'\?\)"):
        await execute(DIAMOND, outputs=[{"id": "dd"}])


async def test_inputs_and_startargs(execute: ExecuteFn) -> None:
    """inputs= go to start nodes; startargs reach every start node under link data."""
    graph = {"nodes": [node("a"), node("b", "tasks.add", default_inputs=defaults(b=100))], "links": [rv("a", "b", "a")]}
    assert await execute(graph, inputs=[{"name": "x", "value": 10}]) == {"return_value": 111}
    assert await execute(graph, startargs={"x": 5}) == {"return_value": 106}


async def test_unexpected_input_is_a_clear_node_error(execute: ExecuteFn) -> None:
    """A method given an input it does not accept fails with TaskInputError naming it."""
    graph = {"nodes": [node("a", default_inputs=defaults(y=1))]}
    with pytest.raises(NodeError, match=r"cannot take its inputs .*unexpected keyword argument 'y'") as info:
        await execute(graph)
    assert isinstance(info.value.__cause__, TaskInputError)


async def test_script_task(execute: ExecuteFn, tmp_path: Path) -> None:
    """A Python script runs as a subprocess with flags from its inputs."""
    script = tmp_path / "show.py"
    script.write_text("import sys\nprint(' '.join(sys.argv[1:]))\n")
    graph = {
        "nodes": [
            {
                "id": "s",
                "task_type": "script",
                "task_identifier": str(script),
                "default_inputs": defaults(n=3, name="x", flag="", _capture_output=True),
            }
        ]
    }
    results = await execute(graph)
    assert results["return_code"] == 0
    assert results["out"].strip() == "-n 3 --name x --flag"


async def test_script_command_line_and_exit_code(execute: ExecuteFn) -> None:
    """A command line runs split on spaces; a non-zero exit fails only with _raise_on_error."""
    ok = {"nodes": [{"id": "s", "task_type": "script", "task_identifier": f"{sys.executable} -c pass"}]}
    assert (await execute(ok))["return_code"] == 0
    failing: dict[str, Any] = {
        "nodes": [{"id": "s", "task_type": "script", "task_identifier": f"{sys.executable} -c exit(3)"}]
    }
    assert (await execute(failing))["return_code"] == 3
    failing["nodes"][0]["default_inputs"] = defaults(_raise_on_error=True)
    with pytest.raises(NodeError, match="exited with code 3"):
        await execute(failing)


async def test_task_from_a_file_path(execute: ExecuteFn, tmp_path: Path) -> None:
    """'/path/file.py::func' imports the function from that file."""
    module = tmp_path / "filetask.py"
    module.write_text("def triple(x):\n    return 3 * x\n")
    graph = {"nodes": [node("t", f"{module}::triple", default_inputs=defaults(x=2))]}
    assert await execute(graph) == {"return_value": 6}


async def test_unknown_task_function_fails_the_node(execute: ExecuteFn) -> None:
    """An identifier that does not import fails its node with an ImportError naming it."""
    graph = {"nodes": [node("t", "tasks.no_such_function")]}
    with pytest.raises(NodeError) as info:
        await execute(graph)
    assert isinstance(info.value.__cause__, ImportError)
    assert "'tasks.no_such_function'" in str(info.value.__cause__)


async def test_class_tasks_need_the_ewoks_extra(execute: ExecuteFn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ewokscore installed, a class node is refused before running, naming the extra."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ewokscore" else real_find_spec(name, *a)
    )
    graph = {"graph": {"id": "cls"}, "nodes": [{"id": "c", "task_type": "class", "task_identifier": "pkg.Task"}]}
    with pytest.raises(
        MissingExtraError,
        match=r"node 'c' \(task_type 'class'\) needs the 'ewokscore' package: pip install 'aioflow\[ewoks\]'",
    ):
        await execute(graph)


async def test_empty_graph_returns_empty_results(execute: ExecuteFn) -> None:
    """An empty graph runs nothing and returns {}."""
    assert await execute({}) == {}


async def test_events_are_emitted_in_order(execute: ExecuteFn) -> None:
    """graph.started, node.queued/started/finished per node, graph.finished."""
    events: list[aioflow.Event] = []
    graph = {"graph": {"id": "ev"}, "nodes": [node("a"), node("b")], "links": [rv("a", "b")]}
    await execute(graph, on_event=events.append)
    assert [(e.kind, e.node_id, e.seq) for e in events] == [
        ("graph.started", None, 0),
        ("node.queued", "a", 0),
        ("node.started", "a", 0),
        ("node.finished", "a", 0),
        ("node.queued", "b", 1),
        ("node.started", "b", 1),
        ("node.finished", "b", 1),
        ("graph.finished", None, 0),
    ]
    assert events[0].total == 2
    assert events[-1].state == "finished"


async def test_callback_error_stops_the_execution(execute: ExecuteFn) -> None:
    """An exception raised by on_event is raised to the caller."""

    def callback(event: aioflow.Event) -> None:
        if event.kind == "node.finished":
            raise KeyError("from callback")

    with pytest.raises(KeyError, match="from callback"):
        await execute(DIAMOND, on_event=callback)


async def test_callback_failing_at_start_runs_nothing(execute: ExecuteFn) -> None:
    """An on_event that fails on graph.started stops the execution before any node runs."""
    ran: list[str] = []

    def callback(event: aioflow.Event) -> None:
        ran.append(event.kind)
        if event.kind == "graph.started":
            raise KeyError("refused")

    with pytest.raises(KeyError, match="refused"):
        await execute(DIAMOND, on_event=callback)
    assert "node.started" not in ran
