"""Which nodes may be sent to a chaining pool before their predecessors have finished.

On a pool whose engine tracks dependencies itself (`Pool.chains_calls`:
Dask, Parsl), waiting for a node's result in this process before sending
its successor costs a round trip per link: on a chain that doubles the
time. The scheduler therefore sends a node *ahead*, with the pool's futures
of its predecessors as arguments, when nothing but their success decides
whether, and with what, it runs. That is a node that:

- fires at most once (`fires_at_most_once`), so the one call sent ahead
  is its only firing;
- is not a start node, and every link into it is a required data link
  without conditions (no ``on_error`` link, nothing optional): once every
  predecessor has succeeded, the push-flow rule fires it, with the data of
  those links merged in link order, which a worker can rebuild from the
  predecessors' outputs (`aioflow._tasks.run_chained`);
- runs a task whose outputs carry no tokens, as do its predecessors
  (`outputs_with_tokens`: ewokscore's task classes give their outputs
  identities that only the scheduler tracks).

If a predecessor fails, the node never fires: the call sent ahead is
cancelled and its outcome dropped. The state machine stays the single
authority: a call sent ahead counts as the node's firing only once the state
machine fires the node (`_plan.AheadPlanner` matches the two, and holds
the bookkeeping of one execution's calls sent ahead).

Computed once per execution, in one pass over the graph in topological
order: O(nodes + links).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._kinds import KINDS

if TYPE_CHECKING:
    from collections.abc import Collection

    from ..graph import Graph, NodeId

__all__ = ["fires_at_most_once", "outputs_with_tokens", "results_may_stay_remote", "sendable_ahead"]


def outputs_with_tokens(graph: Graph, own_runner: Collection[NodeId]) -> frozenset[NodeId]:
    """The nodes whose outputs may come with tokens: their kind's (`TaskKind.tokens`), and ``own_runner``.

    ``own_runner``: the nodes an execution hook runs with a runner of its own
    (`aioflow.scheduler.CallContext.runner`), which may return tokens.
    """
    return frozenset(nid for nid, node in graph.nodes.items() if nid in own_runner or KINDS[node.task_type].tokens)


def fires_at_most_once(graph: Graph) -> frozenset[NodeId]:
    """The nodes the push-flow rule fires at most once, whatever happens.

    A start node without in-links fires once, on its trigger. Any other
    node outside every cycle fires at most once if all its in-links are
    required and come from nodes that fire at most once: each such link
    delivers at most once, and the node fires when the last one has. An
    optional link (every delivery after the first firing fires again), a
    forced start node with in-links (its trigger, then its deliveries) or
    a cycle can fire a node several times.
    """
    analysis = graph.analysis
    sources = graph.links.sources
    in_cycle = {nid for cycle in analysis.cycles for nid in cycle}
    starts = set(analysis.start_nodes)
    once: set[NodeId] = set()
    for nid in analysis.order:  # predecessors first, outside cycles
        links_in = analysis.links_in[nid]
        if nid in in_cycle:
            continue
        only_trigger = not links_in
        only_once_links = nid not in starts and all(
            analysis.link_required[li] and sources[li] in once for li in links_in
        )
        if only_trigger or only_once_links:
            once.add(nid)
    return frozenset(once)


def sendable_ahead(graph: Graph, opaque: frozenset[NodeId]) -> frozenset[NodeId]:
    """The nodes that may be sent ahead of their predecessors' outcomes (see the module's docstring).

    ``opaque``: the nodes whose outputs may come with tokens (`outputs_with_tokens`).
    """
    analysis = graph.analysis
    links = graph.links
    once = fires_at_most_once(graph)
    ahead: set[NodeId] = set()
    for nid in once:
        links_in = analysis.links_in[nid]
        if not links_in or nid in opaque:
            continue
        if all(
            not links.conditions[li] and not links.on_error[li] and links.sources[li] not in opaque for li in links_in
        ):
            ahead.add(nid)
    return frozenset(ahead)


def results_may_stay_remote(graph: Graph, ahead: frozenset[NodeId], opaque: frozenset[NodeId]) -> frozenset[NodeId]:
    """The nodes whose outputs the scheduler never reads while the graph runs, given ``ahead``.

    On a pool that can keep results on its workers, such a node's outputs
    stay there: its successors take them from there, and the scheduler
    fetches them at the end only if they are among the results. That is a
    node that fires at most once, runs a task whose outputs carry no
    tokens, and whose data links all lead, without conditions, to nodes in
    ``ahead`` without ``on_error`` links (those would hand their inputs to
    an error handler through the scheduler). A node without successors
    qualifies. ``opaque``: as for `sendable_ahead`.
    """
    analysis = graph.analysis
    links = graph.links
    remote: set[NodeId] = set()
    for nid in fires_at_most_once(graph):
        if nid in opaque:
            continue
        if all(
            not links.conditions[li] and links.targets[li] in ahead and not analysis.error_links_out[links.targets[li]]
            for li in analysis.data_links_out[nid]
        ):
            remote.add(nid)
    return frozenset(remote)
