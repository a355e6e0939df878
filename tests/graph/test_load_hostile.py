"""Hostile documents: whatever a graph holds, load_graph returns a Graph or raises a GraphError naming the place.

Each test here is a case that once escaped as another exception (TypeError,
KeyError, OSError, ValueError, ModuleNotFoundError, RecursionError), never
returned (include cycles), or took time or memory out of proportion to the
document (duplicate links, positional indices, shared values).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from aioflow import GraphError, cli, load_graph
from aioflow.graph import _report

if TYPE_CHECKING:
    from pathlib import Path


def node(nid: Any, func: str = "tasks.inc", **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": func, **attrs}


def link(source: Any, target: Any, **attrs: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **attrs}


def subgraph(nid: Any, source: Any, **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "graph", "task_identifier": source, **attrs}


def problems_of(source: Any, **kwargs: Any) -> str:
    with pytest.raises(GraphError) as info:
        load_graph(source, **kwargs)
    return "\n".join(info.value.problems)


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


# ----------------------------------------------------------------- include cycles and include trees


def test_a_file_that_includes_itself_twice_is_refused_at_once(tmp_path: Path) -> None:
    """Two graph nodes naming their own file: a GraphError on the include path, not 2**64 expansions."""
    write(tmp_path / "a.json", {"nodes": [subgraph("x", "a.json"), subgraph("y", "a.json")]})
    text = problems_of("a.json", root_dir=tmp_path)
    assert "subgraph 'x': the graph includes itself: a.json -> a.json" in text
    assert "subgraph 'y': the graph includes itself: a.json -> a.json" in text


def test_aioflow_check_names_the_include_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`aioflow check` on a file that includes itself twice: exit code 2, the chain on stderr (it never returned)."""
    write(tmp_path / "a.json", {"nodes": [subgraph("x", "a.json"), subgraph("y", "a.json")]})
    assert cli.main(["check", "a.json", "--root-dir", str(tmp_path)]) == cli.EXIT_USAGE
    assert "subgraph 'x': the graph includes itself: a.json -> a.json" in capsys.readouterr().err


def test_an_include_cycle_through_several_files_names_the_chain(tmp_path: Path) -> None:
    """a.json -> b.json -> a.json is named file by file."""
    write(tmp_path / "a.json", {"nodes": [subgraph("b1", "b.json"), subgraph("b2", "b.json")]})
    write(tmp_path / "b.json", {"nodes": [subgraph("a1", "a.json"), subgraph("a2", "a.json")]})
    text = problems_of("a.json", root_dir=tmp_path)
    assert "subgraph 'b1': subgraph 'a1': the graph includes itself: a.json -> b.json -> a.json" in text


def test_a_graph_object_that_contains_itself_is_refused() -> None:
    """The same dict as its own subgraph (a Python object, or a YAML alias) is an include cycle."""
    doc: dict[str, Any] = {"graph": {"id": "selfish"}, "nodes": []}
    doc["nodes"].append(subgraph("again", doc))
    assert "subgraph 'again': the graph includes itself: graph 'selfish' -> graph 'selfish'" in problems_of(doc)


def test_a_yaml_anchor_that_includes_itself_is_refused(tmp_path: Path) -> None:
    """A YAML alias makes a subgraph that contains itself."""
    path = tmp_path / "self.yaml"
    path.write_text(
        "inner: &inner\n"
        "  nodes:\n"
        "    - {id: deeper, task_type: graph, task_identifier: *inner}\n"
        "nodes:\n"
        "  - {id: top, task_type: graph, task_identifier: *inner}\n"
    )
    assert "the graph includes itself: the graph written in node 'top' -> the graph written" in problems_of(path)


def test_a_diamond_of_includes_is_no_cycle(tmp_path: Path) -> None:
    """Two subgraphs that both include a third one load: only the include path counts."""
    write(tmp_path / "leaf.json", {"nodes": [node("x")]})
    write(tmp_path / "left.json", {"nodes": [subgraph("l", "leaf.json")]})
    write(tmp_path / "right.json", {"nodes": [subgraph("r", "leaf.json")]})
    write(tmp_path / "top.json", {"nodes": [subgraph("L", "left.json"), subgraph("R", "right.json")]})
    graph = load_graph("top.json", root_dir=tmp_path)
    assert list(graph.nodes) == [("L", ("l", "x")), ("R", ("r", "x"))]


