"""What runs inside a worker for tasks that ewokscore runs: ``class``, ``generated``, ``notebook``.

`run_ewoks_task` is the runner of those kinds in the task-kind registry
(`aioflow._kinds`). Every other task type also comes here when the
execution asked for persistence (``varinfo``), events (``execinfo`` with
handlers) or ``task_options``: the plug-in's hooks then give every call this
runner (`aioflow.ewoks._hooks.EwoksRun`), so that input rules, saved results
and node events are ewokscore's own (spec §6.1): ``instantiate_task(...)``
then ``task.execute()``. A call's context (`TaskCall.context`, from those
hooks) holds the node's attributes and the execution's ``varinfo``,
``execinfo`` and ``task_options``.

Identities: ewokscore names a task's outputs (and the files they are saved
in) after a hash of its class and its inputs, where an input that came from
another task's output is known by that output's identity, not by its value.
So the worker returns, with the outputs, a token per output: ``(uhash, uri)``,
the output's universal hash and, when it has one, the URI it is (or would be)
saved under. The scheduler carries each token along with its value; here, an
input that arrives with a token becomes an ewokscore ``Variable`` with that
identity (and location) and the value already loaded: what ewokscore's own
engines pass from task to task. Inputs without a token (default inputs, start
inputs) are plain values, as there.

Saving: two executions with the same identity (the same task with the
same inputs, say two nodes of one loop, or two identical nodes) save their
outputs under the same name. A process runs them one at a time
(`_one_identity_at_a_time`): the second then finds the outputs saved and
loads them instead of running, as a sequential engine would, rather than
writing the same file at the same time (which HDF5 files do not survive
between threads; between processes, HDF5's file locks already take turns).

ewokscore is imported here, in the worker, on first use; nothing else in a
worker process imports it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from .._results import MISSING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .._tasks import TaskCall, TaskOutcome

__all__ = ["run_ewoks_task"]


def run_ewoks_task(call: TaskCall) -> dict[Any, Any] | TaskOutcome:
    """Instantiate the node's ewokscore task in this process, execute it and return its outputs.

    Returns:
        The declared outputs the task set (unset ones are left out), as values;
        with their tokens (a `TaskOutcome`) when the outputs have identities
        (persistence or hashing enabled by ``varinfo``).

    Raises:
        ewoksutils.exceptions.TaskInputError: a required input is missing
            (ewokscore's message names the task's label, id and class).
        ewoksutils.exceptions.TaskExecutionError: ``run()`` raised; the task's
            own exception is ``__cause__``.
    """
    from ewokscore.inittask import instantiate_task
    from ewokscore.missing_data import MISSING_DATA, is_missing_data

    context = call.context or {}
    node_attrs: dict[str, Any] = dict(context.get("node_attrs") or {})
    node_attrs["task_type"] = call.task_type
    if call.task_identifier is not None:
        node_attrs["task_identifier"] = call.task_identifier
    node_attrs["label"] = call.label
    # Default inputs are already merged under the link data by the scheduler.
    node_attrs.pop("default_inputs", None)
    inputs = {name: MISSING_DATA if value is MISSING else value for name, value in call.inputs.items()}
    if call.input_tags:
        from ewokscore.persistence.proxy import DataUri
        from ewokscore.variable import Variable

        for name, (uhash, uri) in call.input_tags.items():
            if name in inputs:
                if uri is None:
                    inputs[name] = Variable(value=inputs[name], pre_uhash=uhash)
                else:
                    inputs[name] = Variable(value=inputs[name], data_uri=DataUri(uri, uhash))
    task = instantiate_task(
        call.node_id,
        node_attrs,
        inputs=inputs,
        varinfo=context.get("varinfo"),
        execinfo=context.get("execinfo"),
        task_options=context.get("task_options"),
    )
    location = task.output_variables.data_uri
    with _one_identity_at_a_time(None if location is None else str(location)):
        if call.task_type == "notebook":
            _execute_closing_event_loops(task)
        else:
            task.execute()
    outputs = {name: value for name, value in task.get_output_values().items() if not is_missing_data(value)}
    tags = {}
    for name, variable in task.output_variables.items():
        uhash = variable.uhash
        if uhash is not None:
            uri = variable.data_uri
            tags[name] = (str(uhash), None if uri is None else str(uri))
    if not tags:
        return outputs
    from .._tasks import TaskOutcome

    return TaskOutcome(outputs, tags)


class _Turns:
    """A lock per identity, for as long as some execution of that identity holds or awaits it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def one_at_a_time(self, key: str | None) -> Iterator[None]:
        if key is None:  # nothing is saved: nothing to share
            yield
            return
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


_one_identity_at_a_time = _Turns().one_at_a_time


def _execute_closing_event_loops(task: Any) -> None:
    """``task.execute()``, then close the event loops the call created and left open.

    papermill runs the kernel's client on an asyncio event loop that it
    creates for the calling thread, keeps in a context variable and never
    closes. A worker thread or process runs many tasks: here the call runs in
    a copy of the context, so that the loops it stored there can be found and
    closed once it returns.
    """
    import asyncio
    import contextvars

    context = contextvars.copy_context()
    try:
        context.run(task.execute)
    finally:
        before = contextvars.copy_context()
        closed = False
        for var, value in context.items():
            if (
                isinstance(value, asyncio.AbstractEventLoop)
                and before.get(var) is not value
                and not value.is_running()
                and not value.is_closed()
            ):
                value.close()
                closed = True
        if closed:
            # The loop was also made this thread's current loop: do not leave it there, closed.
            asyncio.set_event_loop(None)
