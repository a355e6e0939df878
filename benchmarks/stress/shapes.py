"""Stress: 1,000-node fan-outs, chains and lattices on every pool, repeated, counting hangs and lost results.

Not part of CI. Each configuration (pool, start method, gevent-patched or
not) runs in a fresh interpreter that executes every shape ``--runs`` times
on one warm pool and then once more per run on a pool of its own (``--fresh``
mode: a new pool per run, so worker start-up and shutdown are stressed too).
A run counts as:

- ``ok``: every sink has its value and the checksum is right;
- ``lost``: the execution returned, but some result is missing or wrong;
- ``hang``: it raised `aioflow.ExecutionTimeoutError` (``--run-timeout``), or
  the whole interpreter stopped answering and was killed (``--config-timeout``);
- ``error``: any other exception (printed).

Usage::

    python benchmarks/stress/shapes.py --runs 200                      # every pool, every start method
    python benchmarks/stress/shapes.py --runs 20 --only 'billiard|gevent'
    python benchmarks/stress/shapes.py --runs 200 --shapes fanout:1000 --out /tmp/shapes.jsonl
    python benchmarks/stress/shapes.py --runs 200 --only 'dask|parsl|mpi'   # the cluster pools, on loopback

One JSON line per configuration and shape goes to ``--out`` (and a table to stdout).
"""

# ruff: noqa: T201 - a command-line tool: printing is its output
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent

#: (pool, start method or None, gevent-patched)
CONFIGS: list[tuple[str, str | None, bool]] = [
    ("thread", None, False),
    *[
        (pool, ctx, False)
        for pool in ("process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard")
        for ctx in ("fork", "spawn", "forkserver")
    ],
    ("gevent", None, True),
    ("thread", None, True),
    # The cluster pools on this machine: a Dask LocalCluster and Parsl's local
    # HighThroughputExecutor, both on loopback (slow: milliseconds a call);
    # and MPI ranks spawned with MPI_Comm_spawn (mpi4py.futures).
    ("dask", None, False),
    ("parsl", None, False),
    ("mpi", None, False),
]

SHAPES = ("fanout:1000", "chain:1000", "lattice:32x32")


def config_name(pool: str, context: str | None, patched: bool) -> str:
    return "-".join([pool, *([context] if context else []), *(["patched"] if patched else [])])


# --------------------------------------------------------------------------- in the child


def _child(args: argparse.Namespace) -> None:
    if args.patched:
        from gevent import monkey

        monkey.patch_all()
    sys.path.insert(0, str(BENCH))
    from workloads import make

    import aioflow

    # --workers 0: the pool's default size (a scaling thread pool then grows while its threads wait).
    options: dict[str, Any] = {"pool_type": args.pool, "max_workers": args.workers or None}
    if args.context:
        options["context"] = args.context
    for spec in args.shapes:
        workload = make(spec)
        counts = {"ok": 0, "lost": 0, "hang": 0, "error": 0}
        errors: list[str] = []
        started = time.monotonic()
        pool = None if args.fresh else aioflow.open_pool(**options)
        try:
            for _ in range(args.runs):
                outcome = _one_run(aioflow, workload, pool, options, args.run_timeout)
                counts[outcome[0]] += 1
                if outcome[1] and len(errors) < 5:
                    errors.append(outcome[1])
        finally:
            if pool is not None:
                pool.close()
        record = {"shape": spec, **counts, "seconds": round(time.monotonic() - started, 1), "errors": errors}
        print("STRESS " + json.dumps(record), flush=True)


def _one_run(aioflow: Any, workload: Any, pool: Any, options: dict[str, Any], timeout: float) -> tuple[str, str]:
    run_options = {"pool": pool} if pool is not None else options
    try:
        results = aioflow.execute_graph(
            workload.graph,
            **run_options,
            timeout=timeout,
            outputs=[{"id": sink} for sink in workload.sinks],
            merge_outputs=False,
        )
    except aioflow.ExecutionTimeoutError as exc:
        return "hang", str(exc)[:300]
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}"[:300]
    got = 0
    for sink in workload.sinks:
        value = results.get(sink, {}).get("return_value")
        if not isinstance(value, int):
            return "lost", f"sink {sink!r} has no result"
        got += value
    if got != workload.checksum:
        return "lost", f"checksum {got} != {workload.checksum}"
    return "ok", ""


# --------------------------------------------------------------------------- the driver


def _run_config(args: argparse.Namespace, pool: str, context: str | None, patched: bool) -> list[dict[str, Any]]:
    command = [
        sys.executable, __file__, "--child", "--pool", pool, "--runs", str(args.runs),
        "--workers", str(args.workers), "--run-timeout", str(args.run_timeout), "--shapes", *args.shapes,
    ]  # fmt: skip
    if context:
        command += ["--context", context]
    if patched:
        command.append("--patched")
    if args.fresh:
        command.append("--fresh")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.config_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        records = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("STRESS ")]
        done = {r["shape"] for r in records}
        records += [
            {"shape": s, "ok": 0, "lost": 0, "hang": 1, "error": 0, "seconds": None, "errors": ["interpreter killed"]}
            for s in args.shapes
            if s not in done
        ][:1]
        return records
    finally:
        _kill_group(proc.pid)
    records = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("STRESS ")]
    if proc.returncode != 0 and len(records) < len(args.shapes):
        records.append({"shape": "?", "ok": 0, "lost": 0, "hang": 0, "error": 1, "seconds": None,
                        "errors": [f"child exited {proc.returncode}"]})  # fmt: skip
    return records


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, 9)
    except ProcessLookupError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="workers per pool; 0: the pool's default size")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--only", help="regex on configuration names (thread, process-spawn, gevent-patched...)")
    parser.add_argument("--fresh", action="store_true", help="a new pool per run instead of one warm pool")
    parser.add_argument("--run-timeout", type=float, default=60.0)
    parser.add_argument("--config-timeout", type=float, default=3600.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    parser.add_argument("--patched", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    print("| configuration | shape | runs | ok | lost | hang | error | seconds |\n|---|---|---|---|---|---|---|---|")
    for pool, context, patched in CONFIGS:
        name = config_name(pool, context, patched)
        if args.only and not re.search(args.only, name):
            continue
        for record in _run_config(args, pool, context, patched):
            record = {"config": name, "runs": args.runs, "fresh": args.fresh, **record}
            print(
                f"| {name} | {record['shape']} | {args.runs} | {record['ok']} | {record['lost']} | "
                f"{record['hang']} | {record['error']} | {record['seconds']} |",
                flush=True,
            )
            for error in record["errors"]:
                print(f"|   | {error} |", flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