def test_one_subgraph_file_used_by_many_nodes(tmp_path: Path) -> None:
    """A file included by several nodes of one level gives each its own copy."""
    write(tmp_path / "leaf.json", {"nodes": [node("x", default_inputs=[{"name": "v", "value": [1]}])]})
    graph = load_graph({"nodes": [subgraph(i, str(tmp_path / "leaf.json")) for i in range(3)]})
    values = [graph.nodes[(i, "x")].default_inputs["v"] for i in range(3)]
    assert values == [[1], [1], [1]]
    assert values[0] is not values[1]


def test_an_include_tree_that_doubles_at_each_level_is_refused(tmp_path: Path) -> None:
    """Each file including the next one twice, 40 levels deep: refused past the subgraph bound."""
    for level in range(40):
        write(tmp_path / f"l{level}.json", {"nodes": [subgraph(i, f"l{level + 1}.json") for i in range(2)]})
    write(tmp_path / "l40.json", {"nodes": [node("x")]})
    text = problems_of("l0.json", root_dir=tmp_path)
    assert "expanding the graph makes more than 10,000 subgraphs: is a subgraph included several times" in text


def test_expansion_is_bounded_by_the_nodes_and_links_it_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Few subgraphs that copy many nodes are refused past the bound on copies, which the message names."""
    monkeypatch.setattr(_report, "_MAX_EXPANSION", 5_000)
    chain = {"nodes": [node(i) for i in range(500)], "links": [link(i, i + 1) for i in range(499)]}
    write(tmp_path / "l6.json", chain)
    for level in range(6):
        write(tmp_path / f"l{level}.json", {"nodes": [subgraph(i, f"l{level + 1}.json") for i in range(2)]})
    text = problems_of("l0.json", root_dir=tmp_path)
    assert "expanding the graph makes more than 5,000 nodes and links (a node or link is copied" in text


def test_a_graph_node_without_task_identifier() -> None:
    """A graph node that names no subgraph is reported once, and so are links to it (was a KeyError)."""
    text = problems_of({"nodes": [node("p"), {"id": "s", "task_type": "graph"}], "links": [link("p", "s")]})
    assert text == "node 's': a 'graph' node needs a 'task_identifier'"


def test_links_to_a_subgraph_that_failed_to_load_are_dropped() -> None:
    """A link to a graph node whose file is missing, with a default error handler: was a KeyError."""
    text = problems_of(
        {
            "nodes": [node("p"), node("h", default_error_node=True), subgraph("s", "/no/such/graph.json")],
            "links": [link("p", "s", on_error=True)],
        }
    )
    assert "subgraph 's': no such graph file (tried: /no/such/graph.json)" in text


def test_a_default_error_handler_reached_through_an_alias_is_kept() -> None:
    """An input alias to a subgraph's unused error handler: the handler stays (was a KeyError)."""
    inner = {"graph": {"input_nodes": [{"id": "in", "node": "h"}]}, "nodes": [node("h", default_error_node=True)]}
    graph = load_graph(
        {"nodes": [node("p"), subgraph("s", inner)], "links": [link("p", "s", sub_target="in", map_all_data=True)]}
    )
    assert [(lk.source, lk.target) for lk in graph.links] == [("p", ("s", "h"))]


# ----------------------------------------------------------------- sources and options


@pytest.mark.parametrize(
    ("source", "options", "words"),
    [
        ("x" * 5000, {}, "not a usable file path"),  # was OSError: File name too long
        (".", {}, "no such graph file (tried: .)"),  # was ValueError: PosixPath('.') has an empty name
        ("no\0file", {}, "no such graph file"),
        ("nowhere_pkg.sub.graph", {"representation": "json_module"}, "package 'nowhere_pkg.sub' is not"),
        ("graph", {"representation": "yaml_module", "root_module": "..rel"}, "is not an importable package"),
        ({"nodes": []}, {"representation": "yaml"}, "representation 'yaml' needs a file path (got a dict)"),
        (["x"], {"representation": "json_string"}, "representation 'json_string' needs a str (got a list)"),
        ("g.json", {"representation": {"a": 1}}, "unknown representation {'a': 1}"),
        ("g.json", {"root_dir": 5}, "root_dir must be a directory path (got a int)"),
        ("g.json", {"root_module": ["pkg"]}, "root_module must be a package name (got a list)"),
        ("g.json", {"root_module": "nowhere_pkg.sub"}, "root_module 'nowhere_pkg.sub' is not an importable package"),
    ],
)
def test_unusable_sources_and_options(source: Any, options: dict[str, Any], words: str) -> None:
    """Paths the file system refuses, packages that do not import, options of the wrong type."""
    assert words in problems_of(source, **options)


