"""Normalising one level of a document: its ``graph`` object, nodes and links, as plain dicts.

Every field is checked for its type where it is read, so that whatever a
document holds, loading ends in a `Graph` or a `GraphError`, and a `Graph`
holds nothing the scheduler cannot use. A normalised node or link is a new
dict: legacy node keys (spec §2.3) replaced by ``task_type`` and
``task_identifier``, ids and input names normalised (`_values`), values
copied; a field that is not valid is reported, and the node or link dropped.
`_Flat` holds one level of them once expanded.

Imports: `_model`, `_report`, `_show`, `_values`.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Mapping
from itertools import repeat
from operator import and_, contains, itemgetter
from typing import TYPE_CHECKING, Any

from ._control import CONTROL_KEY, check_control
from ._model import TASK_TYPES
from ._report import _At
from ._show import _did_you_mean, _fmt, _show
from ._values import _SCALARS, _bad_input_name, _expected_id, _input_name, _is_graph_id, _is_name, _normalise_id

if TYPE_CHECKING:
    from ._model import NodeId
    from ._report import _Report

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
_NODE_KEYS = {
    "id", "label", "task_type", "task_identifier", "task_generator", "default_inputs",
    "force_start_node", "conditions_else_value", "default_error_node", "default_error_attributes",
}  # fmt: skip
_LINK_KEYS = {
    "source", "target", "data_mapping", "map_all_data", "conditions", "on_error",
    "required", "cache_if_optional", "sub_source", "sub_target", "sub_target_attributes",
}  # fmt: skip
_SUB_KEYS = frozenset(("sub_source", "sub_target", "sub_target_attributes"))
# What only a link written in a graph may say: where it goes. Attributes given
# for links made elsewhere (aliases' link_attributes, default_error_attributes)
# cannot.
_ENDPOINT_KEYS = frozenset(("source", "target", *_SUB_KEYS))
_SUPPORTED_SCHEMAS = ("1.0", "1.1", "1.2")
_REFUSED_SCHEMAS = ("0.0", "0.0.1")


class _Flat:
    """One graph level after expansion: plain dicts, final ids."""

    __slots__ = ("graph_attrs", "input_aliases", "link_columns", "links", "nodes", "output_aliases")

    def __init__(self) -> None:
        self.nodes: dict[NodeId, dict[str, Any]] = {}
        self.links: list[dict[str, Any]] = []
        # Instead of `links`: the sources, targets and data mappings of a
        # document's links when they are all plain (`plain_link_columns`).
        self.link_columns: LinkColumns | None = None
        # alias -> [(node id, link attributes)]
        self.input_aliases: dict[Any, list[tuple[NodeId, dict[str, Any]]]] = {}
        self.output_aliases: dict[Any, list[tuple[NodeId, dict[str, Any]]]] = {}
        self.graph_attrs: dict[str, Any] = {}


def graph_attributes(report: _Report, attrs: dict[Any, Any], where: str) -> dict[Any, Any]:
    """The ``graph`` object of a document, checked; other attributes copied as they are."""
    result: dict[Any, Any] = {}
    for key, value in attrs.items():
        if key in ("input_nodes", "output_nodes"):
            result[key] = value  # checked when resolved
        elif key == "id":
            if value is not None and not _is_graph_id(value):
                report.problem(where, f"the graph's 'id' must be a string or an int (got {_show(value)})")
                continue
            result[key] = value
        elif key == "label":
            if value is not None and not isinstance(value, str):
                report.problem(where, f"the graph's 'label' must be a string (got {_show(value)})")
                continue
            result[key] = value
        elif key == "schema_version":
            _check_schema(report, value, where)
            result[key] = value
        elif (
            key == "requirements"
            and value is not None
            and not (isinstance(value, list) and all(isinstance(r, str) for r in value))
        ):
            report.problem(where, f"the graph's 'requirements' must be a list of strings (got {_show(value)})")
        else:
            result[key] = report.copied(value, where, f"the graph attribute {_show(key)}")
    return result


def _check_schema(report: _Report, version: Any, where: str) -> None:
    if version is None:
        return
    if not isinstance(version, (str, int, float)) or isinstance(version, bool):
        report.problem(where, f"schema_version must be a string such as '1.2' (got {_show(version)})")
        return
    version = str(version)
    if version in _REFUSED_SCHEMAS:
        report.problem(
            where, f"schema_version {version!r} is no longer supported (supported: {', '.join(_SUPPORTED_SCHEMAS)})"
        )
    elif version not in _SUPPORTED_SCHEMAS:
        report.problem(
            where,
            f"schema_version {_show(version)} is unknown (supported: {', '.join(_SUPPORTED_SCHEMAS)}); "
            "the graph may need a newer aioflow",
        )


def normalise_node(report: _Report, raw: Any, position: int, where: str) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        report.problem(where, f"nodes[{position}] must be an object (got a {type(raw).__name__})")
        return None
    node = dict(raw)
    if "id" not in node:
        report.problem(where, f"nodes[{position}] has no 'id'")
        return None
    nid = _normalise_id(node["id"])
    if nid is None:
        report.problem(where, f"nodes[{position}]: 'id' must be {_expected_id(node['id'])}")
        return None
    node["id"] = nid
    here = _At(where, "node", nid)

    if "task_type" not in node:
        legacy = [k for k in _LEGACY_KEYS if k in node]
        if len(legacy) != 1:
            found = f"found {', '.join(map(repr, legacy))}" if legacy else "found none"
            report.problem(here, f"needs 'task_type' and 'task_identifier' ({found})")
            return None
        key = legacy[0]
        if key != "graph":
            instead = f"'task_type': {_LEGACY_KEYS[key]!r}"
            if key != "ppfport":
                instead += " and 'task_identifier'"
            warnings.warn(
                f"graph {report.name!r}: node {_fmt(nid)} uses the legacy key {key!r}; write {instead} instead",
                DeprecationWarning,
                stacklevel=5,
            )
        value = node.pop(key)
        node["task_type"] = _LEGACY_KEYS[key]
        if key != "ppfport":
            node["task_identifier"] = value
    task_type = node["task_type"]
    if not isinstance(task_type, str) or task_type not in TASK_TYPES:
        hint = _did_you_mean(task_type, TASK_TYPES) if isinstance(task_type, str) else ""
        report.problem(here, f"'task_type' must be one of {', '.join(TASK_TYPES)} (got {_show(task_type)}){hint}")
        return None
    if not _check_task_identifier(report, node, task_type, here):
        return None  # what runs is unknown: links to the node are not reported again

    if "default_inputs" in node:
        node["default_inputs"] = _normalise_inputs(report, node["default_inputs"], here)
    for flag in ("force_start_node", "default_error_node"):
        if flag in node and not isinstance(node[flag], bool):
            report.problem(here, f"{flag!r} must be true or false (got {_show(node[flag])})")
    if "label" in node and node["label"] is not None and not isinstance(node["label"], str):
        report.problem(here, f"'label' must be a string (got {_show(node['label'])})")
    if "conditions_else_value" in node:
        node["conditions_else_value"] = report.copied(node["conditions_else_value"], here, "'conditions_else_value'")
    dea = node.get("default_error_attributes")
    if dea is not None:
        node["default_error_attributes"] = link_attributes(report, dea, here, "'default_error_attributes'")
    if CONTROL_KEY in node:
        if task_type == "graph":
            report.problem(here, f"{CONTROL_KEY!r} settings go on task nodes (a graph node's would not apply)")
        for problem in check_control(node[CONTROL_KEY]):
            report.problem(here, f"{CONTROL_KEY!r}: {problem}")
    for key, value in node.items():
        if key not in _NODE_KEYS:
            node[key] = report.copied(value, here, f"the attribute {_show(key)}")
    return node


def _check_task_identifier(report: _Report, node: dict[str, Any], task_type: str, here: _At) -> bool:
    """What runs: ``task_identifier`` and ``task_generator`` as the task type needs them (§2.2)."""
    identifier = node.get("task_identifier")
    problems = []
    if task_type == "ppfport":
        if identifier is not None:
            problems.append("a 'ppfport' node must not have a 'task_identifier'")
    elif identifier is None or (isinstance(identifier, str) and not identifier):
        problems.append(f"a {task_type!r} node needs a 'task_identifier'")
    elif task_type == "graph":
        if not isinstance(identifier, (str, Mapping, os.PathLike)):
            problems.append(
                "a 'graph' node's 'task_identifier' must be a file path, a JSON string or an object "
                f"(got a {type(identifier).__name__})"
            )
    elif not isinstance(identifier, str):
        problems.append(f"'task_identifier' must be a string (got a {type(identifier).__name__})")
    generator = node.get("task_generator")
    if task_type == "generated":
        if not isinstance(generator, str) or not generator:
            problems.append(f"a 'generated' node needs a 'task_generator' string (got {_show(generator)})")
    elif generator is not None:
        problems.append("'task_generator' is only allowed on 'generated' nodes")
    for problem in problems:
        report.problem(here, problem)
    return not problems


def _normalise_inputs(report: _Report, value: Any, here: str | _At) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        report.problem(
            here, f"'default_inputs' must be a list of {{'name', 'value'}} objects (got a {type(value).__name__})"
        )
        return []
    result = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or "name" not in item or "value" not in item:
            report.problem(here, f"default_inputs[{i}] must be an object with 'name' and 'value' (got {_show(item)})")
            continue
        name = _input_name(item["name"])
        if name is None:
            report.problem(here, f"default_inputs[{i}]: " + _bad_input_name("'name'", item["name"]))
            continue
        copied = report.copied(item["value"], here, f"default_inputs[{i}] ({_show(name)}): the value")
        result.append({"name": name, "value": copied})
    return result


_PLAIN_LINK_KEYS = frozenset(("source", "target", "data_mapping"))
_PLAIN_ITEM_KEYS = frozenset(("source_output", "target_input"))
_PLAIN_CONDITION_KEYS = frozenset(("source_output", "value"))


def _plain_link(raw: dict[str, Any], level: Mapping[NodeId, dict[str, Any]]) -> dict[str, Any] | None:
    """The normalised form of the most common link, in one pass; None for any other (`normalise_link` then checks it).

    The most common link: string ends, both nodes of this level, and at
    most a ``data_mapping`` of plain items (`_plain_item`). What it returns
    is what the general path returns for it.
    """
    source = raw.get("source")
    target = raw.get("target")
    if type(source) is not str or type(target) is not str or source not in level or target not in level:
        return None
    mapping = raw.get("data_mapping")
    if mapping is None:
        return dict(raw)
    if type(mapping) is not list:
        return None
    items = []
    for item in mapping:
        pair = _plain_item(item)
        if pair is None:
            return None
        items.append({"source_output": pair[0], "target_input": pair[1]})
    return {"source": source, "target": target, "data_mapping": items}


def _plain_item(item: Any) -> tuple[str, str] | None:
    """A ``data_mapping`` item that maps a string output to a named (not positional) input, as a pair; else None.

    Keys besides the two are left out, as `normalise_link` leaves them.
    """
    if type(item) is not dict or not item.keys() >= _PLAIN_ITEM_KEYS:
        return None
    source_output = item["source_output"]
    target_input = item["target_input"]
    if type(source_output) is not str or type(target_input) is not str or target_input.isdecimal():
        return None
    return source_output, target_input


#: The columns of `plain_link_columns`, in the order of `Links._from_columns` (None: the default of every link).
LinkColumns = tuple[
    tuple["NodeId", ...],
    tuple["NodeId", ...],
    tuple[tuple[tuple[Any, str | int], ...], ...],
    tuple[bool, ...] | None,
    tuple[tuple[tuple[Any, Any], ...], ...] | None,
    tuple[bool, ...] | None,
    tuple[bool | None, ...] | None,
    tuple[bool, ...] | None,
]

# The keys a plain link may have besides its ends and ``data_mapping``, each
# with the types its value may have and its value when absent.
_PLAIN_FLAGS: dict[str, tuple[frozenset[type], Any]] = {
    "map_all_data": (frozenset((bool,)), False),
    "on_error": (frozenset((bool,)), False),
    "required": (frozenset((bool, type(None))), None),
    "cache_if_optional": (frozenset((bool,)), False),
}


def plain_link_columns(raw_links: list[Any], level: Mapping[NodeId, dict[str, Any]]) -> LinkColumns | None:
    """The columns of `Links` for a list of links that are all plain, in the order of `Links._from_columns`.

    A plain link: string ends, both nodes of ``level``; a ``data_mapping``
    as `_plain_link` takes it; ``conditions`` whose values are scalars
    (strings, numbers, booleans, null), each output named once; the flags
    true or false (``required`` also null); nothing else, and no pair of
    attributes that cannot go together. None if one link is not: the links
    then go one by one through `normalise_link`, which says what is wrong.
    Duplicates (links with the same ends) of links with more than a
    mapping are left to the general path too. Those of links with a mapping
    only are merged here when there are more links than pairs of ends
    (`_merged_raw_mappings`), else found by the analysis and merged by
    `build_graph`.

    Every check runs over a whole column at a time, and makes no container
    that outlives it (equal mappings share one tuple), so that loading a
    million plain links makes a handful of objects for them (see `_model`).
    """
    n = len(raw_links)
    try:
        sources: tuple[Any, ...] = tuple(map(dict.get, raw_links, repeat("source")))
    except TypeError:
        return None  # a link that is not an object
    targets: tuple[Any, ...] = tuple(map(dict.get, raw_links, repeat("target")))
    if set(map(type, sources)) - {str} or set(map(type, targets)) - {str}:
        return None
    raw_mappings: tuple[Any, ...] = tuple(map(dict.get, raw_links, repeat("data_mapping")))
    # Both ends are there (strings): a link has no key but the known ones
    # when its keys number two plus those of the known ones it has.
    keys = sum(map(len, raw_links)) - 2 * n
    try:
        mapping_sizes: set[int] | None = set(map(list.__len__, raw_mappings))
        nulls = 0
    except TypeError:  # a link without a mapping (or with one that is not a list)
        mapping_sizes = None
        nulls = raw_mappings.count(None)
    if keys != n - nulls:  # not the usual links, ends and a mapping each
        present = {
            key: sum(map(contains, raw_links, repeat(key))) for key in ("data_mapping", "conditions", *_PLAIN_FLAGS)
        }
        if keys != sum(present.values()):
            return None
    else:
        present = {"data_mapping": keys}
    distinct_sources = set(sources)
    distinct_targets = set(targets)
    if not level.keys() >= distinct_sources or not level.keys() >= distinct_targets:
        return None  # a link to an unknown node
    if len(present) == 1 and mapping_sizes is not None and len(distinct_sources) * len(distinct_targets) < n:
        # More links than pairs of ends, all of a mapping only: duplicates for
        # certain, merged here (§3.6) rather than a mapping made per link and
        # merged after the analysis (`_build._merged_plain_links`, which
        # takes the fewer duplicates this does not see).
        sources, targets, raw_mappings = _merged_raw_mappings(sources, targets, raw_mappings)
        mapping_sizes = set(map(len, raw_mappings))
    mappings = _plain_mapping_column(raw_mappings, mapping_sizes)
    if mappings is None:
        return None
    flags: dict[str, Any] = dict.fromkeys(_PLAIN_FLAGS)
    for flag, (kinds, absent) in _PLAIN_FLAGS.items():
        if present.get(flag):
            column = tuple(map(dict.get, raw_links, repeat(flag), repeat(absent)))
            if set(map(type, column)) - kinds:
                return None
            flags[flag] = column
    conditions = None
    if present.get("conditions"):
        conditions = _plain_conditions_column(tuple(map(dict.get, raw_links, repeat("conditions"))))
        if conditions is None:
            return None
    more = any(present.get(key) for key in ("conditions", *_PLAIN_FLAGS))
    if more and len(set(zip(sources, targets, strict=True))) < n:
        # Duplicates, whose attributes `_merge_duplicate_links` compares.
        return None
    # Pairs that cannot go together: the links are then checked one by one.
    if flags["map_all_data"] is not None and any(map(and_, flags["map_all_data"], map(bool, mappings))):
        return None
    if (
        flags["on_error"] is not None
        and conditions is not None
        and any(map(and_, flags["on_error"], map(bool, conditions)))
    ):
        return None
    return (
        sources,
        targets,
        mappings,
        flags["map_all_data"],
        conditions,
        flags["on_error"],
        flags["required"],
        flags["cache_if_optional"],
    )


def _merged_raw_mappings(
    sources: tuple[Any, ...], targets: tuple[Any, ...], raw_mappings: tuple[list[Any], ...]
) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[list[Any], ...]]:
    """One link per pair of ends, its ``data_mapping`` the items of all of them in order; a pair keeps the place of its first link."""
    ends = tuple(zip(sources, targets, strict=True))
    merged: dict[tuple[Any, Any], list[Any]] = {end: [] for end in dict.fromkeys(ends)}
    deque(map(list.extend, map(merged.__getitem__, ends), raw_mappings), maxlen=0)  # extended in C
    return (
        tuple(source for source, _ in merged),
        tuple(target for _, target in merged),
        tuple(merged.values()),
    )


def _plain_conditions_column(raw: tuple[Any, ...]) -> tuple[tuple[tuple[Any, Any], ...], ...] | None:
    """The ``conditions`` of plain links as tuples; None if one is not plain (see `plain_link_columns`)."""
    column: list[tuple[tuple[Any, Any], ...]] = []
    append = column.append
    for conditions in raw:
        if conditions is None:
            append(())
            continue
        if type(conditions) is not list:
            return None
        pairs = []
        for item in conditions:
            if type(item) is not dict or item.keys() != _PLAIN_CONDITION_KEYS:
                return None
            output = item["source_output"]
            value = item["value"]
            if type(output) is not str or type(value) not in _SCALARS:
                return None
            pairs.append((output, value))
        if len(pairs) > 1 and len({output for output, _ in pairs}) < len(pairs):
            return None  # an output named twice: the general path keeps the last
        append(tuple(pairs))
    return tuple(column)


def _plain_mapping_column(
    raw: tuple[Any, ...], sizes: set[int] | None
) -> tuple[tuple[tuple[Any, str | int], ...], ...] | None:
    """The ``data_mapping`` of plain links as tuples, equal ones shared; None if one is not plain.

    ``sizes``: the lengths the mappings have, when all are lists. An item
    may have keys besides its two, as `normalise_link` lets it;
    ``dict.__getitem__`` mapped over a column checks each item's type as it
    reads it (a ``TypeError``).
    """
    if sizes != {1}:
        return _plain_mappings_one_by_one(raw)
    # The most common shape, one item each, checked a column at a time.
    items = tuple(map(itemgetter(0), raw))
    try:
        outputs = tuple(map(dict.__getitem__, items, repeat("source_output")))
        inputs = tuple(map(dict.__getitem__, items, repeat("target_input")))
        del items  # a tuple of dicts, which each collection would rescan while the mappings are made
        if set(map(type, outputs)) - {str} or any(map(str.isdecimal, inputs)):
            return None
    except (TypeError, KeyError):
        return None  # an item that is not an object, or lacks a key, or a name that is not a string
    if len(set(outputs)) == 1:
        output = outputs[0]
        names = set(inputs)
        if 4 * len(names) > len(inputs):  # mostly distinct: nothing to share
            return tuple(zip(zip(repeat(output, len(inputs)), inputs, strict=True), strict=True))
        shared = {name: ((output, name),) for name in names}
        return tuple(map(shared.__getitem__, inputs))
    by_output: dict[Any, dict[Any, tuple[tuple[Any, str | int], ...]]] = {}
    column: list[tuple[tuple[Any, str | int], ...]] = []
    append = column.append
    for output, name in zip(outputs, inputs, strict=True):
        per_name = by_output.get(output)
        if per_name is None:
            per_name = by_output[output] = {}
        mapping = per_name.get(name)
        if mapping is None:
            mapping = per_name[name] = ((output, name),)
        append(mapping)
    return tuple(column)


def _plain_mappings_one_by_one(raw: tuple[Any, ...]) -> tuple[tuple[tuple[Any, str | int], ...], ...] | None:
    """`_plain_mapping_column` for any other shape: one mapping at a time, equal ones shared."""
    seen: dict[tuple[tuple[Any, str | int], ...], tuple[tuple[Any, str | int], ...]] = {}
    column: list[tuple[tuple[Any, str | int], ...]] = []
    for mapping in raw:
        if mapping is None:
            column.append(())
            continue
        if type(mapping) is not list:
            return None
        items_of: list[tuple[Any, str | int]] = []
        for item in mapping:
            pair = _plain_item(item)
            if pair is None:
                return None
            items_of.append(pair)
        key = tuple(items_of)
        column.append(seen.setdefault(key, key))
    return tuple(column)


def normalise_link(
    report: _Report,
    raw: Any,
    position: int,
    where: str,
    level: Mapping[NodeId, dict[str, Any]],
    invalid: set[NodeId] = frozenset(),  # type: ignore[assignment]
) -> dict[str, Any] | None:
    if type(raw) is dict and raw.keys() <= _PLAIN_LINK_KEYS:
        plain = _plain_link(raw, level)
        if plain is not None:
            return plain
    if not isinstance(raw, dict):
        report.problem(where, f"links[{position}] must be an object (got a {type(raw).__name__})")
        return None
    link = dict(raw)
    ok = True
    for end in ("source", "target"):
        if end not in link:
            report.problem(where, f"links[{position}] has no {end!r}")
            ok = False
            continue
        nid = _normalise_id(link[end])
        if nid is None:
            report.problem(where, f"links[{position}]: {end!r} must be a node id: {_expected_id(link[end])}")
            ok = False
        link[end] = nid
    if not ok:
        return None
    here = _At(where, "link", link["source"], link["target"])
    for end in ("source", "target"):
        if link[end] not in level:
            if link[end] not in invalid:
                hint = report.did_you_mean(link[end], [*level, *invalid])
                report.problem(here, f"no node {_fmt(link[end])}{hint}")
            ok = False
    for sub_key in ("sub_source", "sub_target"):
        if sub_key in link:
            sub = link[sub_key]
            normalised = _normalise_id(sub)
            if normalised is None:
                report.problem(here, f"{sub_key!r} must be a node id or an alias: {_expected_id(sub)}")
                ok = False
            link[sub_key] = normalised
    ok = _normalise_link_attributes(report, link, here) and ok
    return link if ok else None


def link_attributes(report: _Report, value: Any, here: _At | str, what: str) -> dict[str, Any] | None:
    """Attributes for links made elsewhere (alias ``link_attributes``, ``default_error_attributes``), checked.

    None, reported, when they are not valid.
    """
    if not isinstance(value, dict):
        report.problem(here, f"{what} must be an object (got a {type(value).__name__})")
        return None
    attrs = dict(value)
    ends = attrs.keys() & _ENDPOINT_KEYS
    if ends:
        named = ", ".join(sorted(map(repr, ends)))
        report.problem(here, f"{what} cannot set {named}: the link's ends are given where it is made")
        return None
    return attrs if _normalise_link_attributes(report, attrs, f"{here}{what}: ") else None


def _normalise_link_attributes(report: _Report, link: dict[str, Any], here: str | _At) -> bool:
    """Check the attributes of a link, and normalise them in place (``link`` is our own dict)."""
    ok = True
    mapping = link.get("data_mapping")
    if mapping is not None:
        items = _normalise_items(report, mapping, "data_mapping", here)
        ok = items is not None
        link["data_mapping"] = items
    conditions = link.get("conditions")
    if conditions is not None:
        checked = _normalise_items(report, conditions, "conditions", here)
        ok = ok and checked is not None
        link["conditions"] = checked
    for flag in ("map_all_data", "on_error", "cache_if_optional"):
        if flag in link and not isinstance(link[flag], bool):
            report.problem(here, f"{flag!r} must be true or false (got {_show(link[flag])})")
            ok = False
    if "required" in link and link["required"] is not None and not isinstance(link["required"], bool):
        report.problem(here, f"'required' must be true, false or null (got {_show(link['required'])})")
        ok = False
    sta = link.get("sub_target_attributes")
    if sta is not None and not isinstance(sta, dict):
        report.problem(here, f"'sub_target_attributes' must be an object (got a {type(sta).__name__})")
        ok = False
    if not link.keys() <= _LINK_KEYS:
        for key, value in link.items():
            if key not in _LINK_KEYS:
                link[key] = report.copied(value, here, f"the attribute {_show(key)}")
    return ok


def _normalise_items(report: _Report, items: Any, key: str, here: str | _At) -> list[dict[str, Any]] | None:
    """The items of a link's ``data_mapping`` or ``conditions`` (``key``); None when one is not valid, each reported.

    An item of either list names an output (``source_output``: a string or an
    int); a ``data_mapping`` item names an input of the target
    (``target_input``), a ``conditions`` item holds the ``value`` the output
    is compared with (copied).
    """
    if not isinstance(items, list):
        report.problem(here, f"{key!r} must be a list (got a {type(items).__name__})")
        return None
    second = "target_input" if key == "data_mapping" else "value"
    result = []
    ok = True
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "source_output" not in item or second not in item:
            report.problem(here, _malformed_item(key, i, item))
            ok = False
            continue
        source_output = item["source_output"]
        if not _is_name(source_output):
            report.problem(here, f"{key}[{i}]: 'source_output' must be a string or an int (got {_show(source_output)})")
            ok = False
            continue
        if second == "value":
            value = report.copied(item["value"], here, f"conditions[{i}]: the value")
            result.append({"source_output": source_output, "value": value})
            continue
        target_input = _input_name(item["target_input"])
        if target_input is None:
            report.problem(here, f"data_mapping[{i}]: " + _bad_input_name("'target_input'", item["target_input"]))
            ok = False
            continue
        result.append({"source_output": source_output, "target_input": target_input})
    return result if ok else None


def _malformed_item(key: str, i: int, item: Any) -> str:
    """Why item ``i`` of ``key`` is not an object with the two fields it needs."""
    if key == "conditions":
        return f"conditions[{i}] must be an object with 'source_output' and 'value' (got {_show(item)})"
    if not isinstance(item, dict):
        return f"data_mapping[{i}] must be an object (got {_show(item)})"
    missing = [k for k in ("source_output", "target_input") if k not in item]
    return f"data_mapping[{i}] has no {' or '.join(map(repr, missing))} (got {_show(item)})"
