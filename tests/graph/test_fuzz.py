"""Fuzzing the graph schema: whatever the document, only aioflow's own errors, and no hang.

Three properties, each over documents built by Hypothesis:

- random JSON-like documents shaped by the schema's vocabulary (keys and
  values it knows, mixed with anything) go through `aioflow.load_graph`;
- valid graphs of the test tasks (`tests/tasks.py`), mutated: a field dropped,
  replaced, retyped or nested deeply, an unknown field added, a node or link
  duplicated, two ids swapped;
- the mutants that load are executed on a thread pool, with a timeout and an
  iteration limit, with random ``inputs=``/``outputs=``.

The only outcomes allowed: a `Graph` or results, an `aioflow.AioflowError`
(a `NodeError` when a task raised). Any other exception fails the property.

CI runs a few hundred examples, derandomized (the same ones each run, no
example database). A long local run::

    AIOFLOW_FUZZ_EXAMPLES=20000 python -m pytest tests/graph/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aioflow
from aioflow import AioflowError, load_graph

if TYPE_CHECKING:
    from pathlib import Path

Draw = Callable[[st.SearchStrategy[Any]], Any]

# Examples per property: a fixed, small run in CI; set the variable for a long, random one.
_LONG_RUN = int(os.environ.get("AIOFLOW_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=_LONG_RUN or examples,
        deadline=None,
        derandomize=not _LONG_RUN,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# Test tasks that always end at once, whatever their inputs (no sleep, no subprocess).
SAFE_TASKS = (
    "tasks.inc",
    "tasks.add",
    "tasks.add_all",
    "tasks.identity",
    "tasks.echo",
    "tasks.fail",
    "tasks.needs_x",
    "tasks.countdown",
    "tasks.below",
)
SAFE_PPF_TASKS = ("tasks.ppf_add", "tasks.ppf_inc_until", "tasks.ppf_route", "tasks.ppf_none")
SAFE_TYPES = ("method", "ppfmethod", "ppfport")

KEYS = (
    "graph", "nodes", "links", "edges", "id", "label", "schema_version", "requirements", "input_nodes",
    "output_nodes", "node", "sub_node", "link_attributes", "task_type", "task_identifier", "task_generator",
    "default_inputs", "name", "value", "force_start_node", "conditions_else_value", "default_error_node",
    "default_error_attributes", "source", "target", "data_mapping", "source_output", "target_input",
    "map_all_data", "conditions", "on_error", "required", "cache_if_optional", "sub_source", "sub_target",
    "sub_target_attributes", "all", "new_name",
)  # fmt: skip
WORDS = (
    "a", "b", "c", "sub", "in", "out", "x", "n", "return_value", "_ppfdict", "method", "ppfmethod", "ppfport",
    "graph", "class", "script", "generated", "1.2", "0.0", "9.9", "0", "65535", "65536", "", *SAFE_TASKS,
)  # fmt: skip

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, 1, -1, 2**16 - 1, 2**16, 2**63, 10**30])
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(WORDS)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner),
    max_leaves=12,
)


def deep(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def schema_shaped(draw: Draw) -> Any:
    """A document with the schema's top-level shape, whose items hold the schema's keys with any values."""
    item = st.dictionaries(st.sampled_from(KEYS), JSON | SCALARS, max_size=6)
    doc = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "graph": item | JSON,
                "nodes": st.lists(item | JSON, max_size=4) | JSON,
                "links": st.lists(item | JSON, max_size=4) | JSON,
            },
        )
    )
    return draw(st.sampled_from([doc, doc, doc, draw(JSON)]))


@st.composite
def valid_graph(draw: Draw) -> dict[str, Any]:
    """A small graph that loads: method and ppf nodes of the test tasks, forward links, maybe a loop,
    a subgraph with aliases, a default error handler."""
    n = draw(st.integers(1, 5))
    nodes: list[dict[str, Any]] = []
    for i in range(n):
        kind = draw(st.sampled_from(SAFE_TYPES))
        node: dict[str, Any] = {"id": f"n{i}", "task_type": kind}
        if kind != "ppfport":
            node["task_identifier"] = draw(st.sampled_from(SAFE_TASKS if kind == "method" else SAFE_PPF_TASKS))
        if draw(st.booleans()):
            node["default_inputs"] = [{"name": draw(st.sampled_from(["x", "a", "n", "value", 0])), "value": 1}]
        nodes.append(node)
    links: list[dict[str, Any]] = []
    for t in range(1, n):
        for s in range(t):
            if draw(st.integers(0, 2)) == 0:
                continue
            link: dict[str, Any] = {"source": f"n{s}", "target": f"n{t}"}
            how = draw(st.sampled_from(["trigger", "all", "mapping", "condition", "error"]))
            if how == "all":
                link["map_all_data"] = True
            elif how == "mapping":
                name = f"x{s}" if draw(st.booleans()) else s
                link["data_mapping"] = [{"source_output": "return_value", "target_input": name}]
            elif how == "condition":
                link["conditions"] = [{"source_output": "return_value", "value": draw(st.integers(0, 3))}]
            elif how == "error":
                link["on_error"] = True
            links.append(link)
    if n > 1 and draw(st.booleans()):  # a loop back to the first node
        links.append(
            {"source": f"n{n - 1}", "target": "n0", "conditions": [{"source_output": "return_value", "value": 1}]}
        )
    if draw(st.booleans()):
        inner = {
            "graph": {"input_nodes": [{"id": "in", "node": "t"}], "output_nodes": [{"id": "out", "node": "t"}]},
            "nodes": [{"id": "t", "task_type": "method", "task_identifier": draw(st.sampled_from(SAFE_TASKS))}],
        }
        nodes.append({"id": "sub", "task_type": "graph", "task_identifier": inner})
        links.append({"source": "n0", "target": "sub", "sub_target": "in", "map_all_data": True})
    if draw(st.booleans()):
        nodes.append(
            {"id": "handler", "task_type": "method", "task_identifier": "tasks.echo", "default_error_node": True}
        )
    return {"graph": {"id": "fuzz"}, "nodes": nodes, "links": links}


def places(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a document: where a mutation may strike."""
    found: list[tuple[Any, Any]] = []
    seen = {id(doc)}  # a part reused inside itself makes a cycle
    stack = [doc]
    while stack:
        container = stack.pop()
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            found.append((container, key))
            value = container[key]
            if isinstance(value, (dict, list)) and id(value) not in seen:
                seen.add(id(value))
                stack.append(value)
    return found


