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

Tags: `ExecutionState.succeeded` may be given, besides the outputs, an opaque
token per output (``tags``). A token follows its value exactly: renamed by
``data_mapping``, copied by ``map_all_data``, kept in the caches and buffers,
merged in the same order, so `Firing.input_tags` holds, for each input that
came through a link, the token of the output it came from. An input whose
value came from elsewhere (default inputs, start inputs, an output given
without a token, the exception entries of an error link) has none. The state
never looks inside a token; conditions and results use the values only. With
no tags given, none are tracked (the common case costs one test per firing).

Outputs kept on the workers: on a pool that can keep results on its
workers, a firing may succeed with outputs that stay there
(`ExecutionState.succeeded_on_workers`): its links then fire their targets
without the data, which those targets' calls take from the workers. The
outputs arrive, or are found lost, only at the end
(`ExecutionState.output_fetched`, `ExecutionState.output_lost`). These
three and `start`, `succeeded` and `failed` are the only ways the state
changes: the driver writes none of its fields.

Order: the state machine numbers its firings in the order it makes them
(`Firing.order`). Its outcome depends only on the order in which finished
firings are handed back to it, so handing them back in that numbering makes
every execution give the same firings, inputs and results whatever the
timing: the driver does so when that order can matter (`order_matters`).
It cannot when the graph is acyclic and every link is required: every node
then fires at most once, when all its links have delivered, with their data
merged in link order.

