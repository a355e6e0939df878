"""ewokscore's second start-node rule, which needs the task classes (spec §4.1, rule 2).

When no node is a start node (every node has a predecessor and none is
``force_start_node``), ewokscore starts at the ``class`` nodes whose declared
required inputs are all among their default inputs and which have no required
predecessor. Knowing a class's required inputs means importing it, so this
rule lives here, in the Ewoks plug-in (`aioflow.ewoks._hooks.EwoksTasks.prepare`
applies it before the engine's preflight checks), and imports ewokscore only
for a graph that has such a candidate.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .._errors import GraphError

if TYPE_CHECKING:
    from ..graph import Graph

__all__ = ["with_class_start_nodes"]


def with_class_start_nodes(graph: Graph) -> Graph:
    """The same graph, with ewokscore's fallback start nodes marked ``force_start_node``.

    Returns ``graph`` unchanged when it has start nodes or no candidate.

    Raises:
        GraphError: a ``class`` node's task cannot be imported.
    """
    if not graph.nodes or graph.start_nodes:
        return graph
    required_in = graph.analysis.required_in_count
    candidates = [node for node in graph.nodes.values() if node.task_type == "class" and not required_in[node.id]]
    if not candidates:
        return graph
    from ewokscore.task import Task

    starts = []
    problems = []
    for node in candidates:
        try:
            task_class = Task.get_subclass(node.task_identifier)
        except Exception as exc:
            problems.append(f"node {node.id!r}: cannot import {node.task_identifier!r} ({type(exc).__name__}: {exc})")
            continue
        if not set(task_class.required_input_names()) - set(node.default_inputs):
            starts.append(node.id)
    if problems:
        raise GraphError(graph.id, problems)
    if not starts:
        return graph
    nodes = dict(graph.nodes)
    for node_id in starts:
        nodes[node_id] = dataclasses.replace(nodes[node_id], force_start_node=True)
    return dataclasses.replace(graph, nodes=nodes)
