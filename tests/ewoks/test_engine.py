"""aioflow as an Ewoks engine: the ewoksppf-compatible door, the entry point, the ewoks CLI."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import ewokscore
import pytest
from ewoks.bindings import execute_graph as ewoks_execute_graph
from ewokscore.missing_data import MISSING_DATA
from ewoksutils.exceptions import TaskExecutionError, TaskInputError

import aioflow
import aioflow.ewoks

REPO = Path(__file__).resolve().parents[2]
SUM_CHAIN = REPO / "examples" / "ewoks" / "sum_chain.json"
TASKS = "examples.ewoks.tasks"

PPF_GRAPH = {
    "graph": {"id": "mixed"},
    "nodes": [
        {
            "id": "a",
            "task_type": "method",
            "task_identifier": "tasks.add",
            "default_inputs": [{"name": "a", "value": 1}],
        },
        {"id": "b", "task_type": "ppfmethod", "task_identifier": "tasks.ppf_add"},
    ],
    "links": [{"source": "a", "target": "b", "data_mapping": [{"source_output": "return_value", "target_input": "b"}]}],
}


def class_node(node_id: str, name: str, **defaults: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "task_type": "class",
        "task_identifier": f"{TASKS}.{name}",
        "default_inputs": [{"name": k, "value": v} for k, v in defaults.items()],
    }


def link(source: str, target: str, output: str, input_: str) -> dict[str, Any]:
    return {"source": source, "target": target, "data_mapping": [{"source_output": output, "target_input": input_}]}


def test_import_aioflow_does_not_import_ewokscore() -> None:
    """``import aioflow`` (and its lazy names) loads neither ewokscore nor aioflow.ewoks."""
    code = (
        "import sys, aioflow; aioflow.execute_graph; aioflow.load_graph; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ewokscore', 'ewoks', 'networkx') "
        "or m.startswith('aioflow.ewoks')); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_method_and_ppfmethod_graph_gives_aioflows_results() -> None:
    """The ewoksppf-compatible door returns what aioflow's own door returns for plain tasks."""
    expected = aioflow.execute_graph(copy.deepcopy(PPF_GRAPH), pool_type="thread")
    result = aioflow.ewoks.execute_graph(copy.deepcopy(PPF_GRAPH), pool_type="thread")
    assert result == expected
    assert "_ppfdict" in result


def test_every_ppf_keyword_is_accepted() -> None:
    """Each keyword of ewoksppf.execute_graph is accepted; the pypushflow-only ones change nothing."""
    result = aioflow.ewoks.execute_graph(
        copy.deepcopy(PPF_GRAPH),
        inputs=[{"id": "a", "name": "a", "value": 5}],
        load_options={},
        pre_import=True,
        stop_on_signals=True,
        forced_interruption=True,
        stop_signals=[15],
        db_options={"db_type": "memory"},
        startargs={},
        raise_on_error=True,
        outputs=None,
        merge_outputs=True,
        timeout=60,
        varinfo=None,
        execinfo=None,
        task_options=None,
        max_workers=0,
        scaling_workers=False,
        pool_type="process",
        pool_options={"context": "spawn"},
    )
    expected = aioflow.execute_graph(
        copy.deepcopy(PPF_GRAPH), inputs=[{"id": "a", "name": "a", "value": 5}], pool_type="thread"
    )
    assert result == expected


def test_unknown_keyword_is_refused_by_name() -> None:
    """A keyword neither ewoksppf nor aioflow knows is an error naming it, not a silent pool option."""
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) 'max_worker'"):
        aioflow.ewoks.execute_graph(copy.deepcopy(PPF_GRAPH), max_worker=2)


def test_outputs_empty_list_returns_empty_dict() -> None:
    """``outputs=[]`` (the ewoks CLI default) runs the graph and returns ``{}``, never ``None``."""
    result = aioflow.ewoks.execute_graph(copy.deepcopy(PPF_GRAPH), outputs=[], pool_type="thread")
    assert result == {}
    assert result.executions == {"a": 1, "b": 1}


def test_a_name_a_node_lacks_is_missing_data() -> None:
    """A selected output the node never set is ewokscore's MISSING_DATA, as in ewokscore."""
    graph = {"nodes": [class_node("s", "Split", value=4)]}
    result = aioflow.ewoks.execute_graph(
        graph, outputs=[{"id": "s", "name": "rest"}, {"id": "s", "name": "half"}], pool_type="thread"
    )
    assert result == {"rest": MISSING_DATA, "half": 2}


