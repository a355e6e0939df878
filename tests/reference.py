"""A sequential reference evaluator of Ewoks graphs, written from the graph format spec.

It shares nothing with ``aioflow.scheduler`` or ``aioflow.graph._analysis``:
it takes the flattened, validated `aioflow.Graph` (its ``nodes`` and ``links``
only) and recomputes everything else the obvious way, with no concern for
speed (small graphs only):

- requiredness (spec §3.5) by walking the ancestors of each link's source;
- start nodes (§4.1), end nodes (§4.2, booleans always uncovered as written);
- strongly connected components by mutual reachability;
- the stable order (Kahn's algorithm by generations on the condensation, in
  declaration order, as ``aioflow/graph/_analysis.py`` defines it);
- execution: a FIFO queue of pending firings, each task called directly in
  this process, with the push-flow firing rule of §6.3, conditions and
  else-values (§3.3), ``on_error`` data (§3.4) and ``outputs=`` (§6.6, with
  the decisions of §10).

With one worker, aioflow runs firings in the order they become ready, which
is the order of this queue; so results *and* execution counts must match.
"""

from __future__ import annotations

import importlib
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aioflow import MISSING

if TYPE_CHECKING:
    from aioflow import Graph, Link

__all__ = [
    "BudgetExceeded",
    "CannotRun",
    "RefResult",
    "ancestors",
    "blocked_cycles",
    "components",
    "condition_holds",
    "condition_values",
    "cyclic_components",
    "end_nodes",
    "evaluate",
    "has_cycle",
    "input_conflicts",
    "link_required",
    "predecessors",
    "reachable",
    "run_task",
    "select_outputs",
    "stable_order",
    "start_nodes",
    "successors",
]

NodeId = Any


class BudgetExceeded(Exception):
    """The evaluation ran more firings than its budget (a loop that does not end)."""


class CannotRun(Exception):
    """The graph has no start node, or a cycle whose nodes can never fire."""


# --------------------------------------------------------------------------- structure


def successors(graph: Graph, nid: NodeId) -> list[NodeId]:
    """Targets of every link leaving ``nid``, in link order."""
    return [lk.target for lk in graph.links if lk.source == nid]


def predecessors(graph: Graph, nid: NodeId) -> list[NodeId]:
    """Sources of every link entering ``nid``, in link order."""
    return [lk.source for lk in graph.links if lk.target == nid]


def reachable(graph: Graph, start: NodeId) -> set[NodeId]:
    """Nodes reachable from ``start`` through one link or more (depth-first)."""
    seen: set[NodeId] = set()
    stack = list(successors(graph, start))
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        stack.extend(successors(graph, nid))
    return seen


def ancestors(graph: Graph, nid: NodeId) -> set[NodeId]:
    """Nodes from which ``nid`` is reachable through one link or more."""
    seen: set[NodeId] = set()
    stack = list(predecessors(graph, nid))
    while stack:
        a = stack.pop()
        if a in seen:
            continue
        seen.add(a)
        stack.extend(predecessors(graph, a))
    return seen


