"""The ppf rules that ewoksppf's own test workflows exercise, pinned on small graphs.

``tests/ewoks/test_reference_workflows.py`` runs ewoksppf's suite on aioflow; the
tests here pin the same rules without ewoksppf, each on a graph shaped like the
reference workflow named in its docstring ("wf17" is ewoksppf's
``test_ppf_workflow17``). The rules are those of the graph format docs: what
runs, and with which inputs.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import aioflow
from aioflow import NodeError, load_graph
from aioflow.scheduler._state import ExecutionState

T = "ppf_semantics_tasks."


def defaults(**values: Any) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def ppf(nid: Any, func: str = "ppf_inc", **inputs: Any) -> dict[str, Any]:
    """A ``ppfmethod`` node running ``ppf_semantics_tasks.<func>``."""
    return {"id": nid, "task_type": "ppfmethod", "task_identifier": T + func, "default_inputs": defaults(**inputs)}


def method(nid: Any, func: str, **inputs: Any) -> dict[str, Any]:
    """A ``method`` node; ``func`` is a qualified name."""
    return {"id": nid, "task_type": "method", "task_identifier": func, "default_inputs": defaults(**inputs)}


def port(nid: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "ppfport"}


def all_data(source: Any, target: Any, **attrs: Any) -> dict[str, Any]:
    return {"source": source, "target": target, "map_all_data": True, **attrs}


def graph(nodes: list[dict[str, Any]], links: list[dict[str, Any]] | None = None, **attrs: Any) -> dict[str, Any]:
    return {"graph": {"id": "g", **attrs}, "nodes": nodes, "links": links or []}


def run(doc: dict[str, Any], **options: Any) -> aioflow.Results:
    """Execute on the thread pool: the rules tested here do not depend on the pool."""
    return aioflow.execute_graph(doc, pool_type="thread", max_workers=2, **options)


def per_node(doc: dict[str, Any], **options: Any) -> aioflow.Results:
    """Every node's last outputs, by node id."""
    return run(doc, outputs=[{"all": True}], merge_outputs=False, **options)


def ppfdict(**values: Any) -> dict[str, Any]:
    return {"_ppfdict": values}


# ---------------------------------------------------------------------------- ppfmethod, ppfport


def test_ppfmethod_outputs_its_arguments_updated_by_its_result() -> None:
    """A ppfmethod's ``_ppfdict`` is its arguments with its returned dict on top (wf1)."""
    assert run(graph([ppf("a", value=1, name="x")])) == ppfdict(value=2, name="x")


def test_incoming_ppfdict_overrides_the_node_own_inputs() -> None:
    """An incoming ``_ppfdict`` is unpacked over the node's default inputs (wf6, wf7)."""
    doc = graph([ppf("a", value=1), ppf("b", value=100, other=5)], [all_data("a", "b")])
    assert run(doc) == ppfdict(value=3, other=5)


def test_ppfport_passes_the_ppfdict_on() -> None:
    """A ppfport runs nothing and hands its incoming ``_ppfdict`` on (wf6, wf11, wf14)."""
    doc = graph([ppf("a", value=1), port("p"), ppf("b")], [all_data("a", "p"), all_data("p", "b")])
    results = per_node(doc)
    assert results["p"] == ppfdict(value=2)
    assert results["b"] == ppfdict(value=3)


def test_link_without_mapping_only_triggers() -> None:
    """Without ``map_all_data`` or ``data_mapping``, not even ``_ppfdict`` travels (wf3, wf18)."""
    doc = graph([ppf("a", value=1), ppf("b", value=10)], [{"source": "a", "target": "b"}])
    assert per_node(doc)["b"] == ppfdict(value=11)


# ---------------------------------------------------------------------------- subgraphs


