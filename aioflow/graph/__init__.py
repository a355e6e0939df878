"""Graphs: loading, validation and linear-time analysis. Pure and synchronous."""

from __future__ import annotations

from ._analysis import Analysis as Analysis
from ._inputs import apply_inputs as apply_inputs
from ._inputs import select_nodes as select_nodes
from ._load import load_graph as load_graph
from ._model import TASK_TYPES as TASK_TYPES
from ._model import Graph as Graph
from ._model import Link as Link
from ._model import Links as Links
from ._model import Node as Node
from ._model import NodeId as NodeId

__all__ = [
    "TASK_TYPES", "Analysis", "Graph", "Link", "Links", "Node", "NodeId", "apply_inputs", "load_graph", "select_nodes",
]  # fmt: skip
