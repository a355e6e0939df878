"""Where the live web view draws each node: a layered drawing in pure Python, or a grid for very large graphs.

The layered drawing (after Sugiyama, Tagawa and Toda) takes four steps, each
linear in nodes + links (the ordering adds a sort per layer), none recursive:

1. Cycles are broken: an iterative depth-first search, from the nodes nothing
   points to, marks the links that go back to a node still on its stack;
   those "back links" are left out of the next steps (the page draws them on
   the side).
2. Layers by longest path: a node sits one layer below the lowest of the
   nodes that point to it (Kahn's topological order), so every other link
   goes down.
3. Order within each layer: a few barycenter sweeps, down then up, each
   node moved to the mean position of its neighbours in the layers it links
   to, which removes most crossings of a workflow graph.
4. Coordinates: each node is placed under the mean of its parents, then
   pushed right until it no longer overlaps its left neighbour, and the
   layer is shifted back as a whole: a chain comes out straight, a fan
   centred under its source.

Beyond `MAX_LAYERED_NODES` nodes the boxes go on a grid, in the graph's order:
a drawing that size is no longer read as a picture, and the page says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MAX_LAYERED_NODES", "Box", "Layout", "layout"]

#: Above this many nodes a layered drawing is thousands of boxes wide or tall, which nobody reads as a
#: picture: a grid keeps every node on screen for its colour, and costs next to nothing.
MAX_LAYERED_NODES = 2000

# Sizes in CSS pixels, matched to the page's 13 px font (static/style.css).
BOX_HEIGHT = 36.0
#: Width of one character of a label, on average, in the page's font.
CHAR_WIDTH = 7.4
#: Room around a label inside its box.
BOX_PADDING = 28.0
#: Boxes are at least this wide (short labels) and at most this wide (longer labels are cut, with "...").
MIN_BOX_WIDTH = 84.0
MAX_BOX_WIDTH = 220.0
#: Horizontal gap between the boxes of a layer; vertical gap between layers (room for arrows and their labels).
NODE_GAP = 28.0
LAYER_GAP = 56.0
#: Empty border around the drawing.
MARGIN = 24.0
#: Barycenter sweeps (down, up, down, up): more rarely changes a workflow graph's order.
SWEEPS = 4
#: Width of a box on the grid: labels are cut to fit.
GRID_BOX_WIDTH = 150.0


@dataclass(frozen=True)
class Box:
    """A node's box: top-left corner, size, and its layer (its row on the grid)."""

    x: float
    y: float
    width: float
    height: float
    layer: int


@dataclass(frozen=True)
class Layout:
    """A drawing of a graph.

    Attributes:
        kind: ``"layered"`` or ``"grid"``.
        boxes: one per node, in the order the nodes were given.
        back_links: the indices of the links left out of the layering (they
            close a cycle; drawn on the side); always empty on a grid.
        width / height: the size of the drawing, margins included.
        note: why the graph is drawn on a grid, for the page to show.
    """

    kind: Literal["layered", "grid"]
    boxes: tuple[Box, ...]
    back_links: frozenset[int]
    width: float
    height: float
    note: str | None = None


def box_width(label: str) -> float:
    """The width of a box whose label is ``label``."""
    return min(MAX_BOX_WIDTH, max(MIN_BOX_WIDTH, len(label) * CHAR_WIDTH + BOX_PADDING))


def layout(labels: Sequence[str], links: Sequence[tuple[int, int]], *, max_layered: int = MAX_LAYERED_NODES) -> Layout:
    """Lay out nodes ``0 .. len(labels) - 1`` joined by ``links`` (``(source, target)`` index pairs).

    Args:
        labels: the text of each node's box.
        links: index pairs; cycles, self-links and repeated links are allowed.
        max_layered: above this many nodes, the nodes go on a grid.
    """
    if len(labels) > max_layered:
        return _grid(
            labels,
            f"{len(labels):,} nodes: drawn on a grid, without their links (a layered drawing is made up to "
            f"{max_layered:,} nodes)",
        )
    count = len(labels)
    successors: list[list[tuple[int, int]]] = [[] for _ in range(count)]
    indegree = [0] * count
    for index, (source, target) in enumerate(links):
        successors[source].append((target, index))
        indegree[target] += 1
    back = _back_links(count, successors, indegree)
    layer_of, order = _layers(count, successors, back)
    layers = _order_layers(count, successors, back, layer_of, order)
    return _coordinates(labels, successors, back, layer_of, layers)


def _back_links(count: int, successors: list[list[tuple[int, int]]], indegree: list[int]) -> frozenset[int]:
    """The links an iterative depth-first search finds going back to a node on its stack."""
    new, on_stack, done = 0, 1, 2
    mark = bytearray(count)
    back: set[int] = set()
    # Sources first: the links that close a loop are then the ones going back to its start.
    roots = [v for v in range(count) if indegree[v] == 0] + [v for v in range(count) if indegree[v] != 0]
    for root in roots:
        if mark[root] != new:
            continue
        mark[root] = on_stack
        stack = [(root, 0)]
        while stack:
            node, next_edge = stack[-1]
            edges = successors[node]
            if next_edge == len(edges):
                mark[node] = done
                stack.pop()
                continue
            stack[-1] = (node, next_edge + 1)
            target, index = edges[next_edge]
            if mark[target] == on_stack:
                back.add(index)
            elif mark[target] == new:
                mark[target] = on_stack
                stack.append((target, 0))
    return frozenset(back)