def test_sub_target_attributes_replace_the_inner_default_inputs() -> None:
    """``sub_target_attributes`` replace the inner node's ``default_inputs`` as a whole list (wf3)."""
    inner = graph([ppf("task", value=1, extra=7)])
    doc = graph(
        [ppf("first", value=0), {"id": "middle", "task_type": "graph", "task_identifier": inner}, ppf("last")],
        [
            {
                "source": "first",
                "target": "middle",
                "sub_target": "task",
                "sub_target_attributes": {"default_inputs": defaults(value=100)},
            },
            {"source": "middle", "sub_source": "task", "target": "last", "map_all_data": True},
        ],
    )
    results = per_node(doc)
    assert results["middle", "task"] == ppfdict(value=101)
    assert results["last"] == ppfdict(value=102)


def test_nested_subgraphs_flatten_and_a_link_can_leave_from_a_sub_subgraph() -> None:
    """Nested subgraphs get nested tuple ids; ``sub_source`` may name a node two levels down (wf11, wf14, wf16)."""
    inner = graph([port("in"), ppf("inc"), port("out")], [all_data("in", "inc"), all_data("inc", "out")])
    middle = graph(
        [
            port("in"),
            ppf("inc1"),
            {"id": "sub", "task_type": "graph", "task_identifier": inner},
            ppf("inc2"),
            port("out"),
        ],
        [
            all_data("in", "inc1"),
            all_data("inc1", "sub", sub_target="in"),
            all_data("sub", "inc2", sub_source="out"),
            all_data("inc2", "out"),
        ],
    )
    doc = graph(
        [ppf("a", value=1), {"id": "middle", "task_type": "graph", "task_identifier": middle}, ppf("b")],
        [all_data("a", "middle", sub_target="in"), all_data("middle", "b", sub_source=["sub", "out"])],
    )
    results = per_node(doc)
    assert results["middle", ("sub", "out")] == ppfdict(value=4)
    assert results["b"] == ppfdict(value=5)
    assert results["middle", "out"] == ppfdict(value=5)
    assert run(doc) == ppfdict(value=5)  # end nodes b and ('middle', 'out'), merged


def conditional_ports(on_error: bool) -> dict[str, Any]:
    """wf21: a subgraph whose output aliases are a condition's two branches (or success / error)."""
    if on_error:
        check = method("gt", T + "must_be_greater")
        true_port: dict[str, Any] = {"id": "true", "node": "gt"}
        false_port: dict[str, Any] = {"id": "false", "node": "gt", "link_attributes": {"on_error": True}}
    else:
        check = method("gt", T + "greater_than")
        true_port = {
            "id": "true",
            "node": "gt",
            "link_attributes": {"conditions": [{"source_output": "return_value", "value": True}]},
        }
        false_port = {
            "id": "false",
            "node": "gt",
            "link_attributes": {"conditions": [{"source_output": "return_value", "value": False}]},
        }
    sub = {
        "graph": {"id": "sub", "input_nodes": [{"id": "in", "node": "gt"}], "output_nodes": [true_port, false_port]},
        "nodes": [check],
    }
    rv = [{"source_output": "return_value", "target_input": "a"}]
    return graph(
        [
            method("in", T + "single"),
            {"id": "sub", "task_type": "graph", "task_identifier": sub},
            method("out1", T + "single", a=1),
            method("out2", T + "single", a=2),
            method("out", T + "single"),
        ],
        [
            {"source": "in", "target": "sub", "sub_target": "in", "data_mapping": rv},
            {"source": "sub", "sub_source": "true", "target": "out1"},
            {"source": "sub", "sub_source": "false", "target": "out2"},
            {"source": "out1", "target": "out", "data_mapping": rv, **({"required": False} if on_error else {})},
            {
                "source": "out2",
                "target": "out",
                "data_mapping": [{"source_output": "return_value", "target_input": "b"}],
            },
        ],
    )