@pytest.mark.parametrize(
    "pool",
    [
        pytest.param({"pool_type": "thread"}, id="thread"),
        pytest.param({"pool_type": "process", "context": "spawn"}, id="process-spawn"),
        pytest.param({"pool_type": "process", "context": "fork"}, id="process-fork"),
        pytest.param({"pool_type": "process", "context": "forkserver"}, id="process-forkserver"),
        pytest.param({"pool_type": "ndprocess"}, id="ndprocess"),
        pytest.param({"pool_type": "multiprocessing"}, id="multiprocessing"),
        pytest.param({"pool_type": "billiard"}, id="billiard"),
    ],
)
def test_class_tasks_run_in_every_pool(pool: dict[str, Any]) -> None:
    """ewokscore Task subclasses are instantiated and run in the worker; unset outputs are left out."""
    graph = {
        "graph": {"id": "classes"},
        "nodes": [class_node("add", "Add", a=4, b=3), class_node("split", "Split")],
        "links": [link("add", "split", "result", "value")],
    }
    result = aioflow.execute_graph(graph, outputs=[{"all": True}], merge_outputs=False, max_workers=2, **pool)
    assert result == {"add": {"result": 7}, "split": {"half": 3, "rest": 1}}
    even = aioflow.execute_graph(
        graph, inputs=[{"id": "add", "name": "b", "value": 4}], outputs=[{"id": "split"}], max_workers=1, **pool
    )
    assert even == {"half": 4}


def test_class_task_failure_names_the_node() -> None:
    """run() raising fails the node with ewokscore's TaskExecutionError; the ewoks door raises that error."""
    graph = {"graph": {"id": "failing"}, "nodes": [class_node("boom", "Fail", message="no luck")]}
    with pytest.raises(aioflow.NodeError, match=r"node 'boom' failed: TaskExecutionError: .*no luck") as info:
        aioflow.execute_graph(graph, pool_type="process", context="spawn", max_workers=1)
    assert isinstance(info.value.error, TaskExecutionError)
    with pytest.raises(TaskExecutionError, match=r"Execution failed for ewoks task 'boom' .*no luck"):
        aioflow.ewoks.execute_graph(graph, pool_type="thread")


def test_method_failure_raises_ewokscores_error_from_the_ewoks_door() -> None:
    """A fast-path task's failure is reported as ewokscore's engines report it, naming the node."""
    graph = {"nodes": [{"id": "m", "task_type": "method", "task_identifier": "tasks.fail"}]}
    with pytest.raises(TaskExecutionError, match=r"ewoks task 'm' \(id: 'm', task: 'tasks.fail'\)") as info:
        aioflow.ewoks.execute_graph(graph, pool_type="thread")
    assert info.value.__cause__ is not None


def test_missing_required_input_fails_the_node_even_without_raise_on_error() -> None:
    """A class node without a required input fails with an input error; its successors do not run."""
    graph = {
        "graph": {"id": "missing"},
        "nodes": [class_node("add", "Add"), class_node("next", "Add")],
        "links": [link("add", "next", "result", "a")],
    }
    result = aioflow.execute_graph(graph, raise_on_error=False, pool_type="thread")
    assert set(result.errors) == {"add"}
    assert isinstance(result.errors["add"], TaskInputError)
    assert "'add'" in str(result.errors["add"])
    assert "next" not in result.executions
    with pytest.raises(TaskInputError, match=r"Missing inputs for ewoks task 'add'"):
        aioflow.ewoks.execute_graph(graph, pool_type="thread")


def test_class_start_nodes_follow_ewokscore_when_every_node_has_a_predecessor() -> None:
    """In a cycle without a start node, class nodes whose required inputs are defaults start it (triangle1)."""
    from ewokscore.tests.examples.graphs import get_graph

    graph, _ = get_graph("triangle1")
    result = aioflow.ewoks.execute_graph(graph, pool_type="thread", outputs=[{"id": "task2"}])
    assert result == {"result": 10, "too_small": False}
    assert result.executions == {"task1": 5, "task2": 5, "task3": 4}


def test_pre_import_refuses_an_unknown_task_before_running() -> None:
    """``pre_import=True`` imports every task first: an unknown one is a GraphError naming the node."""
    graph = {"nodes": [class_node("x", "NoSuchTask")]}
    with pytest.raises(aioflow.GraphError, match=r"node 'x': cannot import 'examples.ewoks.tasks.NoSuchTask'"):
        aioflow.ewoks.execute_graph(graph, pre_import=True, pool_type="thread")


@pytest.mark.parametrize("name", ["acyclic1", "acyclic2", "acyclic3", "cyclic1", "demo", "empty", "triangle1"])
def test_taskgraph_converts_to_the_graph_aioflow_loads(name: str) -> None:
    """A TaskGraph loaded by ewokscore converts to the nodes and links aioflow loads from the source."""
    from ewokscore.tests.examples.graphs import get_graph

    from aioflow.ewoks._convert import from_taskgraph

    source, _ = get_graph(name)
    converted = from_taskgraph(ewokscore.load_graph(copy.deepcopy(source)))
    direct = aioflow.load_graph(source)
    assert (converted.id, dict(converted.nodes)) == (direct.id, dict(direct.nodes))
    assert sorted(map(repr, converted.links)) == sorted(map(repr, direct.links))