def has_cycle(graph: Graph) -> bool:
    """Whether some node reaches itself (colour-marking depth-first search)."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph.nodes, white)

    def visit(nid: NodeId) -> bool:
        colour[nid] = grey
        for nxt in successors(graph, nid):
            if colour[nxt] == grey:
                return True
            if colour[nxt] == white and visit(nxt):
                return True
        colour[nid] = black
        return False

    return any(colour[n] == white and visit(n) for n in graph.nodes)


def components(graph: Graph) -> list[list[NodeId]]:
    """Strongly connected components by mutual reachability, members in declaration order.

    Components are listed by their first declared member.
    """
    reach = {n: reachable(graph, n) for n in graph.nodes}
    seen: set[NodeId] = set()
    result = []
    for n in graph.nodes:
        if n in seen:
            continue
        members = [m for m in graph.nodes if m == n or (m in reach[n] and n in reach[m])]
        seen.update(members)
        result.append(members)
    return result


def cyclic_components(graph: Graph) -> list[list[NodeId]]:
    """The components that contain a cycle (several nodes, or one node with a self-link)."""
    return [c for c in components(graph) if len(c) > 1 or c[0] in successors(graph, c[0])]


def stable_order(graph: Graph) -> list[NodeId]:
    """Kahn's algorithm by generations on the condensation, ties in declaration order.

    Generation 0: the components nothing enters, by first declared member.
    Each later generation: the components whose last entering link was just
    consumed, collected while scanning the previous generation in order and,
    inside each component, its members in declaration order and each member's
    links in link order.
    """
    comps = components(graph)
    comp_of = {n: ci for ci, comp in enumerate(comps) for n in comp}
    comp_succ: list[list[int]] = [[] for _ in comps]
    indegree = [0] * len(comps)
    for n in graph.nodes:
        for m in successors(graph, n):
            if comp_of[m] != comp_of[n]:
                comp_succ[comp_of[n]].append(comp_of[m])
                indegree[comp_of[m]] += 1
    generation = [ci for ci in range(len(comps)) if indegree[ci] == 0]
    order: list[NodeId] = []
    while generation:
        following = []
        for ci in generation:
            order.extend(comps[ci])
            for cj in comp_succ[ci]:
                indegree[cj] -= 1
                if indegree[cj] == 0:
                    following.append(cj)
        generation = following
    return order


# --------------------------------------------------------------------------- §3.5, §4


def _locally_optional(link: Link) -> bool:
    """Optional by its own attributes: ``required: false``, or conditional/on_error without ``required``."""
    if link.required is not None:
        return not link.required
    return bool(link.conditions) or link.on_error


def link_required(graph: Graph) -> list[bool]:
    """Spec §3.5 for every link, in link order.

    1. explicit ``required`` wins; 2. ``conditions`` or ``on_error``: optional;
    3. optional when any link upstream of the source (entering the source or
    one of its ancestors) is optional. Rule 3 refers to the requiredness of
    other links, so it is iterated to its fixed point, starting from "every
    link not optional by rules 1-2 is required".
    """
    links = graph.links
    upstream = []
    for lk in links:
        region = ancestors(graph, lk.source) | {lk.source}
        upstream.append([i for i, other in enumerate(links) if other.target in region])
    required = [not _locally_optional(lk) for lk in links]
    changed = True
    while changed:
        changed = False
        for i, lk in enumerate(links):
            if lk.required is not None or not required[i]:
                continue
            if any(not required[j] for j in upstream[i]):
                required[i] = False
                changed = True
    return required


def start_nodes(graph: Graph) -> list[NodeId]:
    """Spec §4.1 (method-like nodes only): no predecessors, or ``force_start_node``; in stable order."""
    chosen = {n for n, node in graph.nodes.items() if node.force_start_node or not predecessors(graph, n)}
    return [n for n in stable_order(graph) if n in chosen]


def condition_values(graph: Graph, source: NodeId) -> dict[Any, list[Any]]:
    """``V[name]``: every value compared with output ``name`` by a conditional link leaving ``source``."""
    values: dict[Any, list[Any]] = {}
    for lk in graph.links:
        if lk.source == source:
            for name, value in lk.conditions:
                values.setdefault(name, []).append(value)
    return values


def _is_bool_like(value: Any) -> bool:
    return any(value == b and isinstance(value == b, bool) for b in (True, False))


def _has_uncovered_condition(graph: Graph, nid: NodeId) -> bool:
    """Spec §4.2 with aioflow's decision for booleans (docs/graph-format.md): a value is
    covered by the else value among V; a boolean (or 0/1) also by its negation.

    (The reference engine counts booleans as always uncovered, a known weakness, §8.5.)
    """
    else_value = graph.nodes[nid].conditions_else_value
    for values in condition_values(graph, nid).values():
        for value in values:
            covering = [else_value]
            if _is_bool_like(value):
                covering.append(not value)
            if not any(c == v for c in covering for v in values):
                return True
    return False


def end_nodes(graph: Graph) -> list[NodeId]:
    """Spec §4.2: no successors other than through ``on_error`` links; else uncovered conditions."""
    pure = {n for n in graph.nodes if not any(lk.source == n and not lk.on_error for lk in graph.links)}
    chosen = pure or {n for n in graph.nodes if _has_uncovered_condition(graph, n)}
    return [n for n in stable_order(graph) if n in chosen]


def blocked_cycles(graph: Graph) -> list[set[NodeId]]:
    """Cycles in which every node waits on a required link from inside the cycle."""
    required = link_required(graph)
    result = []
    for comp in cyclic_components(graph):
        members = set(comp)
        if all(
            any(required[i] and lk.target == n and lk.source in members for i, lk in enumerate(graph.links))
            for n in comp
        ):
            result.append(members)
    return result


def input_conflicts(
    graph: Graph, mappings: Mapping[tuple[NodeId, NodeId], Sequence[Any]] | None = None
) -> list[tuple[NodeId, Any]]:
    """Spec §4.3: (node, input) written by more than one ``data_mapping`` item of its required links.

    Args:
        graph: the graph (its links decide requiredness).
        mappings: (source, target) -> the target inputs its data_mapping writes;
            taken from the graph's links when not given (a graph with
            conflicts does not load, so tests pass the document's mappings).
    """
    if mappings is None:
        mappings = {(lk.source, lk.target): [t for _, t in lk.data_mapping] for lk in graph.links}
    required = link_required(graph)
    conflicts: list[tuple[NodeId, Any]] = []
    for nid in graph.nodes:
        names = [
            t
            for i, lk in enumerate(graph.links)
            if required[i] and lk.target == nid
            for t in mappings.get((lk.source, lk.target), ())
        ]
        conflicts.extend((nid, name) for name in dict.fromkeys(names) if names.count(name) > 1)
    return conflicts


# --------------------------------------------------------------------------- §3.3


def condition_holds(graph: Graph, link: Link, outputs: Mapping[Any, Any]) -> bool:
    """Spec §3.3: every condition of ``link`` holds against its source's outputs."""
    source = graph.nodes[link.source]
    if source.task_type in ("ppfmethod", "ppfport"):
        inner = outputs.get("_ppfdict")
        outputs = inner if isinstance(inner, Mapping) else {}
    else_value = source.conditions_else_value
    all_values = condition_values(graph, link.source)
    for name, expected in link.conditions:
        if name not in outputs:
            return False
        actual = outputs[name]
        if expected == else_value:
            if not (actual == else_value or not any(actual == v for v in all_values[name])):
                return False
        elif actual != expected:
            return False
    return True


