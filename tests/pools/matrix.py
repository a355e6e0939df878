"""The pool compatibility matrix: every task kind on every pool and start method.

A cell either gives the right result, or fails within `CELL_LIMIT` seconds
with an error saying what is incompatible and what to use instead. It never
hangs: each cell runs with ``timeout=CELL_LIMIT``, and a timeout counts as a
failed cell.

Two halves:

- unpatched: every cell runs in this interpreter (`run_cell`);
- gevent-patched: cells run in fresh interpreters that call
  ``gevent.monkey.patch_all()`` before importing aioflow (`run_patched`).
  Patching is process-wide and a hang there can block the whole interpreter
  (no timeout fires when the gevent hub is stuck), so the limit is enforced
  from outside: the cell's process tree is killed once `CELL_LIMIT` seconds
  have passed since the cell started, and the cell is recorded as a hang.

Used by ``tests/pools/test_matrix.py`` and ``tests/pools/test_matrix_gevent.py``
(one run of every cell) and as a script for the stress run and the tables in
``docs/pools.md``::

    python tests/pools/matrix.py --repeat 10 --out matrix.json   # not in CI
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

import aioflow

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: matrix_tasks
from matrix_tasks import KINDS

#: Seconds a cell may take before it counts as a hang.
CELL_LIMIT = 5.0

CONTEXTS = ("spawn", "fork", "forkserver")
#: Pools that take no start method.
NO_CONTEXT = ("thread", "gevent")
#: Words a failure must contain: what is wrong, and what to use instead.
EXPLAINS = ("daemonic",)
#: In a patched process a failure must name gevent, and one of these alternatives.
PATCHED_ALTERNATIVES = (
    "pool_type='gevent'",
    "'thread'",
    "ProcessPoolExecutor",
    "multiprocessing.Process",
    "billiard.Process",
)
#: Seconds a fresh interpreter may take to import gevent, aioflow and the tasks (not part of a cell).
STARTUP_LIMIT = 60.0
#: Pools that run tasks inside the patched process; the process-based ones are refused there.
IN_PROCESS = ("gevent", "thread")

# Pools that drive an existing cluster (tests/clusters): each needs its cluster
# started, so the one-worker matrix covers the pools of one machine.
CLUSTER_POOLS = ("dask", "parsl", "mpi")


def local_pools() -> tuple[str, ...]:
    """The pools of this installation that run on this machine alone."""
    return tuple(p for p in aioflow.available_pools() if p not in CLUSTER_POOLS)


#: Ways a patched cell calls the engine: ``aioflow.execute_graph``, or
#: ``asyncio.run(aioflow.execute_graph_async(...))`` (for the in-process pools).
APIS = ("sync", "async")
TESTS = Path(__file__).resolve().parent.parent


@dataclass
class Cell:
    pool: str
    context: str | None
    kind: str
    outcome: str  # "ok", "clear error", "unclear error", "wrong result", "hang", "crash"
    seconds: float
    message: str = ""
    patched: bool = False
    api: str = "sync"


def cells(pools: tuple[str, ...] | None = None) -> list[tuple[str, str | None, str]]:
    """Every (pool, context, kind) of the matrix for the pools of this installation."""
    chosen = pools or tuple(p for p in local_pools() if p != "gevent")
    result: list[tuple[str, str | None, str]] = []
    for pool in chosen:
        for context in (None,) if pool in NO_CONTEXT else CONTEXTS:
            result.extend((pool, context, kind) for kind in KINDS)
    return result


def run_cell(pool: str, context: str | None, kind: str) -> Cell:
    """Run one task of ``kind`` on a 1-worker ``pool``; classify the outcome."""
    func, expected = KINDS[kind]
    graph = {
        "graph": {"id": f"{kind}@{pool}"},
        "nodes": [{"id": kind, "task_type": "method", "task_identifier": f"matrix_tasks.{func}"}],
    }
    options: dict[str, Any] = {"pool_type": pool, "max_workers": 1, "timeout": CELL_LIMIT}
    if context is not None:
        options["context"] = context
    start = time.monotonic()
    try:
        results = aioflow.execute_graph(graph, **options)
    except aioflow.ExecutionTimeoutError as exc:
        return Cell(pool, context, kind, "hang", time.monotonic() - start, str(exc))
    except aioflow.NodeError as exc:
        seconds = time.monotonic() - start
        message = f"{exc}" + (f" <- {exc.__cause__}" if exc.__cause__ else "")
        # Judged on the task's own error, not the graph id (which names the pool):
        # it must say why, and name another pool to use instead.
        advice = str(exc.error)
        others = [p for p in local_pools() if p != pool]
        clear = any(word in advice for word in EXPLAINS) and any(f"'{p}'" in advice for p in others)
        return Cell(pool, context, kind, "clear error" if clear else "unclear error", seconds, message)
    seconds = time.monotonic() - start
    if results.get("return_value") != expected:
        return Cell(pool, context, kind, "wrong result", seconds, repr(dict(results)))
    return Cell(pool, context, kind, "ok", seconds)


PatchedCell = tuple[str, "str | None", str, str]  # pool, context, kind, api


def patched_cells() -> list[PatchedCell]:
    """Every (pool, context, kind, api) of the patched half for the pools of this installation."""
    result: list[PatchedCell] = []
    for pool in local_pools():
        if pool in IN_PROCESS:
            result.extend((pool, None, kind, api) for api in APIS for kind in KINDS)
        else:
            result.extend((pool, context, kind, "sync") for context in CONTEXTS for kind in KINDS)
    return result


def patched_groups(chosen: list[PatchedCell]) -> list[list[PatchedCell]]:
    """The interpreters to run: one per cell whose task runs, one per refused pool.

    A task that runs in the patched process may leave state behind (forked
    children, a resource tracker, greenlets, threads): those cells get an
    interpreter each. A process-based pool is refused when it is created,
    before any worker, thread or task exists, so its cells (every start
    method and kind) share one interpreter: nothing of one refusal can
    reach the next.
    """
    groups: list[list[PatchedCell]] = []
    refused: dict[str, list[PatchedCell]] = {}
    for cell in chosen:
        if cell[0] in IN_PROCESS:
            groups.append([cell])
        else:
            refused.setdefault(cell[0], []).append(cell)
    return groups + list(refused.values())


#: Runs in the fresh interpreter: patch first, then import aioflow, then run the cells given as JSON.
CHILD = """
from gevent import monkey