@pytest.mark.parametrize("model", ["model1", "model2"])
def test_taskgraph_with_subgraphs_and_default_handlers_is_not_wired_twice(model: str) -> None:
    """Tuple ids from subgraphs and ewokscore's default error links come through exactly once."""
    from ewokscore.tests import test_default_error_handlers as handlers

    from aioflow.ewoks._convert import from_taskgraph

    source = getattr(handlers, model)()
    taskgraph = ewokscore.load_graph(copy.deepcopy(source))
    converted = from_taskgraph(taskgraph)
    direct = aioflow.load_graph(source)
    assert dict(converted.nodes) == dict(direct.nodes)
    assert sorted(map(repr, converted.links)) == sorted(map(repr, direct.links))
    assert len(converted.links) == len(direct.links) == taskgraph.graph.number_of_edges()
    assert any(isinstance(n, tuple) for n in converted.nodes)


def test_engine_entry_point_in_process() -> None:
    """``ewoks.execute_graph(..., engine="aioflow")`` runs on aioflow and returns a plain dict."""
    result = ewoks_execute_graph(
        str(SUM_CHAIN), engine="aioflow", inputs=[{"id": "first", "name": "a", "value": 5}], pool_type="thread"
    )
    assert type(result) is dict
    assert result == {"return_value": 2 * (5 + 2 + 10)}


def test_engine_accepts_a_raw_source_with_inputs() -> None:
    """The engine object also takes a dict and ``inputs`` directly, as ewoksppf's tests call it."""
    from ewoks._engines import get_execution_engine

    engine = get_execution_engine("aioflow")
    assert type(engine).__name__ == "AioflowWorkflowEngine"
    graph = {"nodes": [class_node("add", "Add", b=1)]}
    assert engine.execute_graph(graph, inputs=[{"name": "a", "value": 41}], pool_type="thread") == {"result": 42}


def test_ewoks_cli_executes_with_the_aioflow_engine(tmp_path: Path) -> None:
    """``ewoks execute examples/ewoks/sum_chain.json --engine aioflow`` prints the results and exits 0."""
    command = [
        sys.executable,
        "-m",
        "ewoks",
        "execute",
        str(SUM_CHAIN),
        "--engine",
        "aioflow",
        "--outputs",
        "end",
        "--merge-outputs",
        "-p",
        "first:a=5",
        "-o",
        "pool_type=process",
    ]
    out = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "{'return_value': 34}" in out.stdout
    assert out.stdout.rstrip().endswith("FINISHED")


def test_ewoks_cli_reports_a_failed_node(tmp_path: Path) -> None:
    """A failing node makes ``ewoks execute --engine aioflow`` print FAILED and exit 1."""
    graph = tmp_path / "failing.json"
    graph.write_text(
        '{"graph": {"id": "failing"}, "nodes": [{"id": "boom", "task_type": "class",'
        ' "task_identifier": "examples.ewoks.tasks.Fail", "default_inputs": [{"name": "message", "value": "no luck"}]}]}'
    )
    command = [sys.executable, "-m", "ewoks", "execute", str(graph), "--engine", "aioflow"]
    out = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 1
    assert "FAILED" in out.stdout
    assert "Execution failed for ewoks task 'boom'" in out.stderr


@pytest.mark.parametrize("pool_type", ["thread", "process"])
def test_generated_tasks_build_their_class_in_the_worker(pool_type: str) -> None:
    """A ``generated`` node's class comes from its ``task_generator``, called in the worker."""
    graph = {
        "nodes": [
            {
                "id": "g",
                "task_type": "generated",
                "task_identifier": "times3",
                "task_generator": f"{TASKS}.scaling_task",
                "default_inputs": [{"name": "x", "value": 5}],
            }
        ]
    }
    assert aioflow.execute_graph(graph, pool_type=pool_type, max_workers=1) == {"result": 15}


def test_notebook_tasks_are_run_by_ewokscore() -> None:
    """A ``notebook`` node runs through ewokscore's notebook task: its failure is ewokscore's, naming the node."""
    graph = {
        "graph": {"id": "nb"},
        "nodes": [{"id": "nb", "task_type": "notebook", "task_identifier": "/no/such.ipynb"}],
    }
    with pytest.raises(aioflow.NodeError, match=r"node 'nb' failed") as info:
        aioflow.execute_graph(graph, pool_type="thread")
    assert isinstance(info.value.error, TaskExecutionError)
    assert "ewoks task 'nb'" in str(info.value.error)
