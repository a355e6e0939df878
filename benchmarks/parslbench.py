"""aioflow on Parsl against Parsl's own ParslPoolExecutor, on the same local HighThroughputExecutor config.

Both sides run on `aioflow.pools._parsl.default_config` (one block of two
HTEX workers on loopback, its run_dir in a temporary directory):

- ``aioflow-parsl``: ``aioflow.execute_graph(graph, pool=pool)`` on an
  ``open_pool("parsl", pool_options={"config": config})``; aioflow's
  scheduler sends each node when its inputs are ready.
- ``parsl-pool``: ``ParslPoolExecutor(config=config)``, one ``submit`` per
  node in topological order with the upstream futures as arguments, so that
  Parsl's DataFlowKernel tracks the dependencies; then every sink's result.

Every measurement runs in a fresh interpreter (this file with ``--child``),
the configurations interleaved round robin, median of ``--repeats``. The
DFK start, and a warm-up of one sleeping task per worker (so that every
worker is up and has imported what its tasks need), are outside the
clock: the figure is the graph's execution, from submission to every sink's
result. The run ends with a Markdown table: aioflow's time over Parsl's
(target <= 1.0) and PASS or MISS.

    python benchmarks/parslbench.py            # chain:1000, fanout:1000 and lattice:10x10, 3 repeats
    python benchmarks/parslbench.py --smoke    # chain:20, fanout:20 and lattice:3x3 once (CI; under 30 s)

Records: ``benchmarks/runs/parsl-<time>.jsonl`` and ``.md``
(``parsl-smoke.*`` with ``--smoke``). The exit code is 1 only when a
measurement crashed, timed out or computed a wrong checksum; never for a
missed target.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import fmt, median, run_child

HERE = Path(__file__).resolve().parent
# New runs go to runs/ (ignored by git); results/ keeps the runs the docs cite, copied there by hand.
RESULTS_DIR = HERE / "runs"

#: HTEX workers on both sides: the standard machine has two cores.
WORKERS = 2

#: Seconds a measurement may take, start-up included, before it counts as a hang.
TIMEOUT = 300.0

#: aioflow's time over ParslPoolExecutor's must not exceed this.
TARGET = 1.0

#: Before the clock: one sleep of this many seconds per worker, so that the
#: DFK is up and every worker has run a task (and imported what it needs).
WARM_SLEEP = 0.3

CONFIGS = ("aioflow-parsl", "parsl-pool")
WORKLOADS = ("chain:1000", "fanout:1000", "lattice:10x10")
SMOKE_WORKLOADS = ("chain:20", "fanout:20", "lattice:3x3")


# ----------------------------------------------------------------------------- the child


def _aioflow(config: Any, workload: Any) -> tuple[int, float]:
    import workloads

    import aioflow

    with aioflow.open_pool("parsl", pool_options={"config": config}) as pool:
        aioflow.execute_graph(workloads.make(f"sleepfan:{WORKERS}x{WARM_SLEEP}").graph, pool=pool)
        start = time.perf_counter()
        results = aioflow.execute_graph(workload.graph, pool=pool, outputs=[{"all": True}], merge_outputs=False)
        elapsed = time.perf_counter() - start
    return sum(results[sink]["return_value"] for sink in workload.sinks), elapsed


def _parsl_pool(config: Any, workload: Any) -> tuple[int, float]:
    import benchtasks
    import workloads
    from parsl.concurrent import ParslPoolExecutor

    steps = workloads.plan(workload.graph)
    parsl_executor: Any = ParslPoolExecutor(config=config)  # its submit is untyped
    with parsl_executor as executor:
        for warm in [executor.submit(benchtasks.sleep, WARM_SLEEP) for _ in range(WORKERS)]:
            warm.result()
        start = time.perf_counter()
        futures: dict[str, Any] = {}
        for step in steps:
            kwargs = dict(step.static)
            kwargs.update({name: futures[source] for source, name in step.preds})
            futures[step.node_id] = executor.submit(getattr(benchtasks, step.func), **kwargs)
        total = sum(futures[sink].result() for sink in workload.sinks)
        elapsed = time.perf_counter() - start
    return total, elapsed


def child(config_name: str, spec: str) -> None:
    """Measure one configuration on one workload; print ``PARSLRESULT {json}``."""
    sys.path.insert(0, str(HERE))  # benchtasks, importable by name here and (through PYTHONPATH) in the workers
    import workloads

    from aioflow.pools._parsl import default_config

    workload = workloads.make(spec)
    run_dir = tempfile.mkdtemp(prefix="parslbench-")
    try:
        config = default_config(WORKERS, run_dir)
        run = _aioflow if config_name == "aioflow-parsl" else _parsl_pool
        total, elapsed = run(config, workload)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print("PARSLRESULT " + json.dumps({"execute": elapsed, "ok": total == workload.checksum}), flush=True)


# ----------------------------------------------------------------------------- the driver


def _measure(config: str, spec: str) -> dict[str, Any]:
    # A session of its own: on a hang, the whole group (Parsl's interchange and workers) is killed.
    command = [sys.executable, str(Path(__file__).resolve()), "--child", config, spec]
    return run_child(command, "PARSLRESULT", timeout=TIMEOUT, wrong="wrong checksum")


def _table(specs: tuple[str, ...], records: dict[tuple[str, str], list[dict[str, Any]]], repeats: int) -> str:
    lines = [
        "| workload | aioflow-parsl s | parsl-pool s | ratio | target | result | runs ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in specs:
        ours = records.get((spec, "aioflow-parsl"), [])
        theirs = records.get((spec, "parsl-pool"), [])
        a, p = median(ours, "execute"), median(theirs, "execute")
        ratio = a / p if a is not None and p else None
        verdict = "-" if ratio is None else ("PASS" if ratio <= TARGET else "MISS")
        ok = f"{sum(r.get('status') == 'ok' for r in ours)}/{repeats}, {sum(r.get('status') == 'ok' for r in theirs)}/{repeats}"
        lines.append(f"| {spec} | {fmt(a)} | {fmt(p)} | {fmt(ratio, 2)} | <= {TARGET} | {verdict} | {ok} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small workloads once (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration (default 3, smoke 1)")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines file (default runs/parsl-<time>.jsonl)")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    repeats = args.repeats or (1 if args.smoke else 3)
    specs = SMOKE_WORKLOADS if args.smoke else WORKLOADS
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or (RESULTS_DIR / ("parsl-smoke.jsonl" if args.smoke else f"parsl-{stamp}.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(specs) * len(CONFIGS)} cells x {repeats}; records: {out}", flush=True)
    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed = False
    with out.open("w") as sink:
        for repeat in range(repeats):
            for spec in specs:
                for config in CONFIGS:
                    record = _measure(config, spec)
                    record.update(workload=spec, config=config, repeat=repeat, workers=WORKERS)
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    records.setdefault((spec, config), []).append(record)
                    if record["status"] != "ok":
                        failed = True
                        print(f"  {spec} / {config}: {record['status']}\n{record.get('stderr', '')}", flush=True)
                    else:
                        print(f"  {spec} / {config}: {record['execute']:.3f} s", flush=True)
    import parsl

    meta = (
        f"{platform.python_implementation()} {platform.python_version()}, parsl {parsl.__version__}, "
        f"{os.cpu_count()} CPUs, {WORKERS} HTEX workers, {stamp}"
    )
    text = (
        f"# aioflow on Parsl vs ParslPoolExecutor ({meta}; median of {repeats})\n\n{_table(specs, records, repeats)}\n"
    )
    out.with_suffix(".md").write_text(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
