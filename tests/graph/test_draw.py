"""A picture of a graph: DOT text written by aioflow, SVG drawn by Graphviz's real ``dot`` program.

The SVG is read back with xml.etree: it must be well-formed, and each node,
link and subgraph must be found by the element ids and classes that
docs/observe.md documents, with the texts and styles drawn for them.
"""

from __future__ import annotations

import itertools
import json
import pickle
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest
from graphs import COUNTING_LOOP, node, rv

from aioflow import GraphvizError, GraphvizNotFoundError, load_graph
from aioflow.graph._draw import (
    DOT_ENV,
    draw,
    element_id,
    graph_to_dot,
    graph_to_svg,
    repr_svg,
)

if TYPE_CHECKING:
    from aioflow.graph import Graph

SVG = "{http://www.w3.org/2000/svg}"
# The colour of error links (a constant of the module, repeated here as the documented look).
ERROR_RED = "#d62728"
# A plain id is itself in an element id; any other is encodeURIComponent(JSON.stringify(id)).
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

# COUNTING_LOOP (conditions, a loop on one node) and an error link to a handler.
DRAWN: dict[str, Any] = {
    "graph": {"id": "drawn"},
    "nodes": [*COUNTING_LOOP["nodes"], node("handler", "tasks.echo")],
    "links": [
        *COUNTING_LOOP["links"],
        {
            "source": "start",
            "target": "handler",
            "on_error": True,
            "data_mapping": [{"source_output": "WorkflowException", "target_input": "error"}],
        },
    ],
}

# Two levels of subgraphs: "outer" holds "inner" (nodes t, u) and its own node "side".
LEAF = {
    "graph": {"id": "leaf", "input_nodes": [{"id": "in", "node": "t"}], "output_nodes": [{"id": "out", "node": "u"}]},
    "nodes": [node("t"), node("u")],
    "links": [rv("t", "u")],
}
MIDDLE = {
    "graph": {
        "id": "middle",
        "input_nodes": [{"id": "in", "node": "inner", "sub_node": "in"}],
        "output_nodes": [{"id": "out", "node": "side"}],
    },
    "nodes": [{"id": "inner", "task_type": "graph", "task_identifier": LEAF}, node("side")],
    "links": [{"source": "inner", "sub_source": "out", "target": "side", "map_all_data": True}],
}
NESTED = {
    "graph": {"id": "nested"},
    "nodes": [node("begin"), {"id": "outer", "task_type": "graph", "task_identifier": MIDDLE}, node("finish")],
    "links": [
        {"source": "begin", "target": "outer", "sub_target": "in"},
        {"source": "outer", "sub_source": "out", "target": "finish"},
    ],
}

# Ids that break naive DOT, XML, HTML or JSON writing. Each is short enough to be shown whole.
HOSTILE_IDS: list[Any] = [
    'say "hi"',
    "back\\slash\\",
    "{braces}",
    "<b>bold</b>",
    "a -> b",
    "--",
    "&amp;",
    "naïve ☃ 😀",
    "line\nbreak",
    "",
    3,
    "3",
    ["x", "y"],
    ['<i>"\\N"</i>', "z"],
    "node-x",
    "%22",
    "\u200b",
    "subgraph",
    "\\N",
]


def parse(svg: str) -> ET.Element:
    """The SVG document's root element (fails on anything not well-formed)."""
    return ET.fromstring(svg.encode("utf-8"))


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    """The <g> elements whose class list holds ``cls``."""
    return [g for g in root.iter(f"{SVG}g") if cls in g.get("class", "").split()]


def by_id(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("id", ""): g for g in root.iter(f"{SVG}g")}


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def title(element: ET.Element) -> str:
    found = element.find(f"{SVG}title")
    assert found is not None
    return found.text or ""


def shape(element: ET.Element) -> ET.Element:
    """The box or line drawn for a node, cluster or link: its first <path> or <polygon>."""
    for child in element:
        if child.tag in (f"{SVG}path", f"{SVG}polygon"):
            return child
    raise AssertionError(f"no shape in {element.get('id')}")


