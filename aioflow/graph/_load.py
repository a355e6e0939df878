"""Load an Ewoks graph (dict, JSON or YAML file, JSON string) into a validated `Graph`.

The pipeline follows the graph format spec §1.5:

1. read the source into a plain dict (the caller's dict is never touched);
2. normalise every node and link, expanding ``graph`` nodes recursively (§3.7),
   merging duplicate links (§3.6) and wiring default error handlers (§3.8)
   at each level;
3. validate what needs the whole graph (unknown ids, input conflicts, schema);
4. build the immutable `Graph` (which runs the linear analysis);
5. apply ``inputs=`` (§6.5).

Problems are collected, not raised one by one: a `GraphError` lists every
problem found, each naming the node or link and what was expected.

Every field is checked for its type where it is read, so that whatever a
document holds, loading ends in a `Graph` or a `GraphError`, and a `Graph`
holds nothing the scheduler cannot use. What would let a document take
unbounded time, memory or stack is refused with a message naming the limit:

- values nested more than `_MAX_NESTING` lists or objects deep, or that
  contain themselves (copying, comparing and pickling recurse once per level),
  and values whose shared parts expand them beyond `_MAX_SHARED_EXPANSION`
  items (comparing two copies walks them expanded);
- positional input indices beyond `_MAX_POSITION` (a task call holds one
  argument per index below the largest);
- node ids of more than `_MAX_ID_PARTS` parts, and int ids beyond 64 bits;
- a subgraph that includes itself, named by its include path
  (``a.json -> b.json -> a.json``); subgraphs nested more than
  `_MAX_SUBGRAPH_DEPTH` levels; more than `_MAX_SUBGRAPHS` subgraphs, or
  `_MAX_EXPANSION` nodes and links, made by expansion (a finite include tree
  that includes a file twice at each level doubles at every level).

A value met twice in one document value (YAML anchors and aliases, one Python
object used twice) is copied once, so that copying stays linear in the text.
"""

from __future__ import annotations

import difflib
import gc
import json
import logging
import os
import reprlib
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._errors import GraphError
from ._analysis import same_value
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
# What only a link written in a graph may say: where it goes. Attributes given
# for links made elsewhere (aliases' link_attributes, default_error_attributes)
# cannot.
_ENDPOINT_KEYS = frozenset(("source", "target", *_SUB_KEYS))
_GRAPH_KEYS_KEPT_APART = ("id", "label", "input_nodes", "output_nodes")
_SUPPORTED_SCHEMAS = ("1.0", "1.1", "1.2")
_REFUSED_SCHEMAS = ("0.0", "0.0.1")
_FILE_SUFFIXES = (".json", ".yml", ".yaml")

# Values nested deeper are refused: copying, comparing, printing and pickling
# them recurse once per level, and Python's stack holds about 1,000 frames.
_MAX_NESTING = 100
# The largest positional input index. A call gets one argument per index up
# to the largest (the gaps are MISSING), so an index sizes an allocation;
# 65,536 arguments is far beyond any signature, and within what a command
# line (script tasks) can hold.
_MAX_POSITION = 2**16 - 1
_POSITION_DIGITS = len(str(_MAX_POSITION))
# The most items a value may hold once its shared parts are expanded (a YAML
# alias "bomb" is small as written and copied once, but comparing it walks it
# whole). Values without shared parts have no bound but the document's size.
_MAX_SHARED_EXPANSION = 1_000_000
# A node id holds at most this many strings and ints, however nested.
_MAX_ID_PARTS = 1000
# Int ids (and graph ids) lie within 64 bits: they are printed in labels and
# messages, and Python refuses to print an int of 4,300 digits or more.
_MAX_INT_ID = 2**63
# Subgraphs nested deeper are refused (each level is a few stack frames).
_MAX_SUBGRAPH_DEPTH = 64
# The most nodes and links that expansion may copy or make: a node or link is
# copied into the graph of each level of subgraphs it is in; each link an
# alias fans out to, and each error link wired to one of several handlers,
# is made. And the most subgraphs it may expand. Either bound takes a few
# seconds to reach; what reaches one (a file that includes another twice, at
# each of 20 levels) would otherwise never finish.
_MAX_EXPANSION = 2_000_000
_MAX_SUBGRAPHS = 10_000
_INCLUDED_OFTEN = "is a subgraph included several times, at many levels?"
_COPIES = f"a node or link is copied into each level of subgraphs it is in: {_INCLUDED_OFTEN}"
# Did-you-mean suggestions per load: each scans every known id, so a
# document with a hundred thousand bad links must not ask for each.
_MAX_SUGGESTIONS = 20
_SUGGESTION_LENGTH = 200

_SCALARS = frozenset((str, int, float, bool, type(None)))

