"""Loading and validating graphs: every representation, every error path."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import pytest

import aioflow
from aioflow import GraphError, load_graph

if TYPE_CHECKING:
    from pathlib import Path


def node(nid: Any, func: str = "tasks.inc", **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": func, **attrs}


def link(source: Any, target: Any, **attrs: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **attrs}


def problems_of(source: Any, **kwargs: Any) -> tuple[str, ...]:
    with pytest.raises(GraphError) as info:
        load_graph(source, **kwargs)
    return info.value.problems


# ----------------------------------------------------------------- sources


def test_dict_source_is_not_mutated() -> None:
    """load_graph never changes the caller's dict, even with duplicate links and defaults."""
    doc = {
        "graph": {"id": "g"},
        "nodes": [node("a"), node("b", default_error_node=True), node("c")],
        "links": [
            link("a", "c", data_mapping=[{"source_output": "return_value", "target_input": "x"}]),
            link("a", "c", data_mapping=[{"source_output": "return_value", "target_input": "y"}]),
        ],
    }
    before = copy.deepcopy(doc)
    load_graph(doc, inputs=[{"name": "x", "value": 1}])
    assert doc == before


def test_json_string_source() -> None:
    """A string holding a JSON object is parsed as a graph."""
    graph = load_graph(json.dumps({"graph": {"id": "js"}, "nodes": [node("a")]}))
    assert graph.id == "js"
    assert list(graph.nodes) == ["a"]


def test_json_file_yaml_file_and_extension_search(tmp_path: Path) -> None:
    """.json and .yaml files load, and a path without extension finds them."""
    (tmp_path / "one.json").write_text(json.dumps({"graph": {"id": "one"}, "nodes": [node("a")]}))
    (tmp_path / "two.yaml").write_text(
        "graph: {id: two}\nnodes:\n  - {id: a, task_type: method, task_identifier: tasks.inc}\n"
    )
    assert load_graph(tmp_path / "one.json").id == "one"
    assert load_graph(str(tmp_path / "two.yaml")).id == "two"
    assert load_graph(str(tmp_path / "two")).id == "two"
    assert load_graph("one", root_dir=tmp_path).id == "one"


def test_missing_file_names_every_candidate(tmp_path: Path) -> None:
    """A missing file lists the paths that were tried."""
    (problem,) = problems_of(str(tmp_path / "nope"))
    assert "no such graph file" in problem
    assert "nope.json" in problem
    assert "nope.yaml" in problem


@pytest.mark.parametrize("source", [None, "", {}])
def test_empty_sources_give_an_empty_graph(source: Any) -> None:
    """None, '' and {} are the empty graph."""
    graph = load_graph(source)
    assert len(graph.nodes) == 0
    assert graph.start_nodes == ()


def test_invalid_json_is_a_graph_error() -> None:
    """Malformed JSON gives a GraphError saying so, not a JSONDecodeError."""
    (problem,) = problems_of('{"nodes": [}')
    assert "not valid JSON" in problem


def test_invalid_yaml_file_is_a_graph_error(tmp_path: Path) -> None:
    """Malformed YAML gives a GraphError."""
    path = tmp_path / "bad.yaml"
    path.write_text("nodes: [\n  - {id: a\n")
    (problem,) = problems_of(path)
    assert "not valid JSON or YAML" in problem


@pytest.mark.parametrize("source", [42, 3.5, object(), ["nodes"]])
def test_unsupported_source_types(source: Any) -> None:
    """Sources of other types get a GraphError naming the type."""
    (problem,) = problems_of(source)
    assert type(source).__name__ in problem


@pytest.mark.parametrize("document", ["[1, 2]", '"text {}"'])
def test_document_must_be_an_object(document: str) -> None:
    """A JSON document that is not an object is refused."""
    with pytest.raises(GraphError, match="must be an object"):
        load_graph(document, representation="json_string")


def test_graph_instance_passes_through() -> None:
    """A Graph is returned as it is."""
    graph = load_graph({"nodes": [node("a")]})
    assert load_graph(graph) is graph


def test_tuple_ids_written_as_lists() -> None:
    """JSON lists in ids become tuples."""
    graph = load_graph({"nodes": [node(["x", 1]), node("b")], "links": [link(["x", 1], "b")]})
    assert ("x", 1) in graph.nodes
    assert graph.links[0].source == ("x", 1)


