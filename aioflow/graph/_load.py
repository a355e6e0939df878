"""Load an Ewoks graph (dict, JSON or YAML file, JSON string) into a validated `Graph`.

The pipeline follows the graph format spec §1.5:

1. read the source into a plain dict (a deep copy: the caller's dict is never touched);
2. normalise every node and link, expanding ``graph`` nodes recursively (§3.7),
   merging duplicate links (§3.6) and wiring default error handlers (§3.8)
   at each level;
3. validate what needs the whole graph (unknown ids, input conflicts, schema);
4. build the immutable `Graph` (which runs the linear analysis);
5. apply ``inputs=`` (§6.5).

Problems are collected, not raised one by one: a `GraphError` lists every
problem found, each naming the node or link and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import gc
import json
import logging
import os
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._errors import GraphError
from ._model import TASK_TYPES, Graph, Link, Node, NodeId

__all__ = ["load_graph"]

logger = logging.getLogger("aioflow.graph")

# Legacy node keys (spec §2.3) and the task_type each one stands for.
_LEGACY_KEYS = {
    "class": "class",
    "method": "method",
    "ppfmethod": "ppfmethod",
    "ppfport": "ppfport",
    "script": "script",
    "notebook": "notebook",
    "task": "generated",
    "graph": "graph",
}
# Node attributes of a `graph` node that are copied onto its input nodes (§3.7).
_COPIED_TO_INPUT_NODES = ("default_inputs", "force_start_node", "conditions_else_value", "default_error_node")
_NODE_KEYS = {
    "id", "label", "task_type", "task_identifier", "task_generator", "default_inputs",
    "force_start_node", "conditions_else_value", "default_error_node", "default_error_attributes",
}  # fmt: skip
_LINK_KEYS = {
    "source", "target", "data_mapping", "map_all_data", "conditions", "on_error",
    "required", "cache_if_optional", "sub_source", "sub_target", "sub_target_attributes",
}  # fmt: skip
_LINK_LISTS = ("data_mapping", "conditions")
_SUB_KEYS = frozenset(("sub_source", "sub_target", "sub_target_attributes"))
_SUPPORTED_SCHEMAS = ("1.0", "1.1", "1.2")
_REFUSED_SCHEMAS = ("0.0", "0.0.1")
# A graph that includes itself through subgraphs would never finish expanding.
_MAX_SUBGRAPH_DEPTH = 64
_FILE_SUFFIXES = (".json", ".yml", ".yaml")
# Set on a document read from a file: the file's directory (never a graph key).
_SOURCE_DIR_KEY = "\0aioflow-source-dir"


def load_graph(
    source: Any,
    *,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    representation: str | None = None,
    root_dir: str | os.PathLike[str] | None = None,
    root_module: str | None = None,
) -> Graph:
    """Load, validate and analyse a graph.

    Args:
        source: a `Graph`; a dict; a JSON string; the path of a JSON or YAML file
            (tried also with ``.json``, ``.yml`` and ``.yaml`` appended); ``None``
            or empty for an empty graph.
        inputs: items ``{"name", "value"}`` plus a node selector (``id``,
            ``label``/``task_identifier``, ``all``), written into the selected
            nodes' default inputs; without a selector, the start nodes.
        representation: force how ``source`` is read: ``json``, ``json_dict``,
            ``json_string``, ``yaml``, ``json_module``, ``yaml_module``.
        root_dir: directory against which relative paths are resolved.
        root_module: package against whose directory relative paths are resolved
            (when ``root_dir`` is not given); the graph id becomes
            ``"<root_module>.<file stem>"``.

    Returns:
        The immutable, analysed `Graph`.

    Raises:
        GraphError: the source cannot be read, or the graph is not valid. The
            message lists every problem found.
    """
    # Loading allocates millions of small containers and frees almost none:
    # the cyclic garbage collector would rescan them again and again (most of
    # the time on large graphs) and find nothing to collect.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_graph(source, inputs, representation, root_dir, root_module)
    finally:
        if gc_was_enabled:
            gc.enable()


def _load_graph(
    source: Any,
    inputs: Sequence[Mapping[str, Any]] | None,
    representation: str | None,
    root_dir: str | os.PathLike[str] | None,
    root_module: str | None,
) -> Graph:
    base_dir = _base_dir(root_dir, root_module)
    if isinstance(source, Graph):
        graph = source
    else:
        raw, name = _read_source(source, representation, base_dir, root_module)
        loader = _Loader(name, base_dir)
        graph = loader.load(raw)
        if root_module and isinstance(source, (str, os.PathLike)) and not _looks_like_json(source):
            stem = Path(str(source)).name.split(".")[0]
            graph = replace(graph, id=f"{root_module}.{stem}")
    if inputs:
        graph = apply_inputs(graph, inputs)
    return graph


# --------------------------------------------------------------------------- reading


def _looks_like_json(source: Any) -> bool:
    return isinstance(source, str) and "{" in source and "}" in source


def _base_dir(root_dir: Any, root_module: str | None) -> Path | None:
    if root_dir is not None:
        return Path(root_dir)
    if root_module:
        import importlib.util

        spec = importlib.util.find_spec(root_module)
        if spec is None or not spec.submodule_search_locations:
            raise GraphError(str(root_module), [f"root_module {root_module!r} is not an importable package"])
        return Path(next(iter(spec.submodule_search_locations)))
    return None


def _read_source(
    source: Any,
    representation: str | None,
    base_dir: Path | None,
    root_module: str | None,
    search_dirs: Sequence[Path] = (),
) -> tuple[dict[str, Any], str]:
    """Return the graph document as a fresh dict, and a name for messages."""
    if representation is None:
        if source is None or (isinstance(source, (str, Mapping)) and not source):
            return {}, "empty"
        if isinstance(source, Mapping):
            representation = "json_dict"
        elif _looks_like_json(source):
            representation = "json_string"
        elif isinstance(source, (str, os.PathLike)):
            representation = "file"
        else:
            msg = f"cannot load a graph from a {type(source).__name__} (expected a dict, a JSON string or a file path)"
            raise GraphError(_short(source), [msg])

    if representation == "json_dict":
        if not isinstance(source, Mapping):
            raise GraphError(
                _short(source), [f"representation 'json_dict' needs a dict (got a {type(source).__name__})"]
            )
        # No copy here: the loader never edits the documents it reads (it builds
        # new dicts and lists), and the values a Graph keeps are copied when the
        # nodes are built. Copying a 100,000-node document up front costs seconds.
        raw = dict(source)
        return raw, _graph_name(raw, "dict")
    if representation == "json_string":
        return _parse_text(str(source), "JSON string", yaml_fallback=False), _graph_name_from_text(str(source))
    if representation in ("json_module", "yaml_module"):
        suffix = ".json" if representation == "json_module" else ".yaml"
        module, _, stem = str(source).rpartition(".")
        pkg_dir = _base_dir(None, module or root_module)
        path = (pkg_dir or Path.cwd()) / (stem + suffix)
        return _read_file(path, str(source))
    if representation in ("json", "yaml", "file"):
        return _find_and_read_file(source, base_dir, search_dirs)
    raise GraphError(
        _short(source),
        [
            f"unknown representation {representation!r} (expected one of json, json_dict, json_string, yaml, json_module, yaml_module)"
        ],
    )


def _short(source: Any) -> str:
    text = str(source)
    return text if len(text) <= 60 else text[:57] + "..."


def _graph_name(raw: Any, default: str) -> str:
    if isinstance(raw, Mapping):
        attrs = raw.get("graph")
        if isinstance(attrs, Mapping) and attrs.get("id") is not None:
            return str(attrs["id"])
    return default


def _graph_name_from_text(text: str) -> str:
    try:
        return _graph_name(json.loads(text), "JSON string")
    except ValueError:
        return "JSON string"


def _copy_structure(value: Any) -> Any:
    # Exact type checks first: isinstance(x, Mapping) is slow on large documents.
    kind = type(value)
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        return {k: _copy_structure(v) for k, v in value.items()}
    if kind is list:
        return [_copy_structure(v) for v in value]
    return value


def _find_and_read_file(
    source: Any, base_dir: Path | None, search_dirs: Sequence[Path] = ()
) -> tuple[dict[str, Any], str]:
    path = Path(source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    candidates = [path]
    if not Path(source).is_absolute():
        # A subgraph file named relative to the file that includes it.
        candidates += [d / Path(source) for d in search_dirs]
    if path.suffix not in _FILE_SUFFIXES:
        candidates += [c.with_name(c.name + s) for c in list(candidates) for s in _FILE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return _read_file(candidate, str(source))
    tried = ", ".join(str(c) for c in candidates)
    hint = (
        " (relative paths are resolved against root_dir, else the current directory)" if not path.is_absolute() else ""
    )
    raise GraphError(str(source), [f"no such graph file (tried: {tried}){hint}"])


def _read_file(path: Path, name: str) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GraphError(name, [f"cannot read {str(path)!r}: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise GraphError(name, [f"{str(path)!r} is not UTF-8 text: {exc}"]) from exc
    if path.suffix in (".yml", ".yaml"):
        raw = _parse_yaml(text, name)
    else:
        raw = _parse_text(text, name, yaml_fallback=path.suffix != ".json")
    # Where the document came from, for subgraph files named relative to it.
    raw[_SOURCE_DIR_KEY] = path.resolve().parent
    return raw, name


def _parse_text(text: str, name: str, *, yaml_fallback: bool) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        if yaml_fallback:
            return _parse_yaml(text, name)
        raise GraphError(name, [f"not valid JSON: {exc}"]) from exc
    return _expect_document(raw, name)


def _parse_yaml(text: str, name: str) -> dict[str, Any]:
    import yaml  # only graphs written in YAML pay for this import

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraphError(name, [f"not valid JSON or YAML: {exc}"]) from exc
    if raw is None:
        return {}
    return _expect_document(raw, name)


def _expect_document(raw: Any, name: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise GraphError(
            name,
            [f"the document must be an object with 'graph', 'nodes' and 'links' (got a {type(raw).__name__})"],
        )
    return raw


# --------------------------------------------------------------------------- ids


def _normalise_id(value: Any) -> NodeId | None:
    """JSON writes tuple ids as lists. Returns None for a value that cannot be an id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        return value
    if isinstance(value, (list, tuple)) and value:
        parts = [_normalise_id(v) for v in value]
        if any(p is None for p in parts):
            return None
        return tuple(parts)
    return None


