"""Links kept by column: the `Links` sequence, and the loader's column-at-a-time reading of plain links.

A document without subgraphs or default error handlers whose links are all
plain has them checked a column at a time (`plain_link_columns`); any other
goes link by link. Both must give the same `Graph`, or the same `GraphError`.
"""

from __future__ import annotations

import dataclasses
import gc
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aioflow
from aioflow import GraphError, Link, load_graph
from aioflow.graph import _model, _normalise, _subgraphs
from aioflow.graph._model import Links

NODES = ["a", "b", "c", "d"]


def _graph(links: list[Any], **extra: Any) -> dict[str, Any]:
    nodes = [{"id": n, "task_type": "method", "task_identifier": "m.f"} for n in NODES]
    return {"graph": {"id": "g"}, "nodes": nodes, "links": links, **extra}


def _link_by_link(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_subgraphs, "plain_link_columns", lambda raw_links, level: None)


def _outcome(doc: dict[str, Any]) -> Any:
    """What loading gives, in a form to compare: the graph's records and analysis, or the error's problems."""
    try:
        graph = load_graph(doc)
    except GraphError as exc:
        return ("error", exc.problems)
    analysis = graph.analysis._asdict()
    return ("graph", dict(graph.nodes), list(graph.links), analysis)


names = st.sampled_from(["x", "y", "return_value", "0", "1"])
scalars = st.one_of(st.integers(-1, 2), st.booleans(), st.none(), st.sampled_from(["s", ""]), st.floats(0, 1))
values = st.one_of(scalars, st.lists(st.integers(0, 2), max_size=2), st.dictionaries(names, st.integers(), max_size=1))
items = st.one_of(
    st.fixed_dictionaries({"source_output": names, "target_input": names}),
    st.fixed_dictionaries({"source_output": names}, optional={"target_input": st.integers(0, 1), "extra": names}),
)
conditions = st.one_of(
    st.fixed_dictionaries({"source_output": names, "value": values}),
    st.fixed_dictionaries({"source_output": st.integers(0, 1), "value": scalars}),
    st.fixed_dictionaries({"value": scalars}),
)
ends = st.one_of(st.sampled_from(NODES), st.sampled_from(["zz", 1]))
link = st.fixed_dictionaries(
    {"source": st.sampled_from(NODES), "target": st.sampled_from(NODES)},
    optional={
        "data_mapping": st.one_of(st.none(), st.lists(items, max_size=2)),
        "conditions": st.one_of(st.none(), st.lists(conditions, max_size=2)),
        "map_all_data": st.one_of(st.booleans(), st.just(1)),
        "on_error": st.booleans(),
        "required": st.one_of(st.booleans(), st.none(), st.just("yes")),
        "cache_if_optional": st.booleans(),
    },
)
odd_link = st.fixed_dictionaries({"source": ends, "target": ends}, optional={"comment": names})
documents = st.lists(st.one_of(link, link, link, odd_link), max_size=8)


@settings(max_examples=1500, deadline=None)
@given(documents)
def test_reading_by_column_agrees_with_reading_link_by_link(links: list[Any]) -> None:
    by_column = _outcome(_graph(links))
    with pytest.MonkeyPatch.context() as patch:
        _link_by_link(patch)
        assert _outcome(_graph(links)) == by_column


# Mapping-only links among few nodes: more links than pairs of ends, merged
# before their mappings are read (`_normalise._merged_raw_mappings`).
mapping_link = st.fixed_dictionaries(
    {
        "source": st.sampled_from(NODES[:2]),
        "target": st.sampled_from(NODES[1:3]),
        "data_mapping": st.lists(items, max_size=2),
    }
)
crowded = st.lists(mapping_link, min_size=5, max_size=12)


@settings(max_examples=500, deadline=None)
@given(crowded)
def test_links_merged_before_their_mappings_are_read_agree_with_link_by_link(links: list[Any]) -> None:
    by_column = _outcome(_graph(links))
    with pytest.MonkeyPatch.context() as patch:
        _link_by_link(patch)
        assert _outcome(_graph(links)) == by_column


