"""Graph analysis: requiredness, start and end nodes, cycles, default error handlers, order."""

from __future__ import annotations

from typing import Any

import pytest

from aioflow import Graph, GraphError, load_graph


def node(nid: Any, **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": "tasks.inc", **attrs}


def link(source: Any, target: Any, **attrs: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **attrs}


def cond(value: Any, name: str = "return_value") -> list[dict[str, Any]]:
    return [{"source_output": name, "value": value}]


def required(graph: Graph) -> dict[tuple[Any, Any], bool]:
    return {(lk.source, lk.target): r for lk, r in zip(graph.links, graph.analysis.link_required, strict=False)}


def test_plain_links_are_required() -> None:
    """Links with nothing optional upstream are required."""
    graph = load_graph({"nodes": [node("a"), node("b"), node("c")], "links": [link("a", "b"), link("b", "c")]})
    assert required(graph) == {("a", "b"): True, ("b", "c"): True}


def test_optionality_propagates_downstream_for_ever() -> None:
    """After a conditional link every downstream link is optional, even after a join (spec §3.5)."""
    graph = load_graph(
        {
            "nodes": [node(n) for n in ("fan", "a", "b", "merge", "end", "other")],
            "links": [
                link("fan", "a", conditions=cond(1)),
                link("a", "b"),
                link("b", "merge"),
                link("fan", "other"),
                link("other", "merge"),
                link("merge", "end"),
            ],
        }
    )
    assert required(graph) == {
        ("fan", "a"): False,
        ("a", "b"): False,
        ("b", "merge"): False,
        ("fan", "other"): True,
        ("other", "merge"): True,
        ("merge", "end"): False,
    }


def test_explicit_required_wins() -> None:
    """required: true/false overrides the computation, also on conditional links."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("b"), node("c")],
            "links": [
                link("a", "b", conditions=cond(1), required=True),
                link("b", "c"),
                link("a", "c", required=False),
            ],
        }
    )
    # a->b is required explicitly, so it does not make what follows b optional.
    assert required(graph) == {("a", "b"): True, ("b", "c"): True, ("a", "c"): False}


def test_on_error_links_are_optional() -> None:
    """An on_error link is optional and makes its target's out-links optional."""
    graph = load_graph(
        {"nodes": [node("a"), node("h"), node("z")], "links": [link("a", "h", on_error=True), link("h", "z")]}
    )
    assert required(graph) == {("a", "h"): False, ("h", "z"): False}
    assert graph.analysis.error_links_out["a"] == (0,)
    assert graph.analysis.data_links_out["a"] == ()


def test_loop_closed_by_a_conditional_link_makes_the_loop_optional() -> None:
    """Every link whose source lies downstream of the conditional back link is optional."""
    graph = load_graph(
        {
            "nodes": [node("t1"), node("t2"), node("t3"), node("t4"), node("t5")],
            "links": [
                link("t1", "t2"),
                link("t2", "t3"),
                link("t3", "t4", conditions=cond(3)),
                link("t4", "t5"),
                link("t5", "t2"),
            ],
        }
    )
    assert required(graph) == {
        ("t1", "t2"): True,
        ("t2", "t3"): False,
        ("t3", "t4"): False,
        ("t4", "t5"): False,
        ("t5", "t2"): False,
    }
    assert graph.cycles == (("t2", "t3", "t4", "t5"),)
    assert graph.analysis.blocked_cycles == ()


def test_unconditional_cycle_loads_and_is_reported_blocked() -> None:
    """A cycle of required links loads (no RecursionError) and is reported as unable to run."""
    graph = load_graph(
        {"nodes": [node("s"), node("a"), node("b")], "links": [link("s", "a"), link("a", "b"), link("b", "a")]}
    )
    assert graph.cycles == (("a", "b"),)
    assert graph.analysis.blocked_cycles == (("a", "b"),)


def test_self_loop_is_a_cycle() -> None:
    """A node linked to itself is a cycle of one."""
    graph = load_graph({"nodes": [node("a", force_start_node=True)], "links": [link("a", "a", conditions=cond(1))]})
    assert graph.cycles == (("a",),)
    assert graph.start_nodes == ("a",)


def test_start_nodes_include_forced_ones() -> None:
    """Start nodes: no predecessors, or force_start_node (spec §4.1)."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("b", force_start_node=True), node("c")],
            "links": [link("a", "b"), link("b", "c"), link("c", "b", conditions=cond(0))],
        }
    )
    assert graph.start_nodes == ("a", "b")


def test_end_nodes_are_nodes_without_data_successors() -> None:
    """A node whose only successors are error handlers is an end node (spec §4.2)."""
    graph = load_graph(
        {"nodes": [node("a"), node("b"), node("h")], "links": [link("a", "b"), link("b", "h", on_error=True)]}
    )
    assert graph.end_nodes == ("b", "h")


@pytest.mark.parametrize(
    ("values", "else_value", "uncovered"),
    [
        ([2, None], None, False),
        (["x", "other"], "other", False),
        ([True, False], None, False),
        ([True], None, True),
        ([2, 3], None, True),
    ],
)
def test_end_nodes_of_a_graph_where_every_node_has_successors(
    values: list[Any], else_value: Any, uncovered: bool
) -> None:
    """Without pure end nodes, nodes with an uncovered condition are the end nodes."""
    targets = [f"t{i}" for i in range(len(values))]
    graph = load_graph(
        {
            "nodes": [node("a", force_start_node=True, conditions_else_value=else_value)] + [node(t) for t in targets],
            "links": [link("a", t, conditions=cond(v)) for t, v in zip(targets, values, strict=False)]
            + [link(t, "a", conditions=cond(-1)) for t in targets],
        }
    )
    assert ("a" in graph.end_nodes) == uncovered


def test_stable_order_is_kahn_by_generations() -> None:
    """The order is generation by generation, declaration order first."""
    graph = load_graph(
        {
            "nodes": [node("d"), node("c"), node("b"), node("a")],
            "links": [link("d", "a"), link("c", "b"), link("b", "a")],
        }
    )
    assert graph.analysis.order == ("d", "c", "b", "a")


def test_long_chain_loads_without_recursion() -> None:
    """A 100,000-node chain loads: the analysis is iterative."""
    n = 100_000
    graph = load_graph(
        {
            "nodes": [node(i) for i in range(n)],
            "links": [link(i, i + 1) for i in range(n - 1)],
        }
    )
    assert graph.start_nodes == (0,)
    assert graph.end_nodes == (n - 1,)
    assert all(graph.analysis.link_required)


def test_long_cycle_components_are_found_iteratively() -> None:
    """A 50,000-node ring is one strongly connected component."""
    n = 50_000
    graph = load_graph(
        {
            "nodes": [node(i, force_start_node=i == 0) for i in range(n)],
            "links": [link(i, (i + 1) % n, **({"conditions": cond(0)} if i == n - 1 else {})) for i in range(n)],
        }
    )
    assert len(graph.cycles) == 1
    assert len(graph.cycles[0]) == n


# ----------------------------------------------------------------- default error handlers


def test_default_error_handler_is_wired_to_every_other_node() -> None:
    """Every node gets an on_error link with map_all_data to the handler (spec §3.8)."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("b"), node("h", default_error_node=True)],
            "links": [link("a", "b")],
        }
    )
    error_links = {(lk.source, lk.target): lk for lk in graph.links if lk.on_error}
    assert set(error_links) == {("a", "h"), ("b", "h")}
    assert all(lk.map_all_data for lk in error_links.values())
    assert "default_error_node" not in graph.nodes["h"].attributes


