"""What the collector pause buys `load_graph`: each large workload loaded with and without it, beside a plain sort.

    python benchmarks/load_collector.py            # chain 100k, random DAG 100k, lattice 100x100
    python benchmarks/load_collector.py --sizes small

For each workload: the plain topological sort of the same dict
(`workloads.plan`), `aioflow.load_graph` as it is (the cyclic garbage
collector paused while it runs, `aioflow/graph/_collector.py`), and
`load_graph` with the pause replaced by a no-op. Three runs of each, the
minimum kept, all in this one process (the collector's work depends on what
the process holds, as in a user's). Prints a Markdown table.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # needs the path above when run as a script

import aioflow
import aioflow.graph._load as loader

if TYPE_CHECKING:
    from collections.abc import Callable

SIZES = {
    "full": ("chain:100000", "random:100000", "lattice:100x100"),
    "small": ("chain:10000", "random:10000", "lattice:30x30"),
}


def best_of(runs: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        del result
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    paused: Any = getattr(loader, "COLLECTOR_PAUSE")  # noqa: B009 - not exported: the module's own name
    print("| graph | plain toposort | load_graph | ratio | without the pause | ratio |")
    print("|---|---|---|---|---|---|")
    for spec in SIZES[args.sizes]:
        graph = workloads.make(spec).graph

        def sort_it(graph: dict[str, Any] = graph) -> Any:
            return workloads.plan(graph)

        def load_it(graph: dict[str, Any] = graph) -> Any:
            return aioflow.load_graph(graph)

        sort = best_of(args.runs, sort_it)
        load = best_of(args.runs, load_it)
        setattr(loader, "COLLECTOR_PAUSE", contextlib.nullcontext())  # noqa: B010 - as above
        try:
            bare = best_of(args.runs, load_it)
        finally:
            setattr(loader, "COLLECTOR_PAUSE", paused)  # noqa: B010
        print(f"| {spec} | {sort:.2f} s | {load:.2f} s | {load / sort:.1f}x | {bare:.2f} s | {bare / sort:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
