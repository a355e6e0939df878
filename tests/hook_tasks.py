"""A runner that execution hooks may give calls in place of their kind's (tests/scheduler/test_call_context.py)."""

from __future__ import annotations

import os
from typing import Any

from aioflow._tasks import TaskCall, run_task


def show_context(call: TaskCall) -> dict[str, Any]:
    """Run the call with its kind's runner; add what the worker saw of the call to its outputs."""
    outputs = run_task(TaskCall(call.node_id, call.label, call.task_type, call.task_identifier, call.inputs))
    assert isinstance(outputs, dict)
    return {**outputs, "context": call.context, "runner": call.runner, "pid": os.getpid()}
