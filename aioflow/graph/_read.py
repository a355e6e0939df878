"""Reading a graph source into a plain dict: a dict, a JSON string, a JSON or YAML file, a package resource.

A source is read as its ``representation`` says, else as it looks: a dict,
a string holding ``{`` and ``}`` (JSON), else a file path, tried also with
`_FILE_SUFFIXES` appended. Whatever cannot be read is a `GraphError` naming
the source; a document is never edited, so a dict is not copied here (the
values a `Graph` keeps are copied when its nodes and links are normalised).

Imports: `aioflow._errors`, `_show`, `_values`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import GraphError
from ._show import _reason, _short, _show
from ._values import _is_graph_id

_FILE_SUFFIXES = (".json", ".yml", ".yaml")


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


def _source_name(source: Any) -> str:
    return _graph_name(source, "dict") if isinstance(source, Mapping) else _short(source)


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
    import json  # here: a graph given as a dict, the common case in a program, needs no parser

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
