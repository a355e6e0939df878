"""`load_graph` beside a plain topological sort of the same dicts, and how loading grows with size.

    python benchmarks/load_speed.py            # chain, random DAG (10k and 100k nodes), lattice 30x30 and 100x100
    python benchmarks/load_speed.py --runs 5

For each workload, in this one process and with the garbage collector as
Python leaves it (loading touches no process-wide state): the plain sort
(`workloads.plan`, Kahn's algorithm over the dicts, which only appends to
lists), `aioflow.load_graph`, and the collections the collector ran during
the last load. The fastest of ``--runs`` is kept. Then the growth from the
small to the large size of each shape (the target: 100k/10k <= 11, linear).
Prints Markdown tables.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # needs the path above when run as a script

import aioflow

if TYPE_CHECKING:
    from collections.abc import Callable

# Each shape at a small and a large size.
SHAPES = {
    "chain": ("chain:10000", "chain:100000"),
    "random": ("random:10000", "random:100000"),
    "lattice": ("lattice:30x30", "lattice:100x100"),
}


def best_of(runs: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        del result
    return min(times)


def collections_during(fn: Callable[[], Any]) -> list[int]:
    """How many collections of each generation the collector ran while ``fn`` ran."""
    counts = [0, 0, 0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counts[info["generation"]] += 1

    gc.callbacks.append(count)
    try:
        fn()
    finally:
        gc.callbacks.remove(count)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    loads: dict[str, float] = {}
    sizes: dict[str, int] = {}
    print("| graph | links | plain toposort | load_graph | ratio | collections (gen 0/1/2) |")
    print("|---|---|---|---|---|---|")
    for small, large in SHAPES.values():
        for spec in (small, large):
            graph = workloads.make(spec).graph

            def sort_it(graph: dict[str, Any] = graph) -> Any:
                return workloads.plan(graph)

            def load_it(graph: dict[str, Any] = graph) -> Any:
                return aioflow.load_graph(graph)

            sort = best_of(args.runs, sort_it)
            load = loads[spec] = best_of(args.runs, load_it)
            counts = "/".join(map(str, collections_during(load_it)))
            links = len(graph["links"])
            sizes[spec] = len(graph["nodes"]) + links
            print(f"| {spec} | {links:,} | {sort:.3f} s | {load:.3f} s | {load / sort:.1f}x | {counts} |")
    print()
    print("| shape | growth in nodes + links | growth of load_graph |")
    print("|---|---|---|")
    for name, (small, large) in SHAPES.items():
        print(f"| {name} | {sizes[large] / sizes[small]:.1f}x | {loads[large] / loads[small]:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
