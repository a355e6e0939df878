"""Immutable records of a loaded graph: `Node`, `Link`, `Links` and `Graph`.

A `Graph` is built only from already validated nodes and links (see
`aioflow.graph.load_graph`); building it runs the linear-time analysis once
and keeps the result in `Graph.analysis`.

A graph's links are kept by column (`Links`): one tuple per field of
`Link`, so that a graph of a million links holds a dozen objects for them,
not millions. That keeps loading linear without pausing the garbage
collector (which would otherwise rescan every record made so far, again and
again), and lets the scheduler read the one field it needs. A `Link` record
is made when one is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ._analysis import Analysis

__all__ = ["NO_ATTRIBUTES", "TASK_TYPES", "Graph", "Link", "Links", "Node", "NodeId"]

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


_FIELDS = ("source", "target", "data_mapping", "map_all_data", "conditions", "on_error", "required",
           "cache_if_optional", "attributes")  # fmt: skip


class Links(Sequence[Link]):
    """The links of a graph, in declaration order: a read-only sequence of `Link`, stored by column.

    ``links[i]`` makes the `Link` record of link ``i`` (a new record each
    time: compare records with ``==``, not ``is``); iterating makes them one
    by one. Each column is a tuple with one entry per link, named after the
    field of `Link` it holds: `sources`, `targets`, `data_mappings`,
    `map_all_data`, `conditions`, `on_error`, `required`,
    `cache_if_optional`, `attributes`. Reading a column is how code that
    walks many links should read them.

    Args:
        links: the `Link` records, in order.

    Raises:
        TypeError: an item is not a `Link`.
    """

    __slots__ = (
        "attributes", "cache_if_optional", "conditions", "data_mappings", "map_all_data", "on_error",
        "required", "sources", "targets",
    )  # fmt: skip

    sources: tuple[NodeId, ...]
    targets: tuple[NodeId, ...]
    data_mappings: tuple[tuple[tuple[Any, str | int], ...], ...]
    map_all_data: tuple[bool, ...]
    conditions: tuple[tuple[tuple[Any, Any], ...], ...]
    on_error: tuple[bool, ...]
    required: tuple[bool | None, ...]
    cache_if_optional: tuple[bool, ...]
    attributes: tuple[Mapping[str, Any], ...]

    def __init__(self, links: Iterable[Link] = ()) -> None:
        records = tuple(links)
        for i, link in enumerate(records):
            if not isinstance(link, Link):
                msg = f"links[{i}] must be a Link (got a {type(link).__name__})"
                raise TypeError(msg)
        if records:
            columns = list(zip(*map(attrgetter(*_FIELDS), records), strict=True))
        else:
            columns = [()] * len(_FIELDS)
        self._set(*columns)

    @classmethod
    def _from_columns(
        cls,
        sources: Sequence[NodeId],
        targets: Sequence[NodeId],
        data_mappings: Sequence[tuple[tuple[Any, str | int], ...]],
        map_all_data: Sequence[bool] | None = None,
        conditions: Sequence[tuple[tuple[Any, Any], ...]] | None = None,
        on_error: Sequence[bool] | None = None,
        required: Sequence[bool | None] | None = None,
        cache_if_optional: Sequence[bool] | None = None,
        attributes: Sequence[Mapping[str, Any]] | None = None,
    ) -> Links:
        """Links from columns of equal length, already validated; a column left out holds the field's default."""
        n = len(sources)
        self = cls.__new__(cls)
        self._set(
            sources,
            targets,
            data_mappings,
            (False,) * n if map_all_data is None else map_all_data,
            ((),) * n if conditions is None else conditions,
            (False,) * n if on_error is None else on_error,
            (None,) * n if required is None else required,
            (False,) * n if cache_if_optional is None else cache_if_optional,
            _NO_ATTRIBUTES * n if attributes is None else attributes,
        )
        return self

    def _set(self, *columns: Sequence[Any]) -> None:
        for name, column in zip(_COLUMNS, columns, strict=True):
            object.__setattr__(self, name, column if type(column) is tuple else tuple(column))

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"'Links' is read-only: cannot set {name!r}"
        raise AttributeError(msg)

    def __len__(self) -> int:
        return len(self.sources)

    @overload
    def __getitem__(self, index: int) -> Link: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Link, ...]: ...
    def __getitem__(self, index: int | slice) -> Link | tuple[Link, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        return Link(*(getattr(self, name)[index] for name in _COLUMNS))

    def __iter__(self) -> Iterator[Link]:
        return map(Link, *(getattr(self, name) for name in _COLUMNS))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Links):
            return all(getattr(self, name) == getattr(other, name) for name in _COLUMNS)
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # attributes hold dicts

    def __repr__(self) -> str:
        return f"<Links: {len(self)}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_links_from_columns, tuple(getattr(self, name) for name in _COLUMNS))