def test_default_error_handler_skips_nodes_with_handlers_and_downstream_nodes() -> None:
    """Nodes with their own on_error link and nodes downstream of a handler are not wired."""
    graph = load_graph(
        {
            "nodes": [
                node("a"),
                node("own"),
                node("mine"),
                node(
                    "h",
                    default_error_node=True,
                    default_error_attributes={
                        "data_mapping": [{"source_output": "WorkflowException", "target_input": "e"}]
                    },
                ),
                node("after"),
            ],
            "links": [link("a", "own"), link("own", "mine", on_error=True), link("h", "after")],
        }
    )
    wired = sorted(lk.source for lk in graph.links if lk.target == "h")
    # 'mine' is a hand-written handler: it gets wired too.
    assert wired == ["a", "mine"]
    mapping = next(lk for lk in graph.links if lk.source == "a" and lk.target == "h").data_mapping
    assert mapping == (("WorkflowException", "e"),)


def test_unused_default_error_handler_is_removed() -> None:
    """A handler nothing feeds is dropped with the nodes only it feeds, instead of running as a start node."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("ah"), node("h", default_error_node=True), node("after_h")],
            "links": [link("a", "ah", on_error=True), link("ah", "a", on_error=True), link("h", "after_h")],
        }
    )
    assert "h" not in graph.nodes
    assert "after_h" not in graph.nodes


def test_input_conflict_check_uses_computed_requiredness() -> None:
    """Links made optional by a conditional link upstream may share an input."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("b"), node("c"), node("d")],
            "links": [
                link("a", "b", conditions=cond(1)),
                link("b", "d", data_mapping=[{"source_output": "return_value", "target_input": "x"}]),
                link("c", "d", data_mapping=[{"source_output": "return_value", "target_input": "x"}]),
            ],
        }
    )
    assert len(graph.links) == 3


def test_no_start_node_is_reported_before_running() -> None:
    """A graph whose every node has a predecessor fails preflight with advice."""
    from aioflow.scheduler import preflight

    graph = load_graph(
        {
            "graph": {"id": "ring"},
            "nodes": [node("a"), node("b")],
            "links": [link("a", "b"), link("b", "a", conditions=cond(1))],
        }
    )
    with pytest.raises(GraphError, match=r"has no start node.*force_start_node"):
        preflight(graph)
