"""aioflow's performance targets, each checked as a ratio to a baseline measured in the same run.

Every measurement runs in a fresh interpreter (`child.py`), is repeated
(median of ``--repeats``), and is written as one JSON line to the results
file; the end of the run prints a Markdown table: each figure, its baseline,
the ratio, the target and PASS or MISS.

    python benchmarks/bench.py                  # the full run (several minutes)
    python benchmarks/bench.py --smoke          # every benchmark once, tiny sizes (CI)
    python benchmarks/bench.py --only 'load'    # rows whose name matches a regex
    python benchmarks/bench.py --profile chain:10000 --pool thread   # cProfile of one aioflow run
    python benchmarks/bench.py --profile load:random:100000          # cProfile of load_graph

The exit code is non-zero only when a measurement crashed, timed out or
computed a wrong checksum, never for a missed target: shared machines are
too noisy for that. See ``benchmarks/README.md`` and ``docs/performance.md``.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHILD = HERE / "child.py"
COLD_CHILD = HERE / "cold_child.py"
RAW_CLI = HERE / "raw_cli.py"
# New runs go to runs/ (ignored by git); results/ keeps the runs the docs cite, copied there by hand.
RESULTS_DIR = HERE / "runs"

sys.path.insert(0, str(HERE))

import benchtasks  # needs the path above when run as a script

#: Seconds a single measurement may take before its process group is killed.
#: The slowest full-size measurement (the 100x100 lattice) takes about 30 s.
DEFAULT_TIMEOUT = 600.0

#: Fresh interpreters per side for the import-time figure (median).
IMPORT_RUNS_FULL = 9
IMPORT_RUNS_SMOKE = 3


# --------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """The workload sizes of one mode (full or smoke)."""

    load_chain: tuple[int, int, int]  # small, medium, large: each 10x the previous
    load_random: tuple[int, int]  # medium, large
    load_links: int  # entries of one link (merged into one), links between distinct pairs, links from one node
    thread_chain: int
    thread_fanout: int
    lattice: tuple[int, int]  # width, depth
    process_fanout: int
    process_chain: int
    cpu_tasks: int
    cpu_task_s: float
    rss_fanout: int
    pool_fanout: int
    sleep_tasks: int
    sleep_task_s: float
    executor_calls: int  # calls of each executor chain and fan


FULL = Sizes(
    load_chain=(1_000, 10_000, 100_000),
    load_random=(10_000, 100_000),
    load_links=100_000,
    thread_chain=10_000,
    thread_fanout=10_000,
    lattice=(100, 100),
    process_fanout=1_000,
    process_chain=1_000,
    cpu_tasks=8,
    cpu_task_s=0.25,
    rss_fanout=10_000,
    pool_fanout=1_000,
    sleep_tasks=100,
    sleep_task_s=0.05,
    executor_calls=10_000,
)

SMOKE = Sizes(
    load_chain=(50, 500, 5_000),
    load_random=(500, 5_000),
    load_links=5_000,
    thread_chain=50,
    thread_fanout=50,
    lattice=(5, 5),
    process_fanout=50,
    process_chain=50,
    cpu_tasks=2,
    cpu_task_s=0.01,
    rss_fanout=50,
    pool_fanout=50,
    sleep_tasks=10,
    sleep_task_s=0.01,
    executor_calls=50,
)


# --------------------------------------------------------------- measurements


@dataclass(frozen=True)
class Measure:
    """One measurement: a child spec (run by `child.py`) or an interpreter start (``import``)."""

    label: str
    spec: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, label: str, **spec: Any) -> Measure:
        return cls(label, tuple(sorted(spec.items())))

    @property
    def as_dict(self) -> dict[str, Any]:
        return dict(self.spec)

    @property
    def key(self) -> str:
        return json.dumps(self.as_dict, sort_keys=True)


def load(workload: str) -> Measure:
    return Measure.of(f"load_graph {workload}", kind="load", workload=workload)


def toposort(workload: str) -> Measure:
    return Measure.of(f"plain toposort {workload}", kind="toposort", workload=workload)


def run(
    engine: str,
    workload: str,
    pool: str,
    *,
    loop: str = "asyncio",
    cpu_iters: int = 0,
    warm: bool = False,
    preload: bool = False,
) -> Measure:
    spec: dict[str, Any] = {"kind": "exec", "engine": engine, "workload": workload, "pool": pool, "workers": 2}
    if warm:
        spec["warm"] = True
    if preload:
        spec["preload"] = True
    if pool == "process":
        spec["context"] = "fork"
    if loop != "asyncio":
        spec["loop"] = loop
    if cpu_iters:
        spec["cpu_iters"] = cpu_iters
    if engine == "seq":
        label = f"sequential {workload}"
        spec.pop("workers")
        spec.pop("context", None)
        spec["pool"] = "none"
    else:
        name = "aioflow" if engine == "aioflow" else "raw floor"
        label = (
            f"{name} {pool} x2 {workload}"
            + (" (graph loaded before)" if preload else "")
            + (f" ({loop})" if loop != "asyncio" else "")
            + (" warm" if warm else "")
        )
    return Measure.of(label, **spec)


#: The pools whose tasks run in worker processes (cpu fan rows).
PROCESS_POOLS = ("process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard")

#: Threads of the sleep-fan rows (aioflow's thread and gevent pools, and the floor).
SLEEP_WORKERS = 128


def pool_run(
    engine: str,
    workload: str,
    pool: str,
    *,
    workers: int,
    context: str | None = None,
    scaling: bool | None = None,
    patch: str | None = None,
    preload: bool = False,
    again: bool = False,
    cpu_iters: int = 0,
) -> Measure:
    """A measurement of the pool rows: any aioflow pool, or the raw floor, with explicit options.

    ``run`` makes the same spec for the options it knows, so a measurement
    shared with the rows above is run once.
    """
    spec: dict[str, Any] = {"kind": "exec", "engine": engine, "workload": workload, "pool": pool, "workers": workers}
    label = f"{'aioflow' if engine == 'aioflow' else 'raw floor'} {pool}"
    if context:
        spec["context"] = context
        label += f" {context}"
    label += f" x{workers}"
    if scaling is not None:
        spec["scaling"] = scaling
        label += " scaling" if scaling else " fixed"
    if patch:
        spec["patch"] = patch
        label += f" ({patch} patched)"
    label += f" {workload}"
    if preload:
        spec["preload"] = True
        label += " (graph loaded before)"
    if again:
        spec["again"] = True
    if cpu_iters:
        spec["cpu_iters"] = cpu_iters
    return Measure.of(label, **spec)


def executor_run(engine: str, pattern: str, n: int, pool: str, *, asubmit: bool = False) -> Measure:
    """A measurement of the executor rows: ``n`` chained or independent `benchtasks.inc` calls.

    ``engine`` ``aioflow`` submits them to an `aioflow.Executor`; ``raw`` awaits
    ``loop.run_in_executor`` on a plain ``ThreadPoolExecutor`` or
    ``ProcessPoolExecutor`` (fork). Two workers; start-up and shutdown are not timed.
    ``asubmit``: aioflow's calls are awaited in asyncio (``await ex.asubmit``), as the raw side's.
    """
    spec: dict[str, Any] = {"kind": "executor", "engine": engine, "pattern": pattern, "n": n, "pool": pool}
    if asubmit:
        spec["api"] = "asubmit"
    spec["workers"] = 2
    if pool == "process":
        spec["context"] = "fork"
    where = f"{pool} x2" + (" fork" if pool == "process" else "")
    if engine == "aioflow":
        label = f"aioflow.Executor{' asubmit' if asubmit else ''} {where} {pattern} {n}"
    else:
        call = "await run_in_executor" if pattern == "chain" else "gather(run_in_executor)"
        label = f"raw asyncio {call} {where} {pattern} {n}"
    return Measure.of(label, **spec)


def interpreter(module: str | None) -> Measure:
    label = f"python -c 'import {module}'" if module else "python -c pass"
    return Measure.of(label, kind="import", module=module)


#: The kinds measured ``--import-runs`` times (fresh interpreters, a few
#: tens of milliseconds each, noisier than the longer runs).
SHORT_KINDS = ("import", "cold", "cli")


def cold(engine: str, workload: str, pool: str, context: str | None = None) -> Measure:
    """A first call in a fresh interpreter, the engine's imports included (`cold_child.py`)."""
    name = "aioflow" if engine == "aioflow" else "raw floor"
    where = f"{pool} {context}" if context else pool
    label = f"{name} first call {where} x2 {workload} (imports included)"
    return Measure.of(label, kind="cold", engine=engine, workload=workload, pool=pool, context=context or "-")


