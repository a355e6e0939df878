"""The driving process SIGKILLed at random moments, then the run resumed from its journal.

    python benchmarks/stress/journal_kills.py --runs 100                   # 10,004 nodes, thread and process pools
    python benchmarks/stress/journal_kills.py --runs 5 --stages 10 --width 100 --pools thread

Each run: a fresh interpreter executes the graph of `tests/journal/journal_tasks.big_graph`
(``--stages`` x ``--width`` branches, a loop of 5 iterations, a node that fails into
its error handler) with a journal, and is SIGKILLed once the journal holds a random
number of finished firings (between 1 % and 95 % of the nodes); this process then
resumes the run from the journal. Checked for every run: the resumed results and
execution counts equal those of an uninterrupted run (computed once per pool), no
firing the journal had as finished ran again (each task appends one line per run to a
log), the journal passes SQLite's ``integrity_check``, and no process of the driver's
(its pool's workers) outlives it by 10 s. One line per pool: runs, killed (the others
finished before their moment), differences, re-executed finished firings, corrupt
journals, hangs, orphans, crashes (a driver that failed by itself: its stderr is
printed), and the time. Exit code 1 when any check failed.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tests" / "journal"
sys.path.insert(0, str(TASKS))

import journal_tasks  # needs the path above

import aioflow
from aioflow.journal import JournalRun, run_firings

DRIVER = """
import sys
import aioflow, journal_tasks
from aioflow.journal import JournalRun
path, log, run_id, pool, stages, width = sys.argv[1:7]
graph = journal_tasks.big_graph(log, stages=int(stages), width=int(width), pause=0.0005)
aioflow.execute_graph(graph, journal=JournalRun(path, run_id=run_id), pool_type=pool, max_workers=4)
"""

ALL: dict[str, Any] = {"outputs": [{"all": True}], "merge_outputs": False}


def orphans(group: int) -> int:
    """Whether a process of the driver's group (its pool's workers) outlived it by 10 s; they are then killed."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.05)
    os.killpg(group, signal.SIGKILL)
    return 1


def one_run(tmp: Path, index: int, pool: str, args: argparse.Namespace, rng: random.Random) -> dict[str, int]:
    path, log = tmp / f"runs-{pool}-{index}.sqlite", tmp / f"log-{pool}-{index}"
    nodes = args.stages * args.width + 4
    threshold = rng.randrange(max(1, nodes // 100), int(nodes * 0.95))
    run_id = f"killed-{index}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TASKS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", DRIVER, str(path), str(log), run_id, pool, str(args.stages), str(args.width)]
    errors = tmp / f"stderr-{pool}-{index}"
    with errors.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stderr=err, start_new_session=True)
    outcome = {"killed": 0, "differences": 0, "again": 0, "corrupt": 0, "hangs": 0, "orphans": 0, "crashes": 0}
    deadline = time.monotonic() + args.timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if journal_tasks.finished_firings(path, run_id) >= threshold:
            proc.send_signal(signal.SIGKILL)  # the driver only: its workers must go by themselves
            outcome["killed"] = 1
            break
        time.sleep(0.002)
    if proc.poll() is None and not outcome["killed"]:
        os.killpg(proc.pid, signal.SIGKILL)
        outcome["hangs"] = 1
    proc.wait()
    outcome["orphans"] = orphans(proc.pid)
    if not outcome["killed"] and proc.returncode != 0:
        print(f"run {index} on {pool}: the driver failed ({proc.returncode}):\n{errors.read_text()}", file=sys.stderr)
        outcome["crashes"] = 1
        return outcome
    recorded = {(f.node_id, f.execution) for f in run_firings(path, run_id) if f.status == "finished"}
    graph = journal_tasks.big_graph(str(log), stages=args.stages, width=args.width, pause=0.0005)
    resumed = JournalRun(path, run_id=f"resumed-{index}", resume=run_id)
    results = aioflow.execute_graph(graph, journal=resumed, pool_type=pool, max_workers=4, **ALL)
    reference, reference_log = args.reference[pool]
    if (
        journal_tasks.without_log(results, log) != journal_tasks.without_log(reference, reference_log)
        or results.executions != reference.executions
    ):
        outcome["differences"] = 1
    counts = collections.Counter(log.read_text().split())
    outcome["again"] = sum(1 for node, number in recorded if counts[f"{node}:{number}"] != 1)
    with sqlite3.connect(path) as conn:
        outcome["corrupt"] = int(conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--stages", type=int, default=100)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--pools", nargs="+", default=["thread", "process"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    failed = False
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        args.reference = {}
        for pool in args.pools:
            log = tmp / f"reference-{pool}"
            graph = journal_tasks.big_graph(str(log), stages=args.stages, width=args.width, pause=0.0005)
            args.reference[pool] = (aioflow.execute_graph(graph, pool_type=pool, max_workers=4, **ALL), log)
        print(f"{args.stages * args.width + 4} nodes, {args.runs} runs per pool, seed {args.seed}")
        print(
            "| pool | runs | killed | differences | re-executed finished firings | corrupt | hangs | orphans | crashes | time |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for pool in args.pools:
            totals: collections.Counter[str] = collections.Counter()
            t0 = time.monotonic()
            for index in range(args.runs):
                totals.update(one_run(tmp, index, pool, args, rng))
            elapsed = time.monotonic() - t0
            print(
                f"| {pool} | {args.runs} | {totals['killed']} | {totals['differences']} | {totals['again']} "
                f"| {totals['corrupt']} | {totals['hangs']} | {totals['orphans']} | {totals['crashes']} | {elapsed:.0f} s |"
            )
            failed = failed or any(
                totals[k] for k in ("differences", "again", "corrupt", "hangs", "orphans", "crashes")
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