@pytest.mark.parametrize(
    ("identifier", "words"),
    [
        ("y" * 5000, "subgraph 's': not a usable file path"),
        (".", "subgraph 's': no such graph file (tried: ."),
        (["a.json"], "a 'graph' node's 'task_identifier' must be a file path, a JSON string or an object"),
    ],
)
def test_unusable_subgraph_identifiers(identifier: Any, words: str) -> None:
    """The same, for the file a graph node names."""
    assert words in problems_of({"nodes": [subgraph("s", identifier)]})


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("g.yaml",
         "nodes:\n  - {id: a, task_type: method, task_identifier: m.f, default_inputs: [{name: d, value: 2024-13-01}]}\n",
         "not valid JSON or YAML: month must be in 1..12"),
        ("g.yaml", "[" * 100_000 + "]" * 100_000, "not valid JSON or YAML: too deeply nested to be read"),
        ("g.json", "[" * 100_000 + "]" * 100_000, "not valid JSON: too deeply nested to be read"),
        ("g.json", json.dumps({"nodes": [node("a", default_inputs=[{"name": "x", "value": nested(500)}])]}),
         "node 'a': default_inputs[0] ('x'): the value is nested more than 100 lists or objects deep"),
    ],
    ids=["yaml-bad-date", "yaml-too-deep", "json-too-deep", "json-value-too-deep"],
)  # fmt: skip
def test_texts_that_cannot_be_read(tmp_path: Path, name: str, text: str, words: str) -> None:
    """YAML that its constructors refuse, and nesting too deep to read or to keep."""
    path = tmp_path / name
    path.write_text(text)
    assert words in problems_of(path)