_ID_RULE = "a string, an int or a non-empty list of those"
_ID_LIMITS = f" (ints within ±2**63; lists of at most {_MAX_ID_PARTS} parts, {_MAX_NESTING} levels deep)"


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
    except RecursionError as exc:
        # Values and subgraphs are bounded before anything recurses on them;
        # this is the net for a caller whose own stack was already nearly full.
        raise GraphError(_source_name(source), ["too deeply nested to load (Python's recursion limit)"]) from exc
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
        raw, name, path = _read_source(source, representation, base_dir, root_module)
        loader = _Loader(name, base_dir)
        origin = (path, name) if path is not None else (id(source), f"graph {name!r}")
        graph = loader.load(raw, origin, path)
        if root_module and isinstance(source, (str, os.PathLike)) and not _looks_like_json(source):
            stem = Path(str(source)).name.split(".")[0]
            graph = replace(graph, id=f"{root_module}.{stem}")
    if inputs is not None:
        graph = apply_inputs(graph, inputs)
    return graph


# --------------------------------------------------------------------------- showing values


def _repr(maxlevel: int, maxparts: int) -> reprlib.Repr:
    """A `reprlib.Repr` showing ``maxlevel`` levels of ``maxparts`` items at most, strings of 80 characters."""
    shown = reprlib.Repr()
    shown.maxlevel = maxlevel
    shown.maxlist = shown.maxtuple = shown.maxset = shown.maxfrozenset = shown.maxdeque = maxparts
    shown.maxdict = min(maxparts, 4)
    shown.maxstring = shown.maxother = 80
    shown.maxlong = 40
    return shown


# Values may share their parts (YAML aliases): at most 6**3 parts are shown.
_VALUE_REPR = _repr(3, 6)
# Ids are bounded (`_MAX_ID_PARTS`), and nest one level per subgraph: shown whole.
_ID_REPR = _repr(_MAX_NESTING + _MAX_SUBGRAPH_DEPTH, _MAX_ID_PARTS)


def _show(value: Any, shown: reprlib.Repr = _VALUE_REPR) -> str:
    """``repr(value)``, cut to a readable size: values come from documents of any size and depth."""
    try:
        return shown.repr(value)
    except Exception:  # an int of 4,300 digits or more, a __repr__ that raises
        return f"<a {type(value).__name__}>"


def _fmt(node_id: Any) -> str:
    return _show(node_id, _ID_REPR)


def _short(source: Any) -> str:
    """A source, named in messages: a string of at most 200 characters (its middle cut out), anything else shown."""
    if not isinstance(source, str):
        return _show(source)
    return source if len(source) <= 200 else f"{source[:98]}...{source[-99:]}"


def _source_name(source: Any) -> str:
    return _graph_name(source, "dict") if isinstance(source, Mapping) else _short(source)


def _reason(exc: BaseException) -> str:
    """An exception, in a message."""
    if isinstance(exc, RecursionError):
        return "too deeply nested to be read"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- reading


def _looks_like_json(source: Any) -> bool:
    return isinstance(source, str) and "{" in source and "}" in source


def _base_dir(root_dir: Any, root_module: Any) -> Path | None:
    if root_dir is not None:
        if not isinstance(root_dir, (str, os.PathLike)):
            raise GraphError(_show(root_dir), [f"root_dir must be a directory path (got a {type(root_dir).__name__})"])
        try:
            return Path(root_dir)
        except TypeError as exc:  # an os.PathLike whose path is bytes
            raise GraphError(_show(root_dir), [f"root_dir must be a directory path ({exc})"]) from exc
    if root_module:
        return _package_dir(root_module, "root_module ")
    return None


def _package_dir(module: Any, what: str) -> Path:
    """The directory of an importable package (importlib imports its parent packages to find it).

    ``what`` names the package in messages: ``"root_module "``, or the ``*_module`` name and ``"package "``.
    """
    if not isinstance(module, str):
        raise GraphError(_show(module), [f"{what}must be a package name (got a {type(module).__name__})"])
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except Exception as exc:  # a missing or failing parent package, a malformed name: whatever importing raises
        problem = f"{what}{_show(module)} is not an importable package ({type(exc).__name__}: {_reason(exc)})"
        raise GraphError(_short(module), [problem]) from exc
    if spec is None or not spec.submodule_search_locations:
        raise GraphError(_short(module), [f"{what}{_show(module)} is not an importable package"])
    return Path(next(iter(spec.submodule_search_locations)))


