"""Property tests: aioflow's analysis and execution against a sequential reference (tests/reference.py).

Graphs are generated as Ewoks documents. Analysis properties compare
`aioflow.load_graph` with naive recomputations; execution properties run the
same document through aioflow (thread pool, sync facade) and through the
reference evaluator and compare results, errors and, where the order of
firings is deterministic, the number of executions per node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import prop_tasks
import pytest
import reference
from hypothesis import HealthCheck, event, example, given, reject, settings
from hypothesis import strategies as st

import aioflow
from aioflow import MISSING, GraphError

Doc = dict[str, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]

# Modest example counts: every property runs in seconds on the thread pool.
ANALYSIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXECUTION = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Firings after which a generated loop counts as endless and the example is
# rejected (generated loops almost always end long before).
BUDGET = 300

METHOD = "prop_tasks.node"
PPF = "prop_tasks.ppf_node"

# Values conditions compare with. Not 0 or 1: those equal False/True, which the
# end-node analysis treats specially (tested on its own below).
CONDITION_VALUES = st.integers(2, 9)


# --------------------------------------------------------------------------- documents


def nid(i: int) -> str:
    return f"n{i}"


def make_node(i: int, task_type: str = "method", **attrs: Any) -> Doc:
    identifier = {"method": METHOD, "ppfmethod": PPF, "ppfport": None}[task_type]
    node: Doc = {"id": nid(i), "task_type": task_type, "default_inputs": [{"name": "me", "value": i}]}
    if identifier is not None:
        node["task_identifier"] = identifier
    node.update(attrs)
    return node


def method_node(node_id: str, func: str = METHOD, **attrs: Any) -> Doc:
    return {"id": node_id, "task_type": "method", "task_identifier": func, **attrs}


def ppf(node_id: str, func: str = "prop_tasks.ppf_increment", **attrs: Any) -> Doc:
    return {"id": node_id, "task_type": "ppfmethod", "task_identifier": func, **attrs}


def all_data(source: str, target: str, **attrs: Any) -> Doc:
    return {"source": source, "target": target, "map_all_data": True, **attrs}


def output_name(task_type: str) -> str:
    """The output conditions test: ``return_value`` of a method, a key inside a ppf dict."""
    return "return_value" if task_type == "method" else "v"


@st.composite
def data_attrs(draw: Draw, source: int, source_type: str, target_type: str, shared: bool = True) -> Doc:
    """How a link passes data (spec §3.2): nothing, every output, or a data_mapping.

    Without ``shared``, mapped input names depend on the source node only, so
    that no two links into a node map the same input (only ``map_all_data``
    links overlap).
    """
    kind = draw(st.sampled_from(["trigger", "all", "mapping", "mapping"]))
    if kind == "trigger":
        return {}
    if kind == "all":
        return {"map_all_data": True}
    outputs = ["return_value", "return_value", "nope"] if source_type == "method" else ["_ppfdict", "_ppfdict", "v"]
    names: list[Any] = [f"x{source}", f"y{source}"]
    if shared:  # sometimes an input other links write too
        names = names * 3 + ["a", "b"]
    if target_type == "method":  # positional inputs; ppf tasks take keywords only
        names += [0, 1] if shared else [source]
    items = draw(
        st.lists(
            st.tuples(st.sampled_from(outputs), st.sampled_from(names)),
            min_size=1,
            max_size=2,
            unique_by=None if shared else (lambda item: item[1]),
        )
    )
    return {"data_mapping": [{"source_output": s, "target_input": t} for s, t in items]}


def declare(draw: Draw, nodes: list[Doc], links: list[Doc], **graph: Any) -> Doc:
    """A document with nodes and links declared in a drawn order."""
    nodes = draw(st.permutations(nodes))
    links = draw(st.permutations(links))
    return {"graph": {"id": "prop", **graph}, "nodes": list(nodes), "links": list(links)}


@st.composite
def dags(draw: Draw, max_nodes: int = 25) -> Doc:
    """A random DAG: links only from a lower to a higher index, declared in random order."""
    n = draw(st.integers(1, max_nodes))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = sorted(draw(st.sets(st.sampled_from(pairs), max_size=40))) if pairs else []
    links = [
        {"source": nid(i), "target": nid(j), **draw(data_attrs(i, "method", "method", shared=False))} for i, j in chosen
    ]
    return declare(draw, [make_node(i) for i in range(n)], links)


@st.composite
def digraphs(draw: Draw, max_nodes: int = 12, attributes: bool = False) -> Doc:
    """A random directed graph, cycles and self-links allowed.

    With ``attributes``, links are randomly conditional, ``on_error`` or
    explicitly (non-)required, and nodes randomly forced start nodes or given
    an else value.
    """
    n = draw(st.integers(1, max_nodes))
    pairs = [(i, j) for i in range(n) for j in range(n)]
    chosen = sorted(draw(st.sets(st.sampled_from(pairs), max_size=3 * n)))
    links = []
    for i, j in chosen:
        link: Doc = {"source": nid(i), "target": nid(j)}
        if attributes:
            kind = draw(st.sampled_from(["plain", "plain", "conditional", "else", "on_error"]))
            if kind == "conditional":
                link["conditions"] = [{"source_output": "return_value", "value": draw(CONDITION_VALUES)}]
            elif kind == "else":
                link["conditions"] = [{"source_output": "return_value", "value": None}]
            elif kind == "on_error":
                link["on_error"] = True
            required = draw(st.sampled_from([None, None, None, True, False]))
            if required is not None:
                link["required"] = required
            link["map_all_data"] = draw(st.booleans())
        links.append(link)
    nodes = []
    for i in range(n):
        attrs: Doc = {}
        if attributes and draw(st.integers(0, 4)) == 0:
            attrs["force_start_node"] = True
        if attributes and draw(st.booleans()):
            attrs["conditions_else_value"] = draw(st.sampled_from(["other", 5]))
        nodes.append(make_node(i, **attrs))
    return declare(draw, nodes, links)


def observed_values(doc: Doc) -> dict[str, list[Any]]:
    """node id -> the values its condition output takes in a reference run of ``doc`` (empty if it cannot run)."""
    try:
        graph = load(doc)
        result = reference.evaluate(graph, startargs=doc.get("startargs"), budget=BUDGET)
    except (GraphError, reference.CannotRun, reference.BudgetExceeded):
        return {}
    values: dict[str, list[Any]] = {}
    for node_id, runs in result.produced.items():
        name = output_name(graph.nodes[node_id].task_type)
        for outputs in runs:
            inner = outputs.get("_ppfdict", outputs)
            if name in inner and inner[name] not in values.setdefault(node_id, []):
                values[node_id].append(inner[name])
    return values


@st.composite
def executable_graphs(draw: Draw, max_nodes: int = 12, loops: bool = True, parallel_safe: bool = False) -> Doc:
    """Method/ppf nodes with conditions, else values, on_error links, failures and loops.

    Forward links (lower to higher index) get random attributes; with
    ``loops``, back links closed by a condition ``n == v`` are added: the
    counter tasks make them pass at most once per chain of firings. So that
    conditions hold often enough to reach deep into the graph, most compared
    values are picked among those the source produces in a run of the same
    graph without conditions and back links.
    """
    n = draw(st.integers(2, max_nodes))
    types = [draw(st.sampled_from(["method", "method", "method", "ppfmethod", "ppfport"])) for _ in range(n)]
    nodes = []
    else_values: list[Any] = []
    for i in range(n):
        attrs: Doc = {}
        else_value = draw(st.sampled_from([None, None, "other", 7]))
        if else_value is not None:
            attrs["conditions_else_value"] = else_value
        else_values.append(else_value)
        node = make_node(i, types[i], **attrs)
        if types[i] != "ppfport" and draw(st.integers(0, 2)) == 0:
            fail_at = draw(st.integers(0, prop_tasks.FAIL_MODULUS - 1))
            node["default_inputs"].append({"name": "fail_at", "value": fail_at})
        if loops and i > 0 and draw(st.integers(0, 9)) == 0:
            node["force_start_node"] = True
        nodes.append(node)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = sorted(draw(st.sets(st.sampled_from(pairs), min_size=min(len(pairs), n - 1), max_size=2 * n)))
    links = []
    to_compare: list[tuple[Doc, int]] = []  # links whose compared value is drawn after the dry run
    for i, j in chosen:
        link: Doc = {"source": nid(i), "target": nid(j)}
        kind = draw(st.sampled_from(["plain", "plain", "plain", "conditional", "else", "on_error", "missing"]))
        if kind == "on_error":
            link["on_error"] = True
            to_err = {"data_mapping": [{"source_output": "WorkflowException", "target_input": "err"}]}
            link.update(draw(st.sampled_from([{}, {"map_all_data": True}, to_err])))
        else:
            link.update(draw(data_attrs(i, types[i], types[j])))
            if kind == "conditional":
                to_compare.append((link, i))
            elif kind == "else":
                link["conditions"] = [{"source_output": output_name(types[i]), "value": else_values[i]}]
            elif kind == "missing":
                link["conditions"] = [{"source_output": "nope", "value": else_values[i]}]
        required = draw(st.sampled_from([None, None, None, None, True, False]))
        if required is not None:
            link["required"] = required
        if not parallel_safe and draw(st.integers(0, 3)) == 0:
            link["cache_if_optional"] = True
        links.append(link)
    startargs = draw(st.sampled_from([None, {"s": 5}]))
    back_links: list[Doc] = []
    if loops:
        back = draw(
            # Rarely into n0: a graph where every node has a predecessor has no start node.
            st.sets(
                st.tuples(st.integers(0, n - 1), st.sampled_from([*range(1, n)] * 4 + [0])).filter(
                    lambda p: p[0] >= p[1]
                ),
                max_size=3,
            )
        )
        for i, j in sorted(back):
            back_links.append({"source": nid(i), "target": nid(j), **draw(data_attrs(i, types[i], types[j]))})
            to_compare.append((back_links[-1], i))
    dry = {"graph": {"id": "dry"}, "nodes": nodes, "links": links, "startargs": startargs}
    seen = observed_values(dry)
    for link, i in to_compare:
        value = draw(st.sampled_from([*seen.get(nid(i), []), draw(CONDITION_VALUES)]))
        link["conditions"] = [{"source_output": output_name(types[i]), "value": value}]
    links += back_links
    doc = {**declare(draw, nodes, links), "startargs": startargs}
    if draw(st.integers(0, 4)):  # most of the time: make the document loadable
        doc = without_input_conflicts(doc)
    return doc


def without_input_conflicts(doc: Doc) -> Doc:
    """Rename the data_mapping targets that collide on required links (spec §4.3), keeping the first writer."""
    shape = aioflow.load_graph({**doc, "links": [{**lk, "data_mapping": []} for lk in doc["links"]]})
    required = {(lk.source, lk.target): r for lk, r in zip(shape.links, reference.link_required(shape), strict=True)}
    written: dict[Any, set[Any]] = {}
    links = []
    for lk in doc["links"]:
        if required[(lk["source"], lk["target"])] and "data_mapping" in lk:
            names = written.setdefault(lk["target"], set())
            mapping = []
            for k, item in enumerate(lk["data_mapping"]):
                target_input = item["target_input"]
                if target_input in names:
                    target_input = f"z_{lk['source']}_{k}"
                names.add(target_input)
                mapping.append({**item, "target_input": target_input})
            lk = {**lk, "data_mapping": mapping}
        links.append(lk)
    return {**doc, "links": links}


# --------------------------------------------------------------------------- helpers


def load(doc: Doc) -> aioflow.Graph:
    return aioflow.load_graph({k: v for k, v in doc.items() if k != "startargs"})


def run_aioflow(doc: Doc, **options: Any) -> aioflow.Results:
    graph = {k: v for k, v in doc.items() if k != "startargs"}
    return aioflow.execute_graph(graph, uvloop=False, pool_type="thread", startargs=doc.get("startargs"), **options)


def run_reference(graph: aioflow.Graph, doc: Doc) -> reference.RefResult | None:
    """The reference evaluation, or None when the graph cannot run (aioflow must refuse it too)."""
    try:
        return reference.evaluate(graph, startargs=doc.get("startargs"), budget=BUDGET)
    except reference.BudgetExceeded:
        reject()
    except reference.CannotRun:
        return None


def predicts_conflict(doc: Doc) -> bool:
    """Whether two data_mapping items of required links write one input of a node (spec §4.3).

    Requiredness comes from the reference, on the same links without their
    mappings (mappings do not change requiredness, and without them the
    document always loads).
    """
    relaxed = {**doc, "links": [{**lk, "data_mapping": []} for lk in doc["links"]]}
    shape = aioflow.load_graph({k: v for k, v in relaxed.items() if k != "startargs"})
    mappings = {
        (lk["source"], lk["target"]): [item["target_input"] for item in lk.get("data_mapping", [])]
        for lk in doc["links"]
    }
    return bool(reference.input_conflicts(shape, mappings))


def canonical_errors(errors: dict[Any, BaseException]) -> dict[Any, Any]:
    return {k: prop_tasks.canonical(v) for k, v in errors.items()}


def load_or_refuse(doc: Doc) -> Any:
    """The loaded graph, or None when aioflow refuses it, which it may only do for an input conflict."""
    try:
        return load(doc)
    except GraphError:
        assert predicts_conflict(doc), "aioflow refused a graph without input conflicts"
        event("refused: input conflict")
        return None


def assert_same_execution(doc: Doc, workers: int, compare_executions: bool) -> None:
    """aioflow and the reference agree on every output, error and (optionally) execution count."""
    graph = load_or_refuse(doc)
    if graph is None:
        return
    ref = run_reference(graph, doc)
    if ref is None:
        event("refused: cannot run")
        with pytest.raises(GraphError):
            run_aioflow(doc, max_workers=workers)
        return
    event(
        f"firings: {len(ref.log) // 10 * 10}+, errors: {bool(ref.errors)}, loops: {max(ref.executions.values(), default=0) > 1}"
    )
    got = run_aioflow(
        doc,
        max_workers=workers,
        outputs=[{"all": True}],
        merge_outputs=False,
        raise_on_error=False,
        max_iterations=BUDGET + 1,
    )
    expected = reference.select_outputs(graph, ref, [{"all": True}], merge_outputs=False)
    assert prop_tasks.canonical(dict(got)) == prop_tasks.canonical(expected)
    assert canonical_errors(got.errors) == canonical_errors(ref.errors)
    if compare_executions:
        assert got.executions == ref.executions
    merged = run_aioflow(doc, max_workers=workers, raise_on_error=False, max_iterations=BUDGET + 1)
    assert prop_tasks.canonical(dict(merged)) == prop_tasks.canonical(reference.select_outputs(graph, ref))


# --------------------------------------------------------------------------- analysis


@ANALYSIS
@given(dags())
def test_dag_analysis_matches_definitions(doc: Doc) -> None:
    """On a DAG: start nodes have no predecessors, end nodes no successors, no cycle, order respects links."""
    graph = load(doc)
    preds = {n: {lk.source for lk in graph.links if lk.target == n} for n in graph.nodes}
    succs = {n: {lk.target for lk in graph.links if lk.source == n} for n in graph.nodes}
    assert set(graph.start_nodes) == {n for n in graph.nodes if not preds[n]}
    assert set(graph.end_nodes) == {n for n in graph.nodes if not succs[n]}
    assert graph.cycles == ()
    order = graph.analysis.order
    assert sorted(order) == sorted(graph.nodes)
    position = {n: i for i, n in enumerate(order)}
    assert all(position[lk.source] < position[lk.target] for lk in graph.links)
    assert list(order) == reference.stable_order(graph)
    assert list(graph.start_nodes) == reference.start_nodes(graph)
    assert list(graph.end_nodes) == reference.end_nodes(graph)


@ANALYSIS
@given(digraphs())
def test_cycles_are_reported_exactly_when_they_exist(doc: Doc) -> None:
    """graph.cycles is non-empty iff a cycle exists; each is a maximal set of mutually reachable nodes."""
    graph = load(doc)
    assert bool(graph.cycles) == reference.has_cycle(graph)
    reach = {n: reference.reachable(graph, n) for n in graph.nodes}
    for cycle in graph.cycles:
        assert all(b in reach[a] for a in cycle for b in cycle)
    expected = {frozenset(c) for c in reference.cyclic_components(graph)}
    assert {frozenset(c) for c in graph.cycles} == expected
    members = [n for cycle in graph.cycles for n in cycle]
    assert len(members) == len(set(members))
    assert list(graph.analysis.order) == reference.stable_order(graph)


@ANALYSIS
@given(digraphs(attributes=True))
def test_requiredness_matches_the_ancestor_walk(doc: Doc) -> None:
    """link_required, start/end nodes and blocked cycles equal the naive definitions (spec §3.5, §4)."""
    graph = load(doc)
    assert list(graph.analysis.link_required) == reference.link_required(graph)
    assert list(graph.start_nodes) == reference.start_nodes(graph)
    assert list(graph.end_nodes) == reference.end_nodes(graph)
    assert {frozenset(c) for c in graph.analysis.blocked_cycles} == {
        frozenset(c) for c in reference.blocked_cycles(graph)
    }


@ANALYSIS
@given(executable_graphs(max_nodes=10))
def test_input_conflicts_are_refused_exactly_when_required_links_collide(doc: Doc) -> None:
    """Loading fails iff two data_mapping items of required links write one input of a node (spec §4.3)."""
    doc = {k: v for k, v in doc.items() if k != "startargs"}
    if predicts_conflict(doc):
        with pytest.raises(GraphError) as info:
            aioflow.load_graph(doc)
        assert all("through required links" in p for p in info.value.problems)
    else:
        aioflow.load_graph(doc)


# --------------------------------------------------------------------------- execution

# Two required map_all_data links write the input return_value of n3. n2's
# link comes later in the document, but n1 (behind n0) delivers later: the
# merge must follow the link order (spec §6.3), not the delivery order.
LINK_ORDER_DOC: Doc = {
    "graph": {"id": "link_order"},
    "nodes": [make_node(i) for i in range(4)],
    "links": [
        {"source": "n0", "target": "n1", "map_all_data": True},
        {"source": "n1", "target": "n3", "map_all_data": True},
        {"source": "n2", "target": "n3", "map_all_data": True},
    ],
    "startargs": None,
}

# The same with optional links that cache their data (cache_if_optional):
# "optional cached inputs are cached like required inputs", in link order too.
LINK_ORDER_CACHED_DOC: Doc = {
    **LINK_ORDER_DOC,
    "links": [
        LINK_ORDER_DOC["links"][0],
        *({**lk, "required": False, "cache_if_optional": True} for lk in LINK_ORDER_DOC["links"][1:]),
    ],
}


@EXECUTION
@given(dags(max_nodes=25), st.sampled_from([None, {"s": 3}]))
@example({k: v for k, v in LINK_ORDER_DOC.items() if k != "startargs"}, None)
def test_dag_execution_matches_reference(doc: Doc, startargs: dict[str, Any] | None) -> None:
    """On a DAG of required links, two workers give the reference's results, merged or not."""
    doc = {**doc, "startargs": startargs}
    assert_same_execution(doc, workers=2, compare_executions=True)