def test_json_string_nested_too_deeply() -> None:
    """A JSON string nested beyond Python's recursion limit (was a RecursionError)."""
    assert "not valid JSON: too deeply nested to be read" in problems_of('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")


# ----------------------------------------------------------------- values


def test_values_nested_too_deeply_are_refused_where_they_are() -> None:
    """Values nested beyond the bound, in any field that keeps one (was a RecursionError)."""
    deep = nested(100_000)
    text = problems_of(
        {
            "graph": {"id": "g", "ui": deep},
            "nodes": [
                node("a", default_inputs=[{"name": "x", "value": deep}], conditions_else_value=deep, extra=deep),
                node("b"),
            ],
            "links": [link("a", "b", conditions=[{"source_output": "return_value", "value": deep}], note=deep)],
        }
    )
    assert "the graph attribute 'ui' is nested more than 100 lists or objects deep" in text
    assert "node 'a': default_inputs[0] ('x'): the value is nested more than 100" in text
    assert "node 'a': 'conditions_else_value' is nested more than 100" in text
    assert "node 'a': the attribute 'extra' is nested more than 100" in text
    assert "link 'a' -> 'b': conditions[0]: the value is nested more than 100" in text
    assert "link 'a' -> 'b': the attribute 'note' is nested more than 100" in text


def test_nesting_up_to_the_bound_is_kept() -> None:
    """A value nested exactly as deep as allowed loads as it is."""
    value = nested(100)
    graph = load_graph({"nodes": [node("a", default_inputs=[{"name": "x", "value": value}])]})
    assert graph.nodes["a"].default_inputs["x"] == value


def test_a_value_that_contains_itself_is_refused() -> None:
    """A list that contains itself (a Python object, or a YAML alias) is refused, not copied for ever."""
    loop: list[Any] = []
    loop.append(loop)
    assert "default_inputs[0] ('x'): the value is nested more than 100" in problems_of(
        {"nodes": [node("a", default_inputs=[{"name": "x", "value": loop}])]}
    )


def test_a_value_shared_inside_a_document_is_copied_once() -> None:
    """A part used twice in one value (a YAML alias, one Python object) is copied once, and stays shared."""
    part = list(range(1000))
    value = load_graph({"nodes": [node("a", default_inputs=[{"name": "x", "value": [part, part]}])]}).nodes["a"]
    copied = value.default_inputs["x"]
    assert copied == [part, part]
    assert copied[0] is copied[1]
    assert copied[0] is not part


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    """Nine aliases of nine aliases, 12 levels: small as written, 9**12 items expanded.

    Copied once, it would load, but comparing two copies of it (merging
    duplicate links, the analysis of conditions) walks it expanded.
    """
    lines = ["b0: &b0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, 12)]
    lines.append("nodes: [{id: a, task_type: method, task_identifier: m.f, default_inputs: [{name: x, value: *b11}]}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines))
    text = problems_of(path)
    assert "node 'a': default_inputs[0] ('x'): the value shares parts (YAML aliases" in text
    assert "more than 1,000,000 items once expanded" in text


def test_values_too_deep_for_a_shared_part_are_refused() -> None:
    """A shared part met again deeper than it was first copied is checked at that depth."""
    part = nested(60)
    value = [part, nested(50, part)]  # the second use is 110 levels deep
    assert "nested more than 100" in problems_of({"nodes": [node("a", default_inputs=[{"name": "x", "value": value}])]})


# ----------------------------------------------------------------- ids


@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param(10**5000, id="int-of-5001-digits"),  # once printed as a label: Python's limit on int digits
        pytest.param(2**63, id="int-beyond-64-bits"),
        pytest.param(nested(100_000, "a"), id="nested-100000"),  # once a RecursionError
        pytest.param(["a"] * 1001, id="1001-parts"),
        pytest.param([], id="empty-list"),
    ],
)
def test_ids_beyond_their_bounds(bad_id: Any) -> None:
    """Ids are strings, 64-bit ints, or lists of at most 1000 parts, 100 levels deep."""
    text = problems_of({"nodes": [node(bad_id)]})
    assert "nodes[0]: 'id' must be a string, an int or a non-empty list of those" in text


def test_ids_within_their_bounds() -> None:
    """The largest ids allowed load."""
    ids = [2**63 - 1, -(2**63), ["a"] * 1000, nested(99, "a")]
    graph = load_graph({"nodes": [node(i) for i in ids]})
    assert len(graph.nodes) == 4


def test_a_huge_value_where_an_id_belongs_is_shown_short() -> None:
    """30**7 items (one list shared at each level) as an alias's node and as an inputs= id: the message is short.

    They were printed whole, as ids are, which never ended.
    """
    value: Any = [1] * 30
    for _ in range(6):
        value = [value] * 30
    text = problems_of({"graph": {"input_nodes": [{"id": "i", "node": value}]}, "nodes": [node("a")]})
    assert text.startswith("input_nodes[0]: 'node' must be a node id: a string, an int or a non-empty list")
    assert len(text) < 3000
    text = problems_of({"nodes": [node("a")]}, inputs=[{"id": value, "name": "x", "value": 1}])
    assert text.startswith("inputs[0]: 'id' must be a node id: a string, an int or a non-empty list")
    assert len(text) < 3000


def test_many_links_to_unknown_nodes_stay_linear() -> None:
    """Every bad link is reported; did-you-mean (a scan of every id) only for the first ones."""
    n = 5_000
    text = problems_of(
        {"nodes": [node(f"node{i}") for i in range(n)], "links": [link("node0", f"nod{i}") for i in range(n)]}
    )
    problems = text.splitlines()
    assert len(problems) == n
    assert sum("did you mean" in p for p in problems) == 20


# ----------------------------------------------------------------- fields of the wrong type


@pytest.mark.parametrize(
    ("link_attrs", "words"),
    [
        ({"data_mapping": [{"source_output": {"x": 1}, "target_input": "x"}]},
         "data_mapping[0]: 'source_output' must be a string or an int (got {'x': 1})"),
        ({"data_mapping": [{"source_output": ["x"], "target_input": "x"}]},
         "data_mapping[0]: 'source_output' must be a string or an int"),
        ({"data_mapping": [{"source_output": None, "target_input": "x"}]},
         "data_mapping[0]: 'source_output' must be a string or an int"),
        ({"data_mapping": [{"source_output": "r", "target_input": ["x"]}]},
         "data_mapping[0]: 'target_input' must be a string or an int"),
        ({"conditions": [{"source_output": [1], "value": 1}]}, "conditions[0]: 'source_output' must be a string"),
        ({"conditions": [{"source_output": {"a": 1}, "value": 1}]}, "conditions[0]: 'source_output' must be a string"),
        ({"cache_if_optional": 1}, "'cache_if_optional' must be true or false"),
        ({"sub_source": 1.5}, "'sub_source' must be a node id or an alias"),
        ({"sub_target_attributes": [1]}, "'sub_target_attributes' must be an object"),
    ],
)  # fmt: skip
def test_link_fields_of_the_wrong_type(link_attrs: dict[str, Any], words: str) -> None:
    """Every link field is checked at load (a dict source_output once crashed execute_graph)."""
    text = problems_of({"nodes": [node("a"), node("b")], "links": [link("a", "b", **link_attrs)]})
    assert f"link 'a' -> 'b': {words}" in text


@pytest.mark.parametrize(
    ("node_attrs", "words"),
    [
        ({"task_type": ["method"]}, "'task_type' must be one of class, method"),
        ({"task_type": "generated", "task_generator": 5}, "a 'generated' node needs a 'task_generator' string"),
        ({"default_error_node": 1}, "'default_error_node' must be true or false"),
        ({"default_error_node": True, "default_error_attributes": {"data_mapping": "x"}},
         "'default_error_attributes': 'data_mapping' must be a list"),
        ({"default_error_node": True, "default_error_attributes": {"target": "a"}},
         "'default_error_attributes' cannot set 'target'"),
        ({"default_error_node": True, "default_error_attributes": [1]}, "'default_error_attributes' must be an object"),
    ],
)  # fmt: skip
def test_node_fields_of_the_wrong_type(node_attrs: dict[str, Any], words: str) -> None:
    """Every node field is checked at load."""
    assert f"node 'n': {words}" in problems_of({"nodes": [{**node("n"), **node_attrs}]})


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        ({"id": ["g"]}, "the graph's 'id' must be a string or an int (got ['g'])"),
        ({"label": 5}, "the graph's 'label' must be a string (got 5)"),
        ({"requirements": "numpy"}, "the graph's 'requirements' must be a list of strings"),
        ({"schema_version": {"v": 1}}, "schema_version must be a string such as '1.2'"),
        ({"input_nodes": [{"id": 1.5, "node": "a"}]}, "input_nodes[0]: 'id' must be a string, an int"),
        ({"input_nodes": [{"id": "i", "node": "a", "link_attributes": {"conditions": "x"}}]},
         "input_nodes[0]: 'link_attributes': 'conditions' must be a list (got a str)"),
        ({"output_nodes": [{"id": "o", "node": "a", "link_attributes": {"source": "a"}}]},
         "output_nodes[0]: 'link_attributes' cannot set 'source'"),
    ],
)  # fmt: skip
def test_graph_fields_of_the_wrong_type(attrs: dict[str, Any], words: str) -> None:
    """The graph object's fields, and its aliases, are checked at load."""
    assert words in problems_of({"graph": attrs, "nodes": [node("a")]})