def _read_source(
    source: Any,
    representation: Any,
    base_dir: Path | None,
    root_module: str | None,
    search_dirs: Sequence[Path] = (),
) -> tuple[dict[str, Any], str, Path | None]:
    """Return the graph document as a fresh dict, a name for messages, and the file it was read from."""
    if representation is None:
        if source is None or (isinstance(source, (str, Mapping)) and not source):
            return {}, "empty", None
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
        # nodes and links are normalised. Copying a 100,000-node document up
        # front costs seconds.
        raw = dict(source)
        return raw, _graph_name(raw, "dict"), None
    if representation == "json_string":
        text = _expect_str(source, representation)
        raw = _parse_text(text, "JSON string", yaml_fallback=False)
        return raw, _graph_name(raw, "JSON string"), None
    if representation in ("json_module", "yaml_module"):
        name = _expect_str(source, representation)
        suffix = ".json" if representation == "json_module" else ".yaml"
        module, _, stem = name.rpartition(".")
        package = module or root_module
        pkg_dir = _package_dir(package, f"{representation} {_show(name)}: package ") if package else None
        return _read_file((pkg_dir or Path()) / (stem + suffix), name)
    if representation in ("json", "yaml", "file"):
        if not isinstance(source, (str, os.PathLike)):
            problem = f"representation {representation!r} needs a file path (got a {type(source).__name__})"
            raise GraphError(_short(source), [problem])
        return _find_and_read_file(source, base_dir, search_dirs)
    raise GraphError(
        _short(source),
        [
            (
                f"unknown representation {_show(representation)} "
                "(expected one of json, json_dict, json_string, yaml, json_module, yaml_module)"
            )
        ],
    )


def _expect_str(source: Any, representation: str) -> str:
    if not isinstance(source, str):
        raise GraphError(
            _short(source), [f"representation {representation!r} needs a str (got a {type(source).__name__})"]
        )
    return source


def _graph_name(raw: Any, default: str) -> str:
    if isinstance(raw, Mapping):
        attrs = raw.get("graph")
        if isinstance(attrs, Mapping):
            graph_id = attrs.get("id")
            if _is_graph_id(graph_id):
                return str(graph_id)
    return default