@EXECUTION
@given(executable_graphs(max_nodes=16, loops=True))
@example(LINK_ORDER_DOC)
@example(LINK_ORDER_CACHED_DOC)
def test_sequential_execution_with_conditions_and_loops_matches_reference(doc: Doc) -> None:
    """With one worker, results, errors and executions per node equal the reference's exactly."""
    assert_same_execution(doc, workers=1, compare_executions=True)


def timing_independent(doc: Doc) -> Doc:
    """Keep one in-link on every node that has several and an optional one.

    Then every node runs at most once, with inputs that do not depend on
    which worker finishes first.
    """
    graph = load(doc)
    required = reference.link_required(graph)
    by_pair = {(lk.source, lk.target): r for lk, r in zip(graph.links, required, strict=True)}
    kept = []
    seen_targets: set[Any] = set()
    for link in doc["links"]:
        target = link["target"]
        ins = [lk for lk in doc["links"] if lk["target"] == target]
        if len(ins) > 1 and not all(by_pair[(lk["source"], lk["target"])] for lk in ins):
            if target in seen_targets:
                continue
            seen_targets.add(target)
        kept.append(link)
    return {**doc, "links": kept}


@EXECUTION
@given(executable_graphs(max_nodes=16, loops=False, parallel_safe=True))
@example(LINK_ORDER_DOC)
def test_parallel_execution_of_conditional_dags_matches_reference(doc: Doc) -> None:
    """On DAGs with conditions whose outcome cannot depend on timing, two workers give the reference's results."""
    try:
        doc = timing_independent(doc)
    except GraphError:  # an input conflict: refusing it is tested on its own
        event("refused: input conflict")
        return
    assert_same_execution(doc, workers=2, compare_executions=True)


