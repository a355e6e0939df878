"""``inputs=`` (spec §6.5): values written into the default inputs of the nodes an item selects.

`select_nodes` is also what the scheduler uses to select ``outputs=`` items (§6.6).

Imports: `aioflow._errors`, `_model`, `_show`, `_values`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._errors import GraphError
from ._model import Graph
from ._show import _did_you_mean, _fmt, _show
from ._values import _bad_input_name, _expected_id, _input_name, _is_name, _normalise_id

if TYPE_CHECKING:
    from ._model import NodeId

__all__ = ["apply_inputs", "select_nodes"]

logger = logging.getLogger("aioflow.graph")


def apply_inputs(graph: Graph, inputs: Sequence[Mapping[str, Any]]) -> Graph:
    """Return a copy of ``graph`` with ``inputs`` written into default inputs (spec §6.5)."""
    if isinstance(inputs, Sized) and not len(inputs):
        return graph
    if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)):
        raise GraphError(graph.id, [f"inputs must be a list of {{'name', 'value'}} objects (got {_show(inputs)})"])
    problems: list[str] = []
    updates: dict[NodeId, dict[str | int, Any]] = {}
    for i, item in enumerate(inputs):
        here = f"inputs[{i}]: "
        if not isinstance(item, Mapping) or "name" not in item or "value" not in item:
            problems.append(f"{here}must be an object with 'name' and 'value' (got {_show(item)})")
            continue
        name = _input_name(item["name"])
        if name is None:
            problems.append(here + _bad_input_name("'name'", item["name"]))
            continue
        try:
            targets = select_nodes(graph, item, default=graph.start_nodes)
        except GraphError as exc:
            problems.extend(f"{here}{p}" for p in exc.problems)
            continue
        if not targets:
            logger.warning("graph %r: %sselects no node; the input %r is not used", graph.id, here, name)
        for nid in targets:
            updates.setdefault(nid, {})[name] = item["value"]
    if problems:
        raise GraphError(graph.id, problems)
    if not updates:
        return graph
    nodes = dict(graph.nodes)
    for nid, values in updates.items():
        node = nodes[nid]
        nodes[nid] = replace(node, default_inputs={**node.default_inputs, **values})
    return Graph(id=graph.id, label=graph.label, nodes=nodes, links=graph.links, attributes=graph.attributes)


def select_nodes(graph: Graph, item: Mapping[str, Any], default: Sequence[NodeId]) -> list[NodeId]:
    """The nodes an ``inputs``/``outputs`` item selects (spec §6.5 and §6.6).

    Raises:
        GraphError: an unknown ``id``, or a field of the wrong type (the
            selectors, and the ``name``/``new_name`` of an output).
    """
    problems = [
        f"{key!r} must be {expected} (got {_show(item[key])})"
        for key, expected, valid in _SELECTOR_FIELDS
        if key in item and item[key] is not None and not valid(item[key])
    ]
    if problems:
        raise GraphError(graph.id, problems)
    if "id" in item:
        nid = _normalise_id(item["id"])
        if nid is None:
            raise GraphError(graph.id, [f"'id' must be a node id: {_expected_id(item['id'])}"])
        if nid not in graph.nodes:
            raise GraphError(graph.id, [f"no node {_fmt(nid)}{_did_you_mean(nid, graph.nodes)}"])
        return [nid]
    if "label" in item or "task_identifier" in item:
        label = item.get("label")
        suffix = item.get("task_identifier")
        return [
            nid
            for nid, node in graph.nodes.items()
            if (label is None or node.label == label)
            and (suffix is None or str(node.task_identifier or "").endswith(suffix))
        ]
    if item.get("all"):
        return list(graph.nodes)
    return list(default)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


# The typed fields of an inputs=/outputs= item: (key, what it must be, check).
_SELECTOR_FIELDS: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("label", "a string", _is_str),
    ("task_identifier", "a string", _is_str),
    ("all", "true or false", _is_bool),
    ("name", "a string or an int", _is_name),
    ("new_name", "a string or an int", _is_name),
)
