"""The benchmark workloads, built in memory as Ewoks-format graph dicts.

A workload spec is a short string:

- ``chain:N``: ``N`` `benchtasks.inc` nodes in a line;
- ``fanout:N``: one `inc` source and ``N`` `inc` children;
- ``lattice:WxD``: ``D`` layers of ``W`` nodes; each node of layer ``k+1``
  joins all ``W`` nodes of layer ``k`` with `benchtasks.add`;
- ``cpufan:N``: ``N`` independent `benchtasks.cpu` nodes (the loop count is
  passed separately, calibrated by the driver);
- ``sleepfan:NxS``: ``N`` independent `benchtasks.sleep` nodes of ``S``
  seconds each (``sleepfan:100x0.05``: 100 sleeps of 50 ms);
- ``random:N``: ``N`` `add` nodes; each node links to 1 to 3 distinct random
  earlier nodes (a fixed seed, so every process builds the same graph);
- ``repeated:N``: two nodes and ``N`` entries of the one link between them,
  each mapping ``return_value`` to an input of its own (the loader merges
  them into one link);
- ``pairs:N``: ``N`` links between distinct pairs of about ``sqrt(2 N)``
  nodes (every earlier node to every later one), each mapping
  ``return_value`` to an input of its own: the same link entries as
  ``repeated:N`` without the merging. Both are only loaded;
- ``router:N``: one `inc` source and ``N`` `inc` children, each link
  conditional on its own value of the source's output (``fanout:N`` with
  conditions); only loaded.

Besides the graph, each workload knows its sink nodes and the checksum they
must sum to, so that a run that computes the wrong thing is caught. `plan`
turns a graph dict into the predecessor lists the raw floor runs from.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PlanStep", "Workload", "make", "plan"]

#: Seed of the random DAGs: fixed, so that sizes and repeats compare like with like.
RANDOM_SEED = 20261123

_MODULE = "benchtasks"


@dataclass
class Workload:
    """One benchmark graph and what its run must produce.

    Attributes:
        name: e.g. ``chain10000``.
        graph: the Ewoks-format graph dict.
        sinks: ids of the nodes without successors.
        checksum: the expected sum of the sinks' ``return_value``
            (``None``: not checked, for graphs that are only loaded).
        n_nodes: the number of nodes.
        n_links: the number of links.
    """

    name: str
    graph: dict[str, Any]
    sinks: list[str]
    checksum: int | None
    n_nodes: int = 0
    n_links: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def _node(nid: str, func: str, **defaults: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": nid, "task_type": "method", "task_identifier": f"{_MODULE}.{func}"}
    if defaults:
        node["default_inputs"] = [{"name": k, "value": v} for k, v in defaults.items()]
    return node


def _link(source: str, target: str, target_input: str = "x") -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "data_mapping": [{"source_output": "return_value", "target_input": target_input}],
    }


def _chain(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], int]:
    ids = [f"n{i}" for i in range(n)]
    nodes = [_node(ids[0], "inc", x=0)] + [_node(nid, "inc") for nid in ids[1:]]
    links = [_link(ids[i - 1], ids[i]) for i in range(1, n)]
    return nodes, links, [ids[-1]], n


def _fanout(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], int]:
    ids = [f"c{i}" for i in range(n)]
    nodes = [_node("src", "inc", x=0)] + [_node(nid, "inc") for nid in ids]
    links = [_link("src", nid) for nid in ids]
    return nodes, links, ids, 2 * n


def _lattice(width: int, depth: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], int]:
    names = [f"a{i}" for i in range(width)]
    layers = [[f"L{k}_{j}" for j in range(width)] for k in range(depth)]
    nodes = [_node(nid, "inc", x=0) for nid in layers[0]]
    links: list[dict[str, Any]] = []
    value = 1  # every node of a layer has the same value
    for k in range(1, depth):
        for nid in layers[k]:
            nodes.append(_node(nid, "add"))
            links.extend(_link(src, nid, name) for src, name in zip(layers[k - 1], names, strict=True))
        value = width * value + 1
    return nodes, links, list(layers[-1]), width * value


def _cpu_checksum(iters: int) -> int:
    # benchtasks.cpu sums i & 7: each full cycle of 8 steps adds 0+1+...+7 = 28.
    return (iters // 8) * 28 + sum(range(iters % 8))


def _cpufan(n: int, iters: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], int]:
    ids = [f"cpu{i}" for i in range(n)]
    nodes = [_node(nid, "cpu", n=iters) for nid in ids]
    return nodes, [], ids, n * _cpu_checksum(iters)


def _sleepfan(n: int, seconds: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], int]:
    ids = [f"sleep{i}" for i in range(n)]
    nodes = [_node(nid, "sleep", seconds=seconds) for nid in ids]
    return nodes, [], ids, n


def _random_dag(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], None]:
    rng = random.Random(RANDOM_SEED)
    ids = [f"n{i}" for i in range(n)]
    names = ["a0", "a1", "a2"]
    nodes = [_node(nid, "add") for nid in ids]
    links = []
    has_successor = [False] * n
    for i in range(1, n):
        sources = rng.sample(range(i), min(i, rng.randint(1, 3)))
        for name, s in zip(names, sources, strict=False):
            links.append(_link(ids[s], ids[i], name))
            has_successor[s] = True
    sinks = [nid for nid, succ in zip(ids, has_successor, strict=True) if not succ]
    return nodes, links, sinks, None


def _repeated(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], None]:
    nodes = [_node("a", "inc", x=0), _node("b", "add")]
    links = [_link("a", "b", f"x{i}") for i in range(n)]
    return nodes, links, ["b"], None


def _pairs(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], None]:
    count = 2
    while count * (count - 1) // 2 < n:
        count += 1
    ids = [f"n{i}" for i in range(count)]
    pairs = ((s, t) for t in range(count) for s in range(t))
    chosen = list(itertools.islice(pairs, n))
    links = [_link(ids[s], ids[t], f"x{i}") for i, (s, t) in enumerate(chosen)]
    nodes = [_node(ids[0], "inc", x=0)] + [_node(nid, "add") for nid in ids[1:]]
    sources = {s for s, _ in chosen}
    return nodes, links, [nid for i, nid in enumerate(ids) if i not in sources], None


def _router(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], None]:
    nodes, links, sinks, _ = _fanout(n)
    for value, link in enumerate(links):
        link["conditions"] = [{"source_output": "return_value", "value": value}]
    return nodes, links, sinks, None


def make(spec: str, *, cpu_iters: int = 0) -> Workload:
    """Build the workload named by ``spec``.

    Args:
        spec: ``chain:N``, ``fanout:N``, ``lattice:WxD``, ``cpufan:N``, ``sleepfan:NxS``, ``random:N``,
            ``repeated:N``, ``pairs:N`` or ``router:N``.
        cpu_iters: the `benchtasks.cpu` loop count of ``cpufan`` nodes.

    Returns:
        The `Workload`.

    Raises:
        ValueError: an unknown or malformed spec.
    """
    kind, _, arg = spec.partition(":")
    built: tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], int | None]
    if kind == "chain":
        built = _chain(int(arg))
    elif kind == "fanout":
        built = _fanout(int(arg))
    elif kind == "lattice":
        width, depth = (int(v) for v in arg.split("x"))
        built = _lattice(width, depth)
    elif kind == "cpufan":
        built = _cpufan(int(arg), cpu_iters)
    elif kind == "sleepfan":
        count, seconds = arg.split("x")
        built = _sleepfan(int(count), float(seconds))
    elif kind == "random":
        built = _random_dag(int(arg))
    elif kind == "repeated":
        built = _repeated(int(arg))
    elif kind == "pairs":
        built = _pairs(int(arg))
    elif kind == "router":
        built = _router(int(arg))
    else:
        msg = (
            f"unknown workload {spec!r} (expected chain:N, fanout:N, lattice:WxD, cpufan:N, sleepfan:NxS, "
            "random:N, repeated:N, pairs:N or router:N)"
        )
        raise ValueError(msg)
    nodes, links, sinks, checksum = built
    name = f"{kind}{arg}"
    graph = {"graph": {"id": name}, "nodes": nodes, "links": links}
    return Workload(name, graph, sinks, checksum, n_nodes=len(nodes), n_links=len(links))


@dataclass(frozen=True)
class PlanStep:
    """One node as the raw floor runs it: a function, its static inputs, its predecessors."""

    node_id: str
    func: str
    static: dict[str, Any]
    preds: tuple[tuple[str, str], ...]  # (source node id, target input name)


def plan(graph: dict[str, Any]) -> list[PlanStep]:
    """Turn a graph dict into `PlanStep` records in topological order (Kahn's algorithm, first in first out).

    Only what the benchmark graphs use is read: ``method`` nodes of
    `benchtasks`, ``default_inputs``, and links with one ``data_mapping`` entry each.

    Args:
        graph: an Ewoks-format graph dict built by `make`.

    Returns:
        One step per node, every predecessor before its successors.

    Raises:
        ValueError: the graph has a cycle.
    """
    preds: dict[str, list[tuple[str, str]]] = {}
    info: dict[str, tuple[str, dict[str, Any]]] = {}
    for node in graph["nodes"]:
        func = node["task_identifier"].rsplit(".", 1)[-1]
        static = {d["name"]: d["value"] for d in node.get("default_inputs", ())}
        info[node["id"]] = (func, static)
        preds[node["id"]] = []
    successors: dict[str, list[str]] = {nid: [] for nid in info}
    waiting = dict.fromkeys(info, 0)  # links into each node not yet satisfied
    for link in graph["links"]:
        for mapping in link["data_mapping"]:
            preds[link["target"]].append((link["source"], mapping["target_input"]))
        successors[link["source"]].append(link["target"])
        waiting[link["target"]] += 1
    ready = deque(nid for nid, count in waiting.items() if count == 0)
    steps = []
    while ready:
        nid = ready.popleft()
        func, static = info[nid]
        steps.append(PlanStep(nid, func, static, tuple(preds[nid])))
        for succ in successors[nid]:
            waiting[succ] -= 1
            if waiting[succ] == 0:
                ready.append(succ)
    if len(steps) != len(info):
        msg = f"graph {graph['graph']['id']!r} has a cycle"
        raise ValueError(msg)
    return steps
