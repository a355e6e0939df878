"""The default result of the Ewoks doors: ewoksppf's, the same on every run.

ewoksppf's stop actor receives the outputs of every end-node execution that
succeeds, and, for every failure that no ``on_error`` link handles, the
failed call's link inputs plus ``WorkflowException`` and
``WorkflowExceptionInstance``. It keeps the last success, or the first error
when no end node ever succeeded. There, which end node finishes last is a
matter of timing; here it is read from aioflow's execution state, whose
order does not depend on timing:

- the end nodes whose last execution succeeded give their last outputs,
  merged in the order those executions were handed to the state machine
  (`ExecutionState.finished`), so the end node that ran last wins every key
  it has. ewoksppf keeps that node's outputs only; ewokscore's expected
  results merge every end node, which this gives too where their outputs
  differ;
- when no end node succeeded: the data of the first failure that no
  ``on_error`` link handled (`ExecutionState.error_data`), its exception
  being ewokscore's error for the node, as ewoksppf's;
- else ``{}``.

Where the order of outcomes cannot change what fires (an acyclic graph
whose links are all required), aioflow hands them over as they finish, and
every node runs at most once: the graph's stable order, predecessors first,
stands in for the order they ran in.

`PpfResult` gives this result to a run of the engine, as an execution hook.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from ewoksutils.exceptions import TaskError, TaskExecutionError

from .._results import Results
from ..scheduler import ExecutionHooks

if TYPE_CHECKING:
    from ..graph import Graph, NodeId
    from ..scheduler._state import ExecutionState

__all__ = ["PpfResult", "ewoks_error", "ppf_result"]


class PpfResult(ExecutionHooks):
    """The execution hook that makes a run's results ewoksppf's (`ppf_result`)."""

    def results(self, state: ExecutionState) -> Results:
        return ppf_result(state)


def ppf_result(state: ExecutionState) -> Results:
    """ewoksppf's default result of an execution, from its state (see the module docstring)."""
    graph = state.graph
    ends = set(graph.end_nodes)
    succeeded = [nid for nid, ok in state.finished.items() if ok and nid in ends]
    failed = list(state.error_data)
    if not state.order_matters:
        position = {nid: i for i, nid in enumerate(graph.analysis.order)}
        succeeded.sort(key=position.__getitem__)
        failed.sort(key=position.__getitem__)
    data: dict[Any, Any] = {}
    if succeeded:
        for nid in succeeded:
            data.update(state.outputs[nid])
    elif failed:
        data = _failure_data(graph, failed[0], state.error_data[failed[0]])
    return Results(data, errors=dict(state.errors), executions=dict(state.executions))


def _failure_data(graph: Graph, node_id: NodeId, data: dict[Any, Any]) -> dict[Any, Any]:
    """A failure's data, with the exception ewokscore raises for it, as ewoksppf returns it."""
    error = data["WorkflowExceptionInstance"]
    wrapped = ewoks_error(graph, node_id, error)
    if wrapped is error:
        return dict(data)
    exception = {"errorMessage": str(wrapped), "traceBack": traceback.format_exception(wrapped)}
    return {**data, "WorkflowException": exception, "WorkflowExceptionInstance": wrapped}


def ewoks_error(graph: Graph, node_id: NodeId, error: BaseException) -> BaseException:
    """The error ewokscore's engines give for this failure of ``node_id``: the task's own ewokscore error.

    Tasks run by ewokscore raise it already; a task on aioflow's fast path gets
    the message ewokscore would have written, and its exception as ``__cause__``.
    """
    already_ewokscore = isinstance(error, TaskError)
    if already_ewokscore:
        return error
    node = graph.nodes.get(node_id)
    label = node.label if node is not None else str(node_id)
    task = node.task_identifier if node is not None else None
    msg = f"Execution failed for ewoks task {label!r} (id: {node_id!r}, task: {task!r}): {error}"
    wrapped: BaseException = TaskExecutionError(msg)
    wrapped.__cause__ = error
    return wrapped