def bbox(element: ET.Element) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the shape of a node or cluster."""
    s = shape(element)
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", s.get("points") or s.get("d") or "")]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def inside(inner: tuple[float, ...], outer: tuple[float, ...]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def node_id_of(element_id: str) -> Any:
    """Decode an element id as a web page would: the documented scheme, written independently."""
    assert element_id.startswith("node-")
    text = element_id.removeprefix("node-")
    if PLAIN.fullmatch(text):
        return text
    value = json.loads(unquote(text))
    return _tuples(value)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def use_missing_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DOT_ENV, str(tmp_path / "no" / "dot"))


def fake_dot(tmp_path: Path, body: str) -> str:
    """An executable shell script standing in for ``dot``."""
    script = tmp_path / "fake-dot"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


# --------------------------------------------------------------------------- nodes, links, clusters


def test_every_node_is_an_element_with_its_id_and_label() -> None:
    """Each node's <g> has id node-<id>, class aioflow-node, its id and task name as texts, and its id as title."""
    graph = load_graph(DRAWN)
    root = parse(graph_to_svg(graph))
    elements = by_id(root)
    assert len(groups(root, "aioflow-node")) == len(graph.nodes)
    for node_id, node_ in graph.nodes.items():
        element = elements[element_id(node_id)]
        assert "aioflow-node" in (element.get("class") or "").split()
        assert texts(element)[0] == node_id
        assert title(element) == repr(node_id)
        assert node_.task_type in ("ppfport",) or texts(element)[1] == str(node_.task_identifier).rsplit(".", 1)[-1]
    assert texts(elements["node-end"])[1] == "ppfport"


def test_start_nodes_have_a_bold_border_and_class() -> None:
    """Start nodes (and only they) are drawn with a wider stroke and carry the class ``start``; end nodes ``end``."""
    graph = load_graph(DRAWN)
    root = parse(graph_to_svg(graph))
    elements = by_id(root)
    assert graph.start_nodes == ("start",)
    for node_id in graph.nodes:
        element = elements[element_id(node_id)]
        classes = (element.get("class") or "").split()
        assert ("start" in classes) == (node_id in graph.start_nodes)
        assert ("end" in classes) == (node_id in graph.end_nodes)
        assert (shape(element).get("stroke-width") == "2.5") == (node_id in graph.start_nodes)


def test_one_edge_per_link_with_conditions_and_error_styling() -> None:
    """Each link is an edge group link-<i>; conditions read [x == v]; error links are red, dashed, 'on error'."""
    graph = load_graph(DRAWN)
    root = parse(graph_to_svg(graph))
    edges = groups(root, "edge")
    assert len(edges) == len(graph.links) == 4
    elements = by_id(root)
    for i, link in enumerate(graph.links):
        edge = elements[f"link-{i}"]
        assert title(edge) == f"{link.source!r}->{link.target!r}"
        line = shape(edge)
        if link.on_error:
            assert "on-error" in (edge.get("class") or "").split()
            assert line.get("stroke") == ERROR_RED
            assert line.get("stroke-dasharray")
            assert texts(edge) == ["on error", "WorkflowException→error"]
        else:
            assert line.get("stroke") != ERROR_RED
            assert not line.get("stroke-dasharray")
            small = dict(link.conditions)["small"]
            assert "conditional" in (edge.get("class") or "").split()
            assert texts(edge) == [f"[small == {json.dumps(small)}]", "all data"]


def test_a_loop_on_one_node_is_drawn() -> None:
    """A cycle (here a node linked to itself) renders as an edge from the node back to it."""
    root = parse(graph_to_svg(load_graph(COUNTING_LOOP)))
    assert "'again'->'again'" in [title(edge) for edge in groups(root, "edge")]


def test_data_mappings_are_shown_as_pairs_and_cut_when_long() -> None:
    """A mapping label lists source→target pairs; a long one is cut to 40 characters ending with …."""
    pairs = [{"source_output": f"output_{i}", "target_input": f"input_{i}"} for i in range(10)]
    graph = load_graph(
        {"nodes": [node("a"), node("b"), node("c")], "links": [rv("a", "b"), {**rv("b", "c"), "data_mapping": pairs}]}
    )
    elements = by_id(parse(graph_to_svg(graph)))
    assert texts(elements["link-0"]) == ["return_value→x"]
    [long] = texts(elements["link-1"])
    assert long.startswith("output_0→input_0, output_1→input_1")
    assert len(long) == 40
    assert long.endswith("…")


