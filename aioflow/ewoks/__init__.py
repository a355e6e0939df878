"""aioflow as an Ewoks engine (the ``aioflow[ewoks]`` extra).

- `AioflowWorkflowEngine`: the ``aioflow`` entry point of the ``ewoks.engines``
  group, so ``ewoks execute graph.json --engine aioflow`` and
  ``ewoks.execute_graph(graph, engine="aioflow")`` run on aioflow;
- `execute_graph`: the call signature of ``ewoksppf.execute_graph`` (every one
  of its keywords), run by aioflow, with the same result shape.

Names are imported on first access: a worker that imports
`aioflow.ewoks._worker` to run an ewokscore task does not load the engine
front end, and ``import aioflow`` never imports this package.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._engine import AioflowWorkflowEngine as AioflowWorkflowEngine
    from ._engine import execute_graph as execute_graph

__all__ = ["AioflowWorkflowEngine", "execute_graph"]


def __getattr__(name: str) -> _typing.Any:
    if name in __all__:
        value = getattr(_importlib.import_module("._engine", __name__), name)
        globals()[name] = value
        return value
    msg = f"module 'aioflow.ewoks' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
