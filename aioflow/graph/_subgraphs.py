"""Subgraph expansion (spec §3.7): ``graph`` nodes flattened recursively into one level of plain dicts.

Each level is normalised (`_normalise`), then each of its ``graph`` nodes is
replaced by the nodes and links of its subgraph, with ids ``(graph node,
inner id)``; links to and from a graph node are resolved through its
subgraph's ``input_nodes``/``output_nodes`` aliases (or inner ids); duplicate
links are merged (§3.6) and default error handlers wired (§3.8, `_handlers`).
A subgraph that includes itself is refused, named by its include path
(``a.json -> b.json -> a.json``), and so is expansion past the bounds of
`_limits`.

Imports: `aioflow._errors`, `_analysis`, `_handlers`, `_limits`, `_normalise`,
`_read`, `_report`, `_show`, `_values`, and `_model` for types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import GraphError
from ._analysis import same_value
from ._handlers import wire_default_error_handlers
from ._limits import _MAX_SUBGRAPH_DEPTH, _MAX_SUBGRAPHS
from ._normalise import (
    _SUB_KEYS,
    _Flat,
    graph_attributes,
    link_attributes,
    normalise_link,
    normalise_node,
    plain_link_columns,
)
from ._read import _read_source
from ._report import _At
from ._show import _fmt, _short, _show
from ._values import _copy_structure, _expected_id, _normalise_id

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ._model import NodeId
    from ._report import _Report

# Node attributes of a `graph` node that are copied onto its input nodes (§3.7).
_COPIED_TO_INPUT_NODES = ("default_inputs", "force_start_node", "conditions_else_value", "default_error_node")
_LINK_LISTS = ("data_mapping", "conditions")
_INCLUDED_OFTEN = "is a subgraph included several times, at many levels?"
_COPIES = f"a node or link is copied into each level of subgraphs it is in: {_INCLUDED_OFTEN}"


class _Expander:
    """Expands the documents of one load into `_Flat` levels, reporting every problem to its `_Report`."""

    def __init__(self, report: _Report, base_dir: Path | None) -> None:
        self.report = report
        self.base_dir = base_dir
        # The documents being expanded, outermost first: what identifies each
        # (a file's resolved path, else the source object's id) and its name.
        self.includes: list[tuple[Any, str]] = []
        # Subgraphs expanded so far (`_MAX_SUBGRAPHS`).
        self.subgraphs = 0
        # Subgraph documents read from files and JSON strings: (source, directory) -> (document, file).
        self.documents: dict[tuple[str, Path | None], tuple[dict[str, Any], Path | None] | None] = {}

    def expand_document(self, raw: dict[str, Any], origin: tuple[Any, str], path: Path | None) -> _Flat:
        """The whole document ``raw``, read from ``path``, expanded; ``origin`` as for `origin`."""
        self.includes.append(origin)
        return self.expand(raw, "", 0, path.parent if path is not None else None)

    # ---- one level

    def expand(self, raw: dict[str, Any], where: str, depth: int, source_dir: Path | None) -> _Flat:
        flat = _Flat()
        attrs = raw.get("graph", {})
        if attrs is None:
            attrs = {}
        if not isinstance(attrs, dict):
            self.report.problem(where, f"'graph' must be an object (got a {type(attrs).__name__})")
            attrs = {}
        flat.graph_attrs = graph_attributes(self.report, attrs, where)

        raw_nodes = raw.get("nodes", [])
        raw_links = raw.get("links", raw.get("edges", []))
        if raw_nodes is None:
            raw_nodes = []
        if raw_links is None:
            raw_links = []
        if not isinstance(raw_nodes, list):
            self.report.problem(where, f"'nodes' must be a list (got a {type(raw_nodes).__name__})")
            raw_nodes = []
        if not isinstance(raw_links, list):
            self.report.problem(where, f"'links' must be a list (got a {type(raw_links).__name__})")
            raw_links = []

        # Nodes of this level, before subgraph expansion.
        level: dict[NodeId, dict[str, Any]] = {}
        # Ids of nodes that are declared but invalid (already reported): links
        # to them are not reported again as links to unknown nodes.
        invalid: set[NodeId] = set()
        for position, raw_node in enumerate(raw_nodes):
            node = normalise_node(self.report, raw_node, position, where)
            if node is None:
                declared = _normalise_id(raw_node.get("id")) if isinstance(raw_node, dict) else None
                if declared is not None:
                    invalid.add(declared)
                continue
            nid = node["id"]
            if nid in level:
                self.report.problem(where, f"node {_fmt(nid)} is declared more than once (node ids must be unique)")
                continue
            level[nid] = node

        if (
            depth == 0
            and not invalid
            and not any(node["task_type"] == "graph" or node.get("default_error_node") for node in level.values())
        ):
            # A document without subgraphs or default error handlers, whose
            # links may be final as written.
            flat.link_columns = plain_link_columns(raw_links, level)
            if flat.link_columns is not None:
                flat.nodes = level
                return self.finish(flat, attrs, level, {}, where)

        links: list[dict[str, Any]] = []
        for position, raw_link in enumerate(raw_links):
            link = normalise_link(self.report, raw_link, position, where, level, invalid)
            if link is not None:
                links.append(link)

        # Expand subgraphs.
        subs: dict[NodeId, _Flat] = {}
        has_graph_nodes = False
        for nid, node in level.items():
            if node["task_type"] != "graph":
                flat.nodes[nid] = node
                continue
            has_graph_nodes = True
            here = f"{where}subgraph {_fmt(nid)}: "
            sub = self.load_subgraph(nid, node, here, depth, source_dir)
            if sub is None or not self.report.grow(len(sub.nodes) + len(sub.links), here, _COPIES):
                continue
            subs[nid] = sub
            for inner_id, inner in sub.nodes.items():
                full = (nid, inner_id)
                flat.nodes[full] = dict(inner, id=full)
            for link in sub.links:
                flat.links.append(dict(link, source=(nid, link["source"]), target=(nid, link["target"])))
            if any(k in node for k in _COPIED_TO_INPUT_NODES):
                for targets in sub.input_aliases.values():
                    for inner_id, _ in targets:
                        flat.nodes[(nid, inner_id)].update(_inherited(node))

        for link in links:
            self.resolve_link(link, level, subs, flat, where, has_graph_nodes)

        return self.finish(flat, attrs, level, subs, where)

    def finish(
        self,
        flat: _Flat,
        attrs: dict[str, Any],
        level: Mapping[NodeId, dict[str, Any]],
        subs: Mapping[NodeId, _Flat],
        where: str,
    ) -> _Flat:
        """The last steps of a level, its nodes and links in ``flat``: aliases, duplicates merged, error handlers."""
        flat.input_aliases = self.resolve_aliases(
            attrs.get("input_nodes"), "input_nodes", level, subs, where, inputs=True
        )
        flat.output_aliases = self.resolve_aliases(
            attrs.get("output_nodes"), "output_nodes", level, subs, where, inputs=False
        )
        flat.links = _merge_duplicate_links(self.report, flat.links, where)
        wire_default_error_handlers(self.report, flat, where)
        return flat

    def load_subgraph(
        self, nid: NodeId, node: dict[str, Any], where: str, depth: int, parent_dir: Path | None
    ) -> _Flat | None:
        self.subgraphs += 1
        if self.subgraphs > _MAX_SUBGRAPHS:
            self.report.overgrown(where, f"{_MAX_SUBGRAPHS:,} subgraphs: {_INCLUDED_OFTEN}")
            return None
        if depth >= _MAX_SUBGRAPH_DEPTH:
            self.report.problem(where, f"subgraphs nested more than {_MAX_SUBGRAPH_DEPTH} levels deep")
            return None
        read = self.read_subgraph(node["task_identifier"], where, parent_dir)
        if read is None:
            return None
        raw, path = read
        origin = self.origin(node["task_identifier"], path, nid)
        keys = [key for key, _ in self.includes]
        if origin[0] in keys:
            chain = [name for _, name in self.includes[keys.index(origin[0]) :]]
            self.report.problem(where, f"the graph includes itself: {' -> '.join([*chain, chain[0]])}")
            return None
        self.includes.append(origin)
        sub = self.expand(raw, where, depth + 1, path.parent if path is not None else parent_dir)
        self.includes.pop()
        label = node.get("label")
        if label:
            sub.graph_attrs["label"] = label
        return sub

    def read_subgraph(
        self, source: Any, where: str, parent_dir: Path | None
    ) -> tuple[dict[str, Any], Path | None] | None:
        """The document a graph node names, and its file; None when it cannot be read (reported once per source).

        A file or JSON string is read once per load however often it is
        included: the loader never edits a document it reads.
        """
        key = (source, parent_dir) if isinstance(source, str) else None
        if key is not None and key in self.documents:
            return self.documents[key]
        try:
            raw, _, path = _read_source(source, None, self.base_dir, None, [parent_dir] if parent_dir else [])
        except GraphError as exc:
            for p in exc.problems:
                self.report.problem(where, p)
            read = None
        else:
            read = (raw, path)
        if key is not None:
            self.documents[key] = read
        return read

    @staticmethod
    def origin(source: Any, path: Path | None, nid: NodeId) -> tuple[Any, str]:
        """A subgraph on the include path: what identifies it, and how messages name it."""
        if path is not None:
            return path, _short(str(source))
        # Written in the document: only the same object can contain itself.
        return id(source), _short(source) if isinstance(source, str) else f"the graph written in node {_fmt(nid)}"

    # ---- subgraph addressing

    def resolve_endpoint(
        self,
        link: dict[str, Any],
        end: str,
        level: Mapping[NodeId, dict[str, Any]],
        subs: Mapping[NodeId, _Flat],
        here: str | _At,
    ) -> list[tuple[NodeId, dict[str, Any]]] | None:
        nid = link[end]
        sub_key = "sub_source" if end == "source" else "sub_target"
        address = link.get(sub_key)
        if level[nid]["task_type"] != "graph":
            if address is not None:
                self.report.problem(
                    here,
                    f"{sub_key!r} is only allowed when the {end} is a graph node ({_fmt(nid)} is a {level[nid]['task_type']!r} node)",
                )
                return None
            return [(nid, {})]
        if address is None:
            self.report.problem(
                here,
                f"the {end} {_fmt(nid)} is a graph node: the link needs {sub_key!r} (an alias of its {'output' if end == 'source' else 'input'}_nodes or one of its node ids)",
            )
            return None
        sub = subs.get(nid)
        if sub is None:  # the subgraph failed to load; already reported
            return None
        return self.resolve_in_sub(sub, address, inputs=end == "target", here=here, graph_node=nid)

    def resolve_in_sub(
        self, sub: _Flat, address: Any, *, inputs: bool, here: str | _At, graph_node: NodeId
    ) -> list[tuple[NodeId, dict[str, Any]]] | None:
        aliases = sub.input_aliases if inputs else sub.output_aliases
        if address in aliases:
            return [((graph_node, inner), dict(attrs)) for inner, attrs in aliases[address]]
        if address in sub.nodes:
            return [((graph_node, address), {})]
        kind = "input_nodes" if inputs else "output_nodes"
        hint = self.report.did_you_mean(address, [*aliases, *sub.nodes])
        self.report.problem(here, f"subgraph {_fmt(graph_node)} has no {kind} alias and no node {_fmt(address)}{hint}")
        return None

    def resolve_link(
        self,
        link: dict[str, Any],
        level: Mapping[NodeId, dict[str, Any]],
        subs: Mapping[NodeId, _Flat],
        flat: _Flat,
        where: str,
        has_graph_nodes: bool,
    ) -> None:
        if not has_graph_nodes and not (link.keys() & _SUB_KEYS):
            # No subgraph at this level: the link is final as it is.
            flat.links.append(link)
            return
        here = _At(where, "link", link["source"], link["target"])
        sources = self.resolve_endpoint(link, "source", level, subs, here)
        targets = self.resolve_endpoint(link, "target", level, subs, here)
        if sources is None or targets is None:
            return
        made = len(sources) * len(targets)
        if made > 1 and not self.report.grow(made, here, "links fanned out by aliases"):
            return
        own = {k: v for k, v in link.items() if k not in _SUB_KEYS}
        target_attrs = link.get("sub_target_attributes")
        for source, source_alias in sources:
            for target, target_alias in targets:
                # Attributes written on the link beat those of the aliases.
                merged = {**source_alias, **target_alias, **own, "source": source, "target": target}
                flat.links.append(merged)
        if target_attrs:
            for target, _ in targets:
                updated = {**flat.nodes[target], **target_attrs, "id": target}
                checked = normalise_node(self.report, updated, 0, f"{here}sub_target_attributes: ")
                if checked is not None and checked["task_type"] == "graph":
                    self.report.problem(here, "sub_target_attributes cannot turn a node into a graph node")
                elif checked is not None:
                    flat.nodes[target] = checked

    def resolve_aliases(
        self,
        items: Any,
        key: str,
        level: Mapping[NodeId, dict[str, Any]],
        subs: Mapping[NodeId, _Flat],
        where: str,
        *,
        inputs: bool,
    ) -> dict[Any, list[tuple[NodeId, dict[str, Any]]]]:
        aliases: dict[Any, list[tuple[NodeId, dict[str, Any]]]] = {}
        if items is None:
            return aliases
        if not isinstance(items, list):
            self.report.problem(where, f"graph attribute {key!r} must be a list (got a {type(items).__name__})")
            return aliases
        for i, item in enumerate(items):
            here = f"{where}{key}[{i}]: "
            if not isinstance(item, dict) or "id" not in item or "node" not in item:
                self.report.problem(here, f"must be an object with 'id' and 'node' (got {_show(item)})")
                continue
            alias = _normalise_id(item["id"])
            if alias is None:
                self.report.problem(here, f"'id' must be {_expected_id(item['id'])}")
                continue
            nid = _normalise_id(item["node"])
            if nid is None:
                self.report.problem(here, f"'node' must be a node id: {_expected_id(item['node'])}")
                continue
            if nid not in level:
                self.report.problem(here, f"no node {_fmt(nid)}{self.report.did_you_mean(nid, level)}")
                continue
            attrs = item.get("link_attributes")
            attrs = {} if attrs is None else link_attributes(self.report, attrs, here, "'link_attributes'")
            if attrs is None:
                continue
            if level[nid]["task_type"] == "graph":
                sub = subs.get(nid)
                if sub is None:
                    continue
                if "sub_node" not in item:
                    self.report.problem(here, f"node {_fmt(nid)} is a graph node: the alias needs 'sub_node'")
                    continue
                address = _normalise_id(item["sub_node"])
                if address is None:
                    self.report.problem(
                        here, f"'sub_node' must be a node id or an alias: {_expected_id(item['sub_node'])}"
                    )
                    continue
                resolved = self.resolve_in_sub(sub, address, inputs=inputs, here=here, graph_node=nid)
                if resolved is None or (
                    len(resolved) > 1 and not self.report.grow(len(resolved), here, "aliases of aliases")
                ):
                    continue
                # An outer alias's attributes beat the inner alias's.
                targets = [(t, {**inner, **attrs}) for t, inner in resolved]
            else:
                targets = [(nid, dict(attrs))]
            aliases.setdefault(alias, []).extend(targets)
        return aliases


def _merge_duplicate_links(report: _Report, links: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """One link per (source, target): lists concatenated, equal scalars kept, different ones refused (§3.6).

    Linear in the number of links: the first duplicate of a pair gets lists
    of its own, which the others extend.
    """
    merged: dict[tuple[NodeId, NodeId], dict[str, Any]] = {}
    grown: set[tuple[NodeId, NodeId]] = set()
    for link in links:
        key = (link["source"], link["target"])
        into = merged.get(key)
        if into is None:
            merged[key] = link  # its lists may be shared with other links: never extended
            continue
        if key not in grown:
            grown.add(key)
            into = merged[key] = {k: list(v) if k in _LINK_LISTS and v else v for k, v in into.items()}
        for attr, value in link.items():
            if attr in _LINK_LISTS:
                if value:
                    current = into.get(attr)
                    if current:
                        current.extend(value)
                    else:
                        into[attr] = list(value)
            elif attr not in into:
                into[attr] = value
            elif not same_value(into[attr], value):
                report.problem(
                    where,
                    f"link {_fmt(key[0])} -> {_fmt(key[1])} is written more than once with different "
                    f"{attr!r} ({_show(into[attr])} and {_show(value)})",
                )
    return list(merged.values())


def _inherited(node: dict[str, Any]) -> dict[str, Any]:
    """The attributes a graph node writes onto its subgraph's input nodes (§3.7): fresh copies for each."""
    inherited = {}
    for key in _COPIED_TO_INPUT_NODES:
        if key in node:
            value = node[key]
            if key == "default_inputs":  # normalised items, with values checked already
                value = [{"name": item["name"], "value": _copy_structure(item["value"])} for item in value]
            elif key == "conditions_else_value":
                value = _copy_structure(value)
            inherited[key] = value
    return inherited
