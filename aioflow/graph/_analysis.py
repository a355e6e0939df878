"""One linear pass over a graph: everything the scheduler needs, in O(nodes + links).

Computed once per `Graph`, iteratively (no recursion, so a 100,000-node chain
loads):

- adjacency by link index (data links and error links kept apart);
- link requiredness (spec §3.5) by one breadth-first propagation: a node is
  *tainted* when some link into it or into one of its ancestors is optional by
  itself (``required: false``, or conditional without ``required: true``);
  an unmarked link is required unless it is conditional or its source is tainted;
- start nodes (§4.1) and end nodes (§4.2);
- strongly connected components (Tarjan's algorithm with an explicit stack):
  the cycles, and the cycles that can never run (each of their nodes waits on
  a required link from inside the cycle);
- a stable order (Kahn's algorithm by generations on the condensation, ties
  broken by declaration order) used wherever results are merged.
"""

from __future__ import annotations

from collections import Counter, deque
from itertools import accumulate, chain, count, repeat
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from ._model import Graph, Links, NodeId

__all__ = ["Analysis", "analyse"]


class Analysis(NamedTuple):
    """The result of `analyse`. Link lists hold indices into ``Graph.links``.

    Attributes:
        data_links_out: node -> indices of its outgoing links that are not error links.
        error_links_out: node -> indices of its outgoing ``on_error`` links.
        links_in: node -> indices of its incoming links.
        link_required: per link, whether its target waits for it.
        required_in_count: node -> number of required incoming links.
        start_nodes / end_nodes: in stable order.
        condition_values: node -> output name -> every value its conditional
            links compare that output with (``V[name]`` of spec §3.3).
        cycles: the strongly connected components that contain a cycle.
        blocked_cycles: the cycles in which every node waits on a required link
            from inside the cycle, so that none of them can ever run.
        order: every node, in a stable topological order of the condensation.
    """

    data_links_out: dict[NodeId, tuple[int, ...]]
    error_links_out: dict[NodeId, tuple[int, ...]]
    links_in: dict[NodeId, tuple[int, ...]]
    link_required: tuple[bool, ...]
    required_in_count: dict[NodeId, int]
    start_nodes: tuple[NodeId, ...]
    end_nodes: tuple[NodeId, ...]
    condition_values: dict[NodeId, dict[Any, list[Any]]]
    cycles: tuple[tuple[NodeId, ...], ...]
    blocked_cycles: tuple[tuple[NodeId, ...], ...]
    order: tuple[NodeId, ...]


def analyse(graph: Graph) -> Analysis:
    """Analyse a graph whose links all refer to existing nodes."""
    nodes = graph.nodes
    links = graph.links
    ids = list(nodes)
    index_of = {n: i for i, n in enumerate(ids)}
    n_nodes = len(ids)
    # Link ends by node index; then each node's links, grouped by a stable
    # sort: tuples of ints, which the garbage collector stops tracking, not
    # lists, which it would rescan in every collection while loading goes on.
    link_sources = tuple(map(index_of.__getitem__, links.sources))
    link_targets = tuple(map(index_of.__getitem__, links.targets))
    links_out = _grouped(link_sources, n_nodes)
    links_in = _grouped(link_targets, n_nodes)
    if any(links.on_error):
        on_error = links.on_error
        data_out = [tuple(li for li in out if not on_error[li]) for out in links_out]
        error_out = [tuple(li for li in out if on_error[li]) for out in links_out]
    else:
        data_out = links_out
        error_out = [()] * n_nodes
    successors = list(map(tuple, map(map, repeat(link_targets.__getitem__), links_out)))

    link_required = _link_requiredness(links, link_sources, link_targets, successors)
    if all(link_required):
        required_in_count = list(map(len, links_in))
    else:
        required_in_count = [0] * n_nodes
        for t, required in zip(link_targets, link_required, strict=True):
            if required:
                required_in_count[t] += 1

    order, components = _order_and_components(successors, list(map(len, links_in)))
    cycles: list[list[int]] = []
    blocked: list[list[int]] = []
    if components is not None:
        component_of = [0] * n_nodes
        for ci, component in enumerate(components):
            for n in component:
                component_of[n] = ci
        for ci, component in enumerate(components):
            first = component[0]
            if len(component) == 1 and first not in successors[first]:
                continue
            cycles.append(component)
            if all(
                any(link_required[li] and component_of[link_sources[li]] == ci for li in links_in[n]) for n in component
            ):
                blocked.append(component)
    position = [0] * n_nodes
    for pos, n in enumerate(order):
        position[n] = pos

    condition_values: dict[NodeId, dict[Any, list[Any]]] = {}
    seen: dict[tuple[NodeId, Any], _Values] = {}
    for source, conditions in zip(links.sources, links.conditions, strict=True):
        if conditions:
            per_name = condition_values.setdefault(source, {})
            for name, value in conditions:
                known = seen.get((source, name))
                if known is None:
                    known = seen[source, name] = _Values()
                if known.add(value):
                    per_name.setdefault(name, []).append(value)

    node_list = list(nodes.values())
    start = [i for i in range(n_nodes) if not links_in[i] or node_list[i].force_start_node]
    end = [i for i in range(n_nodes) if not data_out[i]]
    if not end:
        end = [
            i
            for i in range(n_nodes)
            if _has_uncovered_condition(condition_values.get(ids[i], {}), node_list[i].conditions_else_value)
        ]

    def in_order(seq: Sequence[int]) -> tuple[NodeId, ...]:
        return tuple(ids[i] for i in sorted(seq, key=position.__getitem__))

    return Analysis(
        data_links_out=dict(zip(ids, data_out, strict=True)),
        error_links_out=dict(zip(ids, error_out, strict=True)),
        links_in=dict(zip(ids, links_in, strict=True)),
        link_required=link_required,
        required_in_count=dict(zip(ids, required_in_count, strict=False)),
        start_nodes=in_order(start),
        end_nodes=in_order(end),
        condition_values=condition_values,
        cycles=tuple(in_order(c) for c in cycles),
        blocked_cycles=tuple(in_order(c) for c in blocked),
        order=tuple(ids[i] for i in order),
    )