def cli(engine: str, workload: str, pool: str) -> Measure:
    """A whole process running a graph file and printing its results: ``aioflow run``, or `raw_cli.py`."""
    label = f"aioflow run --pool {pool} {workload}" if engine == "aioflow" else f"raw_cli.py {pool} {workload}"
    return Measure.of(f"{label} (whole process)", kind="cli", engine=engine, workload=workload, pool=pool)


# ----------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the table: a figure, its baseline, and how they must compare.

    ``compare`` is one of ``ratio`` (figure / baseline), ``speedup``
    (baseline / figure), ``delta`` (figure - baseline, seconds) or
    ``absolute`` (the figure alone); ``metric`` is what is read from the
    records (``seconds`` or ``maxrss_mb``).
    """

    name: str
    figure: Measure
    baseline: Measure | None
    compare: str
    limit: float | None  # None: reported, no target
    at_least: bool = False  # the target is a lower bound (speedups)
    metric: str = "seconds"
    note: str = ""
    measures: list[Measure] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.measures = [m for m in (self.baseline, self.figure) if m is not None]


def build_rows(sizes: Sizes, cpu_iters: int, *, uvloop: bool) -> list[Row]:
    """The benchmark table, at the given sizes."""
    small, medium, large = (f"chain:{n}" for n in sizes.load_chain)
    rmed, rlarge = (f"random:{n}" for n in sizes.load_random)
    repeated = f"repeated:{sizes.load_links}"
    rows = [
        Row(f"load chain {_n(large)} / {_n(medium)}", load(large), load(medium), "ratio", 12.0),
        Row(
            "  reference: plain toposort of the same dicts",
            toposort(large),
            toposort(medium),
            "ratio",
            None,
            note="what this machine does for linear Python code",
        ),
        Row(f"load chain {_n(medium)} / {_n(small)}", load(medium), load(small), "ratio", None, note="for reference"),
        Row(f"load random DAG {_n(rlarge)} / {_n(rmed)}", load(rlarge), load(rmed), "ratio", 12.0),
        Row(
            "  reference: plain toposort of the same dicts",
            toposort(rlarge),
            toposort(rmed),
            "ratio",
            None,
            note="what this machine does for linear Python code",
        ),
        Row(
            f"load {_n(repeated)} entries of one link / {_n(repeated)} links between distinct pairs",
            load(repeated),
            load(f"pairs:{sizes.load_links}"),
            "ratio",
            1.2,
            note="duplicate links merge in linear time",
        ),
        Row(
            f"load {_n(repeated)} conditional links from one node / {_n(repeated)} plain links from one node",
            load(f"router:{sizes.load_links}"),
            load(f"fanout:{sizes.load_links}"),
            "ratio",
            1.5,
            note="each condition value is kept once, in O(1)",
        ),
        Row(
            f"load chain {_n(large)}, seconds",
            load(large),
            None,
            "absolute",
            2.0 if sizes is FULL else None,
        ),
    ]

    thread_workloads = [
        f"chain:{sizes.thread_chain}",
        f"fanout:{sizes.thread_fanout}",
        "lattice:{}x{}".format(*sizes.lattice),
    ]
    # The target rows time execution of a loaded graph: the floor, too, gets
    # ready-made predecessor lists. Loading is measured on its own above, and
    # the "with load_graph" rows show the sum a one-shot caller pays.
    for w in thread_workloads:
        rows.append(
            Row(f"thread x2 {w}", run("aioflow", w, "thread", preload=True), run("raw", w, "thread"), "ratio", 1.3)
        )
        rows.append(
            Row(
                f"  thread x2 {w}, with load_graph",
                run("aioflow", w, "thread"),
                run("raw", w, "thread"),
                "ratio",
                None,
                note="graph loading included",
            )
        )
    for w in (f"fanout:{sizes.process_fanout}", f"chain:{sizes.process_chain}"):
        rows.append(
            Row(
                f"process x2 fork {w}",
                run("aioflow", w, "process", preload=True),
                run("raw", w, "process"),
                "ratio",
                1.3,
            )
        )
        rows.append(
            Row(
                f"  process x2 fork {w}, warm: a 1-node graph ran first",
                run("aioflow", w, "process", warm=True, preload=True),
                run("raw", w, "process", warm=True),
                "ratio",
                None,
                note="one-time costs left out",
            )
        )

    cpu = f"cpufan:{sizes.cpu_tasks}"
    seq = run("seq", cpu, "none", cpu_iters=cpu_iters)
    rows.append(
        Row(
            f"cpu fan {sizes.cpu_tasks} x {sizes.cpu_task_s:g} s, process x2: speedup",
            run("aioflow", cpu, "process", cpu_iters=cpu_iters),
            seq,
            "speedup",
            1.5,
            at_least=True,
        )
    )
    rows.append(
        Row(
            "  the same, raw process floor: speedup",
            run("raw", cpu, "process", cpu_iters=cpu_iters),
            seq,
            "speedup",
            None,
            at_least=True,
            note="what this machine allows",
        )
    )

    rows.append(
        Row("import aioflow, seconds over bare start", interpreter("aioflow"), interpreter(None), "delta", 0.15)
    )

    rss = f"fanout:{sizes.rss_fanout}"
    rows.append(
        Row(
            f"peak RSS thread x2 {rss}",
            run("aioflow", rss, "thread", preload=True),
            run("raw", rss, "thread"),
            "ratio",
            1.3,
            metric="maxrss_mb",
        )
    )

    import aioflow

    rows.extend(cold_rows(aioflow.available_pools()))
    rows.extend(pool_rows(sizes, cpu_iters))
    rows.extend(executor_rows(sizes))

    if uvloop:
        rows.extend(
            Row(
                f"thread x2 {w}, uvloop",
                run("aioflow", w, "thread", loop="uvloop", preload=True),
                run("raw", w, "thread", loop="uvloop"),
                "ratio",
                None,
                note="uvloop on both sides",
            )
            for w in thread_workloads[:2]
        )
    return rows


def cold_rows(available: Iterable[str]) -> list[Row]:
    """The rows of first calls; their names start with ``cold:``.

    Each side runs in a fresh interpreter and its clock starts before its
    first import: ``import aioflow`` and the first ``execute_graph`` against
    ``import asyncio, concurrent.futures`` and the raw floor's first run
    (`cold_child.py`). The same sizes in ``--smoke``: they are small.
    """
    rows: list[Row] = []
    for workload in ("chain:1", "lattice:10x10"):
        pools = [("thread", None, "thread", None), ("process", "fork", "process", "fork")]
        if workload != "chain:1":
            pools.append(("billiard", "fork", "process", "fork"))
        for pool, context, raw_pool, raw_context in pools:
            if pool not in available:
                continue
            where = f"{pool} {context}" if context else pool
            raw = cold("raw", workload, raw_pool, raw_context)
            figure = cold("aioflow", workload, pool, context)
            rows.append(Row(f"cold: first call {where} x2 {workload}", figure, raw, "ratio", 1.5))
            rows.append(Row("  the same, a second call", figure, raw, "ratio", None, metric="again_seconds"))
    rows.extend(
        Row(
            f"cold: aioflow run --pool {pool} chain:10, whole process",
            cli("aioflow", "chain:10", pool),
            cli("raw", "chain:10", pool),
            "ratio",
            1.5,
            note="vs a script of raw asyncio and concurrent.futures reading the same file",
        )
        for pool in ("thread", "process")
    )
    return rows


def pool_rows(sizes: Sizes, cpu_iters: int) -> list[Row]:
    """The rows of every pool type; their names start with ``pools:``.

    Only pools of ``aioflow.available_pools()`` get rows: an installation
    without billiard or gevent leaves theirs out.
    """
    import aioflow

    available = set(aioflow.available_pools())
    rows: list[Row] = []
    # Every measurement below runs its graph twice in its interpreter; the
    # "again" rows time the second run: one-time costs (lazy imports, the
    # forkserver's start...) left out, a new pool still created and closed.
    again_name = "  again: a second execution in the same interpreter"

    # Scheduling overhead on scaling process-based pools, against the fixed
    # 2-worker ProcessPoolExecutor floor of the process rows above.
    fan = f"fanout:{sizes.pool_fanout}"
    raw_process = pool_run("raw", fan, "process", workers=2, context="fork", again=True)
    rows.extend(
        Row(
            again_name if again else f"pools: {pool} scaling x2 fork {fan}",
            pool_run("aioflow", fan, pool, workers=2, context="fork", scaling=True, preload=True, again=True),
            raw_process,
            "ratio",
            None if again else 1.5,
            metric="again_seconds" if again else "seconds",
            note="both sides",
        )
        for pool in ("process", "billiard")
        if pool in available
        for again in (False, True)
    )

    # Concurrency: many short sleeps on 128 threads or greenlets.
    sleep = f"sleepfan:{sizes.sleep_tasks}x{sizes.sleep_task_s:g}"
    sleep_name = f"sleep-fan {sizes.sleep_tasks} x {sizes.sleep_task_s * 1000:g} ms"
    sleepers: list[tuple[str, str, dict[str, Any]]] = [
        ("thread", f"thread scaling x{SLEEP_WORKERS}", {"scaling": True}),
        ("gevent", f"gevent x{SLEEP_WORKERS} (patch_all)", {"patch": "gevent"}),
    ]
    raw_threads = pool_run("raw", sleep, "thread", workers=SLEEP_WORKERS, again=True)
    rows.extend(
        Row(
            again_name if again else f"pools: {name} {sleep_name}",
            pool_run("aioflow", sleep, pool, workers=SLEEP_WORKERS, preload=True, again=True, **options),
            raw_threads,
            "ratio",
            None if again else 1.5,
            metric="again_seconds" if again else "seconds",
            note="both sides",
        )
        for pool, name, options in sleepers
        if pool in available
        for again in (False, True)
    )

    # The thread pool with default options (no max_workers, scaling): it grows
    # while its threads wait. The sleep fan against the floor on 128 threads;
    # a CPU-bound fan against the same pool held at the stdlib's default size
    # (what the default was before it grew), in the same run.
    base = min(32, (os.cpu_count() or 1) + 4)
    default_sleep = Measure.of(
        f"aioflow thread default options {sleep}",
        kind="exec", engine="aioflow", workload=sleep, pool="thread", workers=None, preload=True, again=True,
    )  # fmt: skip
    rows.append(Row(f"pools: thread default options {sleep_name}", default_sleep, raw_threads, "ratio", 1.5))
    cpu_fan = f"cpufan:{sizes.cpu_tasks * 4}"
    default_cpu = Measure.of(
        f"aioflow thread default options {cpu_fan}",
        kind="exec", engine="aioflow", workload=cpu_fan, pool="thread", workers=None, preload=True, cpu_iters=cpu_iters,
    )  # fmt: skip
    held_cpu = Measure.of(
        f"aioflow thread x{base} (no growth) {cpu_fan}",
        kind="exec", engine="aioflow", workload=cpu_fan, pool="thread", workers=base, preload=True, cpu_iters=cpu_iters,
    )  # fmt: skip
    rows.append(
        Row(
            f"pools: thread default options cpu fan {sizes.cpu_tasks * 4} x {sizes.cpu_task_s:g} s",
            default_cpu,
            held_cpu,
            "ratio",
            1.05,
            note=f"vs max_workers={base}, the default size, which does not grow",
        )
    )

    # Start-up: a 1-node graph on a new pool, creation and close included, in
    # a fresh interpreter; then the same again in that interpreter. The
    # baseline is a ProcessPoolExecutor(1) of the same start method (fork for
    # the pools that run no process); no target.
    one = "chain:1"
    raw_start = {
        ctx: pool_run("raw", one, "process", workers=1, context=ctx, again=True)
        for ctx in ("spawn", "fork", "forkserver")
    }
    for ctx in ("spawn", "fork"):
        rows.append(
            Row(
                f"pools: start-up, raw ProcessPoolExecutor(1) {ctx}",
                raw_start[ctx],
                None,
                "absolute",
                None,
                note="first result of a 1-node graph, pool start and shutdown included",
            )
        )
        rows.append(Row(again_name, raw_start[ctx], None, "absolute", None, metric="again_seconds"))
    startups: list[tuple[str, str | None, str | None]] = [
        ("thread", None, None),
        ("process", "spawn", None),
        ("process", "fork", None),
        ("process", "forkserver", None),
        ("ndprocess", "fork", None),
        ("multiprocessing", "fork", None),
        ("ndmultiprocessing", "fork", None),
        ("billiard", "fork", None),
        ("gevent", None, "gevent"),
    ]
    for pool, method, patch in startups:
        if pool not in available:
            continue
        base_method = method or "fork"
        m = pool_run("aioflow", one, pool, workers=1, context=method, patch=patch, preload=True, again=True)
        note = f"vs a raw {base_method} ProcessPoolExecutor(1)"
        rows.append(
            Row(
                f"pools: start-up {pool}" + (f" {method}" if method else "") + (" (patch_all)" if patch else ""),
                m,
                raw_start[base_method],
                "ratio",
                None,
                note=note,
            )
        )
        rows.append(Row(again_name, m, raw_start[base_method], "ratio", None, metric="again_seconds", note=note))

    # Parallel speed-up of CPU-bound tasks on every process-based pool; the
    # raw floor's speed-up says what the machine allows at the time.
    cpu = f"cpufan:{sizes.cpu_tasks}"
    seq = run("seq", cpu, "none", cpu_iters=cpu_iters)
    rows.append(
        Row(
            f"pools: cpu fan {sizes.cpu_tasks} x {sizes.cpu_task_s:g} s, raw ProcessPoolExecutor(2) fork: speedup",
            run("raw", cpu, "process", cpu_iters=cpu_iters),
            seq,
            "speedup",
            None,
            at_least=True,
            note="what this machine allows",
        )
    )
    rows.extend(
        Row(
            f"pools: cpu fan {sizes.cpu_tasks} x {sizes.cpu_task_s:g} s, {pool} x2 fork: speedup",
            pool_run("aioflow", cpu, pool, workers=2, context="fork", cpu_iters=cpu_iters),
            seq,
            "speedup",
            1.5,
            at_least=True,
        )
        for pool in PROCESS_POOLS
        if pool in available
    )
    return rows


def executor_rows(sizes: Sizes) -> list[Row]:
    """The rows of `aioflow.Executor`; their names start with ``executor:``.

    A chain of ``submit`` calls, each taking the previous call's future, and a
    fan of independent ones, against raw asyncio ``run_in_executor`` on the
    same kind of pool; the executor's start-up and shutdown are left out on
    both sides.
    """
    n = sizes.executor_calls
    rows: list[Row] = []
    for pool in ("thread", "process"):
        for pattern in ("chain", "fan"):
            raw = executor_run("raw", pattern, n, pool)
            rows.append(
                Row(
                    f"executor: {pool} x2{' fork' if pool == 'process' else ''} {pattern} {_n(f'{pattern}:{n}')}",
                    executor_run("aioflow", pattern, n, pool),
                    raw,
                    "ratio",
                    1.5,
                )
            )
            rows.append(
                Row(
                    "  the same awaited in asyncio: "
                    + ("await ex.asubmit(inc, x) in a loop" if pattern == "chain" else "gather of ex.asubmit"),
                    executor_run("aioflow", pattern, n, pool, asubmit=True),
                    raw,
                    "ratio",
                    None,
                    note="asyncio on both sides",
                )
            )
    return rows


def select(rows: list[Row], pattern: str) -> list[Row]:
    """The rows whose name matches ``pattern``, each with its sub-rows (names indented by two spaces)."""
    kept: list[Row] = []
    parent_kept = False
    for row in rows:
        if row.name.startswith("  ") and parent_kept:
            kept.append(row)
        elif re.search(pattern, row.name):
            kept.append(row)
            parent_kept = not row.name.startswith("  ")
        else:
            parent_kept = False
    return kept


def _n(spec: str) -> str:
    """``chain:100000`` -> ``100k``."""
    n = int(spec.partition(":")[2])
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


# -------------------------------------------------------------------- running


def child_env() -> dict[str, str]:
    """The environment of measurement processes: ``benchmarks/`` on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    return env


