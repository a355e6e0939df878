"""A dry run against a journal's cache: which firings would run, which would be reused, and why.

`plan` runs the graph's state machine with hooks (`_Planner`) that answer
every firing, so that no task runs: a firing the cache has (same task
identity, code included, and same inputs' digest) is answered with its
outputs from the journal, as a run with ``cache=True`` would; any other
would run, and is answered with outputs that stand for what it would
produce (`WouldRun`): the firings they reach would run too ("its inputs
come from `fit`, which runs"), and a condition on them does not hold, so
that what lies behind it is not reached (`Plan.not_reached`: it depends on
what the running nodes will produce).

Why a firing would run, against the latest finished firing of the same
node (and execution number) in the journal's runs of the same graph id:
its code could not be read here; there is no earlier result; the code of
its task changed; which inputs changed, appeared or disappeared (from the
inputs a cached run keeps as shown, `inputs_shown`); or the earlier result
was not kept (too large, or unpicklable).

Imports: `aioflow.scheduler` (to run the state machine), `_record`, `_store`.
"""

from __future__ import annotations

import json
import pickle
from typing import TYPE_CHECKING, Any, NamedTuple

from ..scheduler import ExecutionHooks
from ._record import TaskCache, inputs_digest, inputs_shown, node_key
from ._store import connect_to_read

if TYPE_CHECKING:
    import os
    import sqlite3
    from collections.abc import Mapping

    from ..graph import Graph, Node, NodeId
    from ..scheduler._state import Firing

__all__ = ["Plan", "PlannedFiring", "WouldRun", "node_name", "plan", "plan_async"]

# The finished firings of the runs of a graph id, oldest end first (`_Planner`
# keeps the latest of each node and execution number). One read for the plan.
_EARLIER = (
    "SELECT f.node_id, f.execution, f.task_digest, f.inputs_digest, f.inputs_shown, f.outputs IS NOT NULL, "
    "f.outputs_note, f.run_id, f.seq FROM firings AS f JOIN runs AS r ON r.run_id = f.run_id "
    "WHERE f.status = 'finished' AND r.graph_id = ? ORDER BY f.ended"
)


class WouldRun:
    """An output of a firing that would run: its value is not known before it runs."""

    __slots__ = ("node_id",)

    def __init__(self, node_id: NodeId) -> None:
        self.node_id = node_id

    def __repr__(self) -> str:
        return f"<the output of {self.node_id!r}, which runs>"

    def __eq__(self, other: object) -> bool:  # a condition on it never holds
        return False

    __hash__ = object.__hash__


class PlannedFiring(NamedTuple):
    """One firing of the plan.

    Attributes:
        node_id: the node.
        execution: the node's execution number (1, then 2... in a loop).
        action: ``reuse`` (its outputs come from the journal) or ``run``.
        reason: why, in plain words.
        reused_from: where its outputs come from (``RUN_ID:SEQ``), for ``reuse``.
    """

    node_id: NodeId
    execution: int
    action: str
    reason: str
    reused_from: str | None = None


class Plan(NamedTuple):
    """What a run of a graph with the cache of a journal would do.

    Attributes:
        graph_id: the graph.
        firings: in the order the run would make them.
        not_reached: the nodes no firing of the plan reaches (action ``not
            reached``, execution 0): whether they run depends on what a
            node that runs upstream of them will produce; or, when none
            does, they would not run (no link to them fires).
    """

    graph_id: str
    firings: list[PlannedFiring]
    not_reached: list[PlannedFiring]

    def for_node(self, node_id: NodeId) -> list[PlannedFiring]:
        """The planned firings of one node (or why it is not reached)."""
        return [f for f in (*self.firings, *self.not_reached) if f.node_id == node_id]


class _Planner(ExecutionHooks):
    """Hooks that answer every firing: from the cache, or with `WouldRun` outputs, noting why."""

    def __init__(self, conn: sqlite3.Connection, graph: Graph) -> None:
        self.firings: list[PlannedFiring] = []
        self._cache = TaskCache(conn, graph)
        # (node key, execution number) -> the rest of its latest `_EARLIER` row.
        self._earlier = {(row[0], row[1]): row[2:] for row in conn.execute(_EARLIER, (graph.id,))}
        links = graph.links
        read: dict[NodeId, dict[Any, None]] = {nid: {} for nid in graph.nodes}
        for source, mapping, conditions in zip(links.sources, links.data_mappings, links.conditions, strict=True):
            names = read[source]
            names.update(dict.fromkeys(output for output, _ in mapping))
            names.update(dict.fromkeys(output for output, _ in conditions))
        self._outputs_read = {nid: list(names) for nid, names in read.items()}

    def answer(self, node: Node, firing: Firing) -> Mapping[Any, Any] | None:
        nid = firing.node_id
        running = _running_sources(firing.inputs)
        if running:
            names = ", ".join(f"`{node_name(r)}`" for r in running)
            verb = "runs" if len(running) == 1 else "run"
            return self._runs(firing, f"its inputs come from {names}, which {verb}")
        identity = self._cache.identities[nid]
        if identity.digest is None:
            return self._runs(firing, str(identity.problem))
        digest = inputs_digest(firing.inputs)
        found = self._cache.lookup(nid, digest)
        if found is not None:
            data, source = found
            self.firings.append(
                PlannedFiring(nid, firing.number, "reuse", f"same code and inputs as firing {source}", source)
            )
            outputs: Mapping[Any, Any] = pickle.loads(data)  # the journal's own pickle
            return outputs
        return self._runs(firing, self._why(firing, identity.digest, identity.name, digest))

    def _runs(self, firing: Firing, reason: str) -> Mapping[Any, Any]:
        self.firings.append(PlannedFiring(firing.node_id, firing.number, "run", reason))
        marker = WouldRun(firing.node_id)
        return dict.fromkeys(self._outputs_read.get(firing.node_id, ()), marker)

    def _why(self, firing: Firing, task: str, name: str, digest: str | None) -> str:
        if digest is None:
            return "its inputs cannot be compared (they cannot be pickled)"
        row = self._earlier.get((node_key(firing.node_id), firing.number))
        if row is None:
            return "no earlier result"
        earlier_task, earlier_inputs, earlier_shown, kept, note, run_id, seq = row
        if earlier_task is None:
            return f"no earlier result with the cache on (firing {run_id}:{seq} ran without it)"
        if earlier_task != task:
            own = task.partition(":")[0]
            if earlier_task.partition(":")[0] != own:
                return f"the code of `{name}` changed"
            return f"the module of `{name}` changed (not `{name}` itself)"
        if earlier_inputs != digest:
            return _inputs_changed(earlier_shown, firing.inputs)
        if not kept:
            return f"its earlier result was not kept ({note or 'no outputs'})"
        return "no earlier result"


