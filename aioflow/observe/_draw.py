"""A picture of a graph, as `aioflow.observe` offers it: SVG, PNG or PDF drawn by Graphviz's ``dot``, or DOT text.

The drawing lives in the model layer (`aioflow.graph._draw`), so that
`Graph._repr_svg_` can draw a graph in Jupyter without reaching up to this
layer; this module re-exports it for `aioflow.observe`.
"""

from __future__ import annotations

from ..graph._draw import (
    DOT_ENV,
    FORMATS,
    draw,
    element_id,
    graph_to_dot,
    graph_to_svg,
)

__all__ = [
    "DOT_ENV",
    "FORMATS",
    "draw",
    "element_id",
    "graph_to_dot",
    "graph_to_svg",
]
