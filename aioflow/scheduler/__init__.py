"""Execution: the state machine, the async driver and the sync facade."""

from __future__ import annotations

from ._run import execute_graph_async as execute_graph_async
from ._run import preflight as preflight
from ._sync import execute_graph as execute_graph

__all__ = ["execute_graph", "execute_graph_async", "preflight"]
