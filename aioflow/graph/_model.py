"""Immutable records of a loaded graph: `Node`, `Link` and `Graph`.

A `Graph` is built only from already validated nodes and links (see
`aioflow.graph.load_graph`); building it runs the linear-time analysis once
and keeps the result in `Graph.analysis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._analysis import Analysis

__all__ = ["TASK_TYPES", "Graph", "Link", "Node", "NodeId"]

#: A node id: a string, an int, or a tuple of ids for nodes that come from a subgraph.
NodeId = str | int | tuple[Any, ...]

#: Every ``task_type`` of the Ewoks format. ``graph`` nodes are flattened at
#: load time and never reach a `Graph`.
TASK_TYPES = ("class", "method", "ppfmethod", "ppfport", "script", "notebook", "generated", "graph")


@dataclass(frozen=True, eq=True, slots=True)
class Node:
    """One node of a graph.

    Attributes:
        id: the node id.
        task_type: one of `TASK_TYPES` other than ``graph``.
        task_identifier: what to run (``None`` only for ``ppfport``).
        label: the display name: the ``label`` attribute, else the id joined with ``:``.
        default_inputs: input name -> value; int names are positional inputs.
        force_start_node: the node is a start node even with predecessors.
        conditions_else_value: the value that marks a condition as the else branch.
        task_generator: only for ``generated`` nodes.
        attributes: every other attribute of the node, kept as written.
    """

    id: NodeId
    task_type: str
    task_identifier: Any
    label: str
    default_inputs: Mapping[str | int, Any] = field(default_factory=dict)
    force_start_node: bool = False
    conditions_else_value: Any = None
    task_generator: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=True, slots=True)
class Link:
    """One link ``source -> target``, after duplicates were merged.

    Attributes:
        data_mapping: ``(source_output, target_input)`` pairs.
        map_all_data: every output of the source becomes an input of the target.
        conditions: ``(source_output, value)`` pairs that must all hold.
        on_error: the link fires only when the source fails.
        required: ``True``/``False`` when written explicitly, else ``None``.
            The effective value is ``Graph.analysis.link_required[index]``.
        cache_if_optional: an optional link whose last data is kept for later firings.
        attributes: every other attribute, kept as written.
    """

    source: NodeId
    target: NodeId
    data_mapping: tuple[tuple[Any, str | int], ...] = ()
    map_all_data: bool = False
    conditions: tuple[tuple[Any, Any], ...] = ()
    on_error: bool = False
    required: bool | None = None
    cache_if_optional: bool = False
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def conditional(self) -> bool:
        """Whether the link has conditions or is an error link."""
        return bool(self.conditions) or self.on_error


@dataclass(frozen=True, eq=False)
class Graph:
    """A loaded, validated and analysed workflow graph. Never mutated.

    Attributes:
        id: the graph id (``"notspecified"`` when the document has none).
        label: the display name (falls back to the id).
        nodes: node id -> `Node`, in declaration order.
        links: every link, in declaration order.
        attributes: the other graph attributes (``schema_version``, ``requirements``...).
        analysis: start and end nodes, requiredness, cycles, order: see `Analysis`.
    """

    id: str
    label: str
    nodes: Mapping[NodeId, Node]
    links: tuple[Link, ...]
    attributes: Mapping[str, Any] = field(default_factory=dict)
    analysis: Analysis = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from ._analysis import analyse

        object.__setattr__(self, "analysis", analyse(self))

    @property
    def start_nodes(self) -> tuple[NodeId, ...]:
        return self.analysis.start_nodes

    @property
    def end_nodes(self) -> tuple[NodeId, ...]:
        return self.analysis.end_nodes

    @property
    def cycles(self) -> tuple[tuple[NodeId, ...], ...]:
        return self.analysis.cycles

    def __repr__(self) -> str:
        return f"<Graph {self.id!r}: {len(self.nodes)} nodes, {len(self.links)} links>"