# --------------------------------------------------------------------------- hand-written examples


def compare_one(doc: Doc, workers: int = 1) -> tuple[aioflow.Results, reference.RefResult]:
    """Run a hand-written document through both; they must agree. Returns both results."""
    graph = load(doc)
    ref = reference.evaluate(graph, startargs=doc.get("startargs"), budget=BUDGET)
    got = run_aioflow(doc, max_workers=workers, outputs=[{"all": True}], merge_outputs=False, raise_on_error=False)
    assert prop_tasks.canonical(dict(got)) == prop_tasks.canonical(
        reference.select_outputs(graph, ref, [{"all": True}], merge_outputs=False)
    )
    assert got.executions == ref.executions
    assert canonical_errors(got.errors) == canonical_errors(ref.errors)
    return got, ref


def test_timing_example_of_ppf_test_17() -> None:
    """t1->t2->t3 --[value==3]--> t4->t5->t2: t2 runs twice, the second time with t5's data over t1's."""
    doc = {
        "graph": {"id": "test17"},
        "nodes": [ppf(f"t{i}") for i in range(1, 6)],
        "links": [
            all_data("t1", "t2"),
            all_data("t2", "t3"),
            all_data("t3", "t4", conditions=[{"source_output": "value", "value": 3}]),
            all_data("t4", "t5"),
            all_data("t5", "t2"),
        ],
    }
    graph = load(doc)
    # t2 is inside the loop closed through the conditional t3->t4: t2->t3 is optional too (spec §3.5).
    assert list(graph.analysis.link_required) == [True, False, False, False, False]
    got, ref = compare_one(doc)
    assert got.executions == {"t1": 1, "t2": 2, "t3": 2, "t4": 1, "t5": 1}
    assert got["t2"] == {"_ppfdict": {"value": 6}}
    assert [inputs for node_id, inputs in ref.log if node_id == "t2"] == [
        {"_ppfdict": {"value": 1}},
        {"_ppfdict": {"value": 5}},
    ]
    # Every node has a successor: the end node is t3, whose condition is uncovered (spec §4.2).
    assert graph.end_nodes == ("t3",)
    assert run_aioflow(doc, max_workers=1) == {"_ppfdict": {"value": 7}}