def test_many_entries_of_one_link_are_merged_as_they_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    links = [
        {"source": "a", "target": "b", "data_mapping": [{"source_output": "r", "target_input": f"x{i}"}]}
        for i in range(50)
    ]
    links.insert(10, {"source": "a", "target": "c", "data_mapping": []})
    merged_later: list[Any] = []

    def merge(links: Any) -> Any:
        merged_later.append(links)
        return links

    monkeypatch.setattr("aioflow.graph._build._merged_plain_links", merge)
    graph = load_graph(_graph(links))
    assert merged_later == []
    assert [(lk.source, lk.target) for lk in graph.links] == [("a", "b"), ("a", "c")]
    assert graph.links[0].data_mapping == tuple(("r", f"x{i}") for i in range(50))
    assert graph.links[1].data_mapping == ()


def test_plain_links_are_read_by_column_and_equal_mappings_share_one_tuple() -> None:
    item = {"source_output": "return_value", "target_input": "x"}
    ids = [f"n{i}" for i in range(10)]
    links = [{"source": "n0", "target": t, "data_mapping": [dict(item)]} for t in ids[1:]]
    assert _normalise.plain_link_columns(links, {nid: {} for nid in ids}) is not None
    nodes = [{"id": n, "task_type": "method", "task_identifier": "m.f"} for n in ids]
    graph = load_graph({"nodes": nodes, "links": links})
    assert graph.links.sources == ("n0",) * 9
    assert graph.links.targets == tuple(ids[1:])
    assert graph.links.data_mappings == ((("return_value", "x"),),) * 9
    assert graph.links.data_mappings[0] is graph.links.data_mappings[8]
    # Nothing of the caller's document is kept.
    assert links[0]["data_mapping"][0] == item
    assert graph.links[0].data_mapping is not links[0]["data_mapping"]


def test_duplicates_of_plain_links_are_merged_in_order_as_link_by_link() -> None:
    links = [
        {"source": "a", "target": "b", "data_mapping": [{"source_output": "p", "target_input": "x"}]},
        {"source": "a", "target": "c"},
        {"source": "a", "target": "b", "data_mapping": [{"source_output": "q", "target_input": "y"}]},
    ]
    graph = load_graph(_graph(links))
    assert [(lk.source, lk.target, lk.data_mapping) for lk in graph.links] == [
        ("a", "b", (("p", "x"), ("q", "y"))),
        ("a", "c", ()),
    ]
    assert graph.analysis.links_in["b"] == (0,)


def test_a_graph_of_many_links_holds_few_containers() -> None:
    """A lattice of 900 nodes and 26,100 links: far fewer tracked objects than links (a record each would be more)."""
    width = depth = 30
    nodes = [
        {"id": f"n{k}_{i}", "task_type": "method", "task_identifier": "m.f"} for k in range(depth) for i in range(width)
    ]
    links = [
        {
            "source": f"n{k}_{i}",
            "target": f"n{k + 1}_{j}",
            "data_mapping": [{"source_output": "r", "target_input": f"a{i}"}],
        }
        for k in range(depth - 1)
        for j in range(width)
        for i in range(width)
    ]
    doc = {"graph": {"id": "lattice"}, "nodes": nodes, "links": links}
    gc.collect()
    before = len(gc.get_objects())
    graph = load_graph(doc)
    gc.collect()
    held = len(gc.get_objects()) - before
    assert len(graph.links) == len(links) == 26_100
    assert held < 10 * len(nodes) < len(links)


def test_loading_leaves_the_garbage_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("gc.disable called")

    monkeypatch.setattr(gc, "disable", refuse)
    monkeypatch.setattr(gc, "freeze", refuse)
    links = [
        {"source": "a", "target": "b"},
        {"source": "b", "target": "c", "conditions": [{"source_output": "x", "value": 1}]},
    ]
    assert len(load_graph(_graph(links)).links) == 2
    assert gc.isenabled()


# ---- Links as a sequence


def _records() -> list[Link]:
    return [
        Link("a", "b", (("r", "x"),)),
        Link("b", "c", conditions=(("r", 1),), required=False, attributes={"note": [1]}),
        Link("c", "a", on_error=True, map_all_data=True),
    ]