@pytest.mark.parametrize("on_error", [False, True], ids=["conditions", "on_error"])
@pytest.mark.parametrize(("a", "branch", "value"), [(20, "out1", 1), (0, "out2", 2)])
def test_output_aliases_carry_link_attributes(on_error: bool, a: int, branch: str, value: int) -> None:
    """``link_attributes`` of an output alias (conditions, ``on_error``) go on every link through it (wf21)."""
    results = run(conditional_ports(on_error), inputs=[{"name": "a", "value": a}])
    assert results == {"return_value": value}
    other = "out2" if branch == "out1" else "out1"
    assert branch in results.executions
    assert other not in results.executions
    assert results.errors == {}


# ---------------------------------------------------------------------------- conditions


def test_conditions_of_a_ppfmethod_are_tested_inside_its_ppfdict() -> None:
    """Only the branch whose condition holds on a ``_ppfdict`` value runs (wf9)."""
    doc = graph(
        [ppf("a", value=1), ppf("b"), ppf("c")],
        [
            all_data("a", "b", conditions=[{"source_output": "value", "value": 2}]),
            all_data("a", "c", conditions=[{"source_output": "value", "value": 3}]),
        ],
    )
    results = run(doc)
    assert results == ppfdict(value=3)
    assert results.executions == {"a": 1, "b": 1}


@pytest.mark.parametrize(("start", "ran"), [(0, False), (1, True)])
def test_a_condition_on_the_link_into_a_subgraph_gates_the_whole_subgraph(start: int, ran: bool) -> None:
    """A conditional link into a subgraph's input port runs the subgraph only when it holds (wf12)."""
    inner = graph([port("in"), ppf("inc"), port("out")], [all_data("in", "inc"), all_data("inc", "out")])
    doc = graph(
        [ppf("a", value=start), {"id": "sub", "task_type": "graph", "task_identifier": inner}, ppf("b")],
        [
            all_data("a", "sub", sub_target="in", conditions=[{"source_output": "value", "value": 2}]),
            all_data("sub", "b", sub_source="out"),
        ],
    )
    results = run(doc)
    if ran:
        assert results == ppfdict(value=4)
        assert set(results.executions) == {"a", ("sub", "in"), ("sub", "inc"), ("sub", "out"), "b"}
    else:
        assert results == {}  # the only end node never ran
        assert results.executions == {"a": 1}


@pytest.mark.parametrize(
    ("d", "target"), [(7, "seven"), (13, "thirteen"), (8, "other"), ("__other__", "other"), (None, "other")]
)
def test_the_else_value_takes_every_value_no_other_branch_names(d: Any, target: str) -> None:
    """A condition on the node's ``conditions_else_value`` holds for any value not tested elsewhere (wf19)."""
    route = ppf("route", "ppf_inc")
    route["task_identifier"] = "tasks.ppf_route"
    route["conditions_else_value"] = "__other__"
    route["default_inputs"] = defaults(d=d)
    doc = graph(
        [route, port("seven"), port("thirteen"), port("other")],
        [
            all_data("route", "seven", conditions=[{"source_output": "d", "value": 7}]),
            all_data("route", "thirteen", conditions=[{"source_output": "d", "value": 13}]),
            all_data("route", "other", conditions=[{"source_output": "d", "value": "__other__"}]),
        ],
    )
    results = run(doc)
    assert set(results.executions) == {"route", target}


def ppf_end_graph() -> dict[str, Any]:
    """ewoksppf's test_ppf_end with ppfmethods: two loops, leaving through a ``None`` (else) condition."""
    return graph(
        [ppf(f"task{i}", "ppf_inc_ab") for i in range(1, 6)],
        [
            all_data("task1", "task2"),
            all_data("task2", "task3"),
            all_data(
                "task3", "task4", conditions=[{"source_output": "a", "value": 3}, {"source_output": "b", "value": 3}]
            ),
            all_data(
                "task3", "task5", conditions=[{"source_output": "a", "value": 6}, {"source_output": "b", "value": None}]
            ),
            all_data("task4", "task2"),
            all_data("task5", "task2"),
        ],
    )