def _is_graph_id(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and -_MAX_INT_ID <= value < _MAX_INT_ID


def _find_and_read_file(
    source: str | os.PathLike[str], base_dir: Path | None, search_dirs: Sequence[Path] = ()
) -> tuple[dict[str, Any], str, Path]:
    try:
        written = Path(source)
    except TypeError as exc:  # an os.PathLike whose path is bytes
        raise GraphError(_show(source), [f"not a file path: {exc}"]) from exc
    name = _short(source if isinstance(source, str) else str(written))
    path = base_dir / written if not written.is_absolute() and base_dir is not None else written
    candidates = [path]
    if not written.is_absolute():
        # A subgraph file named relative to the file that includes it.
        candidates += [d / written for d in search_dirs]
    if path.suffix not in _FILE_SUFFIXES:
        candidates += [c.with_name(c.name + s) for c in list(candidates) if c.name for s in _FILE_SUFFIXES]
    unusable: list[str] = []
    for candidate in candidates:
        try:
            found = candidate.is_file()
        except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL character
            unusable.append(f"{_short(str(candidate))}: {_reason(exc)}")
            continue
        if found:
            return _read_file(candidate, name)
    if unusable and len(unusable) == len(candidates):
        raise GraphError(name, [f"not a usable file path ({'; '.join(unusable)})"])
    tried = ", ".join(_short(str(c)) for c in candidates)
    hint = (
        " (relative paths are resolved against root_dir, else the current directory)"
        if not written.is_absolute()
        else ""
    )
    raise GraphError(name, [f"no such graph file (tried: {tried}){hint}"])


def _read_file(path: Path, name: str) -> tuple[dict[str, Any], str, Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GraphError(name, [f"{_short(str(path))!r} is not UTF-8 text: {exc}"]) from exc
    except (OSError, ValueError) as exc:  # missing, unreadable, a directory, a NUL character in the name
        raise GraphError(name, [f"cannot read {_short(str(path))!r}: {_reason(exc)}"]) from exc
    if path.suffix in (".yml", ".yaml"):
        raw = _parse_yaml(text, name)
    else:
        raw = _parse_text(text, name, yaml_fallback=path.suffix != ".json")
    try:
        # The file's identity on the include path, and the directory its subgraph files are looked for in.
        where = path.resolve()
    except (OSError, RuntimeError):
        where = path.absolute()
    return raw, name, where


def _parse_text(text: str, name: str, *, yaml_fallback: bool) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if yaml_fallback:
            return _parse_yaml(text, name)
        raise GraphError(name, [f"not valid JSON: {_reason(exc)}"]) from exc
    return _expect_document(raw, name)


def _parse_yaml(text: str, name: str) -> dict[str, Any]:
    import yaml  # only graphs written in YAML pay for this import

    try:
        raw = yaml.safe_load(text)
    except Exception as exc:
        # Not only YAMLError: the constructors raise ValueError (a date such as
        # 2024-13-01, an int of 4,300 digits) and RecursionError (deep nesting).
        raise GraphError(name, [f"not valid JSON or YAML: {_reason(exc)}"]) from exc
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


# --------------------------------------------------------------------------- ids, names, values


def _normalise_id(value: Any) -> NodeId | None:
    """A node id as written (JSON writes tuple ids as lists), or None for a value that cannot be one."""
    if type(value) is str:  # the usual case
        return value
    return _normalise_id_part(value, 0, [_MAX_ID_PARTS])


def _normalise_id_part(value: Any, depth: int, budget: list[int]) -> NodeId | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        budget[0] -= 1
        if budget[0] < 0:
            return None
        return value if isinstance(value, str) or -_MAX_INT_ID <= value < _MAX_INT_ID else None
    if isinstance(value, (list, tuple)) and value and depth < _MAX_NESTING:
        parts = []
        for item in value:
            part = _normalise_id_part(item, depth + 1, budget)
            if part is None:
                return None
            parts.append(part)
        return tuple(parts)
    return None


def _expected_id(value: Any) -> str:
    """What a node id must be, for a message about ``value``, which is not one."""
    limits = _ID_LIMITS if isinstance(value, (int, list, tuple)) and not isinstance(value, bool) and value else ""
    return f"{_ID_RULE}{limits} (got {_show(value)})"


def _is_name(value: Any) -> bool:
    """Whether ``value`` can name an output: a str or an int."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _input_name(value: Any) -> str | int | None:
    """The input ``value`` names: a str, or the index of a positional input (an int, or a digit string).

    None when it cannot name an input, or names a position beyond `_MAX_POSITION`
    (`_bad_input_name` says which).
    """
    if isinstance(value, str):
        if not value.isdecimal():
            return value
        digits = value.lstrip("0") or "0"
        if len(digits) > _POSITION_DIGITS:  # beyond the bound anyway; int() refuses 4,300 digits
            return None
        value = int(digits)
    elif not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if 0 <= value <= _MAX_POSITION else None


def _bad_input_name(what: str, value: Any) -> str:
    """Why ``value`` is no input name (`_input_name` returned None), as a message about ``what``."""
    if _is_name(value):
        return (
            f"{what} {_show(value)} is a positional input index beyond the bound: indices lie between 0 and "
            f"{_MAX_POSITION} (a task is called with at most {_MAX_POSITION + 1:,} positional inputs)"
        )
    return f"{what} must be a string or an int (got {_show(value)})"


class _Unbounded(Exception):
    """A value nests more than `_MAX_NESTING` levels or contains itself, or expands beyond `_MAX_SHARED_EXPANSION`.

    Its message says which, after the value's name.
    """


_TOO_DEEP = f"is nested more than {_MAX_NESTING} lists or objects deep (or contains itself)"
_TOO_SHARED = (
    f"shares parts (YAML aliases, or one object used several times) that make it more than "
    f"{_MAX_SHARED_EXPANSION:,} items once expanded"
)


def _copy_structure(value: Any) -> Any:
    """A copy of the dicts, lists and tuples of a document value; anything else is kept as it is.

    Raises:
        _Unbounded: the value nests more than `_MAX_NESTING` levels, contains
            itself, or expands to more than `_MAX_SHARED_EXPANSION` items.
    """
    # Exact type checks first: isinstance(x, Mapping) is slow on large documents.
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or kind is list or kind is tuple or isinstance(value, Mapping):
        return _Copy().copy(value, 0)
    return value


class _Copy:
    """The copy of one value: what is met twice is copied once, and the depth and expansion are bounded.

    A container already copied is reused, and its height (levels, itself
    included) is checked against the depth it is met at again; a container
    that contains itself is met deeper and deeper until the bound. Its size
    (items, expanded) counts again each time it is met: comparing two copies
    of the value walks it expanded, so only values without shared parts may
    be larger than `_MAX_SHARED_EXPANSION`.
    """

    __slots__ = ("copies", "deepest", "expanded")

    def __init__(self) -> None:
        self.copies: dict[int, tuple[Any, int, int]] = {}  # id -> copy, height, expanded size
        self.deepest = 0  # the deepest level reached under the container being copied
        self.expanded = 0  # items copied so far, shared parts counted each time they are met

    def copy(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind in _SCALARS or not (kind is dict or kind is list or kind is tuple or isinstance(value, Mapping)):
            return value
        known = self.copies.get(id(value))
        if known is not None:
            result, height, size = known
            if depth + height > _MAX_NESTING:
                raise _Unbounded(_TOO_DEEP)
            self.expanded += size
            if self.expanded > _MAX_SHARED_EXPANSION:
                raise _Unbounded(_TOO_SHARED)
            self.deepest = max(self.deepest, depth + height)
            return result
        if depth >= _MAX_NESTING:
            raise _Unbounded(_TOO_DEEP)
        outer = self.deepest
        self.deepest = depth + 1
        before = self.expanded
        self.expanded += len(value)
        below = depth + 1
        if kind is list:
            result = [self.copy(v, below) for v in value]
        elif kind is tuple:
            result = tuple([self.copy(v, below) for v in value])
        else:
            result = {k: self.copy(v, below) for k, v in value.items()}
        self.copies[id(value)] = (result, self.deepest - depth, self.expanded - before)
        self.deepest = max(outer, self.deepest)
        return result


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
    """`` (did you mean 'x'?)`` with the known name closest to ``wanted``, or ``""``."""
    text = wanted if isinstance(wanted, str) else _fmt(wanted)
    if len(text) > _SUGGESTION_LENGTH:
        return ""
    names: dict[str, Any] = {}
    for k in known:
        name = k if isinstance(k, str) else _fmt(k)
        if len(name) <= _SUGGESTION_LENGTH:
            names.setdefault(name, k)
    close = difflib.get_close_matches(text, list(names), n=1)
    return f" (did you mean {_fmt(names[close[0]])}?)" if close else ""


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
        # The documents being expanded, outermost first: what identifies each
        # (a file's resolved path, else the source object's id) and its name.
        self.includes: list[tuple[Any, str]] = []
        # Nodes and links, and subgraphs, made by expansion so far (`_MAX_EXPANSION`, `_MAX_SUBGRAPHS`).
        self.expanded = 0
        self.subgraphs = 0
        self.too_big = False
        # Subgraph documents read from files and JSON strings: (source, directory) -> (document, file).
        self.documents: dict[tuple[str, Path | None], tuple[dict[str, Any], Path | None] | None] = {}
        self.suggestions = _MAX_SUGGESTIONS

    def problem(self, where: str | _At, text: str) -> None:
        self.problems.append(f"{where}{text}")

    def raise_if_problems(self) -> None:
        if self.problems:
            raise GraphError(self.name, self.problems)

    def did_you_mean(self, wanted: Any, known: Iterable[Any]) -> str:
        """`_did_you_mean`, for the first `_MAX_SUGGESTIONS` problems of a load only."""
        if self.suggestions <= 0:
            return ""
        self.suggestions -= 1
        return _did_you_mean(wanted, known)

    def copied(self, value: Any, where: str | _At, what: str) -> Any:
        """A copy of a document value (see `_copy_structure`); None, reported, past its bounds."""
        try:
            return _copy_structure(value)
        except _Unbounded as exc:
            self.problem(where, f"{what} {exc}")
            return None

    def grow(self, count: int, where: str | _At, cause: str) -> bool:
        """Count ``count`` more nodes and links made by expansion; False past `_MAX_EXPANSION`.

        Reported once, with ``cause``: expansion stops there.
        """
        self.expanded += count
        if self.expanded <= _MAX_EXPANSION:
            return True
        self.overgrown(where, f"{_MAX_EXPANSION:,} nodes and links ({cause})")
        return False

    def overgrown(self, where: str | _At, what: str) -> None:
        if not self.too_big:
            self.too_big = True
            self.problem(where, f"expanding the graph makes more than {what}")

    def load(self, raw: dict[str, Any], origin: tuple[Any, str], path: Path | None) -> Graph:
        self.includes.append(origin)
        flat = self.expand(raw, "", 0, path.parent if path is not None else None)
        self.raise_if_problems()
        attrs = flat.graph_attrs
        graph_id = attrs.get("id")
        if graph_id is None:
            graph_id = "notspecified"
        label = attrs.get("label") or graph_id
        nodes = {nid: self.build_node(nid, a) for nid, a in flat.nodes.items()}
        links = tuple(self.build_link(a) for a in flat.links)
        self.raise_if_problems()
        other = {k: v for k, v in attrs.items() if k not in _GRAPH_KEYS_KEPT_APART}
        graph = Graph(id=str(graph_id), label=str(label), nodes=nodes, links=links, attributes=other)
        self.check_input_conflicts(graph)
        self.raise_if_problems()
        return graph

    # ---- one level

    def expand(self, raw: dict[str, Any], where: str, depth: int, source_dir: Path | None) -> _Flat:
        flat = _Flat()
        attrs = raw.get("graph", {})
        if attrs is None:
            attrs = {}
        if not isinstance(attrs, dict):
            self.problem(where, f"'graph' must be an object (got a {type(attrs).__name__})")
            attrs = {}
        flat.graph_attrs = self.graph_attributes(attrs, where)

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
        has_graph_nodes = False
        for nid, node in level.items():
            if node["task_type"] != "graph":
                flat.nodes[nid] = node
                continue
            has_graph_nodes = True
            here = f"{where}subgraph {_fmt(nid)}: "
            sub = self.load_subgraph(nid, node, here, depth, source_dir)
            if sub is None or not self.grow(len(sub.nodes) + len(sub.links), here, _COPIES):
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

        flat.input_aliases = self.resolve_aliases(
            attrs.get("input_nodes"), "input_nodes", level, subs, where, inputs=True
        )
        flat.output_aliases = self.resolve_aliases(
            attrs.get("output_nodes"), "output_nodes", level, subs, where, inputs=False
        )

        flat.links = self.merge_duplicate_links(flat.links, where)
        self.wire_default_error_handlers(flat, where)
        return flat

    def graph_attributes(self, attrs: dict[Any, Any], where: str) -> dict[Any, Any]:
        """The ``graph`` object of a document, checked; other attributes copied as they are."""
        result: dict[Any, Any] = {}
        for key, value in attrs.items():
            if key in ("input_nodes", "output_nodes"):
                result[key] = value  # checked when resolved
            elif key == "id":
                if value is not None and not _is_graph_id(value):
                    self.problem(where, f"the graph's 'id' must be a string or an int (got {_show(value)})")
                    continue
                result[key] = value
            elif key == "label":
                if value is not None and not isinstance(value, str):
                    self.problem(where, f"the graph's 'label' must be a string (got {_show(value)})")
                    continue
                result[key] = value
            elif key == "schema_version":
                self.check_schema(value, where)
                result[key] = value
            elif (
                key == "requirements"
                and value is not None
                and not (isinstance(value, list) and all(isinstance(r, str) for r in value))
            ):
                self.problem(where, f"the graph's 'requirements' must be a list of strings (got {_show(value)})")
            else:
                result[key] = self.copied(value, where, f"the graph attribute {_show(key)}")
        return result

    def check_schema(self, version: Any, where: str) -> None:
        if version is None:
            return
        if not isinstance(version, (str, int, float)) or isinstance(version, bool):
            self.problem(where, f"schema_version must be a string such as '1.2' (got {_show(version)})")
            return
        version = str(version)
        if version in _REFUSED_SCHEMAS:
            self.problem(
                where, f"schema_version {version!r} is no longer supported (supported: {', '.join(_SUPPORTED_SCHEMAS)})"
            )
        elif version not in _SUPPORTED_SCHEMAS:
            self.problem(
                where,
                f"schema_version {_show(version)} is unknown (supported: {', '.join(_SUPPORTED_SCHEMAS)}); "
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
            self.problem(where, f"nodes[{position}]: 'id' must be {_expected_id(node['id'])}")
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
        if not isinstance(task_type, str) or task_type not in TASK_TYPES:
            hint = _did_you_mean(task_type, TASK_TYPES) if isinstance(task_type, str) else ""
            self.problem(here, f"'task_type' must be one of {', '.join(TASK_TYPES)} (got {_show(task_type)}){hint}")
            return None
        if not self.check_task_identifier(node, task_type, here):
            return None  # what runs is unknown: links to the node are not reported again

        if "default_inputs" in node:
            node["default_inputs"] = self.normalise_inputs(node["default_inputs"], here)
        for flag in ("force_start_node", "default_error_node"):
            if flag in node and not isinstance(node[flag], bool):
                self.problem(here, f"{flag!r} must be true or false (got {_show(node[flag])})")
        if "label" in node and node["label"] is not None and not isinstance(node["label"], str):
            self.problem(here, f"'label' must be a string (got {_show(node['label'])})")
        if "conditions_else_value" in node:
            node["conditions_else_value"] = self.copied(node["conditions_else_value"], here, "'conditions_else_value'")
        dea = node.get("default_error_attributes")
        if dea is not None:
            node["default_error_attributes"] = self.link_attributes(dea, here, "'default_error_attributes'")
        for key, value in node.items():
            if key not in _NODE_KEYS:
                node[key] = self.copied(value, here, f"the attribute {_show(key)}")
        return node

    def check_task_identifier(self, node: dict[str, Any], task_type: str, here: _At) -> bool:
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
            self.problem(here, problem)
        return not problems

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
                self.problem(here, f"default_inputs[{i}] must be an object with 'name' and 'value' (got {_show(item)})")
                continue
            name = _input_name(item["name"])
            if name is None:
                self.problem(here, f"default_inputs[{i}]: " + _bad_input_name("'name'", item["name"]))
                continue
            copied = self.copied(item["value"], here, f"default_inputs[{i}] ({_show(name)}): the value")
            result.append({"name": name, "value": copied})
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
                self.problem(where, f"links[{position}]: {end!r} must be a node id: {_expected_id(link[end])}")
                ok = False
            link[end] = nid
        if not ok:
            return None
        here = _At(where, "link", link["source"], link["target"])
        for end in ("source", "target"):
            if link[end] not in level:
                if link[end] not in invalid:
                    hint = self.did_you_mean(link[end], [*level, *invalid])
                    self.problem(here, f"no node {_fmt(link[end])}{hint}")
                ok = False
        for sub_key in ("sub_source", "sub_target"):
            if sub_key in link:
                sub = link[sub_key]
                normalised = _normalise_id(sub)
                if normalised is None:
                    self.problem(here, f"{sub_key!r} must be a node id or an alias: {_expected_id(sub)}")
                    ok = False
                link[sub_key] = normalised
        ok = self.normalise_link_attributes(link, here) and ok
        return link if ok else None

    def link_attributes(self, value: Any, here: _At | str, what: str) -> dict[str, Any] | None:
        """Attributes for links made elsewhere (alias ``link_attributes``, ``default_error_attributes``), checked.

        None, reported, when they are not valid.
        """
        if not isinstance(value, dict):
            self.problem(here, f"{what} must be an object (got a {type(value).__name__})")
            return None
        attrs = dict(value)
        ends = attrs.keys() & _ENDPOINT_KEYS
        if ends:
            named = ", ".join(sorted(map(repr, ends)))
            self.problem(here, f"{what} cannot set {named}: the link's ends are given where it is made")
            return None
        return attrs if self.normalise_link_attributes(attrs, f"{here}{what}: ") else None

    def normalise_link_attributes(self, link: dict[str, Any], here: str | _At) -> bool:
        """Check the attributes of a link, and normalise them in place (``link`` is our own dict)."""
        ok = True
        mapping = link.get("data_mapping")
        if mapping is not None:
            items = self.normalise_mapping(mapping, here)
            ok = items is not None
            link["data_mapping"] = items
        conditions = link.get("conditions")
        if conditions is not None:
            checked = self.normalise_conditions(conditions, here)
            ok = ok and checked is not None
            link["conditions"] = checked
        for flag in ("map_all_data", "on_error", "cache_if_optional"):
            if flag in link and not isinstance(link[flag], bool):
                self.problem(here, f"{flag!r} must be true or false (got {_show(link[flag])})")
                ok = False
        if "required" in link and link["required"] is not None and not isinstance(link["required"], bool):
            self.problem(here, f"'required' must be true, false or null (got {_show(link['required'])})")
            ok = False
        sta = link.get("sub_target_attributes")
        if sta is not None and not isinstance(sta, dict):
            self.problem(here, f"'sub_target_attributes' must be an object (got a {type(sta).__name__})")
            ok = False
        if not link.keys() <= _LINK_KEYS:
            for key, value in link.items():
                if key not in _LINK_KEYS:
                    link[key] = self.copied(value, here, f"the attribute {_show(key)}")
        return ok

    def normalise_mapping(self, mapping: Any, here: str | _At) -> list[dict[str, Any]] | None:
        """``data_mapping`` items with a ``source_output`` and an input name each; None, reported, if not."""
        if not isinstance(mapping, list):
            self.problem(here, f"'data_mapping' must be a list (got a {type(mapping).__name__})")
            return None
        items = []
        ok = True
        for i, item in enumerate(mapping):
            if not isinstance(item, dict):
                self.problem(here, f"data_mapping[{i}] must be an object (got {_show(item)})")
                ok = False
                continue
            missing = [k for k in ("source_output", "target_input") if k not in item]
            if missing:
                self.problem(here, f"data_mapping[{i}] has no {' or '.join(map(repr, missing))} (got {_show(item)})")
                ok = False
                continue
            source_output = item["source_output"]
            if not _is_name(source_output):
                self.problem(
                    here, f"data_mapping[{i}]: 'source_output' must be a string or an int (got {_show(source_output)})"
                )
                ok = False
                continue
            target_input = _input_name(item["target_input"])
            if target_input is None:
                self.problem(here, f"data_mapping[{i}]: " + _bad_input_name("'target_input'", item["target_input"]))
                ok = False
                continue
            items.append({"source_output": source_output, "target_input": target_input})
        return items if ok else None

    def normalise_conditions(self, conditions: Any, here: str | _At) -> list[dict[str, Any]] | None:
        """``conditions`` items with an output name and a value each; None, reported, if not."""
        if not isinstance(conditions, list):
            self.problem(here, f"'conditions' must be a list (got a {type(conditions).__name__})")
            return None
        items = []
        ok = True
        for i, item in enumerate(conditions):
            if not isinstance(item, dict) or "source_output" not in item or "value" not in item:
                self.problem(
                    here, f"conditions[{i}] must be an object with 'source_output' and 'value' (got {_show(item)})"
                )
                ok = False
                continue
            source_output = item["source_output"]
            if not _is_name(source_output):
                self.problem(
                    here, f"conditions[{i}]: 'source_output' must be a string or an int (got {_show(source_output)})"
                )
                ok = False
                continue
            value = self.copied(item["value"], here, f"conditions[{i}]: the value")
            items.append({"source_output": source_output, "value": value})
        return items if ok else None

    def load_subgraph(
        self, nid: NodeId, node: dict[str, Any], where: str, depth: int, parent_dir: Path | None
    ) -> _Flat | None:
        self.subgraphs += 1
        if self.subgraphs > _MAX_SUBGRAPHS:
            self.overgrown(where, f"{_MAX_SUBGRAPHS:,} subgraphs: {_INCLUDED_OFTEN}")
            return None
        if depth >= _MAX_SUBGRAPH_DEPTH:
            self.problem(where, f"subgraphs nested more than {_MAX_SUBGRAPH_DEPTH} levels deep")
            return None
        read = self.read_subgraph(node["task_identifier"], where, parent_dir)
        if read is None:
            return None
        raw, path = read
        origin = self.origin(node["task_identifier"], path, nid)
        keys = [key for key, _ in self.includes]
        if origin[0] in keys:
            chain = [name for _, name in self.includes[keys.index(origin[0]) :]]
            self.problem(where, f"the graph includes itself: {' -> '.join([*chain, chain[0]])}")
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
                self.problem(where, p)
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
        kind = "input_nodes" if inputs else "output_nodes"
        hint = self.did_you_mean(address, [*aliases, *sub.nodes])
        self.problem(here, f"subgraph {_fmt(graph_node)} has no {kind} alias and no node {_fmt(address)}{hint}")
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
        if made > 1 and not self.grow(made, here, "links fanned out by aliases"):
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
                self.problem(here, f"must be an object with 'id' and 'node' (got {_show(item)})")
                continue
            alias = _normalise_id(item["id"])
            if alias is None:
                self.problem(here, f"'id' must be {_expected_id(item['id'])}")
                continue
            nid = _normalise_id(item["node"])
            if nid is None:
                self.problem(here, f"'node' must be a node id: {_expected_id(item['node'])}")
                continue
            if nid not in level:
                self.problem(here, f"no node {_fmt(nid)}{self.did_you_mean(nid, level)}")
                continue
            attrs = item.get("link_attributes")
            attrs = {} if attrs is None else self.link_attributes(attrs, here, "'link_attributes'")
            if attrs is None:
                continue
            if level[nid]["task_type"] == "graph":
                sub = subs.get(nid)
                if sub is None:
                    continue
                if "sub_node" not in item:
                    self.problem(here, f"node {_fmt(nid)} is a graph node: the alias needs 'sub_node'")
                    continue
                address = _normalise_id(item["sub_node"])
                if address is None:
                    self.problem(here, f"'sub_node' must be a node id or an alias: {_expected_id(item['sub_node'])}")
                    continue
                resolved = self.resolve_in_sub(sub, address, inputs=inputs, here=here, graph_node=nid)
                if resolved is None or (len(resolved) > 1 and not self.grow(len(resolved), here, "aliases of aliases")):
                    continue
                # An outer alias's attributes beat the inner alias's.
                targets = [(t, {**inner, **attrs}) for t, inner in resolved]
            else:
                targets = [(nid, dict(attrs))]
            aliases.setdefault(alias, []).extend(targets)
        return aliases

    # ---- duplicate links, error handlers

    def merge_duplicate_links(self, links: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
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
                    self.problem(
                        where,
                        f"link {_fmt(key[0])} -> {_fmt(key[1])} is written more than once with different "
                        f"{attr!r} ({_show(into[attr])} and {_show(value)})",
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
        sources = [nid for nid in flat.nodes if not (nid in handler_set or nid in has_error_link or nid in downstream)]
        wired = f"{len(sources):,} nodes, each linked to each of {len(handlers):,} default error handlers"
        if len(handlers) > 1 and sources and not self.grow(len(sources) * len(handlers), where, wired):
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
            self.drop_unused_handlers(flat, unused, aliased)

    @staticmethod
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

    # ---- building the model

    def build_node(self, nid: NodeId, attrs: dict[str, Any]) -> Node:
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
            # Copied again: links made from one alias or handler share their attribute values.
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
                            f"{what} to its input {_show(target_input)} through required links; "
                            'make one of them optional ("required": false) or map to another input',
                        )
                    writer[target_input] = link.source


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


def _error_link_attributes(handler: dict[str, Any]) -> dict[str, Any]:
    """The attributes of the links wired to a default error handler (§3.8)."""
    attrs = dict(handler.get("default_error_attributes") or {})
    attrs["on_error"] = True
    if not attrs.get("map_all_data") and not attrs.get("data_mapping"):
        attrs["map_all_data"] = True
    return attrs


def _flatten_id(nid: Any) -> list[str]:
    if isinstance(nid, tuple):
        return [part for item in nid for part in _flatten_id(item)]
    return [str(nid)]


# --------------------------------------------------------------------------- inputs=


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
