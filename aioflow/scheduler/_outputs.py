"""Select what an execution returns (``outputs=`` and ``merge_outputs=``, spec §6.6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import GraphError
from .._results import MISSING, Results
from ..graph import Graph, NodeId, select_nodes

if TYPE_CHECKING:
    from ._state import ExecutionState

__all__ = ["select_results", "selected_nodes", "validate_outputs"]


def validate_outputs(graph: Graph, outputs: Sequence[Mapping[str, Any]] | None) -> None:
    """Check ``outputs=`` before anything runs, so a typo does not cost an execution."""
    if outputs is None:
        return
    if not isinstance(outputs, (list, tuple)):
        raise GraphError(graph.id, [f"outputs must be a list of selectors (got a {type(outputs).__name__})"])
    problems = []
    for i, item in enumerate(outputs):
        if not isinstance(item, Mapping):
            problems.append(f"outputs[{i}] must be an object (got {item!r})")
            continue
        try:
            select_nodes(graph, item, default=())
        except GraphError as exc:
            problems.extend(f"outputs[{i}]: {p}" for p in exc.problems)
    if problems:
        raise GraphError(graph.id, problems)


def selected_nodes(graph: Graph, outputs: Sequence[Mapping[str, Any]] | None) -> set[NodeId]:
    """The nodes whose outputs `select_results` may read."""
    if outputs is None:
        outputs = [{"all": False}]
    selected: set[NodeId] = set()
    for item in outputs:
        selected.update(select_nodes(graph, item, default=graph.end_nodes))
    return selected


def select_results(
    graph: Graph,
    state: ExecutionState,
    outputs: Sequence[Mapping[str, Any]] | None,
    merge_outputs: bool,
) -> Results:
    """Build the `Results` of an execution from its state.

    Nodes are visited in the graph's stable order (topological, then declaration);
    with ``merge_outputs`` later nodes overwrite earlier ones key by key. Nodes
    that never ran are left out; a node whose last execution failed gives ``{}``.
    """
    if outputs is None:
        outputs = [{"all": False}]
    position = {n: i for i, n in enumerate(graph.analysis.order)}
    done = state.outputs
    merged: dict[Any, Any] = {}
    per_node: dict[NodeId, dict[Any, Any]] = {}
    for item in outputs:
        selected = [n for n in select_nodes(graph, item, default=graph.end_nodes) if n in done]
        selected.sort(key=position.__getitem__)
        name = item.get("name")
        for nid in selected:
            node_outputs = done[nid]
            if name is None:
                values = dict(node_outputs)
            else:
                values = {item.get("new_name", name): node_outputs.get(name, MISSING)}
            if merge_outputs:
                merged.update(values)
            else:
                per_node.setdefault(nid, {}).update(values)
    data = merged if merge_outputs else per_node
    return Results(data, errors=dict(state.errors), executions=dict(state.executions))
