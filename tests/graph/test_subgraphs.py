"""Subgraphs are flattened at load time (spec §3.7)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from aioflow import GraphError, load_graph

if TYPE_CHECKING:
    from pathlib import Path


def node(nid: Any, func: str = "tasks.inc", **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": func, **attrs}


INNER = {
    "graph": {
        "id": "inner",
        "input_nodes": [{"id": "in", "node": "t1"}],
        "output_nodes": [
            {
                "id": "ok",
                "node": "t1",
                "link_attributes": {"conditions": [{"source_output": "return_value", "value": True}]},
            },
            {
                "id": "bad",
                "node": "t1",
                "link_attributes": {"conditions": [{"source_output": "return_value", "value": False}]},
            },
        ],
    },
    "nodes": [node("t1", "m.check")],
}


def test_spec_example_is_flattened() -> None:
    """The §3.7 example gives pre, ('sub','t1'), yes and a conditional output link."""
    graph = load_graph(
        {
            "nodes": [
                node("pre"),
                {"id": "sub", "task_type": "graph", "task_identifier": INNER},
                node("yes"),
            ],
            "links": [
                {
                    "source": "pre",
                    "target": "sub",
                    "sub_target": "in",
                    "data_mapping": [{"source_output": "return_value", "target_input": "x"}],
                },
                {"source": "sub", "sub_source": "ok", "target": "yes"},
            ],
        }
    )
    assert list(graph.nodes) == ["pre", ("sub", "t1"), "yes"]
    links = {(lk.source, lk.target): lk for lk in graph.links}
    assert set(links) == {("pre", ("sub", "t1")), (("sub", "t1"), "yes")}
    assert links[(("sub", "t1"), "yes")].conditions == (("return_value", True),)
    assert links[("pre", ("sub", "t1"))].data_mapping == (("return_value", "x"),)


def test_outer_link_attributes_beat_alias_attributes() -> None:
    """Conditions written on the outer link replace those of the alias."""
    graph = load_graph(
        {
            "nodes": [{"id": "sub", "task_type": "graph", "task_identifier": INNER}, node("z")],
            "links": [
                {
                    "source": "sub",
                    "sub_source": "ok",
                    "target": "z",
                    "conditions": [{"source_output": "return_value", "value": 7}],
                }
            ],
        }
    )
    assert graph.links[0].conditions == (("return_value", 7),)


def test_alias_fans_out_and_literal_inner_ids_work() -> None:
    """One alias can name several nodes; a non-alias sub_target is an inner node id."""
    inner = {
        "graph": {"input_nodes": [{"id": "in", "node": "a"}, {"id": "in", "node": "b"}]},
        "nodes": [node("a"), node("b"), node("c")],
    }
    graph = load_graph(
        {
            "nodes": [node("pre"), {"id": "s", "task_type": "graph", "task_identifier": inner}],
            "links": [
                {"source": "pre", "target": "s", "sub_target": "in"},
                {"source": "pre", "target": "s", "sub_target": "c"},
            ],
        }
    )
    assert sorted(lk.target for lk in graph.links) == [("s", "a"), ("s", "b"), ("s", "c")]


def test_nested_subgraphs_get_nested_ids() -> None:
    """A subgraph inside a subgraph gives ids (outer, (inner, node)), addressable with lists."""
    innermost = {
        "graph": {"input_nodes": [{"id": "i", "node": "x"}], "output_nodes": [{"id": "o", "node": "x"}]},
        "nodes": [node("x")],
    }
    middle = {
        "graph": {
            "input_nodes": [{"id": "mi", "node": "deep", "sub_node": "i"}],
            "output_nodes": [{"id": "mo", "node": "deep", "sub_node": "o"}],
        },
        "nodes": [{"id": "deep", "task_type": "graph", "task_identifier": innermost}],
    }
    graph = load_graph(
        {
            "nodes": [node("a"), {"id": "m", "task_type": "graph", "task_identifier": middle}, node("z")],
            "links": [
                {"source": "a", "target": "m", "sub_target": "mi"},
                {"source": "m", "sub_source": ["deep", "x"], "target": "z"},
            ],
        }
    )
    assert ("m", ("deep", "x")) in graph.nodes
    assert {(lk.source, lk.target) for lk in graph.links} == {("a", ("m", ("deep", "x"))), (("m", ("deep", "x")), "z")}
    assert graph.nodes[("m", ("deep", "x"))].label == "m:deep:x"


def test_graph_node_attributes_overwrite_input_node_attributes() -> None:
    """default_inputs on the graph node replace (not merge) the inner input node's defaults."""
    inner = {
        "graph": {"input_nodes": [{"id": "in", "node": "t"}]},
        "nodes": [node("t", default_inputs=[{"name": "a", "value": 1}, {"name": "b", "value": 2}])],
    }
    graph = load_graph(
        {
            "nodes": [
                {
                    "id": "s",
                    "task_type": "graph",
                    "task_identifier": inner,
                    "default_inputs": [{"name": "c", "value": 3}],
                }
            ]
        }
    )
    assert graph.nodes[("s", "t")].default_inputs == {"c": 3}


