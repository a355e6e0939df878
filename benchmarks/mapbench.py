"""Parallel map: `aioflow.parallel.imap` on each backend against the stdlib, loky and scinexus.

Every measurement runs in a fresh interpreter (this file with ``--child``),
is repeated (median of ``--repeats``, the configurations interleaved round
robin so that every one sees the same noise), and is written as one JSON
line; the run ends with a Markdown table of each figure and its ratio to the
baseline, ``ProcessPoolExecutor(2, fork).map`` with the same chunks, measured
in the same run.

    python benchmarks/mapbench.py             # the full run (about 30 minutes on a busy 2-core machine)
    python benchmarks/mapbench.py --smoke     # every configuration once at tiny sizes (CI)
    python benchmarks/mapbench.py --only 'inc'

Workloads: ``inc`` (``x + 1``) over 100,000 items at the default chunk size
(``ceil(n / (4 * workers))`` = 12,500) and at chunk size 1; ``sleep`` (10 ms
each) over 1,000 items, whose ideal time is ``n * 10 ms / workers``. ``cold``
is pool start + map + every result + shutdown: the only figure comparable with
scinexus, which starts a pool inside every call. ``warm`` is a second,
identical map on the pool the first one left (scinexus: a second call).
MPI rows run under ``mpiexec -n 3 python -m mpi4py.futures`` (``--oversubscribe`` with Open MPI)
(the launch itself is not timed: the ranks exist before the clock starts).

scinexus is measured only when it is installed (``pip install scinexus``; it
is a benchmark-only dependency). The exit code is 1 only when a measurement
crashed, timed out or returned a wrong checksum; never for a missed target.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import fmt, median, run_child

HERE = Path(__file__).resolve().parent
# New runs go to runs/ (ignored by git); results/ keeps the runs the docs cite, copied there by hand.
RESULTS_DIR = HERE / "runs"
WORKERS = 2

#: Seconds one measurement may take before its process group is killed (the
#: slowest, loky at one item per chunk, took 36 s on a busy 2-core machine).
TIMEOUT = 300.0

# OpenMPI refuses to run as root unless told twice (CI containers run as root).
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

SLEEP_S = 0.01


# ----------------------------------------------------------------------------- tasks (imported by workers)


def inc(x: int) -> int:
    return x + 1


def sleep10(x: int) -> int:
    time.sleep(SLEEP_S)
    return x + 1


# ----------------------------------------------------------------------------- one measurement (child)


def _tuned(n: int, chunksize: int | None) -> int:
    return chunksize or max(1, math.ceil(n / (4 * WORKERS)))


def _import(config: str) -> None:
    """Import the configuration's modules before the clock starts: the figures compare pools, not imports.

    (``import aioflow.parallel`` costs what ``import aioflow`` does; ``import
    scinexus.parallel`` runs ``MPI_Init`` when mpi4py is installed.)
    """
    import concurrent.futures
    import multiprocessing

    del concurrent, multiprocessing
    if config == "loky" or config.endswith("loky"):
        import loky

        del loky
    if config.startswith("scinexus"):
        import scinexus.parallel

        del scinexus
    if config.startswith("aioflow"):
        import aioflow.parallel

        del aioflow
    if config == "mpi":
        import mpi4py.futures

        del mpi4py


def _run_once(config: str, fn: Any, data: range, chunksize: int | None) -> tuple[list[int], float]:
    """Start the pool, map, collect, stop: the ``cold`` figure. Returns the results and seconds."""
    cs = _tuned(len(data), chunksize)
    _import(config)
    start = time.perf_counter()
    if config == "ppe":
        import concurrent.futures
        import multiprocessing

        with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork")) as ex:
            results = list(ex.map(fn, data, chunksize=cs))
    elif config == "mppool":
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(WORKERS)
        results = list(pool.imap(fn, data, cs))
        pool.close()
        pool.join()
    elif config == "loky":
        import loky

        executor = loky.get_reusable_executor(max_workers=WORKERS)
        results = list(executor.map(fn, data, chunksize=cs))
        executor.shutdown(wait=True)
    elif config.startswith("scinexus"):
        import scinexus.parallel as sx

        backend: Any = config.split("-", 1)[1]  # "multiprocess", "loky" or "mpi"
        sx.set_parallel_backend(backend)
        use_mpi = config == "scinexus-mpi"
        results = list(
            sx.imap(fn, data, max_workers=None if use_mpi else WORKERS, use_mpi=use_mpi, chunksize=chunksize)
        )
    elif config.startswith("aioflow"):
        import aioflow.parallel as par

        backend = config.split("-", 1)[1]
        if backend == "multiprocess-spawn":
            par.set_parallel_backend(par.MultiprocessBackend(context="spawn"))
        elif backend != "mpi":
            par.set_parallel_backend(backend)
        use_mpi = backend == "mpi"
        results = list(
            par.imap(fn, data, max_workers=None if use_mpi else WORKERS, use_mpi=use_mpi, chunksize=chunksize)
        )
        return results, time.perf_counter() - start  # shut down after the warm figure
    elif config == "mpi":
        from mpi4py.futures import MPIPoolExecutor

        with MPIPoolExecutor() as ex:
            results = list(ex.map(fn, data, chunksize=cs))
    else:
        raise SystemExit(f"unknown configuration {config!r}")
    return results, time.perf_counter() - start


def child(config: str, workload: str, n: int, chunksize: int | None) -> None:
    """Measure one configuration on one workload; print ``MAPRESULT {json}``."""
    sys.path.insert(0, str(HERE))
    import mapbench  # the task functions by their module name, so that workers import them

    fn = mapbench.inc if workload == "inc" else mapbench.sleep10
    data = range(n)
    expected = sum(data) + n
    results, cold = _run_once(config, fn, data, chunksize)
    record: dict[str, Any] = {"cold": cold, "ok": sum(results) == expected}
    if workload == "inc" and config.startswith(("aioflow", "scinexus")):
        start = time.perf_counter()
        if config.startswith("aioflow"):
            import aioflow.parallel as par

            use_mpi = config == "aioflow-mpi"
            again = list(
                par.imap(fn, data, max_workers=None if use_mpi else WORKERS, use_mpi=use_mpi, chunksize=chunksize)
            )
        else:
            again, _ = _run_once(config, fn, data, chunksize)
        record["warm"] = time.perf_counter() - start
        record["ok"] = record["ok"] and sum(again) == expected
    if config.startswith("aioflow"):
        import aioflow.parallel as par

        start = time.perf_counter()
        par.shutdown()
        record["shutdown"] = time.perf_counter() - start
        record["cold"] += record["shutdown"]
    print("MAPRESULT " + json.dumps(record), flush=True)


# ----------------------------------------------------------------------------- the driver


def _configs(has_scinexus: bool, has_mpi: bool) -> list[str]:
    configs = ["ppe", "mppool", "loky"]
    if has_scinexus:
        configs += ["scinexus-multiprocess", "scinexus-loky"]
    configs += ["aioflow-multiprocess", "aioflow-multiprocess-spawn", "aioflow-loky", "aioflow-process"]
    if has_mpi:
        configs += ["mpi", "aioflow-mpi"]
        if has_scinexus:
            configs += ["scinexus-mpi"]
    return configs


def _workloads(smoke: bool) -> list[tuple[str, str, int, int | None]]:
    """(row name, task, n, chunksize: None for the default)."""
    n_inc, n_sleep = (2_000, 20) if smoke else (100_000, 1_000)
    return [
        (f"inc x{n_inc:,} default chunks", "inc", n_inc, None),
        (f"inc x{n_inc:,} chunksize 1", "inc", n_inc, 1),
        (f"sleep 10 ms x{n_sleep:,} default chunks", "sleep", n_sleep, None),
    ]


def _mpiexec() -> list[str]:
    """The launcher of the MPI library mpi4py loads: this environment's own (MPICH from PyPI) first, else PATH's."""
    own = Path(sys.executable).with_name("mpiexec")
    return [str(own) if own.exists() else (shutil.which("mpiexec") or "mpiexec")]


def _is_open_mpi() -> bool:
    """Open MPI needs --oversubscribe to start more processes than cores; MPICH's launcher refuses the flag."""
    try:
        done = subprocess.run([*_mpiexec(), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return False
    return "Open MPI" in done.stdout + done.stderr or "OpenRTE" in done.stdout + done.stderr


def _measure(config: str, task: str, n: int, chunksize: int | None) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", config, task, str(n), str(chunksize or 0)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    if config.endswith("mpi"):
        command = [
            *_mpiexec(),
            "-n",
            str(WORKERS + 1),
            *(["--oversubscribe"] if _is_open_mpi() else []),
            sys.executable,
            "-m",
            "mpi4py.futures",
            *command[1:],
        ]
        env.update(MPI_ENV)
    return run_child(command, "MAPRESULT", timeout=TIMEOUT, env=env, wrong="wrong checksum")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every configuration once, tiny sizes (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration (default 3, smoke 1)")
    parser.add_argument("--only", default=None, help="measure the rows whose workload or configuration contains this")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines file (default runs/map-<time>.jsonl)")
    parser.add_argument("--child", nargs=4, metavar=("CONFIG", "TASK", "N", "CHUNKSIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, task, n, chunksize = args.child
        child(config, task, int(n), int(chunksize) or None)
        return 0

    repeats = args.repeats or (1 if args.smoke else 3)
    has_scinexus = importlib.util.find_spec("scinexus") is not None
    has_mpi = _mpiexec() != ["mpiexec"] and importlib.util.find_spec("mpi4py") is not None
    configs = _configs(has_scinexus, has_mpi)
    workloads = _workloads(args.smoke)
    cells = [
        (w, c)
        for w in workloads
        for c in configs
        # On sleep, these differ from their row's other backend by start-up only.
        if not (w[1] == "sleep" and c in ("aioflow-multiprocess-spawn", "aioflow-process") and not args.smoke)
        if not args.only or args.only in w[0] or args.only in c
    ]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or (RESULTS_DIR / ("map-smoke.jsonl" if args.smoke else f"map-{stamp}.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(cells)} cells x {repeats}; scinexus {'yes' if has_scinexus else 'not installed'}; "
        f"mpi {'yes' if has_mpi else 'no mpiexec/mpi4py'}; records: {out}",
        flush=True,
    )
    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed = False
    with out.open("w") as sink:
        for repeat in range(repeats):
            for (row, task, n, chunksize), config in cells:
                record = _measure(config, task, n, chunksize)
                record.update(row=row, config=config, repeat=repeat, n=n, chunksize=chunksize or _tuned(n, None))
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                records.setdefault((row, config), []).append(record)
                if record["status"] != "ok":
                    failed = True
                    print(f"  {row} / {config}: {record['status']}\n{record.get('stderr', '')}", flush=True)
                else:
                    print(f"  {row} / {config}: cold {record['cold']:.3f} s", flush=True)
    table = _table(workloads, configs, records, repeats)
    meta = f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, {stamp}"
    text = f"# Parallel map ({meta}; median of {repeats})\n\n{table}\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    return 1 if failed else 0


def _table(
    workloads: list[tuple[str, str, int, int | None]],
    configs: list[str],
    records: dict[tuple[str, str], list[dict[str, Any]]],
    repeats: int,
) -> str:
    lines = []
    for row, task, n, chunksize in workloads:
        base = median(records.get((row, "ppe"), []), "cold")
        base_warm = None
        ideal = n * SLEEP_S / WORKERS if task == "sleep" else None
        peers = [
            median(records.get((row, c), []), "cold")
            for c in configs
            if not c.startswith("aioflow") and not c.endswith("mpi")
        ]
        best_peer = min((p for p in peers if p is not None), default=None)
        lines += [
            f"### {row} (chunksize {chunksize or _tuned(n, None)}); baseline ppe cold = {fmt(base)} s"
            + (f", ideal {ideal:.2f} s" if ideal else ""),
            "",
            "| configuration | cold s | x baseline | x best peer | x ideal | warm s | min-max cold s | runs ok |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for config in configs:
            recs = records.get((row, config))
            if not recs:
                continue
            cold = median(recs, "cold")
            warm = median(recs, "warm")
            colds = [r["cold"] for r in recs if r.get("status") == "ok"]
            spread = f"{min(colds):.3f}-{max(colds):.3f}" if colds else "-"
            ok = sum(r.get("status") == "ok" for r in recs)
            ratio = fmt(cold / base, 2) if cold and base else "-"
            vs_peer = fmt(cold / best_peer, 2) if cold and best_peer else "-"
            vs_ideal = fmt(cold / ideal, 3) if cold and ideal else "-"
            lines.append(
                f"| {config} | {fmt(cold)} | {ratio} | {vs_peer} | {vs_ideal} | {fmt(warm)} | {spread} | {ok}/{repeats} |"
            )
        del base_warm
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
