"""aioflow: an asyncio-native engine for Ewoks workflow graphs.

Layering (each layer imports only the ones below it; tests/test_layering.py
checks it, docs/design.md describes it):

    top         aioflow (these lazy names)
    cli         cli
    faces       _api (execute_graph, execute_graph_async), _executor (Executor), parallel/, parsl
    plug-ins    ewoks/ (aioflow as an Ewoks engine, through the engine's hooks)
    engine      scheduler/ (state machine, planner, async driver, execution hooks)
    tasks       _tasks, _kinds (what runs in a worker)    pools/ (executors by name)
    model       graph/ (load, validate, analyse: pure and synchronous)
    base        _errors, _broken, _lost, _results, events, _version, _gevent_bridge

``import aioflow`` imports no optional library, and only what names are
used: the exceptions at once (they are cheap, and unpickling one must not
import the engine), everything else on first access (PEP 562). A worker
process that imports ``aioflow.pools._workers`` or ``aioflow._tasks`` does
not pay for the scheduler or the graph loader.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from ._errors import AioflowError as AioflowError
from ._errors import DependencyError as DependencyError
from ._errors import ExecutionError as ExecutionError
from ._errors import ExecutionTimeoutError as ExecutionTimeoutError
from ._errors import GraphError as GraphError
from ._errors import GraphvizError as GraphvizError
from ._errors import GraphvizNotFoundError as GraphvizNotFoundError
from ._errors import IterationLimitError as IterationLimitError
from ._errors import JournalError as JournalError
from ._errors import MissingExtraError as MissingExtraError
from ._errors import NodeCancelledError as NodeCancelledError
from ._errors import NodeError as NodeError
from ._errors import NodeTimeoutError as NodeTimeoutError
from ._errors import OptionError as OptionError
from ._errors import PoolClosedError as PoolClosedError
from ._errors import PoolError as PoolError
from ._errors import RemoteError as RemoteError
from ._errors import SerialExecutionError as SerialExecutionError
from ._errors import SerialExecutionWarning as SerialExecutionWarning
from ._errors import TaskInputError as TaskInputError
from ._errors import TaskInterrupted as TaskInterrupted
from ._errors import TransferError as TransferError
from ._errors import UnsendableFunctionError as UnsendableFunctionError
from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:
    from ._api import execute_graph as execute_graph
    from ._api import execute_graph_async as execute_graph_async
    from ._broken import InitializerFailed as InitializerFailed
    from ._executor import Executor as Executor
    from ._handle import Run as Run
    from ._handle import start as start
    from ._lost import WorkerLostError as WorkerLostError
    from ._results import MISSING as MISSING
    from ._results import Results as Results
    from ._tasks import current_attempt as current_attempt
    from .events import Event as Event
    from .graph import Graph as Graph
    from .graph import Link as Link
    from .graph import Node as Node
    from .graph import load_graph as load_graph
    from .pools import Pool as Pool
    from .pools import available_pools as available_pools
    from .pools import open_pool as open_pool

# public name -> the module that defines it, imported on first access.
_LAZY = {
    "Executor": "._executor",
    "MISSING": "._results",
    "Results": "._results",
    "Event": ".events",
    "Graph": ".graph",
    "Link": ".graph",
    "Node": ".graph",
    "load_graph": ".graph",
    "Pool": ".pools",
    "available_pools": ".pools",
    "open_pool": ".pools",
    "WorkerLostError": "._lost",
    "InitializerFailed": "._broken",
    "current_attempt": "._tasks",
    "start": "._handle",
    "Run": "._handle",
    "execute_graph": "._api",
    "execute_graph_async": "._api",
}
_SUBPACKAGES = ("cli", "events", "ewoks", "graph", "journal", "observe", "parallel", "parsl", "pools", "scheduler")

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
    "GraphvizError",
    "GraphvizNotFoundError",
    "InitializerFailed",
    "IterationLimitError",
    "JournalError",
    "Link",
    "MissingExtraError",
    "Node",
    "NodeCancelledError",
    "NodeError",
    "NodeTimeoutError",
    "OptionError",
    "Pool",
    "PoolClosedError",
    "PoolError",
    "RemoteError",
    "Results",
    "Run",
    "SerialExecutionError",
    "SerialExecutionWarning",
    "TaskInputError",
    "TaskInterrupted",
    "TransferError",
    "UnsendableFunctionError",
    "WorkerLostError",
    "__version__",
    "available_pools",
    "current_attempt",
    "execute_graph",
    "execute_graph_async",
    "load_graph",
    "open_pool",
    "start",
]


def _show_public_path(obj: _typing.Any) -> None:
    """Reprs and tracebacks show aioflow.NodeError, not the private module."""
    if isinstance(obj, type) and getattr(obj, "__module__", "").startswith("aioflow."):
        try:
            obj.__module__ = "aioflow"
        except (AttributeError, TypeError):
            pass


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(module, __name__), name)
        _show_public_path(value)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return _importlib.import_module(f".{name}", __name__)
    msg = f"module 'aioflow' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})


for _name in __all__:
    if _name not in _LAZY:
        _show_public_path(globals()[_name])
del _name