def _layers(count: int, successors: list[list[tuple[int, int]]], back: frozenset[int]) -> tuple[list[int], list[int]]:
    """Each node's layer by longest path, and a topological order of the forward links (Kahn's)."""
    indegree = [0] * count
    for edges in successors:
        for target, index in edges:
            if index not in back:
                indegree[target] += 1
    layer_of = [0] * count
    order = [v for v in range(count) if indegree[v] == 0]
    position = 0
    while position < len(order):  # `order` grows as nodes become ready: a queue without deque
        node = order[position]
        position += 1
        below = layer_of[node] + 1
        for target, index in successors[node]:
            if index in back:
                continue
            layer_of[target] = max(layer_of[target], below)
            indegree[target] -= 1
            if indegree[target] == 0:
                order.append(target)
    return layer_of, order


def _order_layers(
    count: int,
    successors: list[list[tuple[int, int]]],
    back: frozenset[int],
    layer_of: list[int],
    order: list[int],
) -> list[list[int]]:
    """The nodes of each layer, left to right, after `SWEEPS` barycenter sweeps."""
    predecessors: list[list[int]] = [[] for _ in range(count)]
    forward: list[list[int]] = [[] for _ in range(count)]
    for source, edges in enumerate(successors):
        for target, index in edges:
            if index not in back and target != source:
                predecessors[target].append(source)
                forward[source].append(target)
    layers: list[list[int]] = [[] for _ in range(max(layer_of, default=-1) + 1)]
    for node in order:  # first seen, first placed: a start that already follows the flow
        layers[layer_of[node]].append(node)
    # A node's place in its layer, scaled to 0..1, so that layers of different sizes compare.
    place = [0.0] * count

    def number(layer: list[int]) -> None:
        size = len(layer)
        for index, node in enumerate(layer):
            place[node] = (index + 0.5) / size

    for layer in layers:
        number(layer)
    for sweep in range(SWEEPS):
        downwards = sweep % 2 == 0
        neighbours = predecessors if downwards else forward
        sequence = range(1, len(layers)) if downwards else range(len(layers) - 2, -1, -1)
        for at in sequence:
            layer = layers[at]
            weights: dict[int, float] = {}
            for node in layer:
                near = neighbours[node]
                weights[node] = sum(place[n] for n in near) / len(near) if near else place[node]
            layer.sort(key=weights.__getitem__)  # stable: ties keep their order
            number(layer)
    return layers


def _coordinates(
    labels: Sequence[str],
    successors: list[list[tuple[int, int]]],
    back: frozenset[int],
    layer_of: list[int],
    layers: list[list[int]],
) -> Layout:
    """Boxes: each layer a row, each node under the mean of its parents, without overlaps."""
    count = len(labels)
    widths = [box_width(label) for label in labels]
    parents: list[list[int]] = [[] for _ in range(count)]
    for source, edges in enumerate(successors):
        for target, index in edges:
            if index not in back and target != source:
                parents[target].append(source)
    centre = [0.0] * count
    left = [0.0] * count
    for layer in layers:
        wanted: list[float | None] = []
        for node in layer:
            near = parents[node]
            wanted.append(sum(centre[p] for p in near) / len(near) if near else None)
        # Left to right: as near the wanted place as the left neighbour allows.
        edge: float | None = None  # the right side of the box placed last
        shifts: list[float] = []
        for node, want in zip(layer, wanted, strict=True):
            x = want - widths[node] / 2 if want is not None else (0.0 if edge is None else edge + NODE_GAP)
            if edge is not None and x < edge + NODE_GAP:
                x = edge + NODE_GAP
            left[node] = x
            edge = x + widths[node]
            if want is not None:
                shifts.append(want - (x + widths[node] / 2))
        # Pushing right moved some boxes off their place: shift the whole row back by the mean
        # miss, which keeps the gaps.
        shift = sum(shifts) / len(shifts) if shifts else 0.0
        for node in layer:
            left[node] += shift
            centre[node] = left[node] + widths[node] / 2
    lowest = min(left, default=0.0)
    boxes = tuple(
        Box(
            x=left[v] - lowest + MARGIN,
            y=MARGIN + layer_of[v] * (BOX_HEIGHT + LAYER_GAP),
            width=widths[v],
            height=BOX_HEIGHT,
            layer=layer_of[v],
        )
        for v in range(count)
    )
    width = max((box.x + box.width for box in boxes), default=0.0) + MARGIN
    height = len(layers) * (BOX_HEIGHT + LAYER_GAP) - LAYER_GAP + 2 * MARGIN if layers else 2 * MARGIN
    return Layout("layered", boxes, back, width, height)


def _grid(labels: Sequence[str], note: str) -> Layout:
    """Boxes on a grid about twice as wide as tall, in the order given."""
    count = len(labels)
    cell_width, cell_height = GRID_BOX_WIDTH + NODE_GAP, BOX_HEIGHT + NODE_GAP
    columns = max(1, math.ceil(math.sqrt(count * 2 * cell_height / cell_width)))
    rows = math.ceil(count / columns)
    boxes = tuple(
        Box(
            x=MARGIN + (i % columns) * cell_width,
            y=MARGIN + (i // columns) * cell_height,
            width=GRID_BOX_WIDTH,
            height=BOX_HEIGHT,
            layer=i // columns,
        )
        for i in range(count)
    )
    width = 2 * MARGIN + columns * cell_width - NODE_GAP
    height = 2 * MARGIN + rows * cell_height - NODE_GAP
    return Layout("grid", boxes, frozenset(), width, height, note)
