"""aioflow as an Ewoks engine, against the reference push-flow engine (ewoksppf), through both doors.

Two ways into an engine, measured in one run, same pool type and worker count:

- **own door**, end to end: ``aioflow.execute_graph(graph)`` against
  ``ewoksppf.execute_graph(graph)``; each engine loads the graph dict itself
  (aioflow with its own linear-time loader, ewoksppf with ewokscore's);
- **ewoks door**: ``ewoks.execute_graph(graph, engine="aioflow")`` against
  ``engine="ppf"``. The ewoks front end loads the graph with ewokscore
  *before* it calls any engine, so both pay the same load; the row compares
  the engine's own time (the engine's ``execute_graph`` call, timed inside
  the measuring process), and shows the end-to-end time beside it;
- **conversion**: the aioflow engine's conversion of the graph ewoks loaded
  (a ``TaskGraph``) to aioflow's model, at two sizes 10x apart (linear: ratio
  about 10).

    python benchmarks/ewoksbench.py            # the full run: median of 3, about 4 minutes on 2 cores
    python benchmarks/ewoksbench.py --smoke    # every row once, tiny sizes (CI)
    python benchmarks/ewoksbench.py --only chain20

Every measurement runs in a fresh interpreter (this file with ``--child``)
with a timeout; a measurement still running at its timeout is killed with its
process group and reported as ``timeout``, which is how the reference's
exponential load shows on long chains (``not-run``: a shorter chain of the
same configuration already timed out). ewoksppf runs with
``scaling_workers=False``, its fastest setting (its scaling process pools
start a pool per task). The exit code is 1 only when an aioflow measurement
crashed or computed a wrong result, never for a missed target.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import fmt, median, run_child

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = Path(__file__).resolve().parent
# New runs go to runs/ (ignored by git); results/ keeps the runs the docs cite, copied there by hand.
RESULTS_DIR = HERE / "runs"
WORKERS = 2

#: Seconds one measurement may take (ewoksppf on a 20-node chain takes 5-10 s here).
TIMEOUT = 60.0
#: Chains this long or longer: the reference's load is exponential, so it gets this much, once.
LONG_CHAIN = 25
LONG_TIMEOUT = 30.0


@dataclass(frozen=True)
class Row:
    """One comparison: aioflow against the reference on one workload, pool and door."""

    door: str  # "own" or "ewoks"
    spec: str  # a workloads.make spec
    pool: str  # "thread" or "process"
    target: float | None = None  # aioflow / reference at most this (None: information)
    why: str = ""

    @property
    def name(self) -> str:
        return f"{self.door} door: {self.spec.replace(':', '')} {self.pool} x{WORKERS}"


def _rows(smoke: bool) -> list[Row]:
    if smoke:
        return [
            Row("own", "chain:10", "thread"),
            Row("own", "fanout:20", "process"),
            Row("ewoks", "chain:10", "thread"),
            Row("ewoks", "fanout:20", "process"),
        ]
    return [
        Row("own", "chain:10", "thread"),
        Row("own", "chain:20", "thread", 0.01, ">= 100x faster"),
        Row("own", "chain:1000", "thread", None, "runs (the reference cannot load it)"),
        Row("own", "chain:10000", "thread", None, "runs (the reference cannot load it)"),
        Row("own", "fanout:1000", "process", 0.2, ">= 5x faster"),
        Row("own", "fanout:1000", "thread"),
        Row("own", "lattice:4x4", "thread"),
        Row("own", "sleepfan:100x0.05", "thread"),
        Row("ewoks", "chain:10", "thread"),
        Row("ewoks", "chain:20", "thread"),
        Row("ewoks", "fanout:1000", "process", 0.2, "engine time >= 5x faster"),
        Row("ewoks", "fanout:1000", "thread"),
        Row("ewoks", "lattice:4x4", "thread"),
        Row("ewoks", "sleepfan:100x0.05", "thread"),
    ]


def _conversion_sizes(smoke: bool) -> tuple[int, int]:
    # Large enough that fixed costs (a first allocation, the collector's
    # first passes) do not hide the growth: ewokscore loads the larger one in about 4 s.
    return (100, 1_000) if smoke else (10_000, 100_000)


# ----------------------------------------------------------------------------- in the measuring process


def _pool_keywords(pool: str) -> dict[str, Any]:
    keywords: dict[str, Any] = {"pool_type": pool, "max_workers": WORKERS}
    if pool == "process":
        keywords["pool_options"] = {"context": "fork"}
    return keywords


def _timed_engine(name: str) -> list[float]:
    """Wrap the ``execute_graph`` of the ewoks engine registered as ``name``; return the list its times go to."""
    import importlib.metadata

    (entry,) = (e for e in importlib.metadata.entry_points(group="ewoks.engines") if e.name == name)
    cls = entry.load()
    inner = cls.execute_graph
    times: list[float] = []

    def execute_graph(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(self, *args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    cls.execute_graph = execute_graph
    return times


def _import_engine(engine: str, door: str) -> None:
    if engine == "aioflow":
        import uvloop

        import aioflow
        import aioflow.graph
        import aioflow.pools._process
        import aioflow.pools._thread
        import aioflow.scheduler

        if door == "ewoks":
            import aioflow.ewoks._engine
        del uvloop, aioflow
    else:
        import ewoksppf
        import ewoksppf.engine

        del ewoksppf


def child(door: str, engine: str, spec: str, pool: str) -> None:
    """Measure one run; print ``EWOKSRESULT {json}``."""
    sys.path.insert(0, str(HERE))
    import workloads

    work = workloads.make(spec)
    record: dict[str, Any] = {}
    if door == "convert":
        import ewokscore

        from aioflow.ewoks._convert import from_taskgraph

        taskgraph = ewokscore.load_graph(work.graph)
        start = time.perf_counter()
        graph = from_taskgraph(taskgraph)
        record["seconds"] = time.perf_counter() - start
        record["ok"] = len(graph.nodes) == work.n_nodes
        print("EWOKSRESULT " + json.dumps(record), flush=True)
        return
    keywords = _pool_keywords(pool)
    # Each engine is imported before the clock, all of it: `import ewoksppf`
    # loads ewokscore, pypushflow and its pools (about 1 s here), while aioflow
    # loads its scheduler, graph loader, pools and uvloop on first use (and,
    # behind the ewoks door, its engine module with
    # ewokscore); both import times are recorded ("import_s"). The first call then
    # pays what remains (a pool's first start, caches); the second call
    # ("again") shows the steady state.
    start = time.perf_counter()
    _import_engine(engine, door)
    record["import_s"] = time.perf_counter() - start
    run: Callable[[], int]
    if door == "own" and engine == "aioflow":
        import aioflow

        context = keywords.pop("pool_options", {}).get("context")
        own = {**keywords, "context": context}

        def run() -> int:
            results = aioflow.execute_graph(work.graph, merge_outputs=False, **own)
            return sum(results[sink]["return_value"] for sink in work.sinks)

    elif door == "own":
        import ewoksppf

        def run() -> int:
            merged = ewoksppf.execute_graph(work.graph, scaling_workers=False, **keywords)
            # ewoksppf returns the outputs of the last end node only; every sink of these graphs has the same value.
            return int(merged["return_value"]) * len(work.sinks)

    else:
        from ewoks.bindings import execute_graph

        engine_times = _timed_engine(engine)
        extra = {"scaling_workers": False} if engine == "ppf" else {}

        def run() -> int:
            merged = execute_graph(work.graph, engine=engine, **keywords, **extra)
            return int(merged["return_value"]) * len(work.sinks)

    start = time.perf_counter()
    ok = run() == work.checksum
    record["seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    ok = run() == work.checksum and ok
    record["again"] = time.perf_counter() - start
    if door == "ewoks":
        record["engine_s"], record["engine_again"] = engine_times
    record["ok"] = ok
    print("EWOKSRESULT " + json.dumps(record), flush=True)


# ----------------------------------------------------------------------------- the driver


def _measure(door: str, engine: str, spec: str, pool: str, timeout: float) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", door, engine, spec, pool]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    return run_child(command, "EWOKSRESULT", timeout=timeout, env=env)


def _status(records: list[dict[str, Any]]) -> str:
    if not records:
        return "not-run"
    ok = sum(r.get("status") == "ok" for r in records)
    if ok:
        return f"ok {ok}/{len(records)}"
    last = records[-1]
    return f"{last['status']} ({last['error']})" if last.get("error") else str(last["status"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every row once, tiny sizes (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 3, smoke 1)")
    parser.add_argument("--only", default=None, help="measure the rows whose name contains this")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines file (default runs/ewoks-<time>.jsonl)")
    parser.add_argument("--child", nargs=4, metavar=("DOOR", "ENGINE", "SPEC", "POOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    repeats = args.repeats or (1 if args.smoke else 3)
    rows = [row for row in _rows(args.smoke) if not args.only or args.only in row.name]
    small, large = _conversion_sizes(args.smoke)
    measure_conversion = not args.only or args.only in "conversion"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or (RESULTS_DIR / ("ewoks-smoke.jsonl" if args.smoke else f"ewoks-{stamp}.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(rows)} rows x 2 engines x {repeats}; records: {out}", flush=True)

    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    gave_up: set[tuple[str, str, str]] = set()  # (door, engine, pool) that timed out on a shorter chain
    failed = False
    with out.open("w") as sink:

        def run(key: tuple[str, str], door: str, engine: str, spec: str, pool: str, timeout: float) -> None:
            nonlocal failed
            record = _measure(door, engine, spec, pool, timeout)
            record.update(row=key[0], engine=engine, door=door, spec=spec, pool=pool)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            records.setdefault(key, []).append(record)
            shown = f"{record['seconds']:.3f} s" if record["status"] == "ok" else record["status"]
            print(f"  {key[0]} / {engine}: {shown}", flush=True)
            if record["status"] != "ok" and engine == "aioflow":
                failed = True
                print(record.get("stderr", ""), flush=True)

        for repeat in range(repeats):
            for row in rows:
                for engine in ("aioflow", "ppf"):
                    long_chain = row.spec.startswith("chain:") and int(row.spec[6:]) >= LONG_CHAIN
                    if engine == "ppf" and long_chain:
                        if repeat or (row.door, engine, row.pool) in gave_up:
                            continue  # one attempt: its timeout is the figure
                        run((row.name, engine), row.door, engine, row.spec, row.pool, LONG_TIMEOUT)
                        if records[(row.name, engine)][-1]["status"] == "timeout":
                            gave_up.add((row.door, engine, row.pool))
                        continue
                    run((row.name, engine), row.door, engine, row.spec, row.pool, TIMEOUT)
            if measure_conversion:
                for n in (small, large):
                    run((f"conversion fanout{n}", "aioflow"), "convert", "aioflow", f"fanout:{n}", "-", TIMEOUT)

    table = _table(rows, records, (small, large) if measure_conversion else None)
    meta = f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, {stamp}"
    text = f"# aioflow and ewoksppf as Ewoks engines ({meta}; median of {repeats})\n\n{table}\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    return 1 if failed else 0


def _table(
    rows: list[Row], records: dict[tuple[str, str], list[dict[str, Any]]], conversion: tuple[int, int] | None
) -> str:
    lines = [
        (
            "| row | aioflow s | ewoksppf s | aioflow / ewoksppf | target | result | "
            "aioflow engine s | ewoksppf engine s | engine ratio | again: aioflow s | ewoksppf s | ratio |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mine = records.get((row.name, "aioflow"), [])
        theirs = records.get((row.name, "ppf"), [])
        a, p = median(mine, "seconds"), median(theirs, "seconds")
        ae, pe = median(mine, "engine_s"), median(theirs, "engine_s")
        compared = ae / pe if row.door == "ewoks" and ae and pe else (a / p if a and p else None)
        if row.target is not None and compared is not None:
            result = "PASS" if compared <= row.target else "MISS"
        elif row.why.startswith("runs"):
            result = "PASS" if a is not None and p is None else "MISS"
        else:
            result = "info"
        target = f"<= {row.target}x ({row.why})" if row.target is not None else (row.why or "-")
        their = fmt(p) if p is not None else _status(theirs)
        mine_s = fmt(a) if a is not None else _status(mine)
        ratio = fmt(a / p, 4) if a and p else "-"
        engine_ratio = fmt(ae / pe, 3) if ae and pe else "-"
        again_key = "engine_again" if row.door == "ewoks" else "again"
        aa, pa = median(mine, again_key), median(theirs, again_key)
        again_ratio = fmt(aa / pa, 4) if aa and pa else "-"
        lines.append(
            f"| {row.name} | {mine_s} | {their} | {ratio} | {target} | {result} | "
            f"{fmt(ae)} | {fmt(pe)} | {engine_ratio} | {fmt(aa)} | {fmt(pa)} | {again_ratio} |"
        )

    def imported(engine: str, door: str) -> str:
        recs = [r for (_, e), rs in records.items() if e == engine for r in rs if r.get("door") == door]
        return fmt(median(recs, "import_s"))

    lines += [
        "",
        (
            "Engine import, before the clock (medians): own door: aioflow "
            f"{imported('aioflow', 'own')} s (scheduler, loader, pools, uvloop), "
            f"ewoksppf {imported('ppf', 'own')} s; ewoks door: aioflow {imported('aioflow', 'ewoks')} s "
            f"(the same, plus its engine module and ewokscore), ewoksppf {imported('ppf', 'ewoks')} s."
        ),
    ]
    if conversion:
        small, large = conversion
        s = median(records.get((f"conversion fanout{small}", "aioflow"), []), "seconds")
        b = median(records.get((f"conversion fanout{large}", "aioflow"), []), "seconds")
        growth = b / s if s and b else None
        verdict = "-" if growth is None else ("PASS" if growth <= 12 else "MISS")
        lines += [
            "",
            "| conversion of ewoks' loaded graph to aioflow's model | seconds | ratio to 10x fewer nodes | target | result |",
            "|---|---|---|---|---|",
            f"| fanout{small} | {fmt(s, 4)} | - | - | - |",
            f"| fanout{large} | {fmt(b, 4)} | {fmt(growth, 2)} | <= 12 (linear) | {verdict} |",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
