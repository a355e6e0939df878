"""The queue of ready firings by priority (`ReadyQueue`), against a plain model: a sort by priority, then arrival.

Any interleaving of appends, appendlefts (a firing put back first in its level),
extends, pops and removals of one node gives what the model gives.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aioflow.graph._control import NodeControl
from aioflow.scheduler._control import ReadyQueue
from aioflow.scheduler._state import Firing

NODES = 6

operation = st.one_of(
    st.tuples(st.just("append"), st.integers(0, NODES - 1)),
    st.tuples(st.just("appendleft"), st.integers(0, NODES - 1)),
    st.tuples(st.just("extend"), st.lists(st.integers(0, NODES - 1), max_size=4)),
    st.tuples(st.just("pop"), st.none()),
    st.tuples(st.just("without"), st.integers(0, NODES - 1)),
)


class _Control:
    """What `ReadyQueue` reads of a `RunControl`: each node's settings."""

    def __init__(self, priorities: list[int]) -> None:
        self.controls = {nid: NodeControl(priority=p) for nid, p in enumerate(priorities)}


def _firing(nid: int, order: int) -> Firing:
    return Firing(nid, 1, {}, {}, None, order)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-2, 2), min_size=NODES, max_size=NODES), st.lists(operation, max_size=40))
def test_the_queue_sends_the_highest_priority_first_and_in_arrival_order_among_equals(
    priorities: list[int], operations: list[tuple[str, Any]]
) -> None:
    queue = ReadyQueue(_Control(priorities))  # type: ignore[arg-type]
    priority_of: dict[Any, int] = dict(enumerate(priorities))
    # The model: one deque per priority, highest first.
    model: dict[int, deque[Firing]] = {}
    made = 0
    for name, arg in operations:
        if name in ("append", "appendleft", "extend"):
            nids = arg if name == "extend" else [arg]
            firings = [_firing(nid, made + i) for i, nid in enumerate(nids)]
            made += len(firings)
            for firing in firings:
                bucket = model.setdefault(priority_of[firing.node_id], deque())
                bucket.appendleft(firing) if name == "appendleft" else bucket.append(firing)
            if name == "extend":
                queue.extend(firings)
            else:
                getattr(queue, name)(firings[0])
        elif name == "pop":
            expected = [f for level in sorted(model, reverse=True) for f in model[level]]
            if not expected:
                assert not queue
                continue
            assert queue[0] is expected[0]
            assert queue.popleft() is expected[0]
            model[priority_of[expected[0].node_id]].popleft()
        else:
            queue = queue.without(arg)
            model = {level: deque(f for f in bucket if f.node_id != arg) for level, bucket in model.items()}
        expected = [f for level in sorted(model, reverse=True) for f in model[level]]
        assert list(queue) == expected
        assert len(queue) == len(expected)
        assert bool(queue) == bool(expected)
    while queue:
        queue.popleft()
    assert len(queue) == 0
