"""What runs inside a worker for tasks that ewokscore runs: ``class``, ``generated``, ``notebook``.

Every other task type also comes here when the execution asked for
persistence (``varinfo``), events (``execinfo`` with handlers) or
``task_options``, so that input rules, saved results and node events are
ewokscore's own (spec §6.1): ``instantiate_task(...)`` then ``task.execute()``.

ewokscore is imported here, in the worker, on first use; nothing else in a
worker process imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._results import MISSING

if TYPE_CHECKING:
    from .._tasks import TaskCall

__all__ = ["run_ewoks_task"]


def run_ewoks_task(call: TaskCall) -> dict[Any, Any]:
    """Instantiate the node's ewokscore task in this process, execute it and return its outputs.

    Returns:
        The declared outputs the task set (unset ones are left out), as values.

    Raises:
        ewoksutils.exceptions.TaskInputError: a required input is missing
            (ewokscore's message names the task's label, id and class).
        ewoksutils.exceptions.TaskExecutionError: ``run()`` raised; the task's
            own exception is ``__cause__``.
    """
    from ewokscore.inittask import instantiate_task
    from ewokscore.missing_data import MISSING_DATA, is_missing_data

    node_attrs: dict[str, Any] = dict(call.node_attrs or {})
    node_attrs["task_type"] = call.task_type
    if call.task_identifier is not None:
        node_attrs["task_identifier"] = call.task_identifier
    node_attrs["label"] = call.label
    # Default inputs are already merged under the link data by the scheduler.
    node_attrs.pop("default_inputs", None)
    inputs = {name: MISSING_DATA if value is MISSING else value for name, value in call.inputs.items()}
    context = call.ewoks or {}
    task = instantiate_task(
        call.node_id,
        node_attrs,
        inputs=inputs,
        varinfo=context.get("varinfo"),
        execinfo=context.get("execinfo"),
        task_options=context.get("task_options"),
    )
    task.execute()
    return {name: value for name, value in task.get_output_values().items() if not is_missing_data(value)}
