"""Sending calls ahead on a chaining pool, as a planner beside the state machine. No I/O, no asyncio, no pool.

On a pool that chains calls (`aioflow.pools.Pool.chains_calls`), the driver
sends the nodes of `_ahead.sendable_ahead` before their predecessors have
finished, with the pool's calls of those predecessors as arguments; on a
pool that also keeps results on its workers, the outputs of
`_ahead.results_may_stay_remote` stay there. `AheadPlanner` holds the
bookkeeping of both for one execution and makes every decision about them;
the driver (`_run._Execution`) only submits what it says, awaits, and
reports back. The state machine (`_state.ExecutionState`) stays the single
authority on firings: a call sent ahead belongs to no firing until the
state machine fires its node, and the planner only reads the state.

The driver reports (events):

- `submitted`: a fired node's call went to the pool;
- `sent`: a call the planner proposed (`next_ahead`) went to the pool ahead
  of its node's firing;
- `succeeded` / `failed`: a call that belongs to a firing finished.

The planner answers (decisions):

- `next_ahead`: the next node to send ahead, and with which predecessors'
  calls (`Send`): the successors of the nodes whose calls are in the pool,
  in the order those calls were made, each once every predecessor is in
  the pool or has succeeded;
- `chain_fired`: how to send a fired node some of whose predecessors left
  their outputs on the workers: chained to their calls;
- `adopt`: which call sent ahead a firing takes as its own;
- `failed`: which calls sent ahead to void when a node fails: those that
  waited for it, directly or not (their nodes can never fire);
- `on_workers`: where the outputs kept on the workers are, to fetch them
  at the end (`ExecutionState.output_fetched`, `ExecutionState.output_lost`).

Calls and executors are opaque to the planner (``C`` and ``E``: the pool's
futures and executors in the driver, which are equal only to themselves;
any values in a test); it only compares them. With each call it keeps the
executor the call went to, since a call can take as arguments only calls
of its own executor.

Cost: O(1) per event but `failed` (O(the calls it voids)); `next_ahead`
visits each out-link of a node whose call is in the pool once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._tasks import link_data
from ._ahead import outputs_with_tokens, results_may_stay_remote, sendable_ahead

if TYPE_CHECKING:
    from collections.abc import Collection

    from ..graph import NodeId
    from ._state import ExecutionState

__all__ = ["AheadPlanner", "Placed", "Send"]

C = TypeVar("C")
E = TypeVar("E")

# One in-link's entry of `Send.parts`: the link's data, or (index into
# `Send.upstream`, map_all_data, data_mapping) to build it from that call's
# outputs on the worker (`aioflow._tasks.ChainedCall.parts`).
Part = dict[Any, Any] | tuple[int, bool, tuple[tuple[Any, Any], ...]]


@dataclass(frozen=True, slots=True)
class Send(Generic[C]):
    """A call to make for a node, chained to calls in the pool.

    Attributes:
        node_id: the node.
        parts: one entry per in-link of the node, in link order (the order
            in which the state machine merges link data): the link's data
            when its source's outputs are known here, else ``(index,
            map_all_data, data_mapping)``, to build it on the worker from the
            outputs of ``upstream[index]`` (`aioflow._tasks.ChainedCall.parts`).
        upstream: the calls whose results the call takes as arguments, one
            per predecessor that is in the pool or left its outputs on the
            workers, in the order of its first in-link.
        on_workers: whether the call's result stays on the workers
            (`aioflow.pools.Pool.bind_remote`).
    """

    node_id: NodeId
    parts: tuple[Part, ...]
    upstream: tuple[C, ...]
    on_workers: bool


@dataclass(frozen=True, slots=True)
class Placed(Generic[C, E]):
    """A call, and the executor it went to."""

    call: C
    executor: E


class AheadPlanner(Generic[C, E]):
    """The calls one execution sends ahead and the results it keeps on the workers.

    Attributes:
        ahead: the nodes that may be sent ahead (`_ahead.sendable_ahead`).
        on_workers: node -> the call whose result holds the node's outputs on
            the workers, for each node whose call succeeded there.
    """

    def __init__(self, state: ExecutionState, ahead: frozenset[NodeId], stay: frozenset[NodeId]) -> None:
        """Plan for the execution ``state`` keeps.

        Args:
            state: the execution's state machine, which the planner reads only.
            ahead: the nodes that may be sent ahead (`_ahead.sendable_ahead`).
            stay: the nodes whose outputs stay on the workers
                (`_ahead.results_may_stay_remote`; empty on a pool that cannot).
        """
        graph = state.graph
        self._state = state
        self._links = graph.links
        self._sources = graph.links.sources
        self._links_in = graph.analysis.links_in
        self._data_out = graph.analysis.data_links_out
        self.ahead = ahead
        # The predecessors of the nodes of `ahead`: each fires at most once
        # (`_ahead.fires_at_most_once`), so it has at most one call.
        self._feeds = frozenset(self._sources[li] for nid in ahead for li in self._links_in[nid])
        self._stay = stay
        # Calls sent ahead that no firing has adopted yet.
        self._early: dict[NodeId, C] = {}
        # The calls of feeding nodes in the pool, not finished yet.
        self._in_pool: dict[NodeId, Placed[C, E]] = {}
        # node -> the nodes sent ahead while its call was in the pool: its failure voids them.
        self._waiting_on: dict[NodeId, list[NodeId]] = {}
        # The feeding nodes whose successors may be sent ahead next, in the
        # order their calls were made, and the next out-link of the first one.
        self._frontier: deque[NodeId] = deque()
        self._next_link = 0
        self.on_workers: dict[NodeId, Placed[C, E]] = {}

    @classmethod
    def for_run(
        cls, state: ExecutionState, own_runner: Collection[NodeId], keeps_results_remote: bool
    ) -> AheadPlanner[C, E] | None:
        """The planner of a run on a chaining pool, or ``None`` if the run has nothing to send ahead or keep.

        ``own_runner``: the nodes an execution hook runs with a runner of its
        own (`_ahead.outputs_with_tokens`); ``keeps_results_remote``: the pool's.
        """
        graph = state.graph
        opaque = outputs_with_tokens(graph, own_runner)
        ahead = sendable_ahead(graph, opaque)
        stay = results_may_stay_remote(graph, ahead, opaque) if keeps_results_remote else frozenset()
        if not ahead and not stay:
            return None
        return cls(state, ahead, stay)

    # ------------------------------------------------------------------ events

    def submitted(self, nid: NodeId, call: C, executor: E) -> None:
        """A firing of ``nid`` went to the pool as ``call``: its successors may be sent ahead, chained to it."""
        if nid in self._feeds:
            self._in_pool[nid] = Placed(call, executor)
            self._frontier.append(nid)

    def sent(self, send: Send[C], call: C, executor: E) -> None:
        """``send`` (from `next_ahead`) went to the pool as ``call``, ahead of its node's firing.

        It waits for the firing that `adopt` gives it to, or for `failed` to void it.
        """
        nid = send.node_id
        self._early[nid] = call
        sources = self._sources
        for source in dict.fromkeys(sources[li] for li in self._links_in[nid]):
            if source in self._in_pool:  # its failure would void this call
                self._waiting_on.setdefault(source, []).append(nid)
        self.submitted(nid, call, executor)

    def adopt(self, nid: NodeId) -> C | None:
        """The state machine fired ``nid``: the call sent ahead for it, which that firing now owns, or ``None``."""
        return self._early.pop(nid, None) if self._early else None

    def succeeded(self, nid: NodeId, call: C, executor: E, on_workers: bool) -> None:
        """The call of a firing of ``nid`` succeeded; ``on_workers``: its result stayed on the workers.

        The calls sent ahead that waited for it will be adopted; its
        successors take its outputs from the workers if they stayed there,
        else from the state machine, once it has them.
        """
        self._leave(nid, call)
        if on_workers:
            self.on_workers[nid] = Placed(call, executor)
        if self._waiting_on:
            self._waiting_on.pop(nid, None)

    def failed(self, nid: NodeId, call: C | None) -> list[C]:
        """A firing of ``nid`` failed (``call``: its call, ``None`` if the pool refused it).

        Returns the calls sent ahead that waited for it, directly or not:
        their nodes can never fire, so no firing will adopt them, and the
        driver cancels and forgets them. Calls already adopted are not among
        them (a node fires only after its predecessors succeeded).
        """
        if call is not None:
            self._leave(nid, call)
        voided: list[C] = []
        stack = self._waiting_on.pop(nid, [])
        while stack:
            waiting = stack.pop()
            early = self._early.pop(waiting, None)
            if early is None:
                continue
            self._leave(waiting, early)
            voided.append(early)
            stack.extend(self._waiting_on.pop(waiting, ()))
        return voided

    def _leave(self, nid: NodeId, call: C) -> None:
        placed = self._in_pool.get(nid)
        if placed is not None and placed.call == call:
            del self._in_pool[nid]

    # ------------------------------------------------------------------ decisions

    def stays_on_workers(self, nid: NodeId) -> bool:
        """Whether the result of a call of ``nid`` stays on the workers."""
        return nid in self._stay

    def next_ahead(self, executor: E) -> Send[C] | None:
        """The next node to send ahead to ``executor``, or ``None`` until another call is submitted or sent.

        A node of `ahead` that has neither fired nor been sent, one of whose
        predecessors has a call in the pool, once each of its predecessors
        is in the pool (a call of ``executor``) or has succeeded. Each
        out-link of a node in the pool is looked at once: a successor not
        ready then is looked at again when its other predecessors are sent,
        or sent when it fires.
        """
        frontier = self._frontier
        executions = self._state.executions
        while frontier:
            out = self._data_out[frontier[0]]
            while self._next_link < len(out):
                target = self._links.targets[out[self._next_link]]
                self._next_link += 1
                if target in self.ahead and target not in self._early and target not in executions:
                    send = self._chain(target, executor)
                    if send is not None:
                        return send
            frontier.popleft()
            self._next_link = 0
        return None

    def chain_fired(self, nid: NodeId, executor: E) -> Send[C] | None:
        """How to send a firing of ``nid`` to ``executor``: chained to the calls holding its inputs on the workers.

        ``None``: with the firing's inputs, since none of them stayed on the workers.
        """
        if not self.on_workers or nid not in self.ahead:
            return None  # only a node of `ahead` has predecessors whose outputs may stay
        return self._chain(nid, executor)

    def _chain(self, nid: NodeId, executor: E) -> Send[C] | None:
        """``nid`` chained to its predecessors' calls, or ``None`` if one of them neither is in the pool nor succeeded.

        Also ``None`` when every input is known here: no need to chain.
        """
        state = self._state
        links = self._links
        parts: list[Part] = []
        upstream: list[C] = []
        position: dict[NodeId, int] = {}
        for li in self._links_in[nid]:
            source = links.sources[li]
            map_all, mapping = links.map_all_data[li], links.data_mappings[li]
            placed = self._in_pool.get(source)
            if placed is None or placed.executor != executor:
                placed = self.on_workers.get(source)
            if placed is not None:
                index = position.get(source)
                if index is None:
                    index = position[source] = len(upstream)
                    upstream.append(placed.call)
                parts.append((index, map_all, mapping))
            elif state.finished.get(source):  # it fires at most once: its one execution succeeded
                parts.append(link_data(state.outputs[source], map_all, mapping))
            else:
                return None  # not sent yet (or failed): the node is sent when, if ever, it fires
        if not upstream:
            return None
        return Send(nid, tuple(parts), tuple(upstream), nid in self._stay)
