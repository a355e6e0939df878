"""`load_graph`: an Ewoks graph (dict, JSON or YAML file, JSON string) into a validated `Graph`.

The pipeline follows the graph format spec §1.5, one module for each step:

1. read the source into a plain dict, the caller's dict never touched (`_read`);
2. normalise every node and link (`_normalise`), expanding ``graph`` nodes
   recursively (§3.7), merging duplicate links (§3.6) (`_subgraphs`) and
   wiring default error handlers (§3.8, `_handlers`) at each level; a
   document without either, whose links are all plain, has its links
   checked a column at a time and kept as written
   (`_normalise.plain_link_columns`);
3. build the immutable `Graph`, which runs the linear analysis, and validate
   what needs the whole graph (`_build`), where links kept as written that
   turn out to have duplicates are merged;
4. apply ``inputs=`` (§6.5, `_inputs`).

Loading touches no process-wide state: it makes few containers per link
(`_model`), so the garbage collector has little to rescan while it runs.

Problems are collected, not raised one by one (`_report`): a `GraphError`
lists every problem found. Whatever a document holds, loading ends in a
`Graph` or a `GraphError`: what would let a document take unbounded time,
memory or stack is refused with a message naming the bound (`_limits`).

Imports: `aioflow._errors`, `_build`, `_inputs`, `_model`,
`_read`, `_report`, `_subgraphs`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import GraphError
from ._build import build_graph
from ._inputs import apply_inputs
from ._model import Graph
from ._read import _base_dir, _looks_like_json, _read_source, _source_name
from ._report import _Report
from ._subgraphs import _Expander

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["load_graph"]


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
    try:
        base_dir = _base_dir(root_dir, root_module)
        return _load_graph(source, inputs, representation, base_dir, root_module)
    except RecursionError as exc:
        # Values and subgraphs are bounded before anything recurses on them;
        # this is the net for a caller whose own stack was already nearly full.
        raise GraphError(_source_name(source), ["too deeply nested to load (Python's recursion limit)"]) from exc


def _load_graph(
    source: Any,
    inputs: Sequence[Mapping[str, Any]] | None,
    representation: str | None,
    base_dir: Path | None,
    root_module: str | None,
) -> Graph:
    if isinstance(source, Graph):
        graph = source
    else:
        raw, name, path = _read_source(source, representation, base_dir, root_module)
        report = _Report(name)
        origin = (path, name) if path is not None else (id(source), f"graph {name!r}")
        flat = _Expander(report, base_dir).expand_document(raw, origin, path)
        report.raise_if_problems()
        graph = build_graph(report, flat)
        if root_module and isinstance(source, (str, os.PathLike)) and not _looks_like_json(source):
            stem = Path(str(source)).name.split(".")[0]
            graph = replace(graph, id=f"{root_module}.{stem}")
    if inputs is not None:
        graph = apply_inputs(graph, inputs)
    return graph