@pytest.mark.parametrize(("d", "branch"), [(7, "small"), (13, "big"), (5, "other"), ("__other__", "other")])
def test_else_value_routing_of_spec_3_3(d: Any, branch: str) -> None:
    """The else-valued link is taken when d equals the else value or none of the other values (spec §3.3)."""
    route = ppf(
        "route", "prop_tasks.ppf_route", conditions_else_value="__other__", default_inputs=[{"name": "d", "value": d}]
    )
    doc = {
        "graph": {"id": "routing"},
        "nodes": [route, *(ppf(name, "prop_tasks.ppf_route") for name in ("small", "big", "other"))],
        "links": [
            all_data("route", "small", conditions=[{"source_output": "d", "value": 7}]),
            all_data("route", "big", conditions=[{"source_output": "d", "value": 13}]),
            all_data("route", "other", conditions=[{"source_output": "d", "value": "__other__"}]),
        ],
    }
    got, _ = compare_one(doc)
    assert got.executions == {"route": 1, branch: 1}


def test_buffered_optional_triggers_fire_once_each() -> None:
    """Optional triggers buffered before the required one give one firing each; later ones replace the retained one."""
    to_o = [{"source_output": "return_value", "target_input": "o"}]
    doc = {
        "graph": {"id": "buffered"},
        "nodes": [
            method_node("o1", default_inputs=[{"name": "me", "value": 1}]),
            method_node("o2", default_inputs=[{"name": "me", "value": 2}]),
            method_node("slow1"),
            method_node("slow2"),
            method_node("r"),
            method_node("late"),
            method_node("t"),
        ],
        "links": [
            {"source": "o1", "target": "t", "required": False, "data_mapping": to_o},
            {"source": "o2", "target": "t", "required": False, "data_mapping": to_o},
            {"source": "slow1", "target": "slow2"},
            {"source": "slow2", "target": "r"},
            {"source": "r", "target": "t", "data_mapping": [{"source_output": "return_value", "target_input": "r"}]},
            {"source": "r", "target": "late"},
            {"source": "late", "target": "t", "required": False},
        ],
    }
    got, ref = compare_one(doc)
    assert got.executions["t"] == 3
    t_inputs = [inputs for node_id, inputs in ref.log if node_id == "t"]
    assert [sorted(i) for i in t_inputs] == [["o", "r"], ["o", "r"], ["r"]]
    assert [t_inputs[0]["o"], t_inputs[1]["o"]] == [got["o1"]["return_value"], got["o2"]["return_value"]]


