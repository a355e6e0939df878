"""The engine: the state machine, the async driver, its synchronous face, and the execution hooks plug-ins implement."""

from __future__ import annotations

from ._hooks import CallContext as CallContext
from ._hooks import ExecutionHooks as ExecutionHooks
from ._hooks import Step as Step
from ._run import Steering as Steering
from ._run import execute_graph_async as execute_graph_async
from ._run import preflight as preflight
from ._sync import execute_graph as execute_graph
from ._sync import run_execution as run_execution

__all__ = [
    "CallContext",
    "ExecutionHooks",
    "Step",
    "Steering",
    "execute_graph",
    "execute_graph_async",
    "preflight",
    "run_execution",
]