def test_subgraph_nodes_are_drawn_inside_nested_clusters() -> None:
    """Nodes from a subgraph lie inside a box labelled with the subgraph node's id, nested as the subgraphs are."""
    graph = load_graph(NESTED)
    assert set(graph.nodes) == {
        "begin",
        ("outer", ("inner", "t")),
        ("outer", ("inner", "u")),
        ("outer", "side"),
        "finish",
    }
    root = parse(graph_to_svg(graph))
    elements = by_id(root)
    outer = elements["cluster-outer"]
    inner = elements["cluster-%5B%22outer%22%2C%22inner%22%5D"]
    assert len(groups(root, "aioflow-subgraph")) == 2
    assert texts(outer) == ["outer"]
    assert texts(inner) == ["inner"]
    assert inside(bbox(inner), bbox(outer))
    for node_id in graph.nodes:
        box = bbox(elements[element_id(node_id)])
        assert inside(box, bbox(outer)) == isinstance(node_id, tuple)
        assert inside(box, bbox(inner)) == (isinstance(node_id, tuple) and isinstance(node_id[1], tuple))
    # Inside its cluster, a node is labelled with its id there.
    assert texts(elements[element_id(("outer", ("inner", "t")))])[0] == "t"
    assert texts(elements[element_id(("outer", "side"))])[0] == "side"


def test_task_names_are_short() -> None:
    """The second line names the task: the last dotted part, the part after ::, a script's or notebook's file."""
    graph = load_graph(
        {
            "nodes": [
                node("m", "pkg.module.function"),
                {"id": "c", "task_type": "class", "task_identifier": "pkg.tasks.Fit"},
                node("f", "/opt/my tasks/file.py::compute"),
                {"id": "s", "task_type": "script", "task_identifier": "scripts/run.sh -v --fast"},
                {"id": "n", "task_type": "notebook", "task_identifier": "notebooks/analysis.ipynb"},
                {"id": "p", "task_type": "ppfport"},
            ]
        }
    )
    elements = by_id(parse(graph_to_svg(graph)))
    shown = {n: texts(elements[element_id(n)])[1] for n in graph.nodes}
    assert shown == {"m": "function", "c": "Fit", "f": "compute", "s": "run.sh", "n": "analysis.ipynb", "p": "ppfport"}


# --------------------------------------------------------------------------- ids and escaping


def test_element_ids_follow_the_documented_scheme() -> None:
    """Plain names are themselves; anything else is encodeURIComponent(JSON.stringify(id)) (values from a browser)."""
    assert element_id("fit") == "node-fit"
    assert element_id("_a-b_2") == "node-_a-b_2"
    assert element_id(3) == "node-3"
    assert element_id(-3) == "node--3"
    assert element_id("3") == "node-%223%22"
    assert element_id(("fit", "setup")) == "node-%5B%22fit%22%2C%22setup%22%5D"
    assert element_id("a b") == "node-%22a%20b%22"
    assert element_id("é(!)") == "node-%22%C3%A9(!)%22"
    assert element_id("😀") == "node-%22%F0%9F%98%80%22"
    assert element_id("\ud800") == "node-%22%5Cud800%22"
    assert element_id("x\n") == "node-%22x%5Cn%22"