def test_alias_link_attributes_of_the_wrong_type_in_a_subgraph() -> None:
    """An alias's link_attributes with conditions written as a string (was a TypeError)."""
    inner = {
        "graph": {"input_nodes": [{"id": "in", "node": "t", "link_attributes": {"conditions": "done"}}]},
        "nodes": [node("t")],
    }
    text = problems_of({"nodes": [node("p"), subgraph("s", inner)], "links": [link("p", "s", sub_target="in")]})
    assert "subgraph 's': input_nodes[0]: 'link_attributes': 'conditions' must be a list (got a str)" in text


def test_alias_sub_node_of_the_wrong_type() -> None:
    """An alias into a graph node needs a sub_node that is an id."""
    inner = {"nodes": [node("t")]}
    doc = {"graph": {"input_nodes": [{"id": "in", "node": "s", "sub_node": {"x": 1}}]}, "nodes": [subgraph("s", inner)]}
    assert "input_nodes[0]: 'sub_node' must be a node id or an alias" in problems_of(doc)


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ({"label": ["x"], "name": "a", "value": 1}, "inputs[0]: 'label' must be a string (got ['x'])"),
        ({"task_identifier": 5, "name": "a", "value": 1}, "inputs[0]: 'task_identifier' must be a string"),
        ({"all": "yes", "name": "a", "value": 1}, "inputs[0]: 'all' must be true or false"),
        ({"id": {"x": 1}, "name": "a", "value": 1}, "inputs[0]: 'id' must be a node id: a string, an int"),
        ({"name": {"x": 1}, "value": 1}, "inputs[0]: 'name' must be a string or an int"),
    ],
)
def test_inputs_fields_of_the_wrong_type(item: dict[str, Any], words: str) -> None:
    """inputs= items are checked like the document."""
    assert words in problems_of({"nodes": [node("a")]}, inputs=[item])