monkey.patch_all()
import asyncio
import json
import sys
import time

import aioflow
from matrix_tasks import KINDS, TEST_ONLY

KINDS = {**KINDS, **TEST_ONLY}
for pool, context, kind, api in json.loads(sys.argv[1]):
    func, expected = KINDS[kind]
    graph = {
        "graph": {"id": f"{kind}@{pool}"},
        "nodes": [{"id": kind, "task_type": "method", "task_identifier": f"matrix_tasks.{func}"}],
    }
    options = {"pool_type": pool, "max_workers": 1, "timeout": LIMIT}
    if context is not None:
        options["context"] = context
    print("start", flush=True)
    start = time.monotonic()
    record = {"outcome": "ok", "message": ""}
    try:
        if api == "async":
            results = asyncio.run(aioflow.execute_graph_async(graph, **options))
        else:
            results = aioflow.execute_graph(graph, **options)
    except aioflow.ExecutionTimeoutError as exc:
        record = {"outcome": "hang", "message": str(exc)}
    except (aioflow.NodeError, aioflow.PoolError) as exc:
        message = f"{exc}" + (f" <- {exc.__cause__}" if exc.__cause__ else "")
        record = {"outcome": "error", "message": message}
    except Exception as exc:
        record = {"outcome": "unclear error", "message": repr(exc)}
    else:
        if results.get("return_value") != expected:
            record = {"outcome": "wrong result", "message": repr(dict(results))}
    record["seconds"] = time.monotonic() - start
    print("done", json.dumps(record), flush=True)
"""


def _clear_in_patched(message: str) -> bool:
    return "gevent" in message and any(alt in message for alt in PATCHED_ALTERNATIVES)


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the interpreter, every process it started, and its session."""
    try:
        victims = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        victims = []
    for victim in victims:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    psutil.wait_procs(victims, timeout=5)


def run_group(group: list[PatchedCell]) -> list[Cell]:
    """Run ``group`` in fresh patched interpreters; a hung cell's tree is killed and the rest go on in a new one."""
    done: list[Cell] = []
    while len(done) < len(group):
        todo = group[len(done) :]
        done.extend(_run_interpreter(todo))
    return done


