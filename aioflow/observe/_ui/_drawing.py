"""The graph as the live web view draws it: a text key per node, its box, and each link's label and kind.

Node ids may be strings, ints or tuples (a subgraph's nodes); the page and
its URLs need text. A string id is its own key; any other id is written as
JSON, the way graph files and ``aioflow run -i`` write it (``3``,
``["sub", "a"]``). Two ids that would give the same key (the string ``"3"``
and the int ``3``) get ``#2``, ``#3``... after the second one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._layout import layout

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ...graph import Graph, NodeId

__all__ = ["MAX_LINK_LABEL", "graph_document", "jsonable", "node_key", "node_keys"]

#: Link labels longer than this many characters are cut (with "..."): the page shows them between layers.
MAX_LINK_LABEL = 40


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists, as JSON holds them; what JSON cannot hold becomes its ``repr``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return repr(value)


def node_key(node_id: NodeId) -> str:
    """The text that stands for ``node_id`` in the page (before any ``#2`` that makes it unique)."""
    if isinstance(node_id, str):
        return node_id
    return json.dumps(jsonable(node_id))


def node_keys(node_ids: Iterable[NodeId]) -> dict[NodeId, str]:
    """A distinct key for each id."""
    keys: dict[NodeId, str] = {}
    taken: set[str] = set()
    for node_id in node_ids:
        key = base = node_key(node_id)
        number = 1
        while key in taken:
            number += 1
            key = f"{base}#{number}"
        taken.add(key)
        keys[node_id] = key
    return keys


def _condition_label(conditions: tuple[tuple[Any, Any], ...], else_value: Any) -> str | None:
    if not conditions:
        return None
    parts = []
    for name, value in conditions:
        if else_value is not None and value == else_value:
            parts.append("else")
        else:
            parts.append(f"{name} == {json.dumps(jsonable(value))}")
    text = " and ".join(parts)
    return text if len(text) <= MAX_LINK_LABEL else text[: MAX_LINK_LABEL - 3] + "..."


def graph_document(graph: Graph, keys: dict[NodeId, str] | None = None, note: str | None = None) -> dict[str, Any]:
    """What ``/api/graph`` answers: the graph's nodes with their boxes, and its links.

    Args:
        graph: the graph.
        keys: the node keys (`node_keys`), when the caller made them already.
        note: a line for the page to show above the drawing.
    """
    if keys is None:
        keys = node_keys(graph.nodes)
    ids = list(graph.nodes)
    index_of = {node_id: index for index, node_id in enumerate(ids)}
    links = graph.links
    pairs = [(index_of[s], index_of[t]) for s, t in zip(links.sources, links.targets, strict=True)]
    nodes = graph.nodes
    drawing = layout([nodes[node_id].label for node_id in ids], pairs)
    notes = [text for text in (note, drawing.note) if text]
    return {
        "id": graph.id,
        "label": graph.label,
        "layout": {
            "kind": drawing.kind,
            "width": drawing.width,
            "height": drawing.height,
            "note": "; ".join(notes) or None,
        },
        "nodes": [
            {
                "key": keys[node_id],
                "id": jsonable(node_id),
                "label": nodes[node_id].label,
                "task_type": nodes[node_id].task_type,
                "task": None if nodes[node_id].task_identifier is None else str(nodes[node_id].task_identifier),
                "x": box.x,
                "y": box.y,
                "width": box.width,
                "height": box.height,
                "layer": box.layer,
            }
            for node_id, box in zip(ids, drawing.boxes, strict=True)
        ],
        "links": [
            {
                "source": keys[source],
                "target": keys[target],
                "label": "on error" if on_error else _condition_label(conditions, nodes[source].conditions_else_value),
                "conditional": bool(conditions),
                "on_error": on_error,
                "back": index in drawing.back_links,
            }
            for index, (source, target, conditions, on_error) in enumerate(
                zip(links.sources, links.targets, links.conditions, links.on_error, strict=True)
            )
        ],
    }