def test_inputs_must_be_a_list() -> None:
    """inputs= given as a dict is refused; an empty one selects nothing."""
    assert "inputs must be a list of {'name', 'value'} objects (got {'x': 1})" in problems_of(
        {"nodes": [node("a")]}, inputs={"x": 1}
    )
    empty: Any = {}
    assert load_graph({"nodes": [node("a")]}, inputs=empty).nodes["a"].default_inputs == {}


# ----------------------------------------------------------------- positional inputs


@pytest.mark.parametrize("index", [100_000_000, 65_536, "65536", pytest.param("1" + "0" * 5000, id="5001-digits"), -1])
def test_positional_indices_beyond_the_bound_are_refused(index: Any) -> None:
    """A target_input of 100,000,000 once made the worker allocate 3 GB before the node failed."""
    text = problems_of(
        {
            "nodes": [node("a"), node("b", default_inputs=[{"name": index, "value": 1}])],
            "links": [link("a", "b", data_mapping=[{"source_output": "return_value", "target_input": index}])],
        },
        inputs=[{"id": "b", "name": index, "value": 2}],
    )
    bound = "is a positional input index beyond the bound: indices lie between 0 and 65535"
    assert re.search(rf"node 'b': default_inputs\[0\]: 'name' .* {bound}", text)
    assert re.search(rf"link 'a' -> 'b': data_mapping\[0\]: 'target_input' .* {bound}", text)


def test_positional_indices_beyond_the_bound_in_inputs() -> None:
    """The same bound for inputs=."""
    assert "inputs[0]: 'name' 70000 is a positional input index beyond the bound" in problems_of(
        {"nodes": [node("a")]}, inputs=[{"name": 70_000, "value": 1}]
    )


def test_positional_indices_up_to_the_bound_are_kept() -> None:
    """Index 65535 (written as an int or as a string, with leading zeros too) is a positional input."""
    graph = load_graph(
        {"nodes": [node("a", default_inputs=[{"name": "0065535", "value": 1}, {"name": "²", "value": 2}])]},
        inputs=[{"name": 65_535, "value": 3}],
    )
    assert graph.nodes["a"].default_inputs == {65_535: 3, "²": 2}


# ----------------------------------------------------------------- duplicate links


def test_many_entries_of_one_link_are_merged() -> None:
    """200,000 entries of one (source, target) merge into one link, in order.

    Merging was quadratic (16,000 entries took 3 s; this many, minutes: the
    suite's timeout stops it); it is linear now, as the benchmark row
    "load 100k links between one pair / 100k distinct links" measures.
    """
    n = 200_000
    mapping = [{"source_output": "return_value", "target_input": f"x{i}"} for i in range(n)]
    graph = load_graph({"nodes": [node("a"), node("b")], "links": [link("a", "b", data_mapping=[m]) for m in mapping]})
    assert graph.links[0].data_mapping == tuple(("return_value", f"x{i}") for i in range(n))


def test_many_conditional_links_from_one_node() -> None:
    """100,000 conditional links leaving one node, each with its own value: the analysis keeps each value once.

    It compared each value with every one before it (20,000 links took 8 s;
    this many, minutes: the suite's timeout stops it).
    """
    n = 100_000
    graph = load_graph(
        {
            "nodes": [node("r"), *(node(i) for i in range(n))],
            "links": [
                link("r", i, conditions=[{"source_output": "return_value", "value": i % (n // 2)}]) for i in range(n)
            ],
        }
    )
    assert graph.analysis.condition_values["r"]["return_value"] == list(range(n // 2))


def test_duplicate_links_merged_leave_the_document_alone() -> None:
    """The first entry's lists are not extended in place: the caller's document stays as written."""
    first = [{"source_output": "return_value", "value": 1}]
    doc = {
        "nodes": [node("a"), node("b")],
        "links": [link("a", "b", conditions=first), link("a", "b", conditions=first)],
    }
    load_graph(doc)
    assert first == [{"source_output": "return_value", "value": 1}]