def test_hostile_ids_survive_the_round_trip() -> None:
    """Ids with quotes, backslashes, braces, markup, arrows, entities, unicode and newlines come back exactly."""
    nodes = [node(nid, 'pkg.mod.f<&>"{}') for nid in HOSTILE_IDS]
    links = [
        {
            "source": a,
            "target": b,
            "data_mapping": [{"source_output": 'out"<&>', "target_input": "in\\"}],
            "conditions": [{"source_output": "o", "value": '"</text>--'}] if i % 2 else [],
        }
        for i, (a, b) in enumerate(itertools.pairwise(HOSTILE_IDS))
    ]
    graph = load_graph({"graph": {"id": 'g--"<&>\\'}, "nodes": nodes, "links": links})
    dot = graph_to_dot(graph)
    assert dot.isascii()
    root = parse(graph_to_svg(graph))
    graph_group = root.find(f"{SVG}g")
    assert graph_group is not None
    assert title(graph_group) == 'g--"<&>\\'
    elements = by_id(root)
    found = {node_id_of(g.get("id", "")) for g in groups(root, "aioflow-node")}
    assert found == set(graph.nodes)
    for node_id in graph.nodes:
        element = elements[element_id(node_id)]
        assert title(element) == repr(node_id)
        shown = texts(element)
        assert shown[1] == 'f<&>"{}'
        if isinstance(node_id, tuple):
            assert shown[0] == node_id[1]
        elif node_id == "":
            assert shown[0] == "''"
        elif isinstance(node_id, str) and not node_id.isprintable():
            assert shown[0] == repr(node_id)[1:-1]
        else:
            assert shown[0] == str(node_id)
    assert texts(elements["cluster-x"]) == ["x"]
    assert texts(elements["cluster-%22%3Ci%3E%5C%22%5C%5CN%5C%22%3C%2Fi%3E%22"]) == ['<i>"\\N"</i>']
    for i, _ in enumerate(graph.links):
        label = texts(elements[f"link-{i}"])
        assert label[-1] == 'out"<&>→in\\'
        if i % 2:
            assert label[0] == '[o == "\\"</text>--"]'


def test_the_same_graph_gives_the_same_picture() -> None:
    """Two loads of one document give the same DOT text, and two drawings the same SVG."""
    first, second = load_graph(NESTED), load_graph(NESTED)
    assert graph_to_dot(first) == graph_to_dot(second)
    assert graph_to_svg(first) == graph_to_svg(second)


# --------------------------------------------------------------------------- dot: missing, failing, formats


def test_a_missing_dot_names_graphviz_and_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With AIOFLOW_DOT naming nothing, or no dot on PATH, the error says to install the graphviz package."""
    graph = load_graph(DRAWN)
    use_missing_dot(monkeypatch, tmp_path)
    with pytest.raises(GraphvizNotFoundError) as info:
        graph_to_svg(graph)
    message = str(info.value)
    assert "Graphviz's `dot` program" in message
    assert "AIOFLOW_DOT is set to" in message
    assert "apt install graphviz" in message
    assert isinstance(info.value, RuntimeError)

    monkeypatch.delenv(DOT_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphvizNotFoundError) as info:
        draw(graph, "png")
    assert "install the `graphviz` package of your system (apt install graphviz, conda install graphviz" in str(
        info.value
    )


def test_dot_text_needs_no_program(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The DOT format is written without Graphviz."""
    use_missing_dot(monkeypatch, tmp_path)
    graph = load_graph(DRAWN)
    text = draw(graph, "dot").decode("ascii")
    assert text.startswith('digraph "drawn" {')
    assert text == graph_to_dot(graph)


def test_a_failing_dot_reports_its_stderr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A dot that exits non-zero gives a GraphvizError with its exit code and what it wrote on stderr."""
    monkeypatch.setenv(DOT_ENV, fake_dot(tmp_path, "cat >/dev/null; echo 'Error: syntax error in line 1' >&2; exit 3"))
    with pytest.raises(GraphvizError) as info:
        graph_to_svg(load_graph(DRAWN))
    assert not isinstance(info.value, GraphvizNotFoundError)
    assert "exit code 3: Error: syntax error in line 1" in str(info.value)


def test_a_dot_that_hangs_is_stopped_at_the_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A dot that does not finish in time is killed and reported."""
    monkeypatch.setenv(DOT_ENV, fake_dot(tmp_path, "exec sleep 60"))
    with pytest.raises(GraphvizError, match=r"did not finish within 0\.5 s"):
        graph_to_svg(load_graph(DRAWN), timeout=0.5)


