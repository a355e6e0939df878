"""The default result of the Ewoks doors is ewoksppf's, and the same on every run (aioflow/ewoks/_result.py)."""

from __future__ import annotations

from typing import Any

from ewoks.bindings import execute_graph as ewoks_execute_graph
from ewokscore.tests.examples.graphs import get_graph
from ewoksutils.exceptions import TaskExecutionError

import aioflow
import aioflow.ewoks

TASKS = "examples.ewoks.tasks"
SUM = "ewokscore.tests.examples.tasks.sumtask.SumTask"


def class_node(node_id: str, identifier: str, **defaults: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "task_type": "class",
        "task_identifier": identifier,
        "default_inputs": [{"name": k, "value": v} for k, v in defaults.items()],
    }


def link(source: str, target: str, output: str, input_: str) -> dict[str, Any]:
    return {"source": source, "target": target, "data_mapping": [{"source_output": output, "target_input": input_}]}


def test_the_end_node_that_ran_last_gives_the_result() -> None:
    """triangle1: every node of the loop is an end node, and task2 ends the loop with 10, as under ewoksppf.

    aioflow's own door merges the end nodes in the graph's stable order instead, so task3's 9 comes last there.
    """
    graph, _ = get_graph("triangle1")
    assert ewoks_execute_graph(graph, engine="aioflow", pool_type="thread") == {"result": 10, "too_small": False}
    assert aioflow.ewoks.execute_graph(graph, pool_type="thread") == {"result": 10, "too_small": False}
    assert aioflow.execute_graph(graph, pool_type="thread") == {"result": 9, "too_small": True}


def test_end_nodes_with_other_outputs_are_all_in_the_result() -> None:
    """Outputs only another end node has are kept, as in ewokscore's expected results."""
    graph = {
        "graph": {"id": "two_ends"},
        "nodes": [
            class_node("add", f"{TASKS}.Add", a=3),
            class_node("split", f"{TASKS}.Split"),
            class_node("more", f"{TASKS}.Add", b=1),
        ],
        "links": [link("add", "split", "result", "value"), link("add", "more", "result", "a")],
    }
    result = ewoks_execute_graph(graph, engine="aioflow", pool_type="thread")
    assert result == {"half": 1, "rest": 1, "result": 4}


def test_in_an_acyclic_graph_the_deeper_end_node_comes_last_whatever_finishes_last() -> None:
    """Every node runs once: the graph's order (predecessors first) stands for the order they ran in.

    "slow" finishes last, yet "after", one link deeper, gives the result on every run.
    """
    graph = {
        "graph": {"id": "depths"},
        "nodes": [
            class_node("slow", SUM, a=100, delay=0.2),
            class_node("first", SUM, a=1),
            class_node("after", SUM, b=1),
        ],
        "links": [link("first", "after", "result", "a")],
    }
    assert ewoks_execute_graph(graph, engine="aioflow", pool_type="thread") == {"result": 2}


def test_with_no_successful_end_node_the_first_failure_is_the_result() -> None:
    """raise_on_error=False: the failed call's link inputs, WorkflowException and WorkflowExceptionInstance."""
    graph = {
        "graph": {"id": "failing"},
        "nodes": [class_node("add", f"{TASKS}.Add", a=1), class_node("fail", f"{TASKS}.Fail")],
        "links": [link("add", "fail", "result", "message")],
    }
    result = ewoks_execute_graph(graph, engine="aioflow", pool_type="thread", raise_on_error=False)
    assert set(result) == {"message", "WorkflowException", "WorkflowExceptionInstance"}
    assert result["message"] == 1
    error = result["WorkflowExceptionInstance"]
    assert isinstance(error, TaskExecutionError)
    assert str(error).startswith("Execution failed for ewoks task 'fail'")
    assert result["WorkflowException"]["errorMessage"] == str(error)
    assert "ValueError: 1" in "".join(result["WorkflowException"]["traceBack"])


def test_a_failure_of_a_plain_function_is_ewokscores_error_in_the_result() -> None:
    """A ``method`` task on aioflow's fast path fails with ewokscore's error too, its own exception as cause."""
    graph = {
        "graph": {"id": "failing"},
        "nodes": [{"id": "boom", "task_type": "method", "task_identifier": "tasks.fail"}],
    }
    result = aioflow.ewoks.execute_graph(graph, pool_type="thread", raise_on_error=False)
    error = result["WorkflowExceptionInstance"]
    assert isinstance(error, TaskExecutionError)
    assert "Execution failed for ewoks task 'boom'" in str(error)
    assert isinstance(error.__cause__, ValueError)
    assert set(result.errors) == {"boom"}


def test_a_successful_end_node_gives_the_result_beside_a_failure() -> None:
    """As under ewoksppf, an end node's success is the result; aioflow.ewoks.execute_graph names the failure."""
    graph = {
        "graph": {"id": "partly"},
        "nodes": [class_node("fail", f"{TASKS}.Fail", message="no"), class_node("add", f"{TASKS}.Add", a=5)],
    }
    result = aioflow.ewoks.execute_graph(graph, pool_type="thread", raise_on_error=False)
    assert result == {"result": 5}
    assert set(result.errors) == {"fail"}
