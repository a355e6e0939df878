"""Ways to look at a run: a timeline, a picture of the graph, a live display in Jupyter, a live web view.

- `TraceRecorder`, `trace_from_events`, `trace_from_journal`, `write_trace`:
  a run's timeline in the Chrome trace-event format (Perfetto, chrome://tracing);
  firings with no worker reported go to the pseudo process `NO_WORKER_PID`;
- `graph_to_svg`, `graph_to_dot`, `draw`, `element_id` (from `aioflow.graph._draw`): a picture of a graph,
  laid out by Graphviz's ``dot`` (`FORMATS`; ``AIOFLOW_DOT`` names another ``dot``).

See docs/observe.md. Names are imported on first access: ``import aioflow``
imports none of them.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ..graph._draw import FORMATS as FORMATS
    from ..graph._draw import draw as draw
    from ..graph._draw import element_id as element_id
    from ..graph._draw import graph_to_dot as graph_to_dot
    from ..graph._draw import graph_to_svg as graph_to_svg
    from ._trace import NO_WORKER_PID as NO_WORKER_PID
    from ._trace import TraceRecorder as TraceRecorder
    from ._trace import trace_from_events as trace_from_events
    from ._trace import trace_from_journal as trace_from_journal
    from ._trace import write_trace as write_trace

_WHERE = {
    "FORMATS": "..graph._draw",
    "draw": "..graph._draw",
    "element_id": "..graph._draw",
    "graph_to_dot": "..graph._draw",
    "graph_to_svg": "..graph._draw",
    "NO_WORKER_PID": "._trace",
    "TraceRecorder": "._trace",
    "trace_from_events": "._trace",
    "trace_from_journal": "._trace",
    "write_trace": "._trace",
}

__all__ = [
    "FORMATS",
    "NO_WORKER_PID",
    "TraceRecorder",
    "draw",
    "element_id",
    "graph_to_dot",
    "graph_to_svg",
    "trace_from_events",
    "trace_from_journal",
    "write_trace",
]


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