def test_labels_default_to_joined_ids() -> None:
    """A node without label is labelled by its id joined with ':'."""
    graph = load_graph({"nodes": [node(["a", ["b", "c"]]), node("d", label="Dee")]})
    assert graph.nodes[("a", ("b", "c"))].label == "a:b:c"
    assert graph.nodes["d"].label == "Dee"


def test_graph_id_defaults_to_notspecified() -> None:
    """A graph without id gets 'notspecified', and label falls back to the id."""
    graph = load_graph({"nodes": [node("a")]})
    assert (graph.id, graph.label) == ("notspecified", "notspecified")


# ----------------------------------------------------------------- schema


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_supported_schema_versions(version: str) -> None:
    """Versions 1.0 to 1.2 load."""
    assert load_graph({"graph": {"id": "g", "schema_version": version}, "nodes": [node("a")]}).id == "g"


@pytest.mark.parametrize(("version", "words"), [("0.0", "no longer supported"), ("9.1", "unknown")])
def test_refused_schema_versions(version: str, words: str) -> None:
    """Old and unknown versions are refused with the supported list."""
    (problem,) = problems_of({"graph": {"schema_version": version}, "nodes": []})
    assert words in problem
    assert "1.2" in problem


# ----------------------------------------------------------------- nodes


def test_every_problem_is_reported_in_one_error() -> None:
    """All problems of a graph come in one GraphError, each naming its node or link."""
    problems = problems_of(
        {
            "graph": {"id": "many"},
            "nodes": [
                node("load"),
                node("fit"),
                {"id": "x"},
                {"id": "y", "task_type": "methd", "task_identifier": "m.f"},
                node("load"),
            ],
            "links": [link("load", "fitt"), link("fit", "load", data_mapping=[{"source_output": "a"}])],
        }
    )
    text = "\n".join(problems)
    assert "node 'x': needs 'task_type'" in text
    assert "node 'y': 'task_type' must be one of" in text
    assert "did you mean 'method'" in text
    assert "node 'load' is declared more than once" in text
    assert "link 'load' -> 'fitt': no node 'fitt' (did you mean 'fit'?)" in text
    assert "no 'target_input'" in text
    assert len(problems) == 5


def test_error_message_names_the_graph() -> None:
    """The message starts with the graph id."""
    with pytest.raises(GraphError, match=r"^graph 'demo': link 'a' -> 'b': no node 'b'"):
        load_graph({"graph": {"id": "demo"}, "nodes": [node("a")], "links": [link("a", "b")]})


def test_graph_error_is_a_value_error() -> None:
    """Existing `except ValueError` clauses catch graph errors."""
    with pytest.raises(ValueError, match="no node"):
        load_graph({"nodes": [node("a")], "links": [link("a", "zzz")]})


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"nodes": "abc"}, "'nodes' must be a list"),
        ({"links": {}}, "'links' must be a list"),
        ({"graph": [1]}, "'graph' must be an object"),
        ({"nodes": [1]}, "nodes[0] must be an object"),
        ({"nodes": [{"task_type": "method"}]}, "has no 'id'"),
        ({"nodes": [node(1.5)]}, "'id' must be a string"),
        ({"nodes": [node(True)]}, "'id' must be a string"),
        ({"nodes": [{"id": "a", "task_type": "method"}]}, "needs a 'task_identifier'"),
        ({"nodes": [{"id": "a", "task_type": "method", "task_identifier": 5}]}, "'task_identifier' must be a string"),
        ({"nodes": [{"id": "a", "task_type": "ppfport", "task_identifier": "x"}]}, "must not have a 'task_identifier'"),
        ({"nodes": [{"id": "a", "task_type": "generated", "task_identifier": "x"}]}, "needs a 'task_generator'"),
        ({"nodes": [node("a", task_generator="g")]}, "only allowed on 'generated'"),
        ({"nodes": [node("a", default_inputs={"x": 1})]}, "'default_inputs' must be a list"),
        ({"nodes": [node("a", default_inputs=[{"name": "x"}])]}, "default_inputs[0] must be an object"),
        ({"nodes": [node("a", default_inputs=[{"name": 1.5, "value": 1}])]}, "'name' must be a string or an int"),
        ({"nodes": [node("a", force_start_node="yes")]}, "'force_start_node' must be true or false"),
        ({"nodes": [node("a", label=3)]}, "'label' must be a string"),
        ({"nodes": [{"id": "a", "method": "m.f", "class": "m.C"}]}, "found 'class', 'method'"),
    ],
)
def test_node_problems(bad: dict[str, Any], words: str) -> None:
    """Each malformed node attribute gets a GraphError that says what is wrong."""
    text = "\n".join(problems_of(bad))
    assert words in text