@st.composite
def mutated(draw: Draw) -> dict[str, Any]:
    """A valid graph after one to three mutations."""
    doc: dict[str, Any] = copy.deepcopy(draw(valid_graph()))
    for _ in range(draw(st.integers(1, 3))):
        spots = places(doc)
        container, key = spots[draw(st.integers(0, len(spots) - 1))]
        how = draw(st.sampled_from(["drop", "replace", "retype", "nest", "add", "duplicate", "swap ids", "reuse"]))
        if how == "drop":
            del container[key]
        elif how == "replace":
            container[key] = draw(JSON | SCALARS)
        elif how == "retype":
            value = container[key]
            container[key] = draw(st.sampled_from([[value], {"value": value}, str(value), None, len(str(value))]))
        elif how == "nest":
            container[key] = deep(container[key], draw(st.sampled_from([1, 2, 99, 100, 101, 150])))
        elif how == "add" and isinstance(container, dict):
            container[draw(st.sampled_from(KEYS) | st.text(max_size=4))] = draw(JSON | SCALARS)
        elif how == "duplicate" and isinstance(container, list):
            container.insert(key, copy.deepcopy(container[key]))
        elif how == "swap ids" and isinstance(doc.get("nodes"), list) and len(doc["nodes"]) > 1:
            first, second = draw(st.lists(st.integers(0, len(doc["nodes"]) - 1), min_size=2, max_size=2, unique=True))
            a, b = doc["nodes"][first], doc["nodes"][second]
            if isinstance(a, dict) and isinstance(b, dict):
                a["id"], b["id"] = b.get("id"), a.get("id")
        elif how == "reuse":  # another part of the document, put here too (a YAML alias)
            other, other_key = spots[draw(st.integers(0, len(spots) - 1))]
            container[key] = other[other_key]
    return doc