def _run_interpreter(todo: list[PatchedCell]) -> list[Cell]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    code = CHILD.replace("LIMIT", repr(CELL_LIMIT))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(todo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: the whole tree can be killed
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out: list[Cell] = []
    started: float | None = None
    deadline = time.monotonic() + STARTUP_LIMIT
    buffer = b""
    chatter: list[str] = []  # what the tasks printed: kept for the record of a hang
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        while len(out) < len(todo):
            pool, context, kind, api = todo[len(out)]
            if b"\n" not in buffer:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    _kill_tree(proc)
                    seconds = time.monotonic() - started if started is not None else 0.0
                    what = f"killed after {CELL_LIMIT} s" if started is not None else "interpreter did not start"
                    what += "".join(f"; printed: {text}" for text in chatter)
                    out.append(Cell(pool, context, kind, "hang", seconds, what, True, api))
                    return out
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:  # the interpreter died in the middle of a cell
                    proc.wait()
                    err = proc.stderr.read().decode(errors="replace")[-2000:]
                    out.append(Cell(pool, context, kind, "crash", 0.0, f"exit {proc.returncode}: {err}", True, api))
                    return out
                buffer += chunk
                continue
            line, buffer = buffer.split(b"\n", 1)
            if line == b"start":
                started = time.monotonic()
                deadline = started + CELL_LIMIT
            elif line.startswith(b"done "):
                record = json.loads(line[5:])
                outcome = record["outcome"]
                if outcome == "error":
                    outcome = "clear error" if _clear_in_patched(record["message"]) else "unclear error"
                out.append(Cell(pool, context, kind, outcome, record["seconds"], record["message"], True, api))
                started, deadline = None, time.monotonic() + STARTUP_LIMIT
                chatter.clear()
            else:
                chatter.append(line.decode(errors="replace"))
        proc.wait(timeout=STARTUP_LIMIT)
        return out
    finally:
        selector.close()
        if proc.poll() is None:
            _kill_tree(proc)
        else:
            try:  # anything the interpreter left behind in its process group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.stdout.close()
        proc.stderr.close()


def run_patched(chosen: list[PatchedCell] | None = None, jobs: int = 2) -> list[Cell]:
    """Run the patched half (or the ``chosen`` cells of it), ``jobs`` interpreters at a time."""
    groups = patched_groups(chosen if chosen is not None else patched_cells())
    with concurrent.futures.ThreadPoolExecutor(jobs) as executor:
        return [cell for cells_ in executor.map(run_group, groups) for cell in cells_]


def _mark(outcomes: set[str]) -> str:
    if outcomes == {"ok"}:
        return "yes"
    if outcomes == {"clear error"}:
        return "refused (clear error)"
    return " / ".join(sorted(outcomes)) or "-"


def table(runs: list[list[Cell]]) -> str:
    """A Markdown table of the unpatched half: one row per (pool, context), one column per task kind."""
    by_key: dict[tuple[str, str | None, str], list[Cell]] = {}
    for run in runs:
        for cell in run:
            if not cell.patched:
                by_key.setdefault((cell.pool, cell.context, cell.kind), []).append(cell)
    rows = sorted({(p, c) for p, c, _ in by_key}, key=lambda pc: (pc[0], pc[1] or ""))
    lines = ["| pool | start method | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for pool, context in rows:
        marks = [_mark({c.outcome for c in by_key.get((pool, context, kind), [])}) for kind in KINDS]
        lines.append(f"| {pool} | {context or '-'} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


def patched_table(runs: list[list[Cell]]) -> str:
    """A Markdown table of the gevent-patched half: one row per (pool, context, api)."""
    by_key: dict[tuple[str, str | None, str, str], list[Cell]] = {}
    for run in runs:
        for cell in run:
            if cell.patched:
                by_key.setdefault((cell.pool, cell.context, cell.api, cell.kind), []).append(cell)
    rows = sorted({(p, c, a) for p, c, a, _ in by_key}, key=lambda pca: (pca[0], pca[1] or "", pca[2]))
    header = "| pool | start method | called with | " + " | ".join(KINDS) + " |"
    lines = [header, "|---|---|---|" + "---|" * len(KINDS)]
    api_names = {"sync": "execute_graph", "async": "execute_graph_async"}
    for pool, context, api in rows:
        marks = [_mark({c.outcome for c in by_key.get((pool, context, api, kind), [])}) for kind in KINDS]
        lines.append(f"| {pool} | {context or '-'} | {api_names[api]} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


#: The reference engine's documented table (pypushflow, "Pool types and workflow tasks
#: compatibility": the README of pypushflow 0.4.0rc0, the same section as its
#: doc/concurrency.rst). Per pool, the task kinds it lists as usable, with its remarks;
#: a kind it does not list is not usable there. Keys: patched or not, then pool.
REFERENCE: dict[bool, dict[str, dict[str, str]]] = {
    False: {
        "gevent": {},
        "thread": dict.fromkeys(KINDS, ""),
        "process": {**dict.fromkeys(KINDS, ""), "bpool": "hangs sometimes"},
        "ndprocess": {**dict.fromkeys(KINDS, ""), "bpool": "hangs sometimes"},
        "multiprocessing": {"simple": "", "subprocess": "", "bpool": "hangs sometimes", "bprocess": ""},
        "ndmultiprocessing": {**dict.fromkeys(KINDS, ""), "bpool": "hangs sometimes"},
        "billiard": {"simple": "", "subprocess": "", "bpool": "hangs sometimes", "bprocess": ""},
    },
    True: {
        "gevent": dict.fromkeys(("simple", "subprocess", "cfpool", "mpprocess", "bprocess"), ""),
        "thread": dict.fromkeys(("simple", "subprocess", "cfpool", "mpprocess", "bprocess"), ""),
        "process": {
            "simple": "",
            "subprocess": "",
            "cfpool": "not spawn",
            "mpprocess": "not spawn",
            "bprocess": "not spawn",
        },
        "ndprocess": {
            "simple": "",
            "subprocess": "",
            "cfpool": "not spawn",
            "mpprocess": "not spawn",
            "bprocess": "not spawn",
        },
        "multiprocessing": {},
        "ndmultiprocessing": {},
        "billiard": {},
    },
}

_SHORT = {"ok": "yes", "clear error": "refused"}


def compare_table(runs: list[list[Cell]]) -> str:
    """Ours beside the reference's documented table: one row per (patched, pool), ``ours / reference`` per kind.

    Ours sums up every start method and both APIs of a pool: ``yes`` when every
    run of every one gave the result, ``refused`` when every one failed at once
    with a clear error.
    """
    by_key: dict[tuple[bool, str, str], set[str]] = {}
    for run in runs:
        for cell in run:
            by_key.setdefault((cell.patched, cell.pool, cell.kind), set()).add(cell.outcome)
    lines = [
        "| gevent-patched | pool | " + " | ".join(KINDS) + " |",
        "|---|---|" + "---|" * len(KINDS),
    ]
    for patched in (False, True):
        for pool, listed in REFERENCE[patched].items():
            marks = []
            for kind in KINDS:
                outcomes = by_key.get((patched, pool, kind))
                if outcomes is None:
                    ours = "not run" if not (not patched and pool == "gevent") else "pool refused"
                else:
                    ours = " / ".join(_SHORT.get(o, o) for o in sorted(outcomes))
                if kind in listed:
                    theirs = "yes" + (f" ({listed[kind]})" if listed[kind] else "")
                else:
                    theirs = "no"
                marks.append(f"{ours} / {theirs}")
            lines.append(f"| {'yes' if patched else 'no'} | {pool} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


def summary(runs: list[list[Cell]]) -> str:
    """Cells, bad cells, hangs, the slowest cell and the slowest refusal, per half."""
    parts = []
    for patched in (False, True):
        cells_ = [c for run in runs for c in run if c.patched == patched]
        if not cells_:
            continue
        bad = [c for c in cells_ if c.outcome not in ("ok", "clear error")]
        hangs = [c for c in cells_ if c.outcome == "hang"]
        slowest = max(cells_, key=lambda c: c.seconds)
        refusals = [c for c in cells_ if c.outcome == "clear error"]
        slowest_refusal = max(refusals, key=lambda c: c.seconds) if refusals else None
        parts.append(
            f"{'patched' if patched else 'unpatched'}: {len(cells_)} cells, {len(bad)} bad, {len(hangs)} hangs, "
            f"slowest cell {slowest.seconds:.2f} s ({slowest.kind}@{slowest.pool}/{slowest.context or '-'}/"
            f"{slowest.api})"
            + (
                f", slowest refusal {slowest_refusal.seconds:.2f} s ({slowest_refusal.kind}@{slowest_refusal.pool})"
                if slowest_refusal
                else ""
            )
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--half", choices=("both", "unpatched", "patched"), default="both")
    parser.add_argument("--jobs", type=int, default=2, help="patched interpreters run at once")
    args = parser.parse_args(argv)
    runs = []
    for i in range(args.repeat):
        run: list[Cell] = []
        if args.half in ("both", "unpatched"):
            run.extend(run_cell(*cell) for cell in cells())
        if args.half in ("both", "patched"):
            run.extend(run_patched(jobs=args.jobs))
        runs.append(run)
        bad = [c for c in run if c.outcome not in ("ok", "clear error")]
        sys.stderr.write(f"run {i + 1}/{args.repeat}: {len(run)} cells, {len(bad)} bad\n")
        for c in bad:
            sys.stderr.write(f"  {c}\n")
        if args.out:  # after every run: a crash keeps what was measured
            args.out.write_text(json.dumps([[asdict(c) for c in run] for run in runs], indent=1))
    sys.stdout.write(table(runs) + "\n\n" + patched_table(runs) + "\n\n" + compare_table(runs) + "\n\n")
    sys.stdout.write(summary(runs) + "\n")
    return 0 if all(c.outcome in ("ok", "clear error") for run in runs for c in run) else 1


if __name__ == "__main__":
    raise SystemExit(main())
