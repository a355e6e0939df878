"""Several pools in one execution, at scale: 1,300 nodes whose data cross between a process pool and two thread pools.

    python benchmarks/stress/mixed_pools.py --runs 10
    python benchmarks/stress/mixed_pools.py --runs 50 --cpu billiard multiprocessing

A graph of one source on the ``cpu`` pool, 999 children of it, and a chain of
300 nodes from it, the nodes in turn on the run's own pool (``thread`` x2),
``cpu`` (each process pool given, x2, ``fork``) and ``io`` (``thread`` x4);
every task is ``benchtasks.inc``. A run whose outputs are not all the expected
ones counts as bad; a run past ``--timeout`` raises, and the script stops.
One line per ``cpu`` pool: runs, bad, time.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchtasks, for the workers forked from here

import aioflow

POOLS = (None, "cpu", "io")


def _node(nid: str, pool: str | None, **inputs: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": nid, "task_type": "method", "task_identifier": "benchtasks.inc"}
    if inputs:
        node["default_inputs"] = [{"name": k, "value": v} for k, v in inputs.items()]
    if pool is not None:
        node["aioflow"] = {"pool": pool}
    return node


def _link(source: str, target: str) -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "data_mapping": [{"source_output": "return_value", "target_input": "x"}],
    }


def build() -> aioflow.Graph:
    nodes = [_node("src", "cpu", x=0)]
    nodes += [_node(f"c{i}", POOLS[i % 3]) for i in range(999)]
    nodes += [_node(f"k{i}", POOLS[i % 3]) for i in range(300)]
    links = [_link("src", f"c{i}") for i in range(999)]
    links += [_link("src" if i == 0 else f"k{i - 1}", f"k{i}") for i in range(300)]
    return aioflow.load_graph({"graph": {"id": "mixed-pools"}, "nodes": nodes, "links": links})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cpu", nargs="+", default=["process", "ndprocess", "billiard", "multiprocessing"])
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    graph = build()
    failed = 0
    print("| cpu pool | runs | bad | time |")
    print("|---|---|---|---|")
    for cpu in args.cpu:
        bad, t0 = 0, time.monotonic()
        for _ in range(args.runs):
            results = aioflow.execute_graph(
                graph,
                pool_type="thread",
                max_workers=2,
                pools={
                    "cpu": {"pool_type": cpu, "max_workers": 2, "context": "fork"},
                    "io": {"pool_type": "thread", "max_workers": 4},
                },
                outputs=[{"all": True}],
                merge_outputs=False,
                timeout=args.timeout,
            )
            fan = all(results[f"c{i}"]["return_value"] == 2 for i in range(999))
            bad += not (fan and results["k299"]["return_value"] == 301 and len(results) == 1300)
        failed += bad
        print(f"| {cpu} | {args.runs} | {bad} | {time.monotonic() - t0:.1f} s |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