def load(doc: Any, **options: Any) -> aioflow.Graph | None:
    """load_graph: a Graph, or None for an aioflow error. Anything else propagates and fails the property."""
    try:
        graph = load_graph(doc, **options)
    except AioflowError as exc:
        event(f"refused: {type(exc).__name__}")
        return None
    event("loaded")
    return graph


def runnable(graph: aioflow.Graph) -> bool:
    """Only the test tasks that always end at once are executed."""
    return all(
        n.task_type in SAFE_TYPES and (n.task_identifier is None or n.task_identifier in SAFE_TASKS + SAFE_PPF_TASKS)
        for n in graph.nodes.values()
    )


@fuzz_settings(400)
@given(doc=schema_shaped())
def test_random_documents_load_or_raise_a_graph_error(doc: Any) -> None:
    """Any JSON-like document: a Graph, or an aioflow error."""
    load(doc)


@fuzz_settings(300)
@given(doc=mutated(), inputs=st.none() | st.lists(JSON, max_size=2) | JSON)
def test_mutated_graphs_load_or_raise_a_graph_error(doc: dict[str, Any], inputs: Any) -> None:
    """A valid graph, mutated, with random inputs=: a Graph, or an aioflow error."""
    load(doc)
    load(doc, inputs=inputs)


@st.composite
def garbled(draw: Draw, text: str) -> str:
    """``text`` with a few characters cut out, put in or repeated."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["cut", "insert", "repeat"]))
        if how == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 5)) :]
        elif how == "insert":
            text = text[:at] + draw(st.text(alphabet='{}[]":,-&*!? \n#ab01', max_size=4)) + text[at:]
        else:
            text = text[:at] + text[at : at + 3] * draw(st.integers(2, 50)) + text[at:]
    return text


def test_garbled_json_and_yaml_texts_load_or_raise_a_graph_error(tmp_path: Path) -> None:
    """A document written as JSON or YAML text, garbled: read from a string or a file."""
    import yaml

    @fuzz_settings(300)
    @given(data=st.data())
    def read(data: st.DataObject) -> None:
        doc = data.draw(mutated() | valid_graph())
        try:
            text = json.dumps(doc) if data.draw(st.booleans()) else yaml.safe_dump(doc)
        except (TypeError, ValueError, yaml.YAMLError):  # a part reused inside itself
            return
        text = data.draw(garbled(text))
        load(text, representation="json_string")
        path = tmp_path / data.draw(st.sampled_from(["g.json", "g.yaml", "g"]))
        path.write_text(text)
        load(path)
        path.unlink()

    read()


@fuzz_settings(300)
@given(
    source=st.sampled_from([{"nodes": []}, '{"nodes": []}', "g.json", "no/such", "", None]) | JSON,
    representation=st.sampled_from(
        [None, "json", "yaml", "json_dict", "json_string", "json_module", "yaml_module", "test_core"]
    )
    | JSON,
    root_dir=st.sampled_from([None, ".", "/nonexistent", ""]) | JSON,
    root_module=st.sampled_from([None, "", "aioflow", "nowhere_pkg", "json.sub", "..rel", 5, ["x"]]),
)
def test_load_options_load_or_raise_a_graph_error(
    source: Any, representation: Any, root_dir: Any, root_module: Any
) -> None:
    """load_graph's options, of any value (root_module only among names that import nothing surprising)."""
    load(source, representation=representation, root_dir=root_dir, root_module=root_module)


def test_mutated_graphs_that_load_execute_or_raise_an_aioflow_error() -> None:
    """The mutants that load run on a thread pool to an end, or to an aioflow error (NodeError, timeout...)."""
    outputs = st.sampled_from([None, [], [{"all": True}], [{"id": "n0", "name": "return_value", "new_name": "r"}]])
    with aioflow.open_pool("thread", max_workers=2) as pool:

        @fuzz_settings(100)
        @given(doc=mutated(), outputs=outputs | st.lists(JSON, max_size=2), merge=st.booleans())
        def execute(doc: dict[str, Any], outputs: Any, merge: bool) -> None:
            graph = load(doc)
            if graph is None or not runnable(graph):
                return
            try:
                aioflow.execute_graph(
                    graph, pool=pool, timeout=10, max_iterations=20, outputs=outputs, merge_outputs=merge
                )
            except AioflowError as exc:
                event(f"execution: {type(exc).__name__}")
            else:
                event("execution: results")

        execute()
