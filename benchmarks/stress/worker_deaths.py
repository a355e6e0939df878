"""Stress: worker processes SIGKILLed at random moments must cost only the calls they were running.

Each run executes, in a fresh interpreter with a hard timeout, a graph of
1,000 nodes: 10 chains of 100 nodes, each node sleeping 1 to 5 ms, with
``raise_on_error=False``. A thread of that interpreter SIGKILLs 1 to 3 of the
pool's worker processes (picked among the psutil children of the interpreter,
the fork server and the resource trackers left out) at random moments of the
execution. Afterwards:

- a chain is *hit* when one of its nodes failed with `aioflow.WorkerLostError`
  naming a killed pid: that node was running on the killed worker, and the
  rest of its chain cannot run;
- every node of every other chain must have its result (``x + 1`` down the
  chain): each one missing is a *lost* result, and any error on such a chain
  is counted by type;
- a killed worker may fail at most one node (``extra`` counts the others).

A run that does not end within ``--timeout`` seconds is a *hang* (its whole
process group is killed); processes of its group still alive 2 s after it
ended (zombies aside: they are dead) are *leaks*, listed by command line. ::

    python benchmarks/stress/worker_deaths.py --pool multiprocessing --context fork --runs 200

The last line is a JSON summary. Exit code 1 when any run hung, lost a
result, crashed or leaked.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

CHAINS = 10
LENGTH = 100
#: Seconds after the first worker appears within which the kills fall (about the length of a run on 2 workers).
KILL_WINDOW = 1.5
#: Seconds the processes of a finished run's group get to end (the fork server and trackers exit when it does).
LEAK_GRACE = 2.0
#: What marks the processes below the driver that are not pool workers.
NOT_WORKERS = ("_tracker",)
FORK_SERVERS = ("forkserver",)


def step(x: int = 0, ms: float = 1.0) -> int:
    """One node: sleep ``ms`` milliseconds, return ``x + 1``."""
    time.sleep(ms / 1000)
    return x + 1


# --------------------------------------------------------------------------- one run (the child)


def build_graph(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    identifier = f"{os.path.abspath(__file__)}::step"
    nodes: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for c in range(CHAINS):
        for j in range(LENGTH):
            inputs = [{"name": "ms", "value": rng.uniform(1.0, 5.0)}]
            if j == 0:
                inputs.append({"name": "x", "value": 0})
            nodes.append(
                {"id": f"c{c}_{j}", "task_type": "method", "task_identifier": identifier, "default_inputs": inputs}
            )
            if j:
                links.append(
                    {
                        "source": f"c{c}_{j - 1}",
                        "target": f"c{c}_{j}",
                        "data_mapping": [{"source_output": "return_value", "target_input": "x"}],
                    }
                )
    return {"graph": {"id": "worker-deaths"}, "nodes": nodes, "links": links}


def pool_workers() -> list[int]:
    """The pids of the processes below this one that may be pool workers."""
    import psutil

    me = os.getpid()
    pids = []
    for proc in psutil.Process(me).children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
            if any(s in cmdline for s in NOT_WORKERS):
                continue
            if proc.ppid() == me and any(s in cmdline for s in FORK_SERVERS):
                continue  # the fork server itself; its children are the workers
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        pids.append(proc.pid)
    return pids


def killer(rng: random.Random, count: int, done: threading.Event, kills: list[dict[str, Any]]) -> None:
    """SIGKILL ``count`` workers at random moments of the run, stopping when it is ``done``."""
    started = time.monotonic()
    while not pool_workers():
        if done.wait(0.005):
            return
    first = time.monotonic()
    for at in sorted(rng.uniform(0.0, KILL_WINDOW) for _ in range(count)):
        if done.wait(max(0.0, first + at - time.monotonic())):
            return
        candidates = pool_workers()
        if not candidates:
            continue
        pid = rng.choice(candidates)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        kills.append({"pid": pid, "at": round(time.monotonic() - started, 4)})


class _Count(logging.Handler):
    """Counts the warnings the pools log (a replaced pool, a worker lost while idle)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def run_once(pool: str, context: str | None, seed: int, max_workers: int) -> dict[str, Any]:
    import aioflow

    warnings = _Count()
    logging.getLogger("aioflow.pools").addHandler(warnings)
    rng = random.Random(seed)
    graph = build_graph(seed)
    kills: list[dict[str, Any]] = []
    done = threading.Event()
    thread = threading.Thread(target=killer, args=(rng, rng.randint(1, 3), done, kills), daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        results = aioflow.execute_graph(
            graph,
            pool_type=pool,
            context=context,
            max_workers=max_workers,
            raise_on_error=False,
            outputs=[{"all": True}],
            merge_outputs=False,
        )
    finally:
        done.set()
        thread.join()
    seconds = time.monotonic() - started
    killed = {k["pid"] for k in kills}
    hit: set[int] = set()
    by_pid: dict[int, int] = {}
    for node_id, error in results.errors.items():
        pid = getattr(error, "pid", None)
        if isinstance(error, aioflow.WorkerLostError) and isinstance(pid, int) and pid in killed:
            hit.add(int(str(node_id)[1:].split("_")[0]))
            by_pid[pid] = by_pid.get(pid, 0) + 1
    lost = 0
    other_errors: dict[str, int] = {}
    for c in range(CHAINS):
        if c in hit:
            continue
        for j in range(LENGTH):
            node_id = f"c{c}_{j}"
            failure = results.errors.get(node_id)
            if failure is not None:
                name = type(failure).__name__
                other_errors[name] = other_errors.get(name, 0) + 1
            output = results.get(node_id)
            if not output or output.get("return_value") != j + 1:
                lost += 1
    return {
        "seed": seed,
        "seconds": round(seconds, 3),
        "kills": kills,
        "hit_chains": sorted(hit),
        "lost": lost,
        "other_errors": other_errors,
        "extra": sum(n - 1 for n in by_pid.values()),
        "pool_warnings": warnings.count,
    }


# --------------------------------------------------------------------------- the driver


def group_alive(pgid: int) -> list[str]:
    """The command lines of the processes of group ``pgid`` that still run.

    Zombies are dead and do not count: an orphan (the resource tracker exits
    after the interpreter it served) is reaped by pid 1 whenever pid 1 gets
    to it, which on a loaded machine can take longer than the grace period.
    """
    import psutil

    alive = []
    for process in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getpgid(process.info["pid"]) != pgid or process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        alive.append(" ".join(process.info["cmdline"] or [])[:200])
    return alive


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def drive(args: argparse.Namespace) -> int:
    totals = {"runs": 0, "ok": 0, "hangs": 0, "crashes": 0, "leaks": 0, "runs_with_losses": 0, "lost": 0}
    totals |= {"kills": 0, "hit_chains": 0, "extra": 0, "other_errors": 0, "pool_warnings": 0}
    failures: list[dict[str, Any]] = []
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--pool", args.pool]
    cmd += ["--max-workers", str(args.max_workers), "--timeout", str(args.timeout)]
    if args.context:
        cmd += ["--context", args.context]
    for i in range(args.runs):
        seed = args.seed + i
        proc = subprocess.Popen(
            [*cmd, "--seed", str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        totals["runs"] += 1
        try:
            out, err = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            totals["hangs"] += 1
            finished = any(line.startswith("RESULT ") for line in out.splitlines())
            failures.append({"seed": seed, "hang": True, "after_result": finished})
            when = "after its result (while exiting)" if finished else "before its result"
            print(f"run {i} (seed {seed}): HANG {when}\n{_tail(err, 200)}", flush=True)
            continue
        deadline = time.monotonic() + LEAK_GRACE
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = group_alive(proc.pid)
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
            totals["leaks"] += 1
            failures.append({"seed": seed, "leak": left})
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            totals["crashes"] += 1
            failures.append({"seed": seed, "crash": proc.returncode})
            print(f"run {i} (seed {seed}): CRASH (exit code {proc.returncode})\n{_tail(err)}", flush=True)
            continue
        record = json.loads(lines[-1][len("RESULT ") :])
        totals["kills"] += len(record["kills"])
        totals["hit_chains"] += len(record["hit_chains"])
        totals["extra"] += record["extra"]
        totals["other_errors"] += sum(record["other_errors"].values())
        totals["pool_warnings"] += record["pool_warnings"]
        totals["lost"] += record["lost"]
        bad = record["lost"] or record["extra"] or record["other_errors"]
        if bad:
            totals["runs_with_losses"] += 1
            failures.append(record)
        else:
            totals["ok"] += 1
        if args.verbose or bad:
            print(f"run {i}: {json.dumps(record)}", flush=True)
    summary = {"pool": args.pool, "context": args.context, "max_workers": args.max_workers, **totals}
    summary["failures"] = failures[:20]
    print(json.dumps(summary), flush=True)
    return 1 if totals["runs"] != totals["ok"] or totals["leaks"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pool", default="multiprocessing", help="a process pool: process, ndprocess, multiprocessing, ..."
    )
    parser.add_argument("--context", default=None, help="start method: fork, spawn or forkserver (default: the pool's)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a run counts as a hang")
    parser.add_argument("--seed", type=int, default=0, help="the first run's seed (run i uses seed + i)")
    parser.add_argument("--verbose", action="store_true", help="print every run's record")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # A run about to be killed as a hang first shows where every thread of it waits.
        faulthandler.dump_traceback_later(args.timeout * 0.9, exit=False)
        record = run_once(args.pool, args.context, args.seed, args.max_workers)
        print("RESULT " + json.dumps(record), flush=True)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