def test_legacy_keys_are_rewritten_with_a_warning() -> None:
    """{'method': X} becomes task_type method with a DeprecationWarning."""
    with pytest.warns(DeprecationWarning, match="legacy key") as record:
        graph = load_graph({"nodes": [{"id": "a", "method": "tasks.inc"}, {"id": "p", "ppfport": None}]})
    messages = sorted(str(w.message) for w in record)
    assert "node 'a' uses the legacy key 'method'; write 'task_type': 'method' and 'task_identifier'" in messages[0]
    assert "node 'p' uses the legacy key 'ppfport'; write 'task_type': 'ppfport' instead" in messages[1]
    assert graph.nodes["a"].task_type == "method"
    assert graph.nodes["a"].task_identifier == "tasks.inc"
    assert graph.nodes["p"].task_type == "ppfport"


def test_digit_input_names_are_positional() -> None:
    """Input names '0' and 0 both mean positional argument 0."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("b", default_inputs=[{"name": "1", "value": "x"}])],
            "links": [link("a", "b", data_mapping=[{"source_output": "return_value", "target_input": "0"}])],
        }
    )
    assert graph.nodes["b"].default_inputs == {1: "x"}
    assert graph.links[0].data_mapping == (("return_value", 0),)


# ----------------------------------------------------------------- links


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        (
            {"map_all_data": True, "data_mapping": [{"source_output": "a", "target_input": "b"}]},
            "cannot be used together",
        ),
        ({"on_error": True, "conditions": [{"source_output": "a", "value": 1}]}, "cannot be used together"),
        ({"data_mapping": {"a": "b"}}, "'data_mapping' must be a list"),
        ({"data_mapping": [{"target_input": "b"}]}, "no 'source_output'"),
        ({"data_mapping": ["a"]}, "data_mapping[0] must be an object"),
        ({"conditions": [{"source_output": "a"}]}, "conditions[0] must be an object with 'source_output' and 'value'"),
        ({"conditions": "a"}, "'conditions' must be a list"),
        ({"map_all_data": "yes"}, "'map_all_data' must be true or false"),
        ({"required": "yes"}, "'required' must be true, false or null"),
        ({"sub_target": "x"}, "'sub_target' is only allowed when the target is a graph node"),
    ],
)
def test_link_problems(attrs: dict[str, Any], words: str) -> None:
    """Each malformed link attribute gets a GraphError naming the link."""
    text = "\n".join(problems_of({"nodes": [node("a"), node("b")], "links": [link("a", "b", **attrs)]}))
    assert "link 'a' -> 'b'" in text
    assert words in text


def test_link_without_endpoints() -> None:
    """A link without source or target is reported by position."""
    text = "\n".join(problems_of({"nodes": [node("a")], "links": [{"target": "a"}, {"source": "a"}]}))
    assert "links[0] has no 'source'" in text
    assert "links[1] has no 'target'" in text


def test_duplicate_links_are_merged() -> None:
    """Two entries for one (source, target) become one link with both mappings."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("b")],
            "links": [
                link("a", "b", data_mapping=[{"source_output": "return_value", "target_input": "x"}]),
                link("a", "b", data_mapping=[{"source_output": "return_value", "target_input": "y"}]),
            ],
        }
    )
    assert len(graph.links) == 1
    assert graph.links[0].data_mapping == (("return_value", "x"), ("return_value", "y"))


def test_duplicate_links_with_conflicting_scalars() -> None:
    """Duplicate links that disagree on a scalar attribute are refused."""
    (problem,) = problems_of(
        {"nodes": [node("a"), node("b")], "links": [link("a", "b", required=True), link("a", "b", required=False)]}
    )
    assert "written more than once with different 'required'" in problem


def test_required_links_writing_one_input_conflict() -> None:
    """Two required links into one input of a node are refused (spec §4.3)."""
    (problem,) = problems_of(
        {
            "nodes": [node("a"), node("b"), node("c")],
            "links": [
                link("a", "c", data_mapping=[{"source_output": "return_value", "target_input": "x"}]),
                link("b", "c", data_mapping=[{"source_output": "return_value", "target_input": "x"}]),
            ],
        }
    )
    assert "node 'c'" in problem
    assert "both connect to its input 'x'" in problem


