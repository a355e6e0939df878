"""Default error handlers (spec §3.8), wired at each level of a graph once its subgraphs are expanded.

A node with ``default_error_node`` gets an error link from every node of its
level that has no error link of its own and is not downstream of a handler,
with the handler's ``default_error_attributes`` (``map_all_data`` unless a
mapping is given). A handler that nothing feeds then is removed, with the
nodes that only it feeds.

Imports: nothing at run time (`_model`, `_normalise` and `_report` for types).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._model import NodeId
    from ._normalise import _Flat
    from ._report import _Report


def wire_default_error_handlers(report: _Report, flat: _Flat, where: str) -> None:
    """Link the nodes of one level to its default error handlers, and drop the handlers left unused."""
    handlers = [nid for nid, n in flat.nodes.items() if n.get("default_error_node")]
    if not handlers:
        for node in flat.nodes.values():
            node.pop("default_error_attributes", None)
        return
    successors: dict[NodeId, list[NodeId]] = {nid: [] for nid in flat.nodes}
    has_error_link: set[NodeId] = set()
    for link in flat.links:
        if link["source"] in successors:
            successors[link["source"]].append(link["target"])
        if link.get("on_error"):
            has_error_link.add(link["source"])
    downstream: set[NodeId] = set()
    queue = deque(handlers)
    while queue:
        for nxt in successors.get(queue.popleft(), ()):
            if nxt not in downstream:
                downstream.add(nxt)
                queue.append(nxt)
    handler_set = set(handlers)
    sources = [nid for nid in flat.nodes if not (nid in handler_set or nid in has_error_link or nid in downstream)]
    wired = f"{len(sources):,} nodes, each linked to each of {len(handlers):,} default error handlers"
    if len(handlers) > 1 and sources and not report.grow(len(sources) * len(handlers), where, wired):
        sources = []
    attributes = {h: _error_link_attributes(flat.nodes[h]) for h in handlers}
    for nid in sources:
        for h in handlers:
            flat.links.append({**attributes[h], "source": nid, "target": h})
    for node in flat.nodes.values():
        node.pop("default_error_node", None)
        node.pop("default_error_attributes", None)
    if sources:
        return
    fed = {lk["target"] for lk in flat.links}
    unused = [h for h in handlers if h not in fed]
    if unused:
        # Nodes reached through an alias are fed from outside this level.
        aliased = {nid for aliases in (flat.input_aliases, flat.output_aliases) for targets in aliases.values()
                   for nid, _ in targets}  # fmt: skip
        drop_unused_handlers(flat, unused, aliased)


def drop_unused_handlers(flat: _Flat, unused: list[NodeId], keep: set[NodeId]) -> None:
    """A default handler that nothing feeds is removed with the nodes only it feeds (none of ``keep``)."""
    predecessors: dict[NodeId, set[NodeId]] = {nid: set() for nid in flat.nodes}
    successors: dict[NodeId, list[NodeId]] = {nid: [] for nid in flat.nodes}
    for link in flat.links:
        predecessors[link["target"]].add(link["source"])
        successors[link["source"]].append(link["target"])
    removed = {h for h in unused if h not in keep}
    queue = deque(removed)
    while queue:
        for nxt in successors[queue.popleft()]:
            if nxt not in removed and nxt not in keep and predecessors[nxt] <= removed:
                removed.add(nxt)
                queue.append(nxt)
    for nid in removed:
        del flat.nodes[nid]
    flat.links = [lk for lk in flat.links if lk["source"] not in removed and lk["target"] not in removed]


def _error_link_attributes(handler: dict[str, Any]) -> dict[str, Any]:
    """The attributes of the links wired to a default error handler (§3.8)."""
    attrs = dict(handler.get("default_error_attributes") or {})
    attrs["on_error"] = True
    if not attrs.get("map_all_data") and not attrs.get("data_mapping"):
        attrs["map_all_data"] = True
    return attrs