def test_required_caches_merge_in_link_order() -> None:
    """Two required links writing one input: the later link in the document wins, whoever delivers first."""
    doc = {
        "graph": {"id": "order"},
        "nodes": [
            method_node("a", default_inputs=[{"name": "me", "value": 1}]),
            method_node("a2"),
            method_node("b", default_inputs=[{"name": "me", "value": 2}]),
            method_node("t", "prop_tasks.pick"),
        ],
        "links": [
            {"source": "a", "target": "a2", "map_all_data": True},
            {"source": "a2", "target": "t", "map_all_data": True},
            {"source": "b", "target": "t", "map_all_data": True},
        ],
    }
    graph = load(doc)
    ref = reference.evaluate(graph)
    # b delivers to t before a2 does, but its link comes later in the document.
    assert [n for n, _ in ref.log] == ["a", "b", "a2", "t"]
    got, _ = compare_one(doc)
    assert got["t"] == {"return_value": got["b"]["return_value"]}
    assert got["b"] != got["a2"]


def test_on_error_link_passes_dynamic_inputs_and_the_exception() -> None:
    """An on_error link delivers the failed task's dynamic inputs plus WorkflowException(Instance) (spec §3.4)."""
    doc = {
        "graph": {"id": "errors"},
        "nodes": [
            make_node(0),
            method_node("n1", "prop_tasks.always_fail", default_inputs=[{"name": "unused", "value": 9}]),
            make_node(2, "ppfmethod"),
        ],
        "links": [
            {"source": "n0", "target": "n1", "data_mapping": [{"source_output": "return_value", "target_input": "x"}]},
            {"source": "n1", "target": "n2", "on_error": True, "map_all_data": True},
        ],
    }
    got, _ = compare_one(doc)
    ppfdict = got["n2"]["_ppfdict"]
    assert isinstance(ppfdict["WorkflowExceptionInstance"], prop_tasks.NodeFailure)
    assert ppfdict["WorkflowException"]["errorMessage"] == str(ppfdict["WorkflowExceptionInstance"])
    assert all(isinstance(line, str) for line in ppfdict["WorkflowException"]["traceBack"])
    assert "unused" not in ppfdict  # default inputs of the failed task are not passed on
    assert ppfdict["x"] == got["n0"]["return_value"]
    assert got["n1"] == {}
    assert got.errors == {}