def test_optional_links_may_write_one_input() -> None:
    """The conflict check covers required links only."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("b"), node("c")],
            "links": [
                link("a", "c", data_mapping=[{"source_output": "return_value", "target_input": "x"}]),
                link("b", "c", required=False, data_mapping=[{"source_output": "return_value", "target_input": "x"}]),
            ],
        }
    )
    assert len(graph.links) == 2


def test_conditions_repeating_a_name_keep_the_last() -> None:
    """One link listing the same source_output twice: the last value wins (spec §3.3)."""
    graph = load_graph(
        {
            "nodes": [node("a"), node("b")],
            "links": [
                link(
                    "a",
                    "b",
                    conditions=[
                        {"source_output": "return_value", "value": 1},
                        {"source_output": "return_value", "value": 2},
                    ],
                )
            ],
        }
    )
    assert graph.links[0].conditions == (("return_value", 2),)


# ----------------------------------------------------------------- inputs=


def test_inputs_default_to_start_nodes() -> None:
    """inputs without selector go to the start nodes only."""
    graph = load_graph({"nodes": [node("a"), node("b")], "links": [link("a", "b")]}, inputs=[{"name": "x", "value": 5}])
    assert graph.nodes["a"].default_inputs == {"x": 5}
    assert graph.nodes["b"].default_inputs == {}


def test_inputs_selectors() -> None:
    """id, label + task_identifier suffix, and all select the documented nodes."""
    doc = {
        "nodes": [node("a", label="L"), node("b", "tasks.add", label="L"), node("c")],
        "links": [link("a", "b"), link("b", "c")],
    }
    graph = load_graph(
        doc,
        inputs=[
            {"id": "c", "name": "x", "value": 1},
            {"label": "L", "task_identifier": "add", "name": "y", "value": 2},
            {"all": True, "name": "z", "value": 3},
        ],
    )
    assert graph.nodes["a"].default_inputs == {"z": 3}
    assert graph.nodes["b"].default_inputs == {"y": 2, "z": 3}
    assert graph.nodes["c"].default_inputs == {"x": 1, "z": 3}


def test_inputs_replace_a_default_with_the_same_name() -> None:
    """An input replaces the node's default of the same name."""
    graph = load_graph(
        {"nodes": [node("a", default_inputs=[{"name": "x", "value": 1}, {"name": "y", "value": 2}])]},
        inputs=[{"name": "x", "value": 10}],
    )
    assert graph.nodes["a"].default_inputs == {"x": 10, "y": 2}


def test_inputs_unknown_id_and_malformed_items() -> None:
    """An unknown id gets a did-you-mean; an item without value is refused."""
    text = "\n".join(
        problems_of({"nodes": [node("load")]}, inputs=[{"id": "laod", "name": "x", "value": 1}, {"name": "x"}])
    )
    assert "inputs[0]: no node 'laod' (did you mean 'load'?)" in text
    assert "inputs[1]: must be an object with 'name' and 'value'" in text


def test_public_api_reexports_load_graph() -> None:
    """aioflow.load_graph is the graph loader."""
    assert aioflow.load_graph is load_graph


def test_graph_does_not_share_values_with_the_source() -> None:
    """Changing the source dict after loading does not change the graph."""
    values = [1, 2]
    doc = {"nodes": [node("a", default_inputs=[{"name": "x", "value": values}], uiProps={"pos": [0, 0]})]}
    graph = load_graph(doc)
    values.append(3)
    doc["nodes"][0]["uiProps"]["pos"].append(9)
    assert graph.nodes["a"].default_inputs == {"x": [1, 2]}
    assert graph.nodes["a"].attributes["uiProps"] == {"pos": [0, 0]}


def test_links_to_an_invalid_node_are_not_reported_twice() -> None:
    """A link to a declared but invalid node reports only the node's problem; suggestions include it."""
    problems = problems_of({"nodes": [node("a"), {"id": "fit"}], "links": [link("a", "fit"), link("a", "fitt")]})
    assert problems == (
        "node 'fit': needs 'task_type' and 'task_identifier' (found none)",
        "link 'a' -> 'fitt': no node 'fitt' (did you mean 'fit'?)",
    )
