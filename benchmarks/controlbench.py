"""What per-node control costs and how fast it acts: a node's timeout, cancelling one node, and the options' overhead.

    python benchmarks/controlbench.py              # every figure
    python benchmarks/controlbench.py --smoke      # tiny sizes, once each

Figures (medians of ``--repeats``; the local pools with 2 workers, ``fork`` for the
process pools, in this process; ``gevent`` in a fresh gevent-patched interpreter):

- **timeout latency**: a node with ``timeout=0.5`` runs a task that notes when it
  starts (``benchtasks.marked_spin``, the machine's monotonic clock) and then spins;
  the latency is the time of its ``node.failed`` event minus (its start + 0.5 s).
  Target: <= 100 ms on every process pool;
- **cancel latency**: the same task under ``aioflow.start``; once it has started,
  ``run.cancel(node)``: the time from that call to the node's ``node.cancelled``
  event. Target: <= 100 ms on every process pool;
- **overhead**: fanout:10000 on ``thread`` x2 with every node given a priority (each
  its own), with every node given ``retries=2`` (none fails), and with every node
  given ``timeout=60`` (none expires), against the same graph without settings, in
  this run. Target: <= 1.05x for priorities and for the per-node options.

Prints a Markdown table.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # needs the path above when run as a script

import aioflow

PROCESS_POOLS = ("process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard")
LIMIT = 0.5  # the node's timeout, seconds


def _graph(path: Path, control: dict[str, Any] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": "spin",
        "task_type": "method",
        "task_identifier": "benchtasks.marked_spin",
        "default_inputs": [{"name": "path", "value": str(path)}, {"name": "seconds", "value": 30.0}],
    }
    if control:
        node["aioflow"] = control
    return {"graph": {"id": "control"}, "nodes": [node], "links": []}


def _options(pool: str) -> dict[str, Any]:
    options: dict[str, Any] = {"pool_type": pool, "max_workers": 2, "raise_on_error": False}
    if pool in PROCESS_POOLS:
        options["context"] = "fork"
    return options


def _watch(folder: Path) -> tuple[Path, list[float], Any]:
    """The file the task marks its start in (removed), the failure events' times, and the callback that notes them."""
    mark = folder / "start"
    mark.unlink(missing_ok=True)
    failed: list[float] = []

    def on_event(event: aioflow.Event) -> None:
        if event.kind in ("node.failed", "node.cancelled"):
            failed.append(event.time)

    return mark, failed, on_event


def timeout_latency(pool: str, folder: Path) -> float:
    """Seconds from a node's deadline to its failure event."""
    mark, failed, on_event = _watch(folder)
    results = aioflow.execute_graph(_graph(mark, {"timeout": LIMIT}), on_event=on_event, **_options(pool))
    assert isinstance(results.errors["spin"], aioflow.NodeTimeoutError), results.errors
    return failed[0] - (float(mark.read_text()) + LIMIT)


def cancel_latency(pool: str, folder: Path) -> float:
    """Seconds from ``run.cancel(node)`` to the node's failure event."""
    mark, failed, on_event = _watch(folder)

    async def main() -> float:
        async with aioflow.start(_graph(mark), on_event=on_event, **_options(pool)) as run:
            while not mark.exists() or not mark.read_text():  # noqa: ASYNC110 - a file another process writes
                await asyncio.sleep(0.005)
            t0 = time.monotonic()
            assert run.cancel("spin")
            results = await run
        assert isinstance(results.errors["spin"], aioflow.NodeCancelledError), results.errors
        return failed[0] - t0

    return asyncio.run(main())


def _in_gevent(kind: str, repeats: int) -> list[float]:
    """The gevent pool's figures, from a fresh gevent-patched interpreter."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import json, sys, tempfile, pathlib\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import controlbench\n"
        "folder = pathlib.Path(tempfile.mkdtemp())\n"
        f"print(json.dumps([controlbench.{kind}_latency('gevent', folder) for _ in range({repeats})]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    figures: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def overhead(spec: str, repeats: int) -> list[tuple[str, float, float]]:
    """(settings, median seconds with them, ratio to none) for fanout on ``thread`` x2, alternating runs.

    Each round runs the variants in turn, a different one first each round; the
    loaded graphs are frozen out of the garbage collector's way (`gc.freeze`).
    """
    plain = workloads.make(spec).graph
    variants: dict[str, dict[str, Any]] = {"none": plain}
    for name, control in (
        ("priorities", None),
        ("retries=2", {"retries": 2}),
        ("timeout=60", {"timeout": 60}),
    ):
        graph = copy.deepcopy(plain)
        for i, node in enumerate(graph["nodes"]):
            node["aioflow"] = {"priority": i % 97} if control is None else dict(control)
        variants[name] = graph
    loaded = {name: aioflow.load_graph(graph) for name, graph in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in loaded}
    aioflow.execute_graph(loaded["none"], pool_type="thread", max_workers=2)  # warm
    # The four loaded graphs (40,000 nodes) live through every run: out of the
    # collector's way, or a full collection lands on whichever run it happens in.
    gc.collect()
    gc.freeze()
    names = list(loaded)
    try:
        for round_ in range(repeats):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:  # each goes first in turn
                t0 = time.perf_counter()
                aioflow.execute_graph(loaded[name], pool_type="thread", max_workers=2)
                times[name].append(time.perf_counter() - t0)
    finally:
        gc.unfreeze()
    base = statistics.median(times["none"])
    return [(name, statistics.median(t), statistics.median(t) / base) for name, t in times.items() if name != "none"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    spec = "fanout:200" if args.smoke else "fanout:10000"
    print("| benchmark | median | max | target |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, measure in (("timeout", timeout_latency), ("cancel", cancel_latency)):
            for pool in ("thread", *PROCESS_POOLS, "gevent"):
                if pool == "gevent":
                    figures = _in_gevent(kind, repeats)
                else:
                    figures = [measure(pool, folder) for _ in range(repeats)]
                target = "<= 100 ms" if pool in PROCESS_POOLS else "-"
                median, worst = statistics.median(figures) * 1000, max(figures) * 1000
                print(f"| {kind} latency, {pool} | {median:.1f} ms | {worst:.1f} ms | {target} |")
    for name, seconds, ratio in overhead(spec, max(repeats, 3) if not args.smoke else 1):
        print(f"| overhead, {name} on every node, thread x2 {spec} | {seconds:.3f} s | {ratio:.2f}x | <= 1.05x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
