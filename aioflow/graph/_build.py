"""Building the `Graph` records from an expanded document, and the checks that need the whole graph.

A `Node` and a `Link` take the normalised attributes as they are (values were
copied when normalised; a link's conditions are copied again, as links made
from one alias or handler share them); what they do not name is kept in
``attributes``. Building the `Graph` runs the analysis, after which two
required links that write one input of a node are refused (spec §4.3).

Imports: `_model`, `_normalise`, `_report`, `_show`, `_values`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._model import Graph, Link, Node
from ._normalise import _LINK_KEYS, _NODE_KEYS
from ._report import _At
from ._show import _fmt, _show
from ._values import _copy_structure

if TYPE_CHECKING:
    from ._model import NodeId
    from ._normalise import _Flat
    from ._report import _Report

_GRAPH_KEYS_KEPT_APART = ("id", "label", "input_nodes", "output_nodes")


def build_graph(report: _Report, flat: _Flat) -> Graph:
    """The `Graph` of an expanded document; the problems found on the way are raised (`_Report.raise_if_problems`)."""
    attrs = flat.graph_attrs
    graph_id = attrs.get("id")
    if graph_id is None:
        graph_id = "notspecified"
    label = attrs.get("label") or graph_id
    nodes = {nid: _build_node(nid, a) for nid, a in flat.nodes.items()}
    links = tuple(_build_link(report, a) for a in flat.links)
    report.raise_if_problems()
    other = {k: v for k, v in attrs.items() if k not in _GRAPH_KEYS_KEPT_APART}
    graph = Graph(id=str(graph_id), label=str(label), nodes=nodes, links=links, attributes=other)
    _check_input_conflicts(report, graph)
    report.raise_if_problems()
    return graph


def _build_node(nid: NodeId, attrs: dict[str, Any]) -> Node:
    # Values were copied (and checked) when the node was normalised.
    label = attrs.get("label") or (":".join(_flatten_id(nid)))
    defaults = {item["name"]: item["value"] for item in attrs.get("default_inputs") or ()}
    other = {k: v for k, v in attrs.items() if k not in _NODE_KEYS}
    return Node(
        id=nid,
        task_type=attrs["task_type"],
        task_identifier=attrs.get("task_identifier"),
        label=str(label),
        default_inputs=defaults,
        force_start_node=bool(attrs.get("force_start_node", False)),
        conditions_else_value=attrs.get("conditions_else_value"),
        task_generator=attrs.get("task_generator"),
        attributes=other,
    )


def _build_link(report: _Report, attrs: dict[str, Any]) -> Link:
    # The hot path of loading (once per link): no work for absent attributes.
    get = attrs.get
    mapping = get("data_mapping")
    conditions = get("conditions")
    map_all_data = bool(get("map_all_data", False))
    on_error = bool(get("on_error", False))
    if map_all_data and mapping:
        report.problem(
            _At("", "link", attrs["source"], attrs["target"]),
            "'map_all_data' and 'data_mapping' cannot be used together",
        )
    if on_error and conditions:
        report.problem(
            _At("", "link", attrs["source"], attrs["target"]), "'on_error' and 'conditions' cannot be used together"
        )
    condition_items: tuple[tuple[Any, Any], ...] = ()
    if conditions:
        # One link listing the same source_output twice: the last entry wins (spec §3.3).
        by_name: dict[Any, Any] = {}
        for c in conditions:
            by_name.pop(c["source_output"], None)
            by_name[c["source_output"]] = c["value"]
        # Copied again: links made from one alias or handler share their attribute values.
        condition_items = tuple((k, _copy_structure(v)) for k, v in by_name.items())
    other = (
        {} if attrs.keys() <= _LINK_KEYS else {k: _copy_structure(v) for k, v in attrs.items() if k not in _LINK_KEYS}
    )
    return Link(
        attrs["source"],
        attrs["target"],
        tuple([(m["source_output"], m["target_input"]) for m in mapping]) if mapping else (),
        map_all_data,
        condition_items,
        on_error,
        get("required"),
        bool(get("cache_if_optional", False)),
        other,
    )


def _check_input_conflicts(report: _Report, graph: Graph) -> None:
    """Two required links must not write the same input of one node (§4.3)."""
    required = graph.analysis.link_required
    for nid, ins in graph.analysis.links_in.items():
        writer: dict[Any, NodeId] = {}
        for index in ins:
            if not required[index]:
                continue
            link = graph.links[index]
            for _, target_input in link.data_mapping:
                if target_input in writer:
                    if writer[target_input] == link.source:
                        what = f"node {_fmt(link.source)} maps two outputs"
                    else:
                        what = f"nodes {_fmt(writer[target_input])} and {_fmt(link.source)} both connect"
                    report.problem(
                        f"node {_fmt(nid)}: ",
                        f"{what} to its input {_show(target_input)} through required links; "
                        'make one of them optional ("required": false) or map to another input',
                    )
                writer[target_input] = link.source


def _flatten_id(nid: Any) -> list[str]:
    if isinstance(nid, tuple):
        return [part for item in nid for part in _flatten_id(item)]
    return [str(nid)]
