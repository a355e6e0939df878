"""Run the XRD reduction with aioflow's Python API.

From the repository root::

    python examples/xrd_reduction/run.py                  # one scan, seed 2024, process pool
    python examples/xrd_reduction/run.py --seed 7 --pool thread
    python examples/xrd_reduction/run.py --seeds 1 2 3    # three scans at once on one shared pool
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

# Workers import the tasks as ``examples.xrd_reduction.tasks``: put the
# repository root on the path when this file is run as a script.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import aioflow

# Relative to the repository root: the subgraph it names is too (see README.md).
PIPELINE = "examples/xrd_reduction/pipeline.json"
# A guard against a runaway loop: the fit's own limit (max_refinements) is far lower.
MAX_ITERATIONS = 200


def show(text: str = "") -> None:
    """Print one line of the example's output."""
    print(text)  # noqa: T201 - printing is what this script is for


def seed_input(seed: int) -> list[dict[str, Any]]:
    """The ``inputs=`` item that overrides the seed of the simulated scan."""
    return [{"id": "simulate", "name": "seed", "value": seed}]


def print_report(report: dict[str, Any], executions: dict[Any, int]) -> None:
    """Print the report of one execution as a small table."""
    quality = report["quality"]
    show(f"sample {report['sample']}, seed {report['seed']}, {report['n_points']} points")
    show(f"{'hkl':>5} {'2theta (deg)':>14} {'true':>9} {'d (A)':>8} {'FWHM':>7} {'size (nm)':>10}")
    for row in report["peaks"]:
        true = "-" if row["true_two_theta"] is None else f"{row['true_two_theta']:.4f}"
        show(
            f"{row['hkl']:>5} {row['two_theta']:9.4f}({row['two_theta_error'] * 1e4:3.0f}) {true:>9} "
            f"{row['d_spacing']:8.4f} {row['fwhm']:7.3f} {row['crystallite_size']:10.1f}"
        )
    show(
        f"fit: {quality['iterations']} refinement steps (the loop node ran {executions[('fit', 'refine')]} times), "
        f"converged={quality['converged']}, chi2={quality['chi2']:.3f}, R_wp={quality['r_wp']:.3f}, "
        f"grade={quality['grade']}"
    )


def run_one(seed: int, pool_type: str, max_workers: int) -> int:
    """Execute the pipeline once with the synchronous API; return the exit code."""
    graph = aioflow.load_graph(PIPELINE, root_dir=REPO_ROOT)
    show(f"graph {graph.id!r}: {len(graph.nodes)} nodes, start {graph.start_nodes}, end {graph.end_nodes}")
    show(f"loops: {graph.cycles}")

    def on_event(event: aioflow.Event) -> None:
        if event.kind == "node.failed":
            show(f"  node {event.node_id!r} failed: {event.error!r}")

    results = aioflow.execute_graph(
        graph,
        inputs=seed_input(seed),
        pool_type=pool_type,
        max_workers=max_workers,
        max_iterations=MAX_ITERATIONS,
        on_event=on_event,
    )
    print_report(results["return_value"], results.executions)
    return 0


async def run_many(seeds: list[int], pool_type: str, max_workers: int) -> int:
    """Execute the pipeline for several seeds at once, on one pool they share."""
    graph = aioflow.load_graph(PIPELINE, root_dir=REPO_ROOT)
    async with aioflow.open_pool(pool_type, max_workers=max_workers) as pool:
        runs = [
            aioflow.execute_graph_async(graph, inputs=seed_input(seed), pool=pool, max_iterations=MAX_ITERATIONS)
            for seed in seeds
        ]
        all_results = await asyncio.gather(*runs)
    for results in all_results:
        print_report(results["return_value"], results.executions)
        show()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2024, help="seed of the simulated scan (default: 2024)")
    parser.add_argument("--seeds", type=int, nargs="+", help="run several scans concurrently on one shared pool")
    parser.add_argument("--pool", choices=aioflow.available_pools(), default="process", help="pool type")
    parser.add_argument("--max-workers", type=int, default=2, help="most tasks running at once (default: 2)")
    args = parser.parse_args(argv)
    if args.seeds:
        return asyncio.run(run_many(args.seeds, args.pool, args.max_workers))
    return run_one(args.seed, args.pool, args.max_workers)


if __name__ == "__main__":
    sys.exit(main())