def test_dot_named_without_a_path_is_looked_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AIOFLOW_DOT may be a program name found on PATH."""
    script = fake_dot(tmp_path, "cat >/dev/null; echo '<svg xmlns=\"http://www.w3.org/2000/svg\"/>'")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(DOT_ENV, "fake-dot")
    assert script.endswith("fake-dot")
    assert graph_to_svg(load_graph(DRAWN)).strip() == '<svg xmlns="http://www.w3.org/2000/svg"/>'


def test_png_and_pdf_are_drawn_by_dot() -> None:
    """PNG and PDF come from dot, with their formats' signatures; an unknown format is refused."""
    graph = load_graph(DRAWN)
    assert draw(graph, "png").startswith(b"\x89PNG\r\n\x1a\n")
    assert draw(graph, "pdf").startswith(b"%PDF-")
    with pytest.raises(ValueError, match="'fmt' must be one of svg, dot, png, pdf"):
        draw(graph, "jpg")


def test_graphviz_errors_pickle_round_trip() -> None:
    """Both errors keep their message and fields through pickle."""
    for error in (GraphvizError("/usr/bin/dot", "exit code 1"), GraphvizNotFoundError("dot", "install it")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert (copy.program, copy.reason) == (error.program, error.reason)


# --------------------------------------------------------------------------- big graphs, Jupyter


def chain(n: int) -> Graph:
    return load_graph({"nodes": [node(i) for i in range(n)], "links": [rv(i - 1, i) for i in range(1, n)]})


def test_big_graphs_get_the_quick_layout() -> None:
    """Past 500 nodes and links, the DOT text asks for the quick layout; the picture still has every node."""
    small, big = chain(250), chain(251)
    assert "nslimit=1" not in graph_to_dot(small)
    assert "nslimit=1, nslimit1=1, mclimit=0.1, splines=line" in graph_to_dot(big)
    root = parse(graph_to_svg(chain(600)))
    assert len(groups(root, "aioflow-node")) == 600
    assert len(groups(root, "edge")) == 599


def test_repr_svg_draws_the_graph_for_jupyter() -> None:
    """Graph._repr_svg_ returns the SVG of the graph."""
    graph = load_graph(DRAWN)
    svg = graph._repr_svg_()
    assert svg is not None
    assert svg == graph_to_svg(graph)
    assert "node-handler" in by_id(parse(svg))


def test_ipython_shows_a_graph_as_svg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """IPython's display formatter (what Jupyter runs) gives the SVG, and only the text repr without dot."""
    from IPython.core.formatters import DisplayFormatter

    formatter: Any = DisplayFormatter()  # IPython's methods are untyped
    graph = load_graph(DRAWN)
    data, _ = formatter.format(graph)
    assert data["text/plain"] == "<Graph 'drawn': 4 nodes, 4 links>"
    assert "node-handler" in by_id(parse(data["image/svg+xml"]))
    use_missing_dot(monkeypatch, tmp_path)
    data, _ = formatter.format(graph)
    assert set(data) == {"text/plain"}


def test_repr_svg_is_none_without_dot_and_says_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without dot, or for a graph too big to show, _repr_svg_ returns None quietly (Jupyter shows the repr)."""
    graph = load_graph(DRAWN)
    use_missing_dot(monkeypatch, tmp_path)
    assert graph._repr_svg_() is None
    monkeypatch.setenv(DOT_ENV, fake_dot(tmp_path, "exit 1"))
    assert graph._repr_svg_() is None
    assert capsys.readouterr() == ("", "")
    monkeypatch.delenv(DOT_ENV)
    assert repr_svg(chain(1001)) is None


def test_the_picture_in_the_docs_is_of_its_example() -> None:
    """docs/images/graph.svg shows examples/xrd_reduction/quick_look.json: the same nodes, links and subgraph."""
    repo = Path(__file__).resolve().parents[2]
    graph = load_graph(repo / "examples" / "xrd_reduction" / "quick_look.json")
    root = ET.parse(repo / "docs" / "images" / "graph.svg").getroot()
    assert {g.get("id") for g in groups(root, "aioflow-node")} == {element_id(n) for n in graph.nodes}
    assert len(groups(root, "edge")) == len(graph.links)
    assert [g.get("id") for g in groups(root, "aioflow-subgraph")] == ["cluster-fit"]
    assert len(groups(root, "on-error")) == 1
    assert len(groups(root, "conditional")) == 2