# --------------------------------------------------------------------------- tasks (§5)


def _import(identifier: str) -> Callable[..., Any]:
    module, _, name = identifier.rpartition(".")
    func: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return func


def _ppf_kwargs(inputs: Mapping[Any, Any]) -> dict[Any, Any]:
    kwargs = {k: v for k, v in inputs.items() if v is not MISSING and k != "_method"}
    incoming = kwargs.pop("_ppfdict", None)
    if incoming:
        kwargs.update(incoming)
    return kwargs


def run_task(task_type: str, identifier: str | None, inputs: Mapping[Any, Any]) -> dict[Any, Any]:
    """Call one task directly (spec §5.2, §5.3); exceptions propagate."""
    if task_type == "method":
        assert identifier is not None
        positions = [k for k in inputs if isinstance(k, int)]
        args = [inputs.get(i, MISSING) for i in range(max(positions) + 1)] if positions else []
        kwargs = {k: v for k, v in inputs.items() if isinstance(k, str) and v is not MISSING}
        return {"return_value": _import(identifier)(*args, **kwargs)}
    if task_type == "ppfmethod":
        assert identifier is not None
        kwargs = _ppf_kwargs(inputs)
        result = _import(identifier)(**kwargs)
        if not isinstance(result, Mapping):
            msg = f"ppfmethod {identifier!r} returned {type(result).__name__}, not a dict"
            raise TypeError(msg)
        return {"_ppfdict": {**kwargs, **result}}
    if task_type == "ppfport":
        return {"_ppfdict": _ppf_kwargs(inputs)}
    msg = f"the reference does not run task_type {task_type!r}"
    raise NotImplementedError(msg)