def precompile() -> None:
    """Compile the aioflow that measurement processes import (and benchmarks/) to bytecode, once, before measuring.

    A user's interpreter loads aioflow's modules from ``__pycache__`` (pip
    compiles a package as it installs it; an editable checkout writes its
    bytecode on first import). Where ``PYTHONDONTWRITEBYTECODE`` is set, every
    fresh measurement process would compile from source instead, and a
    first-call figure would measure the compiler. ``compileall`` writes the
    bytecode whatever that variable says.
    """
    code = (
        "import compileall, os, aioflow\n"
        "compileall.compile_dir(os.path.dirname(aioflow.__file__), quiet=1)\n"
        f"compileall.compile_dir({str(HERE)!r}, quiet=1, maxlevels=0)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=HERE, check=True, timeout=DEFAULT_TIMEOUT)


def _run_process(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str, float]:
    """Run a process in its own session; kill the whole group on timeout or when it leaves workers behind.

    Returns:
        ``(returncode or None on timeout, stdout, stderr, wall seconds)``.
    """
    t0 = time.perf_counter()
    # In benchmarks/: ``python -c`` puts the working directory first on sys.path,
    # where a checkout's own aioflow would shadow the one PYTHONPATH names.
    proc = subprocess.Popen(
        argv, env=env, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err, time.perf_counter() - t0
    wall = time.perf_counter() - t0
    left = _leftovers(proc.pid)
    if left:
        err += f"\n{left} process(es) of the run were still alive after it exited (killed)"
        return 99, out, err, wall
    return proc.returncode, out, err, wall


#: Seconds the start method's helper processes (multiprocessing's resource
#: tracker, the forkserver) get to exit on their own after the measuring
#: process: they exit when their pipe from it closes, a moment after it.
HELPER_GRACE = 2.0

#: Command-line fragments of those helpers (spawn and forkserver start them).
_HELPERS = ("resource_tracker", "forkserver", "semaphore_tracker")


def _leftovers(pgid: int) -> int:
    """Kill the processes still alive in group ``pgid`` (workers a run left behind); return how many.

    Zombies are dead and not counted (their new parent reaps them when it
    gets to it). multiprocessing's own helpers, and processes already
    exiting, get `HELPER_GRACE` seconds to finish, since the helpers only
    learn of the measuring process's exit from a pipe; while any other
    process is alive, everything left counts at once.
    """
    import psutil

    deadline = time.monotonic() + HELPER_GRACE
    while True:
        left: list[psutil.Process] = []
        helpers = 0
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) != pgid or p.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = " ".join(p.cmdline())
            except (ProcessLookupError, psutil.Error):
                continue
            left.append(p)
            # An empty command line: the process is exiting (its memory is gone).
            helpers += not cmdline or any(h in cmdline for h in _HELPERS)
        if not left or helpers < len(left) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    return len(left)


def measure_once(m: Measure, timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process and return its record."""
    spec = m.as_dict
    if spec["kind"] == "import":
        code = f"import {spec['module']}" if spec["module"] else "pass"
        # The same environment for both sides: only the import differs.
        rc, out, err, wall = _run_process([sys.executable, "-c", code], dict(os.environ), timeout)
        record: dict[str, Any] = {"status": "ok" if rc == 0 else "error", "seconds": wall}
        if rc != 0:
            record["error"] = "timeout" if rc is None else (err.strip().splitlines() or [f"exit {rc}"])[-1]
        return record
    if spec["kind"] == "cold":
        return _measure_cold(spec, timeout)
    if spec["kind"] == "cli":
        return _measure_cli(spec, timeout)
    rc, out, err, wall = _run_process([sys.executable, str(CHILD), json.dumps(spec)], child_env(), timeout)
    record = {"status": "error", "wall_seconds": wall}
    if rc is None:
        record["status"] = "timeout"
        record["error"] = f"no result within {timeout:g} s; process group killed"
        return record
    for line in out.splitlines():
        if line.startswith("BENCHRESULT "):
            record.update(json.loads(line[len("BENCHRESULT ") :]))
            break
    else:
        record["error"] = f"exit code {rc}, no result line; stderr: {err.strip()[-1500:]}"
    if rc != 0 and record["status"] == "ok":
        record["status"] = "error"
        record["error"] = f"exit code {rc}; stderr: {err.strip()[-1500:]}"
    return record


def _failed(rc: int | None, err: str, timeout: float) -> dict[str, Any]:
    if rc is None:
        return {"status": "timeout", "error": f"no result within {timeout:g} s; process group killed"}
    return {"status": "error", "error": f"exit code {rc}; stderr: {err.strip()[-1500:]}"}


def _measure_cold(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    argv = [sys.executable, str(COLD_CHILD), spec["engine"], spec["pool"], spec["context"], spec["workload"]]
    rc, out, err, wall = _run_process(argv, child_env(), timeout)
    lines = [line.split() for line in out.splitlines() if line.startswith("COLDRESULT ")]
    if rc != 0 or not lines:
        return {**_failed(rc, err, timeout), "wall_seconds": wall}
    _, seconds, again, ok = lines[-1]
    record: dict[str, Any] = {"status": "ok", "seconds": float(seconds), "again_seconds": float(again)}
    record["checksum_ok"] = ok == "1"
    if not record["checksum_ok"]:
        record.update(status="error", error="a wrong result")
    return record


def _measure_cli(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Time a whole process that reads a graph file, runs it on two workers and prints its results as JSON."""
    import workloads

    work = workloads.make(spec["workload"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.json"
        path.write_text(json.dumps(work.graph))
        if spec["engine"] == "aioflow":
            # What the installed `aioflow` command runs (pip's script imports the same).
            code = "import sys\nfrom aioflow.cli import main\nsys.exit(main())"
            command = [sys.executable, "-c", code, "run", str(path), "--pool", spec["pool"], "--max-workers", "2"]
            command.append("--no-merge-outputs")  # results by node, as the raw script prints them
        else:
            command = [sys.executable, str(RAW_CLI), str(path), spec["pool"]]
        rc, out, err, wall = _run_process(command, child_env(), timeout)
    if rc != 0:
        return {**_failed(rc, err, timeout), "wall_seconds": wall}
    try:
        results = json.loads(out)
        got = sum(results[sink]["return_value"] for sink in work.sinks)
    except (ValueError, KeyError, TypeError) as exc:
        return {"status": "error", "error": f"unexpected output ({exc!r}): {out[-500:]}", "seconds": wall}
    ok = got == work.checksum
    return {"status": "ok" if ok else "error", "seconds": wall, "checksum_ok": ok}


@dataclass
class Collected:
    """Every record of one measurement."""

    measure: Measure
    records: list[dict[str, Any]] = field(default_factory=list)

    def ok(self, name: str = "seconds") -> list[float]:
        return [r[name] for r in self.records if r.get("status") == "ok" and name in r]

    def median(self, name: str = "seconds") -> float | None:
        values = self.ok(name)
        return statistics.median(values) if values else None

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]


def run_all(
    rows: list[Row],
    repeats: int,
    import_runs: int,
    timeout: float,
    write: Callable[[dict[str, Any]], None],
    jobs: int = 1,
) -> dict[str, Collected]:
    """Run every measurement of ``rows`` ``repeats`` times, interleaved, and record each run.

    Repeat ``r`` of every measurement runs before repeat ``r+1`` of any, and a
    row's baseline runs next to its figure, so that a slow phase of a noisy
    machine hits both sides of a ratio alike. ``jobs`` > 1 runs that many
    measurements at once (``--smoke``, where only crashes count): the records
    keep the same order.
    """
    collected: dict[str, Collected] = {}
    order: list[Measure] = []
    for row in rows:
        for m in row.measures:
            if m.key not in collected:
                collected[m.key] = Collected(m)
                order.append(m)
    total = sum(import_runs if m.as_dict["kind"] in SHORT_KINDS else repeats for m in order)
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as executor:
        for rep in range(max(repeats, import_runs)):
            batch = [m for m in order if rep < (import_runs if m.as_dict["kind"] in SHORT_KINDS else repeats)]
            # One at a time unless jobs > 1: each result is waited for before the next starts.
            window = max(1, jobs)
            for start in range(0, len(batch), window):
                chunk = batch[start : start + window]
                futures = [executor.submit(measure_once, m, timeout) for m in chunk]
                for m, future in zip(chunk, futures, strict=True):
                    record = future.result()
                    done += 1
                    record = {"type": "measurement", "label": m.label, "spec": m.as_dict, "repeat": rep, **record}
                    collected[m.key].records.append(record)
                    write(record)
                    _progress(done, total, m, record)
    return collected


def _progress(done: int, total: int, m: Measure, record: dict[str, Any]) -> None:
    if record.get("status") == "ok":
        what = f"{record['seconds']:.4f} s"
        if "maxrss_mb" in record:
            what += f", {record['maxrss_mb']:.0f} MB"
    else:
        what = f"{record.get('status')}: {record.get('error', '')[:200]}"
    print(f"[{done}/{total}] {m.label}: {what}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------- report


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.3f} s" if value >= 0.1 else f"{value * 1000:.1f} ms"


def evaluate(row: Row, collected: dict[str, Collected]) -> dict[str, Any]:
    """The row's figure, baseline, ratio and verdict (PASS, MISS, INFO or ERROR)."""
    unit = "MB" if row.metric == "maxrss_mb" else "s"
    fig = collected[row.figure.key]
    base = collected[row.baseline.key] if row.baseline else None
    figure = fig.median(row.metric)
    baseline = base.median(row.metric) if base else None
    failed = bool(fig.failures or (base and base.failures))
    value: float | None = None
    if figure is not None and (row.baseline is None or baseline):
        if row.compare == "ratio":
            value = figure / baseline  # type: ignore[operator]
        elif row.compare == "speedup":
            value = baseline / figure  # type: ignore[operator]
        elif row.compare == "delta":
            value = figure - baseline  # type: ignore[operator]
        else:
            value = figure
    if failed or value is None:
        verdict = "ERROR"
    elif row.limit is None:
        verdict = "INFO"
    elif row.at_least:
        verdict = "PASS" if value >= row.limit else "MISS"
    else:
        verdict = "PASS" if value <= row.limit else "MISS"
    if row.compare == "speedup":
        shown, target = _x(value), (f">= {row.limit:g}x" if row.limit else "-")
    elif row.compare == "delta":
        shown = "-" if value is None else f"{value:+.3f} s"
        target = f"<= {row.limit:g} s" if row.limit else "-"
    elif row.compare == "absolute":
        shown = "-"
        target = f"< {row.limit:g} s" if row.limit else "-"
    else:
        shown, target = _x(value), (f"<= {row.limit:g}x" if row.limit else "-")
    return {
        "type": "row",
        "name": row.name,
        "figure_label": row.figure.label,
        "figure": figure,
        "baseline_label": row.baseline.label if row.baseline else None,
        "baseline": baseline,
        "compare": row.compare,
        "value": value,
        "limit": row.limit,
        "at_least": row.at_least,
        "metric": row.metric,
        "verdict": verdict,
        "cells": [
            row.name,
            f"{_fmt(figure, unit)} ({row.figure.label})",
            f"{_fmt(baseline, unit)} ({row.baseline.label})" if row.baseline else "-",
            shown,
            target,
            verdict + (f" ({row.note})" if row.note and verdict == "INFO" else ""),
        ],
    }


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown(rows: Iterable[dict[str, Any]]) -> str:
    """The results table in Markdown."""
    lines = ["| benchmark | measured (median) | baseline (median, same run) | ratio | target | result |"]
    lines.append("|---|---|---|---|---|---|")
    lines.extend("| " + " | ".join(r["cells"]) + " |" for r in rows)
    return "\n".join(lines)


def details(collected: dict[str, Collected]) -> str:
    """Every measurement: runs, median, min, max, and aioflow's share spent loading."""
    lines = ["| measurement | ok runs | median | min | max | median load_graph part | median peak RSS |"]
    lines.append("|---|---|---|---|---|---|---|")
    for c in collected.values():
        values = c.ok()
        load_part = c.median("load_seconds")
        rss = c.median("maxrss_mb")
        lines.append(
            f"| {c.measure.label} | {len(values)}/{len(c.records)} | {_fmt(c.median(), 's')} | "
            f"{_fmt(min(values) if values else None, 's')} | {_fmt(max(values) if values else None, 's')} | "
            f"{_fmt(load_part, 's') if load_part is not None else '-'} | "
            f"{_fmt(rss, 'MB') if rss is not None else '-'} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------- profile


def profile(target: str, pool: str, top: int, timeout: float, out: Path | None) -> int:
    """Run one aioflow measurement under cProfile and print where the time goes."""
    import pstats

    if target.startswith("load:"):
        spec: dict[str, Any] = {"kind": "load", "workload": target[len("load:") :]}
    else:
        spec = run("aioflow", target, pool).as_dict
        if target.startswith("cpufan:"):
            spec["cpu_iters"] = benchtasks.calibrate_cpu(0.25)[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = out or Path(tmp) / "profile.prof"
        spec["profile"] = str(path)
        rc, stdout, stderr, _ = _run_process([sys.executable, str(CHILD), json.dumps(spec)], child_env(), timeout)
        print(stdout.strip())
        if rc != 0:
            print(stderr, file=sys.stderr)
            return 1
        stats = pstats.Stats(str(path))
        stats.strip_dirs()
        print(f"\n## {target} ({pool}): top {top} by own time\n")
        stats.sort_stats("tottime").print_stats(top)
        print(f"\n## {target} ({pool}): top {top} by cumulative time\n")
        stats.sort_stats("cumulative").print_stats(top)
    return 0


# ---------------------------------------------------------------------- main


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "aioflow"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        info["aioflow_modified"] = bool(dirty.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="every benchmark once, at tiny sizes (for CI)")
    p.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 3; 1 with --smoke)")
    p.add_argument("--import-runs", type=int, default=None, help="fresh interpreters per side for the import figure")
    p.add_argument("--only", default=None, help="regex: keep the rows whose name matches")
    p.add_argument("--no-uvloop", action="store_true", help="leave out the uvloop rows")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="measurements run at once (default 1; with --smoke, the number of CPUs): above 1, figures mean little",
    )
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per measurement")
    p.add_argument("--out", type=Path, default=None, help="results file (JSON lines)")
    p.add_argument("--profile", metavar="WORKLOAD", help="cProfile one aioflow run: chain:10000, load:random:100000...")
    p.add_argument("--pool", default="thread", choices=("thread", "process"), help="pool of --profile")
    p.add_argument("--top", type=int, default=30, help="functions listed by --profile")
    p.add_argument("--profile-out", type=Path, default=None, help="keep the .prof file of --profile here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return the exit code (1 when a measurement crashed)."""
    args = parse_args(argv)
    if args.profile:
        precompile()
        return profile(args.profile, args.pool, args.top, args.timeout, args.profile_out)

    sizes = SMOKE if args.smoke else FULL
    repeats = args.repeats or (1 if args.smoke else 3)
    jobs = args.jobs or ((os.cpu_count() or 1) if args.smoke else 1)
    import_runs = args.import_runs or (IMPORT_RUNS_SMOKE if args.smoke else IMPORT_RUNS_FULL)
    mode = "smoke" if args.smoke else "full"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or (RESULTS_DIR / ("smoke.jsonl" if args.smoke else f"bench-{stamp}.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    precompile()
    cpu_iters, cpu_s = benchtasks.calibrate_cpu(sizes.cpu_task_s)
    try:
        import uvloop  # noqa: F401 - only checks that it is installed
    except ImportError:
        have_uvloop = False
    else:
        have_uvloop = True
    rows = build_rows(sizes, cpu_iters, uvloop=have_uvloop and not args.no_uvloop)
    if args.only:
        rows = select(rows, args.only)

    header = {
        "type": "run",
        "mode": mode,
        "started": stamp,
        "repeats": repeats,
        "import_runs": import_runs,
        "jobs": jobs,
        "argv": sys.argv[1:] if argv is None else argv,
        "cpu_iters": cpu_iters,
        "cpu_task_s_measured": cpu_s,
        **_machine(),
    }
    with out.open("w") as f:

        def write(record: dict[str, Any]) -> None:
            f.write(json.dumps(record) + "\n")
            f.flush()

        write(header)
        print(
            f"{mode} run: {len(rows)} rows, {repeats} repeat(s), {jobs} at once; cpu task {cpu_s:.3f} s = {cpu_iters} steps; "
            f"results -> {out}",
            file=sys.stderr,
            flush=True,
        )
        collected = run_all(rows, repeats, import_runs, args.timeout, write, jobs)
        evaluated = [evaluate(row, collected) for row in rows]
        for row_record in evaluated:
            write({k: v for k, v in row_record.items() if k != "cells"})
        elapsed = time.perf_counter() - t_start
        write({"type": "end", "seconds": elapsed, "loadavg_end": os.getloadavg()})

    failures = [r for c in collected.values() for r in c.failures]
    table = markdown(evaluated)
    report = (
        f"## aioflow benchmarks ({mode}, median of {repeats}; import: median of {import_runs})\n\n"
        f"{table}\n\n### Every measurement\n\n{details(collected)}\n"
    )
    out.with_suffix(".md").write_text(report)
    print(report)
    print(f"{mode} run took {elapsed:.0f} s; records in {out}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} measurement(s) failed:", file=sys.stderr)
        for r in failures:
            print(f"  {r['label']} (repeat {r['repeat']}): {r.get('status')}: {r.get('error', '')}", file=sys.stderr)
            if r.get("traceback"):
                print("    " + r["traceback"].replace("\n", "\n    "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
