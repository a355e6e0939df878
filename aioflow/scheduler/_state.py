"""The bookkeeping of one execution, as a synchronous state machine. No I/O, no asyncio.

The runner asks it two questions: "what runs first?" (`ExecutionState.start`)
and "this firing finished (or failed): what runs next?"
(`ExecutionState.succeeded` / `ExecutionState.failed`). Each answer is a list
of `Firing` records: one execution of one node with its inputs already merged.

The firing rule is the push-flow rule of the graph format (spec §6.3), per
target node:

- a *required* in-link caches the last data it delivered; the node cannot
  fire before every required in-link has delivered at least once (a counter per
  node, decremented on a link's first delivery: O(1) per delivery);
- an optional in-link with ``cache_if_optional`` caches its last data too;
- other optional deliveries that arrive before the node's first firing are
  buffered: the first firing happens once per buffered delivery (or once when
  there is none); afterwards only the latest such delivery is retained;
- after the first firing, every delivery fires the node again.

The inputs of one firing are, later entries winning: the start trigger, the
required caches (in link order), the optional caches (in link order), the
optional delivery; the node's default inputs lie underneath all of them.

Cost: a delivery is O(1) plus the size of the merged inputs, a completion is
O(the node's out-links). Nothing rescans the graph.

Owned state: everything below is touched only by the thread that runs the
event loop, so no lock is needed.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._results import MISSING

if TYPE_CHECKING:
    from ..graph import Graph, Link, NodeId

__all__ = ["ExecutionState", "Firing", "IterationLimitReached"]


class IterationLimitReached(Exception):
    """Raised by the state machine when a node would exceed ``max_iterations``."""

    def __init__(self, node_id: NodeId, max_iterations: int) -> None:
        super().__init__(node_id, max_iterations)
        self.node_id = node_id
        self.max_iterations = max_iterations


@dataclass(frozen=True, slots=True)
class Firing:
    """One execution of one node.

    Attributes:
        node_id: the node.
        number: 1 for the node's first execution, 2 for the second...
        dynamic_inputs: the inputs that came through links (and the start
            trigger), without the node's default inputs.
        inputs: what the task is called with: default inputs under dynamic inputs.
    """

    node_id: NodeId
    number: int
    dynamic_inputs: dict[Any, Any]
    inputs: dict[Any, Any]


class _NodeState:
    __slots__ = ("buffer", "fired", "missing_required", "optional_cache", "required_cache", "retained", "start")

    def __init__(self, missing_required: int) -> None:
        self.missing_required = missing_required
        self.required_cache: dict[int, dict[Any, Any]] = {}
        self.optional_cache: dict[int, dict[Any, Any]] = {}
        self.buffer: list[dict[Any, Any]] = []
        self.retained: dict[Any, Any] | None = None
        self.start: dict[Any, Any] | None = None
        self.fired = False


class ExecutionState:
    """One execution's state: which nodes fired, with what, and what they produced.

    Attributes:
        outputs: node id -> the outputs of its last execution (``{}`` when the
            last execution failed).
        executions: node id -> how many times the node has fired.
        errors: node id -> the exception of the node's last failure that no
            ``on_error`` link handled (kept even if a later execution succeeded).
        handled_errors: the same, for failures an ``on_error`` link handled.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        max_iterations: int | None = None,
        start_inputs: Mapping[Any, Any] | None = None,
    ) -> None:
        self.graph = graph
        self.max_iterations = max_iterations
        self._start_inputs = dict(start_inputs or {})
        analysis = graph.analysis
        self._links = graph.links
        self._required = analysis.link_required
        self._required_in = analysis.required_in_count
        self._data_out = analysis.data_links_out
        self._error_out = analysis.error_links_out
        self._links_in = analysis.links_in
        self._condition_values = analysis.condition_values
        self._nodes: dict[NodeId, _NodeState] = {}
        self.outputs: dict[NodeId, dict[Any, Any]] = {}
        self.executions: dict[NodeId, int] = {}
        self.errors: dict[NodeId, BaseException] = {}
        self.handled_errors: dict[NodeId, BaseException] = {}

    # ------------------------------------------------------------------ transitions

    def start(self) -> list[Firing]:
        """The firings that start the execution: one trigger per start node."""
        firings: list[Firing] = []
        for nid in self.graph.analysis.start_nodes:
            st = self._state(nid)
            st.start = dict(self._start_inputs)
            firings.extend(self._arrival(nid, st, None))
        return firings

    def succeeded(self, firing: Firing, outputs: Mapping[Any, Any]) -> list[Firing]:
        """Record a node's outputs; return the firings its data links unlock."""
        nid = firing.node_id
        outputs = dict(outputs)
        self.outputs[nid] = outputs
        firings: list[Firing] = []
        for li in self._data_out[nid]:
            link = self._links[li]
            if link.conditions and not self._conditions_hold(nid, link, outputs):
                continue
            firings.extend(self._deliver(li, link, outputs))
        return firings

    def failed(self, firing: Firing, error: BaseException, tb: list[str] | None = None) -> list[Firing]:
        """Record a failure; return the firings its ``on_error`` links unlock.

        A failure with no ``on_error`` link is kept in `errors`; the runner
        decides whether it stops the execution.
        """
        nid = firing.node_id
        self.outputs[nid] = {}
        error_links = self._error_out[nid]
        if not error_links:
            self.errors[nid] = error
            return []
        self.handled_errors[nid] = error
        if tb is None:
            tb = traceback.format_exception(error)
        data = dict(firing.dynamic_inputs)
        data["WorkflowException"] = {"errorMessage": str(error), "traceBack": tb}
        data["WorkflowExceptionInstance"] = error
        firings: list[Firing] = []
        for li in error_links:
            firings.extend(self._deliver(li, self._links[li], data))
        return firings

    # ------------------------------------------------------------------ internals

    def _state(self, nid: NodeId) -> _NodeState:
        st = self._nodes.get(nid)
        if st is None:
            st = self._nodes[nid] = _NodeState(self._required_in[nid])
        return st

    def _deliver(self, li: int, link: Link, outputs: Mapping[Any, Any]) -> list[Firing]:
        data: dict[Any, Any] = dict(outputs) if link.map_all_data else {}
        for source_output, target_input in link.data_mapping:
            data[target_input] = outputs.get(source_output, MISSING)
        target = link.target
        st = self._state(target)
        if self._required[li]:
            if li not in st.required_cache:
                st.missing_required -= 1
            st.required_cache[li] = data
            return self._arrival(target, st, None)
        if link.cache_if_optional:
            st.optional_cache[li] = data
            return self._arrival(target, st, None)
        return self._arrival(target, st, data)

    def _arrival(self, nid: NodeId, st: _NodeState, optional: dict[Any, Any] | None) -> list[Firing]:
        if st.fired:
            if optional is not None:
                st.retained = optional
            return [self._fire(nid, st, st.retained)]
        if optional is not None:
            st.buffer.append(optional)
        if st.missing_required > 0:
            return []
        st.fired = True
        buffered, st.buffer = st.buffer, []
        if not buffered:
            return [self._fire(nid, st, None)]
        st.retained = buffered[-1]
        return [self._fire(nid, st, b) for b in buffered]

    def _fire(self, nid: NodeId, st: _NodeState, optional: dict[Any, Any] | None) -> Firing:
        number = self.executions.get(nid, 0) + 1
        if self.max_iterations is not None and number > self.max_iterations:
            raise IterationLimitReached(nid, self.max_iterations)
        self.executions[nid] = number
        dynamic: dict[Any, Any] = {}
        if st.start is not None:
            dynamic.update(st.start)
        # Caches merge in link order (the order links are written), whatever
        # order their data arrived in: the result must not depend on timing.
        links_in = self._links_in[nid]
        if st.required_cache:
            for li in links_in:
                data = st.required_cache.get(li)
                if data is not None:
                    dynamic.update(data)
        if st.optional_cache:
            for li in links_in:
                data = st.optional_cache.get(li)
                if data is not None:
                    dynamic.update(data)
        if optional is not None:
            dynamic.update(optional)
        defaults = self.graph.nodes[nid].default_inputs
        inputs = {**defaults, **dynamic} if defaults else dict(dynamic)
        return Firing(nid, number, dynamic, inputs)

    def _conditions_hold(self, nid: NodeId, link: Link, outputs: Mapping[Any, Any]) -> bool:
        """Spec §3.3: every condition of the link holds against the source's outputs."""
        node = self.graph.nodes[nid]
        if node.task_type in ("ppfmethod", "ppfport"):
            values = outputs.get("_ppfdict")
            outputs = values if isinstance(values, Mapping) else {}
        else_value = node.conditions_else_value
        all_values = self._condition_values.get(nid, {})
        for name, expected in link.conditions:
            if name not in outputs:
                return False
            actual = outputs[name]
            if _equal(expected, else_value):
                if not (_equal(actual, else_value) or not any(_equal(actual, v) for v in all_values.get(name, ()))):
                    return False
            elif not _equal(actual, expected):
                return False
        return True


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` as a plain bool; values whose ``==`` raises or is not a bool are unequal."""
    try:
        result = a == b
        return bool(result) if isinstance(result, bool) else False
    except Exception:
        return False