# --------------------------------------------------------------------------- §6.3


@dataclass
class _Merger:
    """The input merger of one node (spec §6.3)."""

    n_required: int
    start: dict[Any, Any] | None = None
    required: dict[int, dict[Any, Any]] = field(default_factory=dict)
    cached: dict[int, dict[Any, Any]] = field(default_factory=dict)
    buffer: list[dict[Any, Any]] = field(default_factory=list)
    retained: dict[Any, Any] | None = None
    fired: bool = False

    def dynamic(self, trigger: dict[Any, Any] | None) -> dict[Any, Any]:
        """Start trigger, required caches (link order), optional caches (link order), the trigger."""
        merged: dict[Any, Any] = {}
        if self.start is not None:
            merged.update(self.start)
        for li in sorted(self.required):
            merged.update(self.required[li])
        for li in sorted(self.cached):
            merged.update(self.cached[li])
        if trigger is not None:
            merged.update(trigger)
        return merged


@dataclass
class RefResult:
    """What a reference evaluation produced.

    Attributes:
        outputs: node -> outputs of its last execution (``{}`` when it failed).
        executions: node -> number of executions.
        errors: node -> last exception of a failure no ``on_error`` link handled.
        log: every execution in order: (node, inputs it was called with).
        produced: node -> the outputs of each of its successful executions, in order.
    """

    outputs: dict[NodeId, dict[Any, Any]] = field(default_factory=dict)
    executions: dict[NodeId, int] = field(default_factory=dict)
    errors: dict[NodeId, BaseException] = field(default_factory=dict)
    log: list[tuple[NodeId, dict[Any, Any]]] = field(default_factory=list)
    produced: dict[NodeId, list[dict[Any, Any]]] = field(default_factory=dict)