# The column names of `Links`, in the order of the fields of `Link`.
_COLUMNS = ("sources", "targets", "data_mappings", "map_all_data", "conditions", "on_error", "required",
            "cache_if_optional", "attributes")  # fmt: skip


class _NoAttributes(Mapping[Any, Any]):
    """The attributes (or default inputs) of a link or node that has none: empty, read-only, one for the process (pickled by name)."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"

    def __reduce__(self) -> str:
        return "NO_ATTRIBUTES"


NO_ATTRIBUTES = _NoAttributes()
_NO_ATTRIBUTES: tuple[Mapping[str, Any]] = (NO_ATTRIBUTES,)


def _links_from_columns(*columns: Sequence[Any]) -> Links:
    return Links._from_columns(*columns)


@dataclass(frozen=True, eq=False)
class Graph:
    """A loaded, validated and analysed workflow graph. Never mutated.

    Attributes:
        id: the graph id (``"notspecified"`` when the document has none).
        label: the display name (falls back to the id).
        nodes: node id -> `Node`, in declaration order.
        links: every link, in declaration order: a `Links` (any sequence of
            `Link` given is turned into one).
        attributes: the other graph attributes (``schema_version``, ``requirements``...).
        analysis: start and end nodes, requiredness, cycles, order: see `Analysis`.
    """

    id: str
    label: str
    nodes: Mapping[NodeId, Node]
    links: Links
    attributes: Mapping[str, Any] = field(default_factory=dict)
    analysis: Analysis = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from ._analysis import analyse

        if not isinstance(self.links, Links):
            object.__setattr__(self, "links", Links(self.links))
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

    def _repr_svg_(self) -> str | None:
        """The graph drawn as SVG by Graphviz's ``dot``, for Jupyter.

        None (Jupyter then shows the text repr) when ``dot`` is not installed
        or fails, or the graph has more than 1,000 nodes.
        """
        from ._draw import repr_svg  # here: drawing is rare, `import aioflow` need not load it

        return repr_svg(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # The nodes by column, as the links are: one tuple per field of
        # `Node`, which pickles in C (a record each would go through
        # dataclasses' __getstate__, about 2 µs per node), and the analysis
        # made again on unpickling, not carried.
        nodes = self.nodes.values()
        columns = tuple(tuple(map(attrgetter(name), nodes)) for name in _NODE_FIELDS)
        return (_graph_from_columns, (self.id, self.label, columns, self.links, self.attributes))


# The fields of `Node`, in order.
_NODE_FIELDS = ("id", "task_type", "task_identifier", "label", "default_inputs", "force_start_node",
                "conditions_else_value", "task_generator", "attributes")  # fmt: skip


def _graph_from_columns(
    graph_id: str, label: str, columns: tuple[tuple[Any, ...], ...], links: Links, attributes: Mapping[str, Any]
) -> Graph:
    nodes = {node.id: node for node in map(Node, *columns)}
    return Graph(id=graph_id, label=label, nodes=nodes, links=links, attributes=attributes)