def test_a_null_condition_is_an_else_branch_by_default() -> None:
    """With the default else value ``None``, ``{"value": null}`` holds for values no other link tests (ppf_end)."""
    results = run(ppf_end_graph())
    assert results == ppfdict(a=9, b=9)
    assert results.executions == {"task1": 1, "task2": 3, "task3": 3, "task4": 1, "task5": 1}


def test_end_nodes_of_an_all_loop_graph_are_those_with_an_uncovered_condition() -> None:
    """When every node has a successor, the end nodes are the nodes with an uncovered condition (ppf_end, wf17)."""
    assert load_graph(ppf_end_graph()).end_nodes == ("task3",)


def test_end_nodes_of_a_loop_merge_in_a_stable_order_not_by_finish_time() -> None:
    """Every end node's last outputs are merged in graph order; ewoksppf keeps the last to finish (triangle1).

    The loop ends at ``t2`` (value 5), but ``t3`` comes last in the order, so its last
    outputs (value 3) are on top. This is one of aioflow's deliberate differences.
    """
    first = ppf("t1", "ppf_inc_until", value=0, limit=5)
    first["task_identifier"] = "tasks.ppf_inc_until"
    first["force_start_node"] = True
    nodes = [first, ppf("t2"), ppf("t3")]
    for n in nodes[1:]:
        n["task_identifier"] = "tasks.ppf_inc_until"
    small = [{"source_output": "small", "value": True}]
    doc = graph(nodes, [all_data(s, t, conditions=small) for s, t in (("t1", "t2"), ("t2", "t3"), ("t3", "t1"))])
    assert load_graph(doc).end_nodes == ("t1", "t2", "t3")
    results = run(doc)
    assert results.executions == {"t1": 2, "t2": 2, "t3": 1}
    assert results == ppfdict(value=3, limit=5, small=True)


# ---------------------------------------------------------------------------- loops and requiredness


def wf17(condition: int) -> dict[str, Any]:
    return graph(
        [ppf("t1", value=0), ppf("t2"), ppf("t3"), ppf("t4"), ppf("t5")],
        [
            all_data("t1", "t2"),
            all_data("t2", "t3"),
            all_data("t3", "t4", conditions=[{"source_output": "value", "value": condition}]),
            all_data("t4", "t5"),
            all_data("t5", "t2"),
        ],
    )


def test_optionality_propagates_downstream_of_a_conditional_link_around_a_loop() -> None:
    """Every link whose source lies downstream of a conditional link is optional, inside the loop too (wf17)."""
    loaded = load_graph(wf17(3))
    required = {
        (link.source, link.target): r for link, r in zip(loaded.links, loaded.analysis.link_required, strict=True)
    }
    assert required == {
        ("t1", "t2"): True,
        ("t2", "t3"): False,
        ("t3", "t4"): False,
        ("t4", "t5"): False,
        ("t5", "t2"): False,
    }


@pytest.mark.parametrize(("condition", "value", "t2_runs"), [(3, 7, 2), (1000, 3, 1)])
def test_a_loop_entered_by_a_required_link_reruns_with_the_back_link_data_on_top(
    condition: int, value: int, t2_runs: int
) -> None:
    """The loop's first node fires with the required data, then again with the back link's data over it (wf17)."""
    results = run(wf17(condition))
    assert results == ppfdict(value=value)
    assert results.executions["t2"] == t2_runs


def test_a_forced_start_node_inside_a_loop_starts_it() -> None:
    """``force_start_node`` starts a node that has an in-link; the loop runs until its condition fails (wf10)."""
    add = ppf("add", value=1, limit=10)
    add["force_start_node"] = True
    doc = graph(
        [add, ppf("check", "ppf_check")],
        [
            all_data("add", "check"),
            all_data("check", "add", conditions=[{"source_output": "doContinue", "value": "true"}]),
        ],
    )
    results = run(doc)
    assert results == ppfdict(doContinue="false", limit=10, value=10)
    assert results.executions == {"add": 9, "check": 9}