def test_sub_target_attributes_are_merged_into_the_target() -> None:
    """sub_target_attributes overwrite whole keys of the resolved inner node."""
    inner = {
        "graph": {"input_nodes": [{"id": "in", "node": "t"}]},
        "nodes": [node("t", default_inputs=[{"name": "a", "value": 1}])],
    }
    graph = load_graph(
        {
            "nodes": [node("p"), {"id": "s", "task_type": "graph", "task_identifier": inner}],
            "links": [
                {
                    "source": "p",
                    "target": "s",
                    "sub_target": "in",
                    "sub_target_attributes": {"default_inputs": [{"name": "z", "value": 9}]},
                }
            ],
        }
    )
    assert graph.nodes[("s", "t")].default_inputs == {"z": 9}


def test_subgraph_from_a_file_relative_to_root_dir(tmp_path: Path) -> None:
    """A graph node may name a JSON file, resolved against root_dir."""
    (tmp_path / "inner.json").write_text(json.dumps(INNER))
    (tmp_path / "outer.json").write_text(
        json.dumps(
            {
                "nodes": [node("pre"), {"id": "sub", "task_type": "graph", "task_identifier": "inner.json"}],
                "links": [{"source": "pre", "target": "sub", "sub_target": "in"}],
            }
        )
    )
    graph = load_graph("outer.json", root_dir=tmp_path)
    assert ("sub", "t1") in graph.nodes


def test_subgraph_errors_name_the_graph_node() -> None:
    """Missing sub_target, unknown aliases and broken subgraphs are reported with the graph node."""
    broken = {"nodes": [{"id": "q", "task_type": "nope", "task_identifier": "x"}]}
    with pytest.raises(GraphError) as info:
        load_graph(
            {
                "nodes": [
                    node("pre"),
                    {"id": "sub", "task_type": "graph", "task_identifier": INNER},
                    {"id": "br", "task_type": "graph", "task_identifier": broken},
                ],
                "links": [
                    {"source": "pre", "target": "sub"},
                    {"source": "sub", "sub_source": "okk", "target": "pre"},
                ],
            }
        )
    text = "\n".join(info.value.problems)
    assert "the target 'sub' is a graph node: the link needs 'sub_target'" in text
    assert "subgraph 'sub' has no output_nodes alias and no node 'okk' (did you mean 'ok'?)" in text
    assert "subgraph 'br': node 'q': 'task_type' must be one of" in text


def test_subgraph_including_itself_is_refused(tmp_path: Path) -> None:
    """A graph file that includes itself stops with a clear error naming the file, instead of recursing for ever."""
    loop = tmp_path / "loop.json"
    loop.write_text(json.dumps({"nodes": [{"id": "again", "task_type": "graph", "task_identifier": str(loop)}]}))
    with pytest.raises(GraphError, match=re.escape(f"subgraph 'again': the graph includes itself: {loop} -> {loop}")):
        load_graph(loop)


def test_graph_node_without_default_inputs_keeps_the_input_nodes_defaults() -> None:
    """Only the attributes written on the graph node replace those of its input nodes (spec §3.7)."""
    inner = {
        "graph": {"input_nodes": [{"id": "in", "node": "t"}]},
        "nodes": [node("t", default_inputs=[{"name": "a", "value": 1}], force_start_node=True)],
    }
    graph = load_graph({"nodes": [{"id": "s", "task_type": "graph", "task_identifier": inner}]})
    assert graph.nodes[("s", "t")].default_inputs == {"a": 1}
    assert graph.nodes[("s", "t")].force_start_node


def test_subgraph_default_error_handler_is_wired_inside_then_to_the_parent() -> None:
    """A subgraph's handler serves its own nodes, and is itself wired to the parent's handler."""
    inner = {
        "graph": {"input_nodes": [{"id": "in", "node": "w"}]},
        "nodes": [node("w"), node("ih", default_error_node=True)],
    }
    graph = load_graph(
        {
            "nodes": [
                node("a"),
                {"id": "s", "task_type": "graph", "task_identifier": inner},
                node("H", default_error_node=True),
            ],
            "links": [{"source": "a", "target": "s", "sub_target": "in"}],
        }
    )
    error_links = {(lk.source, lk.target) for lk in graph.links if lk.on_error}
    assert error_links == {(("s", "w"), ("s", "ih")), ("a", "H"), (("s", "ih"), "H")}


def test_subgraph_file_next_to_the_including_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root_dir, a subgraph file is also looked for next to the file that names it."""
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "inner.json").write_text(json.dumps(INNER))
    (folder / "outer.json").write_text(
        json.dumps({"nodes": [{"id": "sub", "task_type": "graph", "task_identifier": "inner.json"}]})
    )
    monkeypatch.chdir(tmp_path)
    assert ("sub", "t1") in load_graph("wf/outer.json").nodes


def test_sub_target_attributes_are_validated() -> None:
    """Attributes merged into an inner node get the same checks as any node."""
    inner = {"graph": {"input_nodes": [{"id": "in", "node": "t"}]}, "nodes": [node("t")]}
    doc = {
        "nodes": [node("p"), {"id": "s", "task_type": "graph", "task_identifier": inner}],
        "links": [{"source": "p", "target": "s", "sub_target": "in", "sub_target_attributes": {"task_type": "nope"}}],
    }
    with pytest.raises(GraphError, match=r"sub_target_attributes: .*'task_type' must be one of"):
        load_graph(doc)
    doc["links"][0]["sub_target_attributes"] = {"default_inputs": [{"name": "0", "value": 1}]}
    assert load_graph(doc).nodes[("s", "t")].default_inputs == {0: 1}
