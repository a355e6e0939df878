"""A picture of a graph: DOT text written here, laid out and drawn by Graphviz's ``dot`` program.

`graph_to_dot` writes the DOT text (no program needed); `graph_to_svg` and
`draw` run ``dot`` on it (a system program, not a Python package: ``apt
install graphviz``, ``conda install graphviz``, ``brew install graphviz``).
``dot`` is looked up on ``PATH``, or taken from the environment variable
`DOT_ENV` (``AIOFLOW_DOT``) when it is set. `Graph._repr_svg_` draws a graph
in Jupyter through `repr_svg`, which gives None instead of raising.

What is drawn: a box per node, labelled with its id and, in a smaller line,
its task's short name (`_task_name`); start nodes with a bold border; a
labelled arrow per link (its conditions ``[x == 1]``, its data mapping
``a→b``; error links red, dashed and labelled "on error"); the nodes a
subgraph node was flattened into inside a box labelled with that node's id,
nested as the subgraphs were.

Every text of the graph reaches ``dot`` escaped (`_entities`), so the DOT
text is plain ASCII whatever the ids, names and values hold, and the SVG is
well-formed XML. Each node's SVG element has the id `element_id` (``node-``
and the node id: see `_id_text`), so that a web page can find it.

Imports: `aioflow._errors`, `_show`, and `_model` for types.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._errors import GraphvizError, GraphvizNotFoundError
from ._show import _show

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._model import Graph, Node, NodeId

__all__ = [
    "DOT_ENV",
    "DOT_TIMEOUT",
    "FORMATS",
    "draw",
    "element_id",
    "find_dot",
    "graph_to_dot",
    "graph_to_svg",
    "repr_svg",
]

#: The environment variable that names the ``dot`` program to run (a path, or a name looked up on ``PATH``).
DOT_ENV = "AIOFLOW_DOT"

#: Seconds ``dot`` may take. The worst graph of 1,000 nodes measured takes about 5 s
#: (docs/observe.md); this only stops a program that hangs.
DOT_TIMEOUT = 300.0

#: What `draw` makes: the DOT text itself, or what ``dot`` draws from it.
FORMATS = ("svg", "dot", "png", "pdf")

# A graph with more nodes and links than this is laid out with `_BIG_GRAPH_LAYOUT`.
# Graphviz's default layout takes 0.9 s on a graph of 300 nodes and 450 links
# whose links reach far (each link spanning many ranks), 11 s at 500 nodes and
# 5 minutes at 1,000; the settings below bring 1,000 nodes to about 5 s.
_BIG_GRAPH = 500
# Fewer network-simplex passes for ranking and placing nodes (the slow part),
# a quicker crossing minimisation, and straight links instead of splines,
# drawn before the boxes so that a link crossing a box passes under it.
_BIG_GRAPH_LAYOUT = 'nslimit=1, nslimit1=1, mclimit=0.1, splines=line, outputorder="edgesfirst"'

# `repr_svg` (Jupyter) leaves bigger graphs to the text repr: their picture
# takes seconds to draw and is unreadable at a notebook's width.
_REPR_MAX_NODES = 1000
# Seconds `repr_svg` waits for ``dot``: a notebook should not hang on a picture.
_REPR_TIMEOUT = 30.0

# Longest label line, in characters, before it is cut with "…".
_LINE = 40
# Longest shown node id and task name: a box as wide as 30 characters at most.
_ID_LINE = 30

# The look: a sans-serif font, soft boxes, and red for error links.
_FONT = "Helvetica,Arial,sans-serif"
_LINE_COLOR = "#4a5b7a"
_FILL = "#f4f6fb"
_TASK_COLOR = "#5f6b7d"
_ERROR_COLOR = "#d62728"
_START_PENWIDTH = 2.5

# A string node id shown as itself in an element id (see `_id_text`).
_PLAIN_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# A lone surrogate (a Python str holds a surrogate pair as one character).
_SURROGATE = re.compile("[\ud800-\udfff]")
# The characters JavaScript's encodeURIComponent leaves as they are, besides letters, digits and "_.-~".
_URI_SAFE = "!*'()"
# Task types whose identifier is a dotted name: the short name is its last part.
_DOTTED = ("class", "method", "ppfmethod", "generated")


# How to get ``dot``, in the messages of `GraphvizNotFoundError`.
_INSTALL = (
    "install the `graphviz` package of your system "
    "(apt install graphviz, conda install graphviz, brew install graphviz)"
)


def find_dot() -> str:
    """The path of the ``dot`` program: `DOT_ENV` when set, else ``dot`` on ``PATH``.

    Raises:
        GraphvizNotFoundError: the program is not there, or is not executable.
    """
    configured = os.environ.get(DOT_ENV)
    if configured:
        found = shutil.which(configured)
        if found is None:
            reason = (
                f"{DOT_ENV} is set to {configured!r}, which is not an executable program; "
                f"set it to the path of `dot`, or unset it and {_INSTALL}"
            )
            raise GraphvizNotFoundError(configured, reason)
        return found
    found = shutil.which("dot")
    if found is None:
        raise GraphvizNotFoundError("dot", f"{_INSTALL}; or set {DOT_ENV} to the path of `dot`")
    return found


def draw(graph: Graph, fmt: str = "svg", *, timeout: float | None = DOT_TIMEOUT) -> bytes:
    """The picture of ``graph`` in format ``fmt``: one of `FORMATS` (``dot`` needs no program).

    Raises:
        ValueError: ``fmt`` is not one of `FORMATS`.
        GraphvizNotFoundError: ``dot`` is needed and not installed.
        GraphvizError: ``dot`` failed or took longer than ``timeout`` seconds.
    """
    if fmt not in FORMATS:
        msg = f"'fmt' must be one of {', '.join(FORMATS)} (got {fmt!r})"
        raise ValueError(msg)
    text = graph_to_dot(graph)
    if fmt == "dot":
        return text.encode("ascii")
    return _run_dot(text, fmt, timeout)


def graph_to_svg(graph: Graph, *, timeout: float | None = DOT_TIMEOUT) -> str:
    """``graph`` drawn as SVG by ``dot`` (see the module docstring for what is drawn).

    Raises:
        GraphvizNotFoundError: ``dot`` is not installed.
        GraphvizError: ``dot`` failed or took longer than ``timeout`` seconds.
    """
    return _run_dot(graph_to_dot(graph), "svg", timeout).decode("utf-8")


def repr_svg(graph: Graph) -> str | None:
    """``graph`` as SVG for Jupyter (`Graph._repr_svg_`), or None: no ``dot``, it failed, or the graph is too big."""
    if len(graph.nodes) > _REPR_MAX_NODES:
        return None
    try:
        return graph_to_svg(graph, timeout=_REPR_TIMEOUT)
    except GraphvizError:
        return None


def _run_dot(text: str, fmt: str, timeout: float | None) -> bytes:
    program = find_dot()
    try:
        done = subprocess.run(
            [program, f"-T{fmt}"], input=text.encode("ascii"), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise GraphvizError(program, f"it did not finish within {timeout:g} s") from exc
    except OSError as exc:  # removed, or not a program, between find_dot and now
        raise GraphvizNotFoundError(program, f"{program!r} cannot be run ({exc.strerror or exc}); {_INSTALL}") from exc
    if done.returncode != 0:
        how = f"exit code {done.returncode}" if done.returncode > 0 else f"killed by signal {-done.returncode}"
        said = done.stderr.decode("utf-8", "replace").strip()
        if len(said) > 2000:
            said = said[:1997] + "..."
        raise GraphvizError(program, f"{how}: {said}" if said else how)
    return done.stdout


# --------------------------------------------------------------------------- ids


def element_id(node_id: NodeId) -> str:
    """The id of the SVG element of node ``node_id``: ``node-`` then `_id_text`."""
    return "node-" + _id_text(node_id)


def _id_text(node_id: Any) -> str:
    """A node id as ASCII text for element ids, the same for the same id, different for different ids.

    A string of letters, digits, ``_`` and ``-`` that begins with a letter or
    ``_`` is itself (``fit``). Any other id is its compact JSON text (tuples as
    lists), percent-encoded as JavaScript's
    ``encodeURIComponent(JSON.stringify(id))`` encodes it: ``3`` for the int 3,
    ``%223%22`` for the string "3", ``%5B%22fit%22%2C%22refine%22%5D`` for
    ``("fit", "refine")``. Such a text begins with ``%``, a digit or ``-``,
    never as a plain one does.
    """
    if type(node_id) is str and _PLAIN_ID.fullmatch(node_id):
        return node_id
    text = json.dumps(node_id, ensure_ascii=False, separators=(",", ":"), default=repr)
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return quote(text, safe=_URI_SAFE)


# --------------------------------------------------------------------------- text


def _printable(text: str) -> str:
    """``text`` with each character that is not printable written as its escape (``\\n``, ``\\x00``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cut(text: str, limit: int = _LINE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\\": "&#92;"})
# Graphviz reads a backslash and N in a label as the node's name (and G, E, H, T, L as other names),
# and two backslashes as one: each backslash of a label is written twice.
_LABEL_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\\": "&#92;&#92;"})


def _entities(text: str, table: dict[int, str] = _ESCAPES) -> str:
    """Printable ``text`` as ASCII for a DOT string: markup characters and non-ASCII as entities.

    Entities are all that DOT's strings and HTML-like labels understand alike,
    and Graphviz writes them into the SVG as they are: a backslash written as
    ``&#92;`` stays one (DOT would keep a doubled backslash in a string
    doubled), and ``&amp;`` stays ``&`` (Graphviz copies a ``&`` that begins
    an entity unescaped).
    """
    escaped = text.translate(table)
    if escaped.isascii():
        return escaped
    return "".join(c if c.isascii() else f"&#{ord(c)};" for c in escaped)


def _label(text: str) -> str:
    """Printable ``text`` for an HTML-like label, shown as it is (see `_LABEL_ESCAPES`)."""
    return _entities(text, _LABEL_ESCAPES)


def _quoted(text: str) -> str:
    return f'"{_entities(text)}"'


def _shown_id(node_id: Any) -> str:
    """A node id in a label: a string as itself, anything else as Python writes it."""
    if type(node_id) is str and node_id:
        return _cut(_printable(node_id), _ID_LINE)
    if type(node_id) is int:
        return _cut(str(node_id), _ID_LINE)
    return _cut(_printable(_show(node_id)), _ID_LINE)


def _name(value: Any) -> str:
    """An output or input name in a link label."""
    return _printable(value) if isinstance(value, str) else _printable(_show(value))


def _value(value: Any) -> str:
    """A condition's value in a link label, as JSON writes it (``true``, ``null``, ``"text"``)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        try:
            return _printable(json.dumps(value, ensure_ascii=False))
        except ValueError:  # an int too long to convert to text
            pass
    return _printable(_show(value))


def _task_name(node: Node) -> str:
    """A node's task in a few characters: ``fit`` for ``pkg.tasks.fit``, ``run.sh`` for ``scripts/run.sh -v``."""
    ident = node.task_identifier
    if not isinstance(ident, str) or not ident.strip():
        return node.task_type
    name = ident
    if "::" in name:  # "/path/file.py::Name"
        name = name.rsplit("::", 1)[1]
    else:
        if node.task_type == "script":  # a command line: its program
            name = name.split()[0]
        name = re.split(r"[/\\]", name.rstrip("/\\"))[-1] or name
        if node.task_type in _DOTTED:
            name = name.rsplit(".", 1)[-1] or name
    return _cut(_printable(name), _ID_LINE)


# --------------------------------------------------------------------------- DOT


class _Cluster:
    """The nodes of one subgraph, and the subgraphs inside it, in the order the graph's nodes list them."""

    __slots__ = ("children", "items")

    def __init__(self) -> None:
        # ("node", node id) or ("cluster", key of children), in order.
        self.items: list[tuple[str, Any]] = []
        self.children: dict[Any, _Cluster] = {}


def _subgraph_path(node_id: Any) -> tuple[list[Any], Any]:
    """The subgraph nodes ``node_id`` came from, outermost first, and its id inside the innermost.

    The loader gives a node of subgraph node ``g`` the id ``(g, inner id)``,
    nested: ``("a", ("b", "c"))`` is node ``c`` of subgraph ``b`` of subgraph
    ``a``. A two-part id written as such in a document reads the same way.
    """
    path = []
    while type(node_id) is tuple and len(node_id) == 2:
        path.append(node_id[0])
        node_id = node_id[1]
    return path, node_id


def _subgraph_id(path: Sequence[Any]) -> Any:
    """The id the subgraph node at ``path`` would have as a node: ``("a", "b")`` for ``b`` inside ``a``."""
    node_id = path[-1]
    for part in reversed(path[:-1]):
        node_id = (part, node_id)
    return node_id


def graph_to_dot(graph: Graph) -> str:
    """``graph`` as Graphviz DOT text, ASCII only, the same for the same graph.

    Element ids (in the SVG that ``dot`` makes of it): ``node-<id>`` for a
    node (`element_id`), ``cluster-<id>`` for the box of a subgraph node (the
    id that node would have if it were a node), ``link-<i>`` for the ``i``-th
    link of ``graph.links``. Classes: ``aioflow-node`` (with ``start`` and
    ``end`` for start and end nodes), ``aioflow-subgraph``, and ``link`` (with
    ``conditional`` and ``on-error``); Graphviz adds ``node``, ``cluster`` and
    ``edge``.
    """
    nodes = graph.nodes
    links = graph.links
    start = set(graph.start_nodes)
    end = set(graph.end_nodes)
    names = {node_id: _quoted(repr(node_id)) for node_id in nodes}

    lines = [
        f"digraph {_quoted(_printable(graph.id))} {{",
        f'  graph [fontname="{_FONT}", fontsize=11, fontcolor="{_LINE_COLOR}", nodesep=0.3, ranksep=0.45];',
        (
            f'  node [shape=box, style="rounded,filled", fillcolor="{_FILL}", color="{_LINE_COLOR}", '
            f'fontname="{_FONT}", fontsize=12, margin="0.15,0.05"];'
        ),
        f'  edge [fontname="{_FONT}", fontsize=9, color="{_LINE_COLOR}", fontcolor="{_LINE_COLOR}", arrowsize=0.7];',
    ]
    if len(nodes) + len(links) > _BIG_GRAPH:
        lines.append(f"  graph [{_BIG_GRAPH_LAYOUT}];")

    root = _Cluster()
    inner_ids: dict[NodeId, Any] = {}
    for node_id in nodes:
        path, inner_ids[node_id] = _subgraph_path(node_id)
        cluster = root
        for depth, part in enumerate(path):
            child = cluster.children.get(part)
            if child is None:
                child = cluster.children[part] = _Cluster()
                cluster.items.append(("cluster", (part, tuple(path[: depth + 1]))))
            cluster = child
        cluster.items.append(("node", node_id))

    def node_line(node_id: NodeId, indent: str) -> str:
        node = nodes[node_id]
        classes = "aioflow-node" + (" start" if node_id in start else "") + (" end" if node_id in end else "")
        label = (
            f"{_label(_shown_id(inner_ids[node_id]))}<BR/>"
            f'<FONT POINT-SIZE="9" COLOR="{_TASK_COLOR}">{_label(_task_name(node))}</FONT>'
        )
        bold = f", penwidth={_START_PENWIDTH}" if node_id in start else ""
        return f'{indent}{names[node_id]} [id="{element_id(node_id)}", class="{classes}", label=<{label}>{bold}];'

    # Depth first, each cluster's lines between its opening and closing; a
    # stack, not recursion, however deep the nesting.
    stack: list[tuple[_Cluster, int, str]] = [(root, 0, "  ")]
    while stack:
        cluster, position, indent = stack.pop()
        if position == len(cluster.items):
            if cluster is not root:
                lines.append(indent[:-2] + "}")
            continue
        stack.append((cluster, position + 1, indent))
        kind, item = cluster.items[position]
        if kind == "node":
            lines.append(node_line(item, indent))
            continue
        part, path = item
        sub_id = _subgraph_id(path)
        lines.append(f"{indent}subgraph {_quoted('cluster ' + repr(sub_id))} {{")
        lines.append(
            f'{indent}  graph [id="cluster-{_id_text(sub_id)}", class="aioflow-subgraph", '
            f'label=<{_label(_shown_id(part))}>, labeljust=l, style="rounded,dashed", color="{_LINE_COLOR}"];'
        )
        stack.append((cluster.children[part], 0, indent + "  "))

    for i, (source, target) in enumerate(zip(links.sources, links.targets, strict=True)):
        label_lines = []
        classes = "link"
        style = ""
        if links.on_error[i]:
            label_lines.append("on error")
            classes += " on-error"
            style = f', color="{_ERROR_COLOR}", fontcolor="{_ERROR_COLOR}", style=dashed'
        conditions = links.conditions[i]
        if conditions:
            classes += " conditional"
            label_lines.append(_cut("[" + " and ".join(f"{_name(o)} == {_value(v)}" for o, v in conditions) + "]"))
        if links.map_all_data[i]:
            label_lines.append("all data")
        elif links.data_mappings[i]:
            label_lines.append(_cut(", ".join(f"{_name(s)}→{_name(t)}" for s, t in links.data_mappings[i])))
        label = f", label=<{'<BR/>'.join(map(_label, label_lines))}>" if label_lines else ""
        lines.append(f'  {names[source]} -> {names[target]} [id="link-{i}", class="{classes}"{label}{style}];')

    lines.append("}")
    return "\n".join(lines) + "\n"