@pytest.mark.parametrize(("dotask4", "merged"), [(True, 12), (False, 2)])
def test_a_trigger_only_required_link_is_waited_for(dotask4: bool, merged: int) -> None:
    """A node waits for a required link even when it carries no data; end nodes merge in order (wf18)."""
    doc = graph(
        [ppf("task1", value=0), ppf("task2", value=10), ppf("task3"), ppf("task4")],
        [
            all_data("task1", "task3"),
            {"source": "task2", "target": "task3"},
            all_data("task2", "task4", conditions=[{"source_output": "value", "value": 11 if dotask4 else 0}]),
        ],
    )
    results = per_node(doc)
    assert results["task3"] == ppfdict(value=2)
    assert results.executions["task3"] == 1
    assert ("task4" in results) is dotask4
    assert run(doc) == ppfdict(value=merged)


# ---------------------------------------------------------------------------- the firing rule of wf25

GATHER_LINKS = {"required": [1, 2], "optional": [1, 2], "retained": [1, 2]}


def gather_state() -> ExecutionState:
    """wf25: two required links, two optional cached links and two optional uncached links into ``gather``."""
    nodes = [method(f"{kind}{i}", "tasks.identity") for kind, ids in GATHER_LINKS.items() for i in ids]
    links = []
    for kind, ids in GATHER_LINKS.items():
        for i in ids:
            attrs: dict[str, Any] = {}
            if kind != "required":
                attrs = {"required": False, "cache_if_optional": kind == "optional"}
            mapping = [{"source_output": "return_value", "target_input": f"{kind}{i}"}]
            links.append({"source": f"{kind}{i}", "target": "gather", "data_mapping": mapping, **attrs})
    return ExecutionState(load_graph(graph([*nodes, method("gather", "tasks.echo")], links)))


@pytest.mark.parametrize("order", list(itertools.permutations(GATHER_LINKS)), ids="-".join)
def test_the_last_firing_has_required_and_cached_data_and_the_latest_uncached_trigger(order: tuple[str, ...]) -> None:
    """Whatever the arrival order: required and cached links are all present, uncached ones only the latest (wf25)."""
    state = gather_state()
    starts = {f.node_id: f for f in state.start()}
    last = None
    for kind in order:
        for i in GATHER_LINKS[kind]:
            for firing in state.succeeded(starts[f"{kind}{i}"], {"return_value": True}):
                last = firing
    assert last is not None
    assert last.node_id == "gather"
    assert set(last.inputs) == {"required1", "required2", "optional1", "optional2", "retained2"}


# ---------------------------------------------------------------------------- inputs=


def test_inputs_without_a_selector_go_to_the_start_nodes() -> None:
    """An ``inputs=`` item without ``id``/``label``/``all`` sets a default input of the start nodes only (wf20)."""
    doc = graph([ppf("task1"), ppf("task2")], [all_data("task1", "task2")])
    inputs = [{"name": "value", "value": 5}]
    loaded = load_graph(doc, inputs=inputs)
    assert loaded.nodes["task1"].default_inputs == {"value": 5}
    assert loaded.nodes["task2"].default_inputs == {}
    assert run(doc, inputs=inputs) == ppfdict(value=7)


def test_inputs_with_an_id_go_to_that_node_only() -> None:
    """An ``inputs=`` item with ``id`` sets a default input of that node (wf21, wf25)."""
    doc = graph([ppf("a"), ppf("b")])
    results = per_node(doc, inputs=[{"id": "b", "name": "value", "value": 5}])
    assert results == {"a": ppfdict(value=1), "b": ppfdict(value=6)}


# ---------------------------------------------------------------------------- errors