Cost: a delivery is O(1) plus the size of the merged inputs, a completion is
O(the node's out-links). Nothing rescans the graph.

Owned state: everything below is touched only by the thread that runs the
event loop, so no lock is needed.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._kinds import KINDS
from .._results import MISSING
from .._tasks import link_data

if TYPE_CHECKING:
    from ..graph import Graph, NodeId

__all__ = ["ExecutionState", "Firing", "IterationLimitReached"]


class IterationLimitReached(Exception):
    """Raised by the state machine when a node would exceed ``max_iterations``."""

    def __init__(self, node_id: NodeId, max_iterations: int) -> None:
        super().__init__(node_id, max_iterations)
        self.node_id = node_id
        self.max_iterations = max_iterations


class Firing(NamedTuple):
    """One execution of one node.

    Attributes:
        node_id: the node.
        number: 1 for the node's first execution, 2 for the second...
        dynamic_inputs: the inputs that came through links (and the start
            trigger), without the node's default inputs.
        inputs: what the task is called with: default inputs under dynamic inputs.
        input_tags: input name -> the token of the output its value came from,
            for the dynamic inputs that have one; ``None`` when none has.
        order: its position among the execution's firings, in the order the
            state machine made them (0 first).
    """

    node_id: NodeId
    number: int
    dynamic_inputs: dict[Any, Any]
    inputs: dict[Any, Any]
    input_tags: dict[Any, Any] | None = None
    order: int = 0


# The tokens of one delivery's data (a subset of its keys), or None for none.
_Tags = dict[Any, Any] | None


class _NodeState:
    __slots__ = (
        "buffer",
        "fired",
        "missing_required",
        "optional_cache",
        "optional_tags",
        "required_cache",
        "required_tags",
        "retained",
        "retained_tags",
        "start",
        "tagged",
    )

    def __init__(self, missing_required: int) -> None:
        self.missing_required = missing_required
        self.required_cache: dict[int, dict[Any, Any]] = {}
        self.optional_cache: dict[int, dict[Any, Any]] = {}
        self.buffer: list[tuple[dict[Any, Any], _Tags]] = []
        self.retained: dict[Any, Any] | None = None
        self.start: dict[Any, Any] | None = None
        self.fired = False
        # Tokens, kept only once a delivery to this node carried some: the
        # caches' (by link index, beside the data) and the retained delivery's.
        self.tagged = False
        self.required_tags: dict[int, dict[Any, Any]] = {}
        self.optional_tags: dict[int, dict[Any, Any]] = {}
        self.retained_tags: _Tags = None


class ExecutionState:
    """One execution's state: which nodes fired, with what, and what they produced.

    Attributes:
        outputs: node id -> the outputs of its last execution (``{}`` when the
            last execution failed).
        executions: node id -> how many times the node has fired.
        errors: node id -> the exception of the node's last failure that no
            ``on_error`` link handled (kept even if a later execution succeeded).
        handled_errors: the same, for failures an ``on_error`` link handled.
        error_data: node id -> for the node's first failure that no
            ``on_error`` link handled, the data an ``on_error`` link would
            have carried (its link inputs, ``WorkflowException`` and
            ``WorkflowExceptionInstance``), in the order the failures were
            handed over.
        finished: node id -> whether its last execution succeeded, in the
            order the executions were handed over: a node moves to the end
            each time, so the node handed over last comes last.
        order_matters: whether the order in which finished firings are
            handed over can change what fires (see the module docstring).
        on_workers: the nodes whose last execution succeeded with outputs
            that stayed on the pool's workers (`succeeded_on_workers`), until
            they are fetched (`output_fetched`) or lost (`output_lost`).
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
        links = graph.links
        self._conditions = links.conditions
        self._targets = links.targets
        self._mappings = links.data_mappings
        self._map_all = links.map_all_data
        self._cache_optional = links.cache_if_optional
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
        self.error_data: dict[NodeId, dict[Any, Any]] = {}
        self.finished: dict[NodeId, bool] = {}
        self.on_workers: set[NodeId] = set()
        self.order_matters = bool(analysis.cycles) or not all(analysis.link_required)
        self._made = 0  # firings made so far: the next one's `Firing.order`

    # ------------------------------------------------------------------ transitions

    def start(self) -> list[Firing]:
        """The firings that start the execution: one trigger per start node."""
        firings: list[Firing] = []
        for nid in self.graph.analysis.start_nodes:
            st = self._state(nid)
            st.start = dict(self._start_inputs)
            firings.extend(self._arrival(nid, st, None, None))
        return firings

    def succeeded(
        self, firing: Firing, outputs: Mapping[Any, Any], tags: Mapping[Any, Any] | None = None
    ) -> list[Firing]:
        """Record a node's outputs; return the firings its data links unlock.

        Args:
            firing: the firing that finished.
            outputs: its outputs.
            tags: output name -> an opaque token that travels with that output's
                value to the inputs it is delivered to (`Firing.input_tags`).
        """
        nid = firing.node_id
        outputs = dict(outputs)
        self.outputs[nid] = outputs
        self._finished(nid, True)
        out_tags = dict(tags) if tags else None
        firings: list[Firing] = []
        conditions = self._conditions
        for li in self._data_out[nid]:
            if conditions[li] and not self._conditions_hold(nid, conditions[li], outputs):
                continue
            firings.extend(self._deliver(li, outputs, out_tags))
        return firings

    def succeeded_on_workers(self, firing: Firing) -> list[Firing]:
        """Record a success whose outputs stayed on the pool's workers; return the firings its data links unlock.

        Afterwards: the node is in `on_workers`, `finished` says it
        succeeded, and `outputs` holds ``{}`` for it until `output_fetched`
        or `output_lost`. Its data links delivered as if it had no outputs
        (each output a link maps arrives as `MISSING`): the targets must take
        the data from the workers (the driver chains their calls to this
        firing's), so the node's links may have no conditions.
        """
        self.on_workers.add(firing.node_id)
        return self.succeeded(firing, {})

    def output_fetched(self, nid: NodeId, outputs: Mapping[Any, Any]) -> None:
        """The outputs node ``nid`` left on the workers (`succeeded_on_workers`) arrived.

        Afterwards: `outputs` holds them for the node, which is no longer in
        `on_workers`. Nothing fires: its data links delivered when it succeeded.

        Raises:
            ValueError: the node has no outputs on the workers.
        """
        self._leave_workers(nid)
        self.outputs[nid] = dict(outputs)

    def output_lost(self, nid: NodeId, error: BaseException) -> None:
        """The outputs node ``nid`` left on the workers cannot be had (their worker is gone, they do not unpickle here).

        Afterwards: the node counts as failed in the results: `errors` holds
        ``error`` for it, `outputs` keeps ``{}``, and it is no longer in
        `on_workers`. What happened stays recorded as it happened: its
        execution succeeded (`finished`, `executions`), its successors fired
        with its data, and nothing fires now (its ``on_error`` links are for
        failures of its execution); `error_data` is unchanged.

        Raises:
            ValueError: the node has no outputs on the workers.
        """
        self._leave_workers(nid)
        self.errors[nid] = error

    def _leave_workers(self, nid: NodeId) -> None:
        try:
            self.on_workers.remove(nid)
        except KeyError:
            msg = f"node {nid!r} has no outputs on the workers"
            raise ValueError(msg) from None

    def failed(self, firing: Firing, error: BaseException, tb: list[str] | None = None) -> list[Firing]:
        """Record a failure; return the firings its ``on_error`` links unlock.

        A failure with no ``on_error`` link is kept in `errors`; the runner
        decides whether it stops the execution.
        """
        nid = firing.node_id
        self.outputs[nid] = {}
        self._finished(nid, False)
        error_links = self._error_out[nid]
        if not error_links:
            self.errors[nid] = error
            if nid not in self.error_data:
                self.error_data[nid] = self._error_data(firing, error, tb)
            return []
        self.handled_errors[nid] = error
        data = self._error_data(firing, error, tb)
        # The failed firing's inputs keep their tokens; the exception entries have none.
        tags = firing.input_tags
        if tags:
            tags = {k: t for k, t in tags.items() if k not in ("WorkflowException", "WorkflowExceptionInstance")}
        firings: list[Firing] = []
        for li in error_links:
            firings.extend(self._deliver(li, data, tags or None))
        return firings

    @staticmethod
    def _error_data(firing: Firing, error: BaseException, tb: list[str] | None) -> dict[Any, Any]:
        """What a failure hands on: the firing's link inputs plus the exception, as ewoksppf does."""
        if tb is None:
            tb = traceback.format_exception(error)
        data = dict(firing.dynamic_inputs)
        data["WorkflowException"] = {"errorMessage": str(error), "traceBack": tb}
        data["WorkflowExceptionInstance"] = error
        return data

    # ------------------------------------------------------------------ internals

    def _finished(self, nid: NodeId, succeeded: bool) -> None:
        self.finished.pop(nid, None)
        self.finished[nid] = succeeded

    def _state(self, nid: NodeId) -> _NodeState:
        st = self._nodes.get(nid)
        if st is None:
            st = self._nodes[nid] = _NodeState(self._required_in[nid])
        return st

    def _deliver(self, li: int, outputs: Mapping[Any, Any], tags: _Tags) -> list[Firing]:
        map_all = self._map_all[li]
        mapping = self._mappings[li]
        data = link_data(outputs, map_all, mapping)
        data_tags: _Tags = None
        if tags:
            data_tags = {k: t for k, t in tags.items() if k in outputs} if map_all else {}
            for source_output, target_input in mapping:
                token = tags.get(source_output, MISSING)
                if token is MISSING:
                    data_tags.pop(target_input, None)
                else:
                    data_tags[target_input] = token
            data_tags = data_tags or None
        target = self._targets[li]
        st = self._state(target)
        if data_tags is not None:
            st.tagged = True
        if self._required[li]:
            if li not in st.required_cache:
                st.missing_required -= 1
            st.required_cache[li] = data
            if st.tagged:
                _keep(st.required_tags, li, data_tags)
            return self._arrival(target, st, None, None)
        if self._cache_optional[li]:
            st.optional_cache[li] = data
            if st.tagged:
                _keep(st.optional_tags, li, data_tags)
            return self._arrival(target, st, None, None)
        return self._arrival(target, st, data, data_tags)

    def _arrival(self, nid: NodeId, st: _NodeState, optional: dict[Any, Any] | None, tags: _Tags) -> list[Firing]:
        if st.fired:
            if optional is not None:
                st.retained = optional
                st.retained_tags = tags
            return [self._fire(nid, st, st.retained, st.retained_tags)]
        if optional is not None:
            st.buffer.append((optional, tags))
        if st.missing_required > 0:
            return []
        st.fired = True
        buffered, st.buffer = st.buffer, []
        if not buffered:
            return [self._fire(nid, st, None, None)]
        st.retained, st.retained_tags = buffered[-1]
        return [self._fire(nid, st, b, b_tags) for b, b_tags in buffered]

    def _fire(self, nid: NodeId, st: _NodeState, optional: dict[Any, Any] | None, optional_tags: _Tags) -> Firing:
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
        input_tags = self._merged_tags(st, links_in, optional, optional_tags) if st.tagged else None
        order = self._made
        self._made += 1
        return Firing(nid, number, dynamic, inputs, input_tags, order)

    @staticmethod
    def _merged_tags(
        st: _NodeState, links_in: Sequence[int], optional: dict[Any, Any] | None, optional_tags: _Tags
    ) -> _Tags:
        """The tokens of a firing's dynamic inputs: merged as `_fire` merges the values.

        A later entry's value wins, and with it its token, or the lack of one.
        """
        merged: dict[Any, Any] = {}
        sources: list[tuple[dict[Any, Any], _Tags]] = []
        if st.start is not None:
            sources.append((st.start, None))
        sources.extend((st.required_cache[li], st.required_tags.get(li)) for li in links_in if li in st.required_cache)
        sources.extend((st.optional_cache[li], st.optional_tags.get(li)) for li in links_in if li in st.optional_cache)
        if optional is not None:
            sources.append((optional, optional_tags))
        for data, tags in sources:
            if merged:
                for key in data:
                    if tags is None or key not in tags:
                        merged.pop(key, None)
            if tags:
                merged.update(tags)
        return merged or None

    def _conditions_hold(
        self, nid: NodeId, conditions: tuple[tuple[Any, Any], ...], outputs: Mapping[Any, Any]
    ) -> bool:
        """Spec §3.3: every condition of a link holds against the source's outputs."""
        node = self.graph.nodes[nid]
        read = KINDS[node.task_type].conditions_on
        if read is not None:  # the kind keeps the data its conditions test in one output (ppf: _ppfdict)
            values = outputs.get(read)
            outputs = values if isinstance(values, Mapping) else {}
        else_value = node.conditions_else_value
        all_values = self._condition_values.get(nid, {})
        for name, expected in conditions:
            if name not in outputs:
                return False
            actual = outputs[name]
            if _equal(expected, else_value):
                if not (_equal(actual, else_value) or not any(_equal(actual, v) for v in all_values.get(name, ()))):
                    return False
            elif not _equal(actual, expected):
                return False
        return True


def _keep(store: dict[int, dict[Any, Any]], li: int, tags: _Tags) -> None:
    """Record (or forget) the tokens of the data a link just cached."""
    if tags is None:
        store.pop(li, None)
    else:
        store[li] = tags


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` as a plain bool; values whose ``==`` raises or is not a bool are unequal."""
    try:
        result = a == b
        return bool(result) if isinstance(result, bool) else False
    except Exception:
        return False