def _input_name(value: Any) -> str | int | None:
    """Input names are str or int; a digit string means a positional input."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value) if value.isdigit() else value
    return None


def _fmt(node_id: Any) -> str:
    return repr(node_id)


class _At:
    """Where a problem is, formatted only when a problem is reported (loading stays fast)."""

    __slots__ = ("ids", "kind", "prefix")

    def __init__(self, prefix: str, kind: str, *ids: Any) -> None:
        self.prefix = prefix
        self.kind = kind
        self.ids = ids

    def __str__(self) -> str:
        if self.kind == "link":
            return f"{self.prefix}link {_fmt(self.ids[0])} -> {_fmt(self.ids[1])}: "
        return f"{self.prefix}{self.kind} {_fmt(self.ids[0])}: "


def _did_you_mean(wanted: Any, known: Iterable[Any]) -> str:
    names = {str(k): k for k in known}
    close = difflib.get_close_matches(str(wanted), list(names), n=1)
    return f" (did you mean {names[close[0]]!r}?)" if close else ""


# --------------------------------------------------------------------------- expansion


@dataclass
class _Flat:
    """One graph level after expansion: plain dicts, final ids."""

    nodes: dict[NodeId, dict[str, Any]] = field(default_factory=dict)
    links: list[dict[str, Any]] = field(default_factory=list)
    # alias -> [(node id, link attributes)]
    input_aliases: dict[Any, list[tuple[NodeId, dict[str, Any]]]] = field(default_factory=dict)
    output_aliases: dict[Any, list[tuple[NodeId, dict[str, Any]]]] = field(default_factory=dict)
    graph_attrs: dict[str, Any] = field(default_factory=dict)


class _Loader:
    """Turns one graph document into a `Graph`, collecting every problem."""

    def __init__(self, name: str, base_dir: Path | None) -> None:
        self.name = name
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, where: str | _At, text: str) -> None:
        self.problems.append(f"{where}{text}")

    def raise_if_problems(self) -> None:
        if self.problems:
            raise GraphError(self.name, self.problems)

    def load(self, raw: dict[str, Any]) -> Graph:
        flat = self.expand(raw, where="", depth=0)
        self.raise_if_problems()
        attrs = flat.graph_attrs
        graph_id = attrs.get("id")
        if graph_id is None:
            graph_id = "notspecified"
        label = attrs.get("label") or graph_id
        nodes = {nid: self.build_node(nid, a) for nid, a in flat.nodes.items()}
        links = tuple(self.build_link(a) for a in flat.links)
        self.raise_if_problems()
        other = {k: v for k, v in attrs.items() if k not in ("id", "label", "input_nodes", "output_nodes")}
        graph = Graph(id=str(graph_id), label=str(label), nodes=nodes, links=links, attributes=other)
        self.check_input_conflicts(graph)
        self.raise_if_problems()
        return graph

    # ---- one level

    def expand(self, raw: dict[str, Any], where: str, depth: int, parent_dir: Path | None = None) -> _Flat:
        flat = _Flat()
        source_dir = raw.pop(_SOURCE_DIR_KEY, None) or parent_dir
        attrs = raw.get("graph", {})
        if attrs is None:
            attrs = {}
        if not isinstance(attrs, dict):
            self.problem(where, f"'graph' must be an object (got a {type(attrs).__name__})")
            attrs = {}
        flat.graph_attrs = dict(attrs)
        self.check_schema(attrs, where)

        raw_nodes = raw.get("nodes", [])
        raw_links = raw.get("links", raw.get("edges", []))
        if raw_nodes is None:
            raw_nodes = []
        if raw_links is None:
            raw_links = []
        if not isinstance(raw_nodes, list):
            self.problem(where, f"'nodes' must be a list (got a {type(raw_nodes).__name__})")
            raw_nodes = []
        if not isinstance(raw_links, list):
            self.problem(where, f"'links' must be a list (got a {type(raw_links).__name__})")
            raw_links = []

        # Nodes of this level, before subgraph expansion.
        level: dict[NodeId, dict[str, Any]] = {}
        # Ids of nodes that are declared but invalid (already reported): links
        # to them are not reported again as links to unknown nodes.
        invalid: set[NodeId] = set()
        for position, raw_node in enumerate(raw_nodes):
            node = self.normalise_node(raw_node, position, where)
            if node is None:
                declared = _normalise_id(raw_node.get("id")) if isinstance(raw_node, dict) else None
                if declared is not None:
                    invalid.add(declared)
                continue
            nid = node["id"]
            if nid in level:
                self.problem(where, f"node {_fmt(nid)} is declared more than once (node ids must be unique)")
                continue
            level[nid] = node

        links: list[dict[str, Any]] = []
        for position, raw_link in enumerate(raw_links):
            link = self.normalise_link(raw_link, position, where, level, invalid)
            if link is not None:
                links.append(link)

        # Expand subgraphs.
        subs: dict[NodeId, _Flat] = {}
        for nid, node in level.items():
            if node["task_type"] != "graph":
                flat.nodes[nid] = node
                continue
            sub = self.load_subgraph(node, f"{where}subgraph {_fmt(nid)}: ", depth, source_dir)
            if sub is None:
                continue
            subs[nid] = sub
            for inner_id, inner in sub.nodes.items():
                full = (nid, inner_id)
                inner = dict(inner, id=full)
                flat.nodes[full] = inner
            for link in sub.links:
                flat.links.append(dict(link, source=(nid, link["source"]), target=(nid, link["target"])))
            copied = {k: copy.deepcopy(node[k]) for k in _COPIED_TO_INPUT_NODES if k in node}
            if copied:
                for targets in sub.input_aliases.values():
                    for inner_id, _ in targets:
                        flat.nodes[(nid, inner_id)].update(copied)

        for link in links:
            self.resolve_link(link, level, subs, flat, where)

        flat.input_aliases = self.resolve_aliases(
            attrs.get("input_nodes"), "input_nodes", level, subs, where, inputs=True
        )
        flat.output_aliases = self.resolve_aliases(
            attrs.get("output_nodes"), "output_nodes", level, subs, where, inputs=False
        )

        flat.links = self.merge_duplicate_links(flat.links, where)
        self.wire_default_error_handlers(flat, where)
        return flat

    def check_schema(self, attrs: Mapping[str, Any], where: str) -> None:
        version = attrs.get("schema_version")
        if version is None:
            return
        version = str(version)
        if version in _REFUSED_SCHEMAS:
            self.problem(
                where, f"schema_version {version!r} is no longer supported (supported: {', '.join(_SUPPORTED_SCHEMAS)})"
            )
        elif version not in _SUPPORTED_SCHEMAS:
            self.problem(
                where,
                f"schema_version {version!r} is unknown (supported: {', '.join(_SUPPORTED_SCHEMAS)}); "
                "the graph may need a newer aioflow",
            )

    def normalise_node(self, raw: Any, position: int, where: str) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.problem(where, f"nodes[{position}] must be an object (got a {type(raw).__name__})")
            return None
        node = dict(raw)
        if "id" not in node:
            self.problem(where, f"nodes[{position}] has no 'id'")
            return None
        nid = _normalise_id(node["id"])
        if nid is None:
            self.problem(
                where, f"nodes[{position}]: 'id' must be a string, an int or a list of those (got {node['id']!r})"
            )
            return None
        node["id"] = nid
        here = _At(where, "node", nid)

        if "task_type" not in node:
            legacy = [k for k in _LEGACY_KEYS if k in node]
            if len(legacy) != 1:
                found = f"found {', '.join(map(repr, legacy))}" if legacy else "found none"
                self.problem(here, f"needs 'task_type' and 'task_identifier' ({found})")
                return None
            key = legacy[0]
            if key != "graph":
                instead = f"'task_type': {_LEGACY_KEYS[key]!r}"
                if key != "ppfport":
                    instead += " and 'task_identifier'"
                warnings.warn(
                    f"graph {self.name!r}: node {_fmt(nid)} uses the legacy key {key!r}; write {instead} instead",
                    DeprecationWarning,
                    stacklevel=5,
                )
            value = node.pop(key)
            node["task_type"] = _LEGACY_KEYS[key]
            if key != "ppfport":
                node["task_identifier"] = value
        task_type = node["task_type"]
        if task_type not in TASK_TYPES:
            self.problem(
                here,
                f"'task_type' must be one of {', '.join(TASK_TYPES)} (got {task_type!r}){_did_you_mean(task_type, TASK_TYPES)}",
            )
            return None
        if task_type == "ppfport":
            if node.get("task_identifier") is not None:
                self.problem(here, "a 'ppfport' node must not have a 'task_identifier'")
        elif node.get("task_identifier") in (None, ""):
            self.problem(here, f"a {task_type!r} node needs a 'task_identifier'")
        elif task_type != "graph" and not isinstance(node["task_identifier"], str):
            self.problem(here, f"'task_identifier' must be a string (got a {type(node['task_identifier']).__name__})")
        if task_type == "generated":
            if not node.get("task_generator"):
                self.problem(here, "a 'generated' node needs a 'task_generator'")
        elif node.get("task_generator") is not None:
            self.problem(here, "'task_generator' is only allowed on 'generated' nodes")

        node["default_inputs"] = self.normalise_inputs(node.get("default_inputs"), here)
        for flag in ("force_start_node", "default_error_node"):
            if flag in node and not isinstance(node[flag], bool):
                self.problem(here, f"{flag!r} must be true or false (got {node[flag]!r})")
        if "label" in node and node["label"] is not None and not isinstance(node["label"], str):
            self.problem(here, f"'label' must be a string (got {node['label']!r})")
        dea = node.get("default_error_attributes")
        if dea is not None and not isinstance(dea, dict):
            self.problem(here, f"'default_error_attributes' must be an object (got a {type(dea).__name__})")
        return node

    def normalise_inputs(self, value: Any, here: str | _At) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(
                here, f"'default_inputs' must be a list of {{'name', 'value'}} objects (got a {type(value).__name__})"
            )
            return []
        result = []
        for i, item in enumerate(value):
            if not isinstance(item, dict) or "name" not in item or "value" not in item:
                self.problem(here, f"default_inputs[{i}] must be an object with 'name' and 'value' (got {item!r})")
                continue
            name = _input_name(item["name"])
            if name is None:
                self.problem(here, f"default_inputs[{i}]: 'name' must be a string or an int (got {item['name']!r})")
                continue
            result.append({"name": name, "value": item["value"]})
        return result

    def normalise_link(
        self,
        raw: Any,
        position: int,
        where: str,
        level: Mapping[NodeId, dict[str, Any]],
        invalid: set[NodeId] = frozenset(),  # type: ignore[assignment]
    ) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.problem(where, f"links[{position}] must be an object (got a {type(raw).__name__})")
            return None
        link = dict(raw)
        ok = True
        for end in ("source", "target"):
            if end not in link:
                self.problem(where, f"links[{position}] has no {end!r}")
                ok = False
                continue
            nid = _normalise_id(link[end])
            if nid is None:
                self.problem(where, f"links[{position}]: {end!r} must be a node id (got {link[end]!r})")
                ok = False
            link[end] = nid
        if not ok:
            return None
        here = _At(where, "link", link["source"], link["target"])
        for end in ("source", "target"):
            if link[end] not in level:
                if link[end] not in invalid:
                    known = [*level, *invalid]
                    self.problem(here, f"no node {_fmt(link[end])}{_did_you_mean(link[end], known)}")
                ok = False
        for sub_key in ("sub_source", "sub_target"):
            if sub_key in link:
                sub = link[sub_key]
                normalised = _normalise_id(sub)
                if normalised is None:
                    self.problem(here, f"{sub_key!r} must be a node id or an alias (got {sub!r})")
                    ok = False
                link[sub_key] = normalised
        mapping = link.get("data_mapping")
        if mapping is not None:
            if not isinstance(mapping, list):
                self.problem(here, f"'data_mapping' must be a list (got a {type(mapping).__name__})")
                ok = False
            else:
                items = []
                for i, item in enumerate(mapping):
                    if not isinstance(item, dict):
                        self.problem(here, f"data_mapping[{i}] must be an object (got {item!r})")
                        ok = False
                        continue
                    missing = [k for k in ("source_output", "target_input") if k not in item]
                    if missing:
                        self.problem(here, f"data_mapping[{i}] has no {' or '.join(map(repr, missing))} (got {item!r})")
                        ok = False
                        continue
                    target_input = _input_name(item["target_input"])
                    if target_input is None:
                        self.problem(
                            here,
                            f"data_mapping[{i}]: 'target_input' must be a string or an int (got {item['target_input']!r})",
                        )
                        ok = False
                        continue
                    items.append({"source_output": item["source_output"], "target_input": target_input})
                link["data_mapping"] = items
        conditions = link.get("conditions")
        if conditions is not None:
            if not isinstance(conditions, list):
                self.problem(here, f"'conditions' must be a list (got a {type(conditions).__name__})")
                ok = False
            else:
                for i, item in enumerate(conditions):
                    if not isinstance(item, dict) or "source_output" not in item or "value" not in item:
                        self.problem(
                            here, f"conditions[{i}] must be an object with 'source_output' and 'value' (got {item!r})"
                        )
                        ok = False
        for flag in ("map_all_data", "on_error", "cache_if_optional"):
            if flag in link and not isinstance(link[flag], bool):
                self.problem(here, f"{flag!r} must be true or false (got {link[flag]!r})")
                ok = False
        if "required" in link and link["required"] is not None and not isinstance(link["required"], bool):
            self.problem(here, f"'required' must be true, false or null (got {link['required']!r})")
            ok = False
        sta = link.get("sub_target_attributes")
        if sta is not None and not isinstance(sta, dict):
            self.problem(here, f"'sub_target_attributes' must be an object (got a {type(sta).__name__})")
            ok = False
        return link if ok else None

    def load_subgraph(self, node: dict[str, Any], where: str, depth: int, parent_dir: Path | None) -> _Flat | None:
        if depth >= _MAX_SUBGRAPH_DEPTH:
            self.problem(
                where, f"subgraphs nested more than {_MAX_SUBGRAPH_DEPTH} levels deep (does a graph include itself?)"
            )
            return None
        source = node["task_identifier"]
        try:
            raw, _ = _read_source(source, None, self.base_dir, None, [parent_dir] if parent_dir else [])
        except GraphError as exc:
            for p in exc.problems:
                self.problem(where, p)
            return None
        sub = self.expand(raw, where, depth + 1, parent_dir)
        label = node.get("label")
        if label:
            sub.graph_attrs["label"] = label
        return sub

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
                self.problem(
                    here,
                    f"{sub_key!r} is only allowed when the {end} is a graph node ({_fmt(nid)} is a {level[nid]['task_type']!r} node)",
                )
                return None
            return [(nid, {})]
        if address is None:
            self.problem(
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
        known = list(aliases) + list(sub.nodes)
        kind = "input_nodes" if inputs else "output_nodes"
        self.problem(
            here,
            f"subgraph {_fmt(graph_node)} has no {kind} alias and no node {_fmt(address)}{_did_you_mean(address, known)}",
        )
        return None

    def resolve_link(
        self,
        link: dict[str, Any],
        level: Mapping[NodeId, dict[str, Any]],
        subs: Mapping[NodeId, _Flat],
        flat: _Flat,
        where: str,
    ) -> None:
        if not subs and not (link.keys() & _SUB_KEYS):
            # No subgraph at this level: the link is final as it is.
            flat.links.append(link)
            return
        here = _At(where, "link", link["source"], link["target"])
        sources = self.resolve_endpoint(link, "source", level, subs, here)
        targets = self.resolve_endpoint(link, "target", level, subs, here)
        if sources is None or targets is None:
            return
        own = {k: v for k, v in link.items() if k not in ("sub_source", "sub_target", "sub_target_attributes")}
        target_attrs = link.get("sub_target_attributes")
        for source, source_alias in sources:
            for target, target_alias in targets:
                # Attributes written on the link beat those of the aliases.
                merged = {**source_alias, **target_alias, **own, "source": source, "target": target}
                flat.links.append(merged)
        if target_attrs:
            for target, _ in targets:
                updated = {**flat.nodes[target], **copy.deepcopy(target_attrs), "id": target}
                checked = self.normalise_node(updated, 0, f"{here}sub_target_attributes: ")
                if checked is not None and checked["task_type"] == "graph":
                    self.problem(here, "sub_target_attributes cannot turn a node into a graph node")
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
            self.problem(where, f"graph attribute {key!r} must be a list (got a {type(items).__name__})")
            return aliases
        for i, item in enumerate(items):
            here = f"{where}{key}[{i}]: "
            if not isinstance(item, dict) or "id" not in item or "node" not in item:
                self.problem(here, f"must be an object with 'id' and 'node' (got {item!r})")
                continue
            alias = _normalise_id(item["id"])
            nid = _normalise_id(item["node"])
            if nid is None or nid not in level:
                self.problem(here, f"no node {_fmt(item['node'])}{_did_you_mean(item['node'], level)}")
                continue
            attrs = item.get("link_attributes") or {}
            if not isinstance(attrs, dict):
                self.problem(here, f"'link_attributes' must be an object (got {attrs!r})")
                continue
            if level[nid]["task_type"] == "graph":
                sub = subs.get(nid)
                if sub is None:
                    continue
                if "sub_node" not in item:
                    self.problem(here, f"node {_fmt(nid)} is a graph node: the alias needs 'sub_node'")
                    continue
                resolved = self.resolve_in_sub(
                    sub, _normalise_id(item["sub_node"]), inputs=inputs, here=here, graph_node=nid
                )
                if resolved is None:
                    continue
                # An outer alias's attributes beat the inner alias's.
                targets = [(t, {**inner, **attrs}) for t, inner in resolved]
            else:
                targets = [(nid, dict(attrs))]
            aliases.setdefault(alias, []).extend(targets)
        return aliases

    # ---- duplicate links, error handlers

    def merge_duplicate_links(self, links: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
        merged: dict[tuple[NodeId, NodeId], dict[str, Any]] = {}
        for link in links:
            key = (link["source"], link["target"])
            into = merged.get(key)
            if into is None:
                merged[key] = link  # our own dict; its lists are only replaced, never extended
                continue
            for attr, value in link.items():
                if attr in _LINK_LISTS:
                    into[attr] = list(into.get(attr) or []) + list(value or [])
                elif attr not in into:
                    into[attr] = value
                elif into[attr] != value:
                    self.problem(
                        where,
                        f"link {_fmt(key[0])} -> {_fmt(key[1])} is written more than once with different "
                        f"{attr!r} ({into[attr]!r} and {value!r})",
                    )
        return list(merged.values())

    def wire_default_error_handlers(self, flat: _Flat, where: str) -> None:
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
        wired: set[NodeId] = set()
        for nid in list(flat.nodes):
            if nid in handler_set or nid in has_error_link or nid in downstream:
                continue
            for h in handlers:
                attrs = dict(flat.nodes[h].get("default_error_attributes") or {})
                attrs["on_error"] = True
                if not attrs.get("map_all_data") and not attrs.get("data_mapping"):
                    attrs["map_all_data"] = True
                flat.links.append({**attrs, "source": nid, "target": h})
                wired.add(h)
        for node in flat.nodes.values():
            node.pop("default_error_node", None)
            node.pop("default_error_attributes", None)
        unused = [h for h in handlers if h not in wired and not any(lk["target"] == h for lk in flat.links)]
        if unused:
            self.drop_unused_handlers(flat, unused)

    @staticmethod
    def drop_unused_handlers(flat: _Flat, unused: list[NodeId]) -> None:
        """A default handler that nothing feeds is removed with the nodes only it feeds."""
        predecessors: dict[NodeId, set[NodeId]] = {nid: set() for nid in flat.nodes}
        successors: dict[NodeId, list[NodeId]] = {nid: [] for nid in flat.nodes}
        for link in flat.links:
            predecessors[link["target"]].add(link["source"])
            successors[link["source"]].append(link["target"])
        removed = set(unused)
        queue = deque(unused)
        while queue:
            for nxt in successors[queue.popleft()]:
                if nxt not in removed and predecessors[nxt] <= removed:
                    removed.add(nxt)
                    queue.append(nxt)
        for nid in removed:
            del flat.nodes[nid]
        flat.links = [lk for lk in flat.links if lk["source"] not in removed and lk["target"] not in removed]

    # ---- building the model

    def build_node(self, nid: NodeId, attrs: dict[str, Any]) -> Node:
        label = attrs.get("label") or (":".join(_flatten_id(nid)))
        defaults = {item["name"]: _copy_structure(item["value"]) for item in attrs.get("default_inputs") or []}
        other = {k: _copy_structure(v) for k, v in attrs.items() if k not in _NODE_KEYS}
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

    def build_link(self, attrs: dict[str, Any]) -> Link:
        # The hot path of loading (once per link): no work for absent attributes.
        get = attrs.get
        mapping = get("data_mapping")
        conditions = get("conditions")
        map_all_data = bool(get("map_all_data", False))
        on_error = bool(get("on_error", False))
        if map_all_data and mapping:
            self.problem(
                _At("", "link", attrs["source"], attrs["target"]),
                "'map_all_data' and 'data_mapping' cannot be used together",
            )
        if on_error and conditions:
            self.problem(
                _At("", "link", attrs["source"], attrs["target"]), "'on_error' and 'conditions' cannot be used together"
            )
        condition_items: tuple[tuple[Any, Any], ...] = ()
        if conditions:
            # One link listing the same source_output twice: the last entry wins (spec §3.3).
            by_name: dict[Any, Any] = {}
            for c in conditions:
                by_name.pop(c["source_output"], None)
                by_name[c["source_output"]] = c["value"]
            condition_items = tuple((k, _copy_structure(v)) for k, v in by_name.items())
        other = (
            {}
            if attrs.keys() <= _LINK_KEYS
            else {k: _copy_structure(v) for k, v in attrs.items() if k not in _LINK_KEYS}
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

    def check_input_conflicts(self, graph: Graph) -> None:
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
                        self.problem(
                            f"node {_fmt(nid)}: ",
                            f"{what} to its input {target_input!r} through required links; "
                            'make one of them optional ("required": false) or map to another input',
                        )
                    writer[target_input] = link.source


def _flatten_id(nid: Any) -> list[str]:
    if isinstance(nid, tuple):
        return [part for item in nid for part in _flatten_id(item)]
    return [str(nid)]


# --------------------------------------------------------------------------- inputs=


def apply_inputs(graph: Graph, inputs: Sequence[Mapping[str, Any]]) -> Graph:
    """Return a copy of ``graph`` with ``inputs`` written into default inputs (spec §6.5)."""
    problems: list[str] = []
    updates: dict[NodeId, dict[str | int, Any]] = {}
    for i, item in enumerate(inputs):
        here = f"inputs[{i}]: "
        if not isinstance(item, Mapping) or "name" not in item or "value" not in item:
            problems.append(f"{here}must be an object with 'name' and 'value' (got {item!r})")
            continue
        name = _input_name(item["name"])
        if name is None:
            problems.append(f"{here}'name' must be a string or an int (got {item['name']!r})")
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
    """The nodes an ``inputs``/``outputs`` item selects (spec §6.5 and §6.6)."""
    if "id" in item:
        nid = _normalise_id(item["id"])
        if nid is None or nid not in graph.nodes:
            raise GraphError(graph.id, [f"no node {_fmt(item['id'])}{_did_you_mean(item['id'], graph.nodes)}"])
        return [nid]
    if "label" in item or "task_identifier" in item:
        label = item.get("label")
        suffix = item.get("task_identifier")
        return [
            nid
            for nid, node in graph.nodes.items()
            if (label is None or node.label == label)
            and (suffix is None or str(node.task_identifier or "").endswith(str(suffix)))
        ]
    if item.get("all"):
        return list(graph.nodes)
    return list(default)