def evaluate(
    graph: Graph,
    *,
    startargs: Mapping[Any, Any] | None = None,
    budget: int = 1000,
    raise_on_error: bool = False,
) -> RefResult:
    """Run ``graph`` sequentially: one firing at a time, first ready, first run.

    Args:
        graph: a loaded graph (method, ppfmethod and ppfport nodes only).
        startargs: data of the start trigger.
        budget: the most firings before `BudgetExceeded` is raised.
        raise_on_error: stop at the first failure without ``on_error`` link
            (the exception is raised); else run on.

    Raises:
        CannotRun: no start node, or a cycle that can never fire.
        BudgetExceeded: more than ``budget`` firings.
    """
    if graph.nodes and not start_nodes(graph):
        msg = "no start node"
        raise CannotRun(msg)
    blocked = blocked_cycles(graph)
    if blocked:
        msg = f"blocked cycles {blocked}"
        raise CannotRun(msg)
    required = link_required(graph)
    mergers = {
        n: _Merger(sum(1 for i, lk in enumerate(graph.links) if lk.target == n and required[i])) for n in graph.nodes
    }
    result = RefResult()
    queue: deque[tuple[NodeId, dict[Any, Any]]] = deque()

    def fire(nid: NodeId, trigger: dict[Any, Any] | None) -> None:
        queue.append((nid, mergers[nid].dynamic(trigger)))

    def arrival(nid: NodeId, trigger: dict[Any, Any] | None) -> None:
        m = mergers[nid]
        if m.fired:
            if trigger is not None:
                m.retained = trigger
            fire(nid, m.retained)
            return
        if trigger is not None:
            m.buffer.append(trigger)
        if len(m.required) < m.n_required:
            return
        m.fired = True
        if not m.buffer:
            fire(nid, None)
            return
        for buffered in m.buffer:
            fire(nid, buffered)
        m.retained = m.buffer[-1]
        m.buffer = []

    def deliver(li: int, data_source: Mapping[Any, Any]) -> None:
        lk = graph.links[li]
        data: dict[Any, Any] = dict(data_source) if lk.map_all_data else {}
        for source_output, target_input in lk.data_mapping:
            data[target_input] = data_source.get(source_output, MISSING)
        m = mergers[lk.target]
        if required[li]:
            m.required[li] = data
            arrival(lk.target, None)
        elif lk.cache_if_optional:
            m.cached[li] = data
            arrival(lk.target, None)
        else:
            arrival(lk.target, data)

    for nid in start_nodes(graph):
        mergers[nid].start = dict(startargs or {})
        arrival(nid, None)

    while queue:
        if len(result.log) >= budget:
            msg = f"more than {budget} firings"
            raise BudgetExceeded(msg)
        nid, dynamic = queue.popleft()
        node = graph.nodes[nid]
        inputs = {**node.default_inputs, **dynamic}
        result.log.append((nid, inputs))
        result.executions[nid] = result.executions.get(nid, 0) + 1
        try:
            outputs = run_task(node.task_type, node.task_identifier, inputs)
        except Exception as exc:
            result.outputs[nid] = {}
            error_links = [i for i, lk in enumerate(graph.links) if lk.source == nid and lk.on_error]
            if not error_links:
                result.errors[nid] = exc
                if raise_on_error:
                    raise
                continue
            data = dict(dynamic)
            data["WorkflowException"] = {"errorMessage": str(exc), "traceBack": traceback.format_exception(exc)}
            data["WorkflowExceptionInstance"] = exc
            for li in error_links:
                deliver(li, data)
            continue
        result.outputs[nid] = outputs
        result.produced.setdefault(nid, []).append(outputs)
        for li, lk in enumerate(graph.links):
            if lk.source != nid or lk.on_error:
                continue
            if lk.conditions and not condition_holds(graph, lk, outputs):
                continue
            deliver(li, outputs)
    return result


# --------------------------------------------------------------------------- §6.6


def _select(graph: Graph, item: Mapping[str, Any], default: Sequence[NodeId]) -> list[NodeId]:
    if "id" in item:
        return [item["id"]]
    if "label" in item or "task_identifier" in item:
        return [
            n
            for n, node in graph.nodes.items()
            if ("label" not in item or node.label == item["label"])
            and (
                "task_identifier" not in item or str(node.task_identifier or "").endswith(str(item["task_identifier"]))
            )
        ]
    if item.get("all"):
        return list(graph.nodes)
    return list(default)


def select_outputs(
    graph: Graph,
    result: RefResult,
    outputs: Sequence[Mapping[str, Any]] | None = None,
    merge_outputs: bool = True,
) -> dict[Any, Any]:
    """Spec §6.6 with §10: nodes in the stable order, nodes that never ran left out."""
    if outputs is None:
        outputs = [{"all": False}]
    order = stable_order(graph)
    ends = end_nodes(graph)
    merged: dict[Any, Any] = {}
    per_node: dict[NodeId, dict[Any, Any]] = {}
    for item in outputs:
        chosen = set(_select(graph, item, ends))
        for nid in order:
            if nid not in chosen or nid not in result.outputs:
                continue
            node_outputs = result.outputs[nid]
            if "name" in item:
                values = {item.get("new_name", item["name"]): node_outputs.get(item["name"], MISSING)}
            else:
                values = dict(node_outputs)
            if merge_outputs:
                merged.update(values)
            else:
                per_node.setdefault(nid, {}).update(values)
    return merged if merge_outputs else per_node