def _grouped(keys: tuple[int, ...], n_groups: int) -> list[tuple[int, ...]]:
    """For each group ``g < n_groups``: the positions ``i`` with ``keys[i] == g``, in order."""
    if len(keys) > 8 * n_groups:
        # Large groups: appending to one list per group (in C, through `map`)
        # is faster than sorting, and the lists are few.
        lists: list[list[int]] = [[] for _ in range(n_groups)]
        deque(map(list.append, map(lists.__getitem__, keys), count()), maxlen=0)
        return list(map(tuple, lists))
    # Many small groups: a stable sort, then slices, so that no list per group
    # is kept for the garbage collector to rescan while loading goes on.
    positions = tuple(sorted(range(len(keys)), key=keys.__getitem__))
    sizes = Counter(keys)
    ends = list(accumulate(map(sizes.__getitem__, range(n_groups))))
    return list(map(positions.__getitem__, map(slice, [0, *ends[:-1]], ends)))


class _Values:
    """Distinct values, by ``==``: a hashable one is found in O(1), others by a scan of the unhashable ones.

    (A hashable value never equals an unhashable one in what documents hold:
    a tuple is never equal to a list, nor a str to a dict.)
    """

    __slots__ = ("hashable", "others")

    def __init__(self, values: Iterable[Any] = ()) -> None:
        self.hashable: set[Any] = set()
        self.others: list[Any] = []
        for value in values:
            self.add(value)

    def add(self, value: Any) -> bool:
        """Keep ``value``; False when an equal one is kept already."""
        if value in self:
            return False
        try:
            self.hashable.add(value)
        except Exception:  # unhashable (or a __hash__ that raises)
            self.others.append(value)
        return True

    def __contains__(self, value: Any) -> bool:
        try:
            return value in self.hashable
        except Exception:  # unhashable, or an __eq__ that raises
            return any(same_value(value, v) for v in self.others)


def same_value(a: Any, b: Any) -> bool:
    """Equality that never raises (values come from user documents)."""
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _locally_optional(required: bool | None, conditional: bool) -> bool:
    if required is not None:
        return not required
    return conditional


def _link_requiredness(
    links: Links, link_sources: tuple[int, ...], link_targets: tuple[int, ...], successors: list[tuple[int, ...]]
) -> tuple[bool, ...]:
    """Spec §3.5 in O(nodes + links): taint propagates downstream of optional links."""
    marked = links.required
    if marked.count(None) == len(marked) and not any(links.conditions) and not any(links.on_error):
        return (True,) * len(marked)  # nothing optional, so nothing tainted
    conditional = [bool(c) or e for c, e in zip(links.conditions, links.on_error, strict=True)]
    tainted = [False] * len(successors)
    queue: deque[int] = deque()
    for t, required, cond in zip(link_targets, marked, conditional, strict=True):
        if _locally_optional(required, cond) and not tainted[t]:
            tainted[t] = True
            queue.append(t)
    while queue:
        for nxt in successors[queue.popleft()]:
            if not tainted[nxt]:
                tainted[nxt] = True
                queue.append(nxt)
    return tuple(
        (not cond and not tainted[s]) if required is None else required
        for s, required, cond in zip(link_sources, marked, conditional, strict=True)
    )


