"""aioflow: an asyncio-native engine for Ewoks workflow graphs.

Layering (each layer imports only the ones below it):

    faces       execute_graph, execute_graph_async, load_graph, open_pool, Executor, cli
    engine      scheduler/ (pure state machine + async driver)
    execution   pools/ (executors by name), _tasks (what runs in a worker)
    model       graph/ (load, validate, analyse: pure and synchronous)
    base        _errors, _results, events

``import aioflow`` imports no optional library.
"""

from __future__ import annotations

from ._errors import AioflowError as AioflowError
from ._errors import DependencyError as DependencyError
from ._errors import ExecutionError as ExecutionError
from ._errors import ExecutionTimeoutError as ExecutionTimeoutError
from ._errors import GraphError as GraphError
from ._errors import IterationLimitError as IterationLimitError
from ._errors import MissingExtraError as MissingExtraError
from ._errors import NodeError as NodeError
from ._errors import OptionError as OptionError
from ._errors import PoolError as PoolError
from ._errors import TaskInputError as TaskInputError
from ._errors import TransferError as TransferError
from ._errors import WorkerLostError as WorkerLostError
from ._executor import Executor as Executor
from ._results import MISSING as MISSING
from ._results import Results as Results
from ._version import __version__ as __version__
from .events import Event as Event
from .graph import Graph as Graph
from .graph import Link as Link
from .graph import Node as Node
from .graph import load_graph as load_graph
from .pools import Pool as Pool
from .pools import available_pools as available_pools
from .pools import open_pool as open_pool
from .scheduler import execute_graph as execute_graph
from .scheduler import execute_graph_async as execute_graph_async

__all__ = [
    "MISSING",
    "AioflowError",
    "DependencyError",
    "Event",
    "Executor",
    "ExecutionError",
    "ExecutionTimeoutError",
    "Graph",
    "GraphError",
    "IterationLimitError",
    "Link",
    "MissingExtraError",
    "Node",
    "NodeError",
    "OptionError",
    "Pool",
    "PoolError",
    "Results",
    "TaskInputError",
    "TransferError",
    "WorkerLostError",
    "__version__",
    "available_pools",
    "execute_graph",
    "execute_graph_async",
    "load_graph",
    "open_pool",
]

# Show the public path in reprs and tracebacks (aioflow.NodeError, not aioflow._errors.NodeError).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("aioflow.") and isinstance(_obj, type):
        try:
            _obj.__module__ = "aioflow"
        except (AttributeError, TypeError):
            pass
del _name, _obj