def test_an_error_link_delivers_the_dynamic_inputs_and_the_exception() -> None:
    """An ``on_error`` link carries the failed firing's link inputs (not its defaults) and the error (wf21, wf24)."""
    doc = graph(
        [ppf("a", value=1), method("b", "tasks.fail", x=5), method("h", "tasks.echo")],
        [all_data("a", "b"), all_data("b", "h", on_error=True)],
    )
    results = per_node(doc)
    handled = results["h"]["return_value"]["kwargs"]
    assert sorted(handled) == ["WorkflowException", "WorkflowExceptionInstance", "_ppfdict"]
    assert handled["_ppfdict"] == {"value": 2}
    assert "failed on purpose" in handled["WorkflowException"]["errorMessage"]
    assert isinstance(handled["WorkflowExceptionInstance"], ValueError)
    assert results.errors == {}


def wf24() -> dict[str, Any]:
    """Default error handlers at three levels; each handler is a subgraph of the level above."""
    subsub = {
        "graph": {
            "id": "subsub",
            "input_nodes": [{"id": "in", "node": "subsubtask1"}],
            "output_nodes": [{"id": "out", "node": "subsubtask3"}],
        },
        "nodes": [
            ppf("subsubtask1", "subsubtask1"),
            ppf("subsubtask2", "subsubtask2"),
            ppf("subsubtask3", "subsubtask3"),
            {**ppf("subsub_handler", "subsub_handler"), "default_error_node": True},
        ],
        "links": [all_data("subsubtask1", "subsubtask2"), all_data("subsubtask2", "subsubtask3")],
    }
    sub = {
        "graph": {
            "id": "sub",
            "input_nodes": [{"id": "in", "node": "subtask1"}],
            "output_nodes": [{"id": "out", "node": "subtask3"}],
        },
        "nodes": [
            ppf("subtask1", "subtask1"),
            ppf("subtask2", "subtask2"),
            ppf("subtask3", "subtask3"),
            {"id": "sub_handler", "task_type": "graph", "task_identifier": subsub, "default_error_node": True},
        ],
        "links": [all_data("subtask1", "subtask2"), all_data("subtask2", "subtask3")],
    }
    return graph(
        [
            ppf("task1", "task1"),
            ppf("task2", "task2"),
            ppf("task3", "task3"),
            {"id": "top_handler", "task_type": "graph", "task_identifier": sub, "default_error_node": True},
        ],
        [all_data("task1", "task2"), all_data("task2", "task3")],
    )


@pytest.mark.parametrize(
    ("raise_on", "succeeded"),
    [
        ((), ("task1", "task2", "task3")),
        (("task3",), ("task1", "task2", "subtask1", "subtask2", "subtask3")),
        (("task3", "subtask2"), ("task1", "task2", "subtask1", "subsubtask1", "subsubtask2", "subsubtask3")),
        (("task3", "subtask3", "subsubtask1"), ("task1", "task2", "subtask1", "subtask2", "subsub_handler")),
    ],
)
def test_default_error_handlers_at_every_subgraph_level(raise_on: tuple[str, ...], succeeded: tuple[str, ...]) -> None:
    """Each level's default handler takes that level's failures, handlers' failures go one level up (wf24)."""
    inputs = [{"name": "succeeded", "value": ()}, {"name": "raise_on_names", "value": raise_on}]
    results = run(wf24(), inputs=inputs)
    assert results["_ppfdict"]["succeeded"] == succeeded
    if raise_on:
        assert "raise on name: task3" in str(results["_ppfdict"]["WorkflowExceptionInstance"])
    else:
        assert "WorkflowExceptionInstance" not in results["_ppfdict"]
    assert results.errors == {}


def test_an_unhandled_failure_is_reported_not_returned_as_data() -> None:
    """wf2 differs on purpose: with ``raise_on_error=False`` the failure is in ``Results.errors``, the data is ``{}``."""
    doc = graph([method("fails", "tasks.fail", name="x")])
    results = run(doc, raise_on_error=False)
    assert results == {}
    assert isinstance(results.errors["fails"], ValueError)
    with pytest.raises(NodeError, match="failed on purpose") as info:
        run(doc)
    assert info.value.node_id == "fails"
