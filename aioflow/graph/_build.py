"""Building the `Graph` records from an expanded document, and the checks that need the whole graph.

A `Node` and a link take the normalised attributes as they are (values were
copied when normalised; a link's conditions are copied again, as links made
from one alias or handler share them); what they do not name is kept in
``attributes``. Links go into the columns of `Links`, one row per link, or
straight from the columns of the plain links of a document
(`_normalise.plain_link_columns`). Building the `Graph` runs the analysis,
after which two required links that write one input of a node are refused
(spec §4.3).

Imports: `_model`, `_normalise`, `_report`, `_show`, `_values`.
"""

from __future__ import annotations

from collections import deque
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._model import NO_ATTRIBUTES, Graph, Links, Node
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
    if flat.link_columns is not None:
        links = Links._from_columns(*flat.link_columns)
    elif flat.links:
        links = Links._from_columns(*zip(*[_link_row(report, a) for a in flat.links], strict=True))
    else:
        links = Links()
    report.raise_if_problems()
    other = {k: v for k, v in attrs.items() if k not in _GRAPH_KEYS_KEPT_APART}
    graph = Graph(id=str(graph_id), label=str(label), nodes=nodes, links=links, attributes=other)
    if flat.link_columns is not None and _has_duplicate_links(graph):
        links = _merged_plain_links(links)
        graph = Graph(id=str(graph_id), label=str(label), nodes=nodes, links=links, attributes=other)
    _check_input_conflicts(report, graph)
    report.raise_if_problems()
    return graph


def _build_node(nid: NodeId, attrs: dict[str, Any]) -> Node:
    # Values were copied (and checked) when the node was normalised.
    label = attrs.get("label") or (":".join(_flatten_id(nid)))
    # A node without default inputs or other attributes shares the one empty
    # mapping, as links do: two containers fewer per node to make and collect.
    inputs = attrs.get("default_inputs")
    defaults = {item["name"]: item["value"] for item in inputs} if inputs else NO_ATTRIBUTES
    other = NO_ATTRIBUTES if attrs.keys() <= _NODE_KEYS else {k: v for k, v in attrs.items() if k not in _NODE_KEYS}
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


def _link_row(report: _Report, attrs: dict[str, Any]) -> tuple[Any, ...]:
    """One link's entry in each column of `Links`."""
    # Once per link that is not plain: no work for absent attributes.
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
        NO_ATTRIBUTES
        if attrs.keys() <= _LINK_KEYS
        else {k: _copy_structure(v) for k, v in attrs.items() if k not in _LINK_KEYS}
    )
    return (
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


def _has_duplicate_links(graph: Graph) -> bool:
    """Whether two links have the same source and target (one set per node, made and dropped in turn)."""
    targets = graph.links.targets
    analysis = graph.analysis
    return any(
        len(set(map(targets.__getitem__, out))) != len(out)
        for links_out in (analysis.data_links_out, analysis.error_links_out)
        for out in links_out.values()
        if len(out) > 1
    )


def _merged_plain_links(links: Links) -> Links:
    """Links of ends and a mapping only (`plain_link_columns`), one per pair of ends: mappings concatenated (§3.6).

    As `_subgraphs._merge_duplicate_links` merges them: a pair keeps the
    place of its first link.
    """
    ends = tuple(zip(links.sources, links.targets, strict=True))
    merged: dict[tuple[NodeId, NodeId], list[tuple[tuple[Any, str | int], ...]]] = {
        end: [] for end in dict.fromkeys(ends)
    }
    deque(map(list.append, map(merged.__getitem__, ends), links.data_mappings), maxlen=0)  # appended in C
    return Links._from_columns(
        tuple(source for source, _ in merged),
        tuple(target for _, target in merged),
        tuple(tuple(chain.from_iterable(parts)) if len(parts) > 1 else parts[0] for parts in merged.values()),
    )


def _check_input_conflicts(report: _Report, graph: Graph) -> None:
    """Two required links must not write the same input of one node (§4.3)."""
    required = graph.analysis.link_required
    sources = graph.links.sources
    mappings = graph.links.data_mappings
    all_required = all(required)
    for nid, ins in graph.analysis.links_in.items():
        if all_required:
            names = list(map(itemgetter(1), chain.from_iterable(map(mappings.__getitem__, ins))))
        else:
            names = [name for li in ins if required[li] for _, name in mappings[li]]
        if len(set(names)) == len(names):
            continue  # the usual case, found without a loop per link
        writer: dict[Any, NodeId] = {}
        for index in ins:
            if not required[index]:
                continue
            source = sources[index]
            for _, target_input in mappings[index]:
                if target_input in writer:
                    if writer[target_input] == source:
                        what = f"node {_fmt(source)} maps two outputs"
                    else:
                        what = f"nodes {_fmt(writer[target_input])} and {_fmt(source)} both connect"
                    report.problem(
                        f"node {_fmt(nid)}: ",
                        f"{what} to its input {_show(target_input)} through required links; "
                        'make one of them optional ("required": false) or map to another input',
                    )
                writer[target_input] = source


def _flatten_id(nid: Any) -> list[str]:
    if isinstance(nid, tuple):
        return [part for item in nid for part in _flatten_id(item)]
    return [str(nid)]