def _running_sources(inputs: Mapping[Any, Any]) -> list[NodeId]:
    found: dict[Any, None] = {}
    for value in inputs.values():
        if isinstance(value, WouldRun):
            found[value.node_id] = None
    return list(found)


def _inputs_changed(earlier_shown: str | None, inputs: Mapping[Any, Any]) -> str:
    """Which inputs differ from those an earlier firing was shown with, in plain words."""
    if earlier_shown is None:
        return "its inputs changed"
    before: dict[str, list[Any]] = json.loads(earlier_shown)
    now: dict[str, list[Any]] = json.loads(inputs_shown(inputs))
    changes = []
    for name in sorted(before.keys() | now.keys()):
        if name not in now:
            changes.append(f"input `{name}` is gone (it was {before[name][1]})")
        elif name not in before:
            changes.append(f"input `{name}` is new ({now[name][1]})")
        elif before[name][0] != now[name][0] or before[name][0] is None:
            old, new = before[name][1], now[name][1]
            changes.append(f"input `{name}` changed {old} → {new}" if old != new else f"input `{name}` changed")
    return "; ".join(changes) if changes else "its inputs changed"


def node_name(node_id: NodeId) -> str:
    """A node id as a plan shows it: a subgraph's node as its path, joined with ``:`` (as labels are)."""
    from ..graph._build import _flatten_id

    return ":".join(_flatten_id(node_id))


async def plan_async(
    graph: Any,
    journal: str | os.PathLike[str],
    *,
    inputs: Any = None,
    load_options: Mapping[str, Any] | None = None,
) -> Plan:
    """`plan`, awaited in a running event loop."""
    from ..graph import load_graph
    from ..scheduler import execute_graph_async

    loaded = load_graph(graph, inputs=inputs, **dict(load_options or {}))
    conn = connect_to_read(journal)
    try:
        planner = _Planner(conn, loaded)
        await execute_graph_async(
            loaded, hooks=[planner], pool_type="thread", max_workers=1, raise_on_error=False, merge_outputs=False
        )
    finally:
        conn.close()
    reached = {f.node_id for f in planner.firings}
    running = {f.node_id for f in planner.firings if f.action == "run"}
    not_reached = [
        PlannedFiring(nid, 0, "not reached", _not_reached(loaded, nid, running))
        for nid in loaded.nodes
        if nid not in reached
    ]
    return Plan(loaded.id, planner.firings, not_reached)


def _not_reached(graph: Graph, node_id: NodeId, running: set[NodeId]) -> str:
    """Why no firing of the plan reaches ``node_id``: the nodes that run upstream of it, if any."""
    links_in = graph.analysis.links_in
    seen = {node_id}
    todo = [node_id]
    upstream_running: list[NodeId] = []
    sources = graph.links.sources
    while todo:
        nid = todo.pop()
        for li in links_in[nid]:
            source = sources[li]
            if source not in seen:
                seen.add(source)
                todo.append(source)
                if source in running:
                    upstream_running.append(source)
    if upstream_running:
        names = ", ".join(f"`{node_name(r)}`" for r in sorted(upstream_running, key=repr))
        return f"whether it runs depends on what {names} will produce"
    return "it would not run: no link to it fires (a condition does not hold, or there is no error to handle)"


def plan(
    graph: Any,
    journal: str | os.PathLike[str],
    *,
    inputs: Any = None,
    load_options: Mapping[str, Any] | None = None,
) -> Plan:
    """What a run of ``graph`` with ``cache=True`` and ``journal`` would do, without running any task.

    Args:
        graph: a `Graph`, or anything `aioflow.load_graph` accepts.
        journal: the journal file whose cache the run would use.
        inputs: as `aioflow.execute_graph`'s.
        load_options: keyword arguments for `aioflow.load_graph`.

    Raises:
        GraphError: the graph is invalid.
        JournalError: no journal at ``journal``, or it cannot be read.
    """
    from ..scheduler._sync import run_sync

    return run_sync(lambda: plan_async(graph, journal, inputs=inputs, load_options=load_options))