def test_links_is_a_read_only_sequence_of_records() -> None:
    records = _records()
    links = Links(records)
    assert len(links) == 3
    assert links[0] == records[0]
    assert links[-1] == records[2]
    assert links[1:] == tuple(records[1:])
    assert list(links) == records
    assert links == tuple(records)
    assert links == records
    assert links != records[:2]
    assert links == Links(records)
    assert links.targets == ("b", "c", "a")
    assert links.required == (None, False, None)
    assert links[0].attributes == {}
    with pytest.raises(IndexError):
        links[3]
    with pytest.raises(AttributeError, match="read-only"):
        links.sources = ()
    with pytest.raises(TypeError):
        hash(links)
    assert repr(links) == "<Links: 3>"


def test_links_refuse_what_is_not_a_link() -> None:
    with pytest.raises(TypeError, match=r"links\[1\] must be a Link \(got a dict\)"):
        Links([Link("a", "b"), {"source": "a", "target": "b"}])  # type: ignore[list-item]


def test_links_pickle_with_their_columns() -> None:
    graph = load_graph(_graph([{"source": "a", "target": "b"}, {"source": "b", "target": "c", "required": True}]))
    again = pickle.loads(pickle.dumps(graph.links))
    assert again == graph.links
    assert again.required == (None, True)
    assert again[0].attributes == {}


def test_a_graph_takes_any_sequence_of_links_and_replace_keeps_working() -> None:
    graph = load_graph(_graph([{"source": "a", "target": "b"}]))
    swapped = dataclasses.replace(graph, links=[Link("b", "a"), Link("c", "d")])  # type: ignore[arg-type]
    assert isinstance(swapped.links, Links)
    assert swapped.links.sources == ("b", "c")
    assert swapped.start_nodes == ("b", "c")
    direct = aioflow.Graph("g", "g", graph.nodes, (Link("a", "b"),))  # type: ignore[arg-type]
    assert direct.analysis.links_in["b"] == (0,)


def test_a_graph_pickles_its_nodes_by_column_and_comes_back_equal() -> None:
    """`Graph.__reduce__`: nodes as one tuple per field of `Node` (no record pickled), the analysis made again."""
    from aioflow.graph import _model

    assert _model._NODE_FIELDS == tuple(f.name for f in dataclasses.fields(aioflow.Node))
    sub = {"graph": {"id": "sub"}, "nodes": [{"id": "x", "task_type": "method", "task_identifier": "m.g"}], "links": []}
    doc = {
        "graph": {"id": "g", "label": "G", "note": {"k": [1]}},
        "nodes": [
            {"id": "a", "task_type": "method", "task_identifier": "m.f", "force_start_node": True,
             "default_inputs": [{"name": "p", "value": [1, 2]}], "comment": "kept"},
            {"id": "s", "task_type": "graph", "task_identifier": sub},
        ],
        "links": [{"source": "a", "target": "s", "sub_target": "x", "map_all_data": True}],
    }  # fmt: skip
    graph = load_graph(doc)
    data = pickle.dumps(graph, protocol=5)
    assert b"Node" not in data  # records would name their class
    again = pickle.loads(data)
    assert again is not graph
    assert (again.id, again.label, again.attributes) == (graph.id, graph.label, graph.attributes)
    assert dict(again.nodes) == dict(graph.nodes)
    assert list(again.nodes) == list(graph.nodes) == ["a", ("s", "x")]
    assert again.links == graph.links
    assert again.analysis == graph.analysis


def test_nodes_without_inputs_or_attributes_share_one_empty_mapping() -> None:
    graph = load_graph(
        {
            "nodes": [
                {"id": "a", "task_type": "method", "task_identifier": "m.f"},
                {"id": "b", "task_type": "method", "task_identifier": "m.f", "comment": "x",
                 "default_inputs": [{"name": "p", "value": 1}]},
            ]
        }
    )  # fmt: skip
    a, b = graph.nodes["a"], graph.nodes["b"]
    assert a.default_inputs is a.attributes is _model.NO_ATTRIBUTES
    assert a.default_inputs == {} == a.attributes
    assert not a.default_inputs
    assert (dict(b.default_inputs), dict(b.attributes)) == ({"p": 1}, {"comment": "x"})
    with pytest.raises(TypeError):
        a.default_inputs["p"] = 1  # type: ignore[index]
    assert pickle.loads(pickle.dumps(graph)).nodes["a"].default_inputs is _model.NO_ATTRIBUTES
