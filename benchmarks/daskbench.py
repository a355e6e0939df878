"""aioflow on Dask against Dask itself, on one 2-worker cluster: chains, fans and lattices of tiny tasks.

Three ways to run the same graph on the same cluster:

- ``aioflow``: ``execute_graph(graph, pool=open_pool("dask", pool_options={"address": ...}))``;
  aioflow's scheduler drives, each ready node is one ``client.submit``;
- ``submit``: ``client.submit`` calls written by hand, futures as arguments
  (``pure=False``), every node submitted up front; Dask's scheduler chains them;
- ``get``: ``client.get`` on the equivalent Dask graph (a dict of tasks).

The cluster (a ``dask scheduler`` and a ``dask worker --nworkers 2
--nthreads 1``, on 127.0.0.1) is started once per run, outside the clock, and
shared by every measurement. Each measurement runs in a fresh interpreter
(this file with ``--child``) that connects a client (outside the clock),
times one execution, checks its checksum and prints one JSON line. The
configurations are interleaved round robin, ``--repeats`` times (median of
3); the run ends with a Markdown table of each figure, its ratio to
``submit``, and PASS/MISS against the target (aioflow within 1.2x of the
hand-written submits).

    python benchmarks/daskbench.py            # chain1000, fanout1000, lattice4x4 (a few minutes)
    python benchmarks/daskbench.py --smoke    # tiny sizes, once each (< 30 s)
    python benchmarks/daskbench.py --workloads fanout:1000 --repeats 1

The exit code is 1 only when a measurement crashed, timed out or returned a
wrong checksum; never for a missed target.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# New runs go to runs/ (ignored by git); results/ keeps the runs the docs cite, copied there by hand.
RESULTS_DIR = HERE / "runs"
WORKERS = 2

#: Seconds one measurement may take before its process group is killed. Dask's
#: own ``client.get`` took 5.9 s for chain1000 on a busy 2-core machine.
TIMEOUT = 180.0

#: aioflow on Dask should cost at most this many times the hand-written submits.
TARGET = 1.2

CONFIGS = ("aioflow", "submit", "get")
FULL_WORKLOADS = ("chain:1000", "fanout:1000", "lattice:4x4")
SMOKE_WORKLOADS = ("chain:20", "fanout:20", "lattice:2x2")


# --------------------------------------------------------------------------- in a child


def call(func: Any, static: dict[str, Any], names: tuple[str, ...], *values: Any) -> Any:
    """On a worker (``client.get``): ``func(**static, **dict(zip(names, values)))``."""
    return func(**static, **dict(zip(names, values, strict=True)))


def _run_submit(client: Any, steps: list[Any], sinks: list[str]) -> int:
    import benchtasks

    futures: dict[str, Any] = {}
    for step in steps:
        kwargs = dict(step.static)
        kwargs.update({name: futures[source] for source, name in step.preds})
        futures[step.node_id] = client.submit(getattr(benchtasks, step.func), pure=False, **kwargs)
    return sum(client.gather([futures[s] for s in sinks]))


def _run_get(client: Any, steps: list[Any], sinks: list[str]) -> int:
    import benchtasks

    def key(nid: str) -> str:
        return f"node-{nid}"

    dsk: dict[str, Any] = {}
    for step in steps:
        names = tuple(name for _, name in step.preds)
        sources = [key(source) for source, _ in step.preds]
        dsk[key(step.node_id)] = (call, getattr(benchtasks, step.func), dict(step.static), names, *sources)
    return sum(client.get(dsk, [key(s) for s in sinks]))


def _run_aioflow(pool: Any, graph: dict[str, Any], sinks: list[str]) -> int:
    import aioflow

    results = aioflow.execute_graph(graph, pool=pool, outputs=[{"id": s} for s in sinks], merge_outputs=False)
    return sum(results[s]["return_value"] for s in sinks)


def _distributed() -> Any:
    """The ``distributed`` module, untyped (its calls are not annotated)."""
    import distributed

    return distributed


def child(config: str, spec: str, address: str) -> None:
    import workloads

    distributed = _distributed()
    workload = workloads.make(spec)
    steps = workloads.plan(workload.graph)
    sinks = workload.sinks
    record: dict[str, Any] = {"config": config, "workload": workload.name}
    if config == "aioflow":
        import aioflow

        pool = aioflow.open_pool("dask", pool_options={"address": address})
        # Connect and warm up outside the clock, as the other two do with their client.
        aioflow.execute_graph(
            {"nodes": [{"id": 0, "task_type": "method", "task_identifier": "benchtasks.inc"}]}, pool=pool
        )
        start = time.perf_counter()
        checksum = _run_aioflow(pool, workload.graph, sinks)
        record["seconds"] = time.perf_counter() - start
        pool.close()
    else:
        client = distributed.Client(address, set_as_default=False)
        client.submit(int, pure=False).result()  # warm up
        run = _run_submit if config == "submit" else _run_get
        start = time.perf_counter()
        checksum = run(client, steps, sinks)
        record["seconds"] = time.perf_counter() - start
        client.close()
    record["ok"] = workload.checksum is None or checksum == workload.checksum
    record["checksum"] = checksum
    print("DASKRESULT " + json.dumps(record), flush=True)


# --------------------------------------------------------------------------- the driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}


@contextlib.contextmanager
def cluster() -> Any:
    """A ``dask scheduler`` and one ``dask worker`` command with 2 single-threaded worker processes."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    commands = [
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port],
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1"],
    ]
    commands[0] += ["--no-dashboard"]
    commands[1] += ["--nworkers", str(WORKERS), "--nthreads", "1", "--no-dashboard"]
    processes = []
    try:
        for command in commands:
            process = subprocess.Popen(
                command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            processes.append(process)
        with _distributed().Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(WORKERS, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _measure(config: str, spec: str, address: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", config, spec, address]
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"config": config, "status": "timeout", "outer": time.perf_counter() - start}
    lines = [line for line in out.splitlines() if line.startswith("DASKRESULT ")]
    if proc.returncode != 0 or not lines:
        return {"config": config, "status": "crashed", "stderr": err[-2000:]}
    record: dict[str, Any] = json.loads(lines[-1].removeprefix("DASKRESULT "))
    record["status"] = "ok" if record.pop("ok") else "wrong checksum"
    record["outer"] = time.perf_counter() - start
    return record


def _median(records: list[dict[str, Any]]) -> float | None:
    values = [r["seconds"] for r in records if r.get("status") == "ok"]
    return statistics.median(values) if values else None


def _table(rows: dict[tuple[str, str], list[dict[str, Any]]], names: list[str]) -> str:
    lines = [
        (
            "| workload | aioflow on Dask (s) | hand-written `client.submit` (s) | `client.get` (s) "
            f"| aioflow / submit | get / submit | target (aioflow <= {TARGET}x submit) |"
        ),
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in names:
        aio, sub, get = (_median(rows.get((name, c), [])) for c in CONFIGS)
        ratio = None if aio is None or not sub else aio / sub
        get_ratio = None if get is None or not sub else get / sub
        verdict = "-" if ratio is None else ("PASS" if ratio <= TARGET else "MISS")
        cells = [f"{v:.3f}" if v is not None else "failed" for v in (aio, sub, get)]
        ratios = [f"{r:.2f}x" if r is not None else "-" for r in (ratio, get_ratio)]
        lines.append(f"| {name} | {' | '.join(cells)} | {' | '.join(ratios)} | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, once each (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration (default 3, smoke 1)")
    parser.add_argument("--workloads", nargs="+", metavar="SPEC", help="workload specs instead of the default set")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "WORKLOAD", "ADDRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    sys.path.insert(0, str(HERE))
    import workloads

    repeats = args.repeats or (1 if args.smoke else 3)
    specs = args.workloads or (SMOKE_WORKLOADS if args.smoke else FULL_WORKLOADS)
    names = [workloads.make(spec).name for spec in specs]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"dask-{stamp}{'-smoke' if args.smoke else ''}.jsonl"
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed = False
    started = time.perf_counter()
    with cluster() as address, out.open("w") as sink:
        for repeat in range(repeats):
            for spec, name in zip(specs, names, strict=True):
                for config in CONFIGS:
                    record = _measure(config, spec, address)
                    record.update(workload=name, repeat=repeat, python=platform.python_version())
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    rows.setdefault((name, config), []).append(record)
                    failed |= record["status"] != "ok"
                    shown = f"{record['seconds']:.3f} s" if record["status"] == "ok" else record["status"]
                    print(f"{name:>12} {config:>8} #{repeat}: {shown}", flush=True)
    table = _table(rows, names)
    distributed = _distributed()
    header = (
        f"# aioflow on Dask ({'smoke' if args.smoke else 'full'} run, {stamp})\n\n"
        f"One `dask scheduler` + `dask worker --nworkers {WORKERS} --nthreads 1` on 127.0.0.1, "
        f"distributed {distributed.__version__}, Python {platform.python_version()}, {os.cpu_count()} cores; "
        f"median of {repeats}; each measurement in a fresh interpreter, connected before the clock starts. "
        f"Total {time.perf_counter() - started:.0f} s.\n\n"
    )
    out.with_suffix(".md").write_text(header + table + "\n")
    print()
    print(table)
    print(f"\nwritten: {out} and {out.with_suffix('.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