@pytest.mark.parametrize(
    ("values", "covered"),
    [((2, None), True), ((True, False), True), ((1, 0), True), ((True, 2), False), ((2, 3), False)],
)
def test_end_node_fallback_covers_booleans_by_their_negation(values: tuple[Any, Any], covered: bool) -> None:
    """Without pure end nodes, a node is an end node when some condition value is uncovered;
    True and False cover each other (aioflow's decision, docs/graph-format.md)."""
    doc = {
        "nodes": [method_node("a"), method_node("b"), method_node("c")],
        "links": [
            {"source": "a", "target": "b", "conditions": [{"source_output": "return_value", "value": values[0]}]},
            {"source": "a", "target": "c", "conditions": [{"source_output": "return_value", "value": values[1]}]},
            {"source": "b", "target": "a"},
            {"source": "c", "target": "a"},
        ],
    }
    graph = load(doc)
    assert reference.end_nodes(graph) == ([] if covered else ["a"])
    assert list(graph.end_nodes) == reference.end_nodes(graph)


def test_missing_output_arrives_as_missing() -> None:
    """A data_mapping of an output the source lacks passes MISSING, which a method drops (spec §3.2, §5.2)."""
    doc = {
        "nodes": [make_node(0), make_node(1)],
        "links": [{"source": "n0", "target": "n1", "data_mapping": [{"source_output": "nope", "target_input": "x"}]}],
    }
    _, ref = compare_one(doc)
    assert ref.log[1][1]["x"] is MISSING


@pytest.mark.parametrize("merge_outputs", [False, True])
def test_output_selectors_match_reference(merge_outputs: bool) -> None:
    """outputs= by id, label and name/new_name select what the reference selects (spec §6.6)."""
    doc = {
        "nodes": [make_node(0), make_node(1, label="second"), make_node(2)],
        "links": [all_data("n0", "n1"), all_data("n0", "n2")],
    }
    graph = load(doc)
    ref = reference.evaluate(graph)
    selections: list[list[dict[str, Any]] | None] = [
        [{"id": "n1"}],
        [{"label": "second", "name": "return_value", "new_name": "renamed"}],
        [{"id": "n2", "name": "nope"}],
        [{"all": True}, {"id": "n0", "name": "return_value", "new_name": "first"}],
        [],
        None,
    ]
    for outputs in selections:
        got = run_aioflow(doc, max_workers=1, outputs=outputs, merge_outputs=merge_outputs)
        assert dict(got) == reference.select_outputs(graph, ref, outputs, merge_outputs), outputs
