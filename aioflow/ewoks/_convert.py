"""An ewokscore `TaskGraph` to an aioflow `Graph`, in linear time, without ewokscore's analysis.

The ewoks front end hands engines a graph that ewokscore already loaded:
subgraphs expanded (tuple node ids), duplicate links merged, default error
handlers wired (and their ``default_error_node`` markers removed), ``inputs``
applied. Its node-link data is read once and given to aioflow's own loader,
which validates it and runs aioflow's linear analysis; nothing is wired twice.

Node and link order are networkx's: nodes in insertion order, links grouped by
source node. That is also the order the reference push-flow engine wires its
input mergers in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..graph import load_graph

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..graph import Graph

__all__ = ["from_taskgraph", "is_taskgraph"]

# Graph attributes that only mean something when a graph is embedded as a
# subgraph; after expansion ewokscore leaves the subgraphs' ones on the parent.
_EMBEDDING_ATTRIBUTES = ("input_nodes", "output_nodes")


def is_taskgraph(obj: Any) -> bool:
    """Whether ``obj`` is an ewokscore ``TaskGraph`` (without importing ewokscore when it is not loaded)."""
    import sys

    module = sys.modules.get("ewokscore.graph.taskgraph")
    if module is None:
        return False
    return isinstance(obj, module.TaskGraph)


def from_taskgraph(taskgraph: Any, *, inputs: Sequence[Mapping[str, Any]] | None = None) -> Graph:
    """Convert an ewokscore ``TaskGraph`` (or its networkx graph) to an aioflow `Graph`.

    Raises:
        GraphError: the graph is not valid for aioflow (the message names the node or link).
    """
    nxgraph = getattr(taskgraph, "graph", taskgraph)
    attributes = {k: v for k, v in nxgraph.graph.items() if k not in _EMBEDDING_ATTRIBUTES}
    nodes = [{**attrs, "id": node_id} for node_id, attrs in nxgraph.nodes(data=True)]
    links = [{**attrs, "source": source, "target": target} for source, target, attrs in nxgraph.edges(data=True)]
    return load_graph({"graph": attributes, "nodes": nodes, "links": links}, inputs=inputs)