def _has_uncovered_condition(values_by_name: dict[Any, list[Any]], else_value: Any) -> bool:
    """Spec §4.2, with booleans covered by their negation (or the else value).

    A value is covered when another conditional link of the same node takes the
    remaining cases: the else value for any value, or the opposite boolean.
    """
    for values in values_by_name.values():
        known = _Values(values)
        for value in values:
            covering = [else_value]
            if same_value(value, True):
                covering.append(False)
            elif same_value(value, False):
                covering.append(True)
            if not any(c in known for c in covering):
                return True
    return False


def _order_and_components(
    successors: list[tuple[int, ...]], indegree: list[int]
) -> tuple[list[int], list[list[int]] | None]:
    """A stable order of the nodes and, when the graph has cycles, its components.

    Kahn's algorithm by generations: generation 0 holds the nodes without
    predecessors in declaration order; each later generation is collected while
    scanning the previous one in order and each node's successors in link order
    (the order ewokscore's sequential engine runs a DAG in). When Kahn's
    algorithm cannot place every node, the graph has cycles: the same ordering
    is then applied to the condensation (strongly connected components), members
    of one component keeping their declaration order. ``indegree``: each
    node's number of in-links (used up).
    """
    n_nodes = len(successors)
    order = _kahn(None, successors, indegree, range(n_nodes))
    if len(order) == n_nodes:
        return order, None
    components = _strongly_connected_components(n_nodes, successors)
    component_of = [0] * n_nodes
    for ci, component in enumerate(components):
        for n in component:
            component_of[n] = ci
    comp_succ: list[list[int]] = [[] for _ in components]
    comp_indegree = [0] * len(components)
    for n in range(n_nodes):
        cn = component_of[n]
        for m in successors[n]:
            cm = component_of[m]
            if cm != cn:
                comp_succ[cn].append(cm)
                comp_indegree[cm] += 1
    # Components listed by their first declared member.
    by_first = sorted(range(len(components)), key=lambda c: components[c][0])
    members = [components[c] for c in range(len(components))]
    order = _kahn(members, comp_succ, comp_indegree, by_first)
    return order, components


def _kahn(
    members: Sequence[Sequence[int]] | None,
    successors: Sequence[Sequence[int]],
    indegree: list[int],
    declared: Iterable[int],
) -> list[int]:
    """Kahn's algorithm by generations over groups of nodes (see `_order_and_components`); ``members=None``: each group is one node."""
    generation = [g for g in declared if indegree[g] == 0]
    order: list[int] = []
    while generation:
        following: list[int] = []
        order.extend(generation if members is None else chain.from_iterable(map(members.__getitem__, generation)))
        for g in generation:
            for h in successors[g]:
                indegree[h] -= 1
                if indegree[h] == 0:
                    following.append(h)
        generation = following
    return order


def _strongly_connected_components(n_nodes: int, successors: Sequence[Sequence[int]]) -> list[list[int]]:
    """Tarjan's algorithm with an explicit stack, O(nodes + links).

    Each component's members are returned sorted (declaration order).
    """
    unvisited = -1
    index_of = [unvisited] * n_nodes
    lowlink = [0] * n_nodes
    on_stack = [False] * n_nodes
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in range(n_nodes):
        if index_of[root] != unvisited:
            continue
        index_of[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work: list[tuple[int, Iterator[int]]] = [(root, iter(successors[root]))]
        while work:
            node, it = work[-1]
            descended = False
            for nxt in it:
                if index_of[nxt] == unvisited:
                    index_of[nxt] = lowlink[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack[nxt] = True
                    work.append((nxt, iter(successors[nxt])))
                    descended = True
                    break
                if on_stack[nxt] and index_of[nxt] < lowlink[node]:
                    lowlink[node] = index_of[nxt]
            if descended:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component.append(member)
                    if member == node:
                        break
                component.sort()
                components.append(component)
    return components
