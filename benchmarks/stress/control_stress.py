"""Per-node control under load: a 1,000-node fan-out with timeouts that fire, retries and cancels, on every local pool.

    python benchmarks/stress/control_stress.py --runs 100
    python benchmarks/stress/control_stress.py --runs 20 --pools process billiard --seed 7

Each pool runs in a fresh interpreter (``--child``). A run executes, under
`aioflow.start` with ``raise_on_error=False``, a fan-out of one source and 999
children, each child chosen at random (seeded per run):

- 85 %: ``inc``, which must give its value;
- 5 %: a task that spins 10 s with a timeout of 50-300 ms: it must fail with
  `aioflow.NodeTimeoutError`, long before 10 s;
- 5 %: a task that fails its first 1-3 attempts with ``retries=3``: it must give
  its value (attempt 2-4);
- 5 %: a task that spins 0-200 ms and is cancelled (`Run.cancel`) at a random moment
  of the run: it must fail with `aioflow.NodeCancelledError` if the cancel found it,
  else give its value.

A run that does not end within ``--timeout`` counts as a hang (the child is
killed and the pool's line says so); a node with another outcome counts as
lost; after every run, a process the run started and left running counts as
an orphan. One line per pool: runs, ok, lost, hangs, orphans, time.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

POOLS = ("thread", "process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard", "gevent")


def _node(nid: str, func: str, control: dict[str, Any] | None = None, **inputs: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": nid, "task_type": "method", "task_identifier": f"benchtasks.{func}"}
    if inputs:
        node["default_inputs"] = [{"name": k, "value": v} for k, v in inputs.items()]
    if control:
        node["aioflow"] = control
    return node


def build(rng: random.Random, width: int) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The graph, each child's kind, and the children to cancel."""
    nodes = [_node("src", "inc", x=0)]
    kinds: dict[str, str] = {}
    for i in range(width):
        nid = f"c{i}"
        roll = rng.random()
        if roll < 0.85:
            kinds[nid] = "inc"
            nodes.append(_node(nid, "inc"))
        elif roll < 0.90:
            kinds[nid] = "timeout"
            nodes.append(_node(nid, "spin", {"timeout": rng.uniform(0.05, 0.3)}, seconds=10.0))
        elif roll < 0.95:
            kinds[nid] = "retry"
            nodes.append(_node(nid, "fail_first", {"retries": 3}, failures=rng.randint(1, 3)))
        else:
            kinds[nid] = "cancel"
            nodes.append(_node(nid, "spin", seconds=rng.uniform(0.0, 0.2)))
    links = [
        {"source": "src", "target": nid, "data_mapping": [{"source_output": "return_value", "target_input": "x"}]}
        for nid in kinds
    ]
    cancels = [nid for nid, kind in kinds.items() if kind == "cancel"]
    return {"graph": {"id": "control-stress"}, "nodes": nodes, "links": links}, kinds, cancels


async def one_run(pool: str, seed: int, width: int) -> tuple[int, list[str]]:
    """Lost nodes (with why), for one run."""
    import aioflow

    rng = random.Random(seed)
    graph, kinds, cancels = build(rng, width)
    options: dict[str, Any] = {"pool_type": pool, "max_workers": 2, "raise_on_error": False, "merge_outputs": False}
    if pool not in ("thread", "gevent"):
        options["context"] = "fork"
    found: dict[str, bool] = {}
    async with aioflow.start(graph, **options) as run:
        for nid in cancels:
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            found[nid] = run.cancel(nid)
        results = await run
    lost = []
    for nid, kind in kinds.items():
        error = results.errors.get(nid)
        value = results.get(nid, {}).get("return_value")
        if kind == "timeout":
            ok = isinstance(error, aioflow.NodeTimeoutError)
        elif kind == "cancel" and found.get(nid):
            ok = isinstance(error, aioflow.NodeCancelledError)
        else:
            ok = error is None and value == 2
        if not ok:
            lost.append(f"{nid} ({kind}): {value!r} {error!r}")
    return len(kinds), lost


def _orphans(before: set[int]) -> list[int]:
    import psutil

    trackers = ("resource_tracker", "forkserver", "semaphore_tracker")
    left = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in before:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE or any(t in " ".join(child.cmdline()) for t in trackers):
                continue
        except psutil.NoSuchProcess:
            continue
        left.append(child.pid)
    return left


def child(pool: str, runs: int, seed: int, width: int) -> None:
    """Run ``runs`` runs on ``pool`` in this interpreter; print one JSON line per run."""
    import logging

    import psutil

    logging.getLogger("aioflow").setLevel(logging.ERROR)  # each failed node is logged as a warning: thousands here
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    for i in range(runs):
        t0 = time.monotonic()
        count, lost = asyncio.run(one_run(pool, seed + i, width))
        end = time.monotonic() + 10
        orphans = _orphans(before)
        while orphans and time.monotonic() < end:
            time.sleep(0.1)
            orphans = _orphans(before)
        print(json.dumps({"run": i, "nodes": count, "lost": lost, "orphans": orphans, "s": time.monotonic() - t0}))
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=POOLS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--width", type=int, default=999)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a run may take before it is a hang")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child == "gevent":
            from gevent import monkey

            monkey.patch_all()
        child(args.child, args.runs, args.seed, args.width)
        return 0
    bad = 0
    print("| pool | runs | ok | lost | hangs | orphans | time |")
    print("|---|---|---|---|---|---|---|")
    for pool in args.pools:
        t0 = time.monotonic()
        command = [sys.executable, __file__, "--child", pool, "--runs", str(args.runs), "--seed", str(args.seed)]
        command += ["--width", str(args.width)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
        records: list[dict[str, Any]] = []
        hangs = 0
        assert proc.stdout is not None
        deadline = time.monotonic() + args.timeout
        while True:
            line = _readline(proc, deadline)
            if line is None:  # a hang: kill the child and its group
                hangs = 1
                os.killpg(proc.pid, 9)
                proc.wait()
                break
            if not line:
                break
            records.append(json.loads(line))
            deadline = time.monotonic() + args.timeout
            for lost in records[-1]["lost"][:3]:
                print(f"  {pool} run {records[-1]['run']}: lost {lost}", file=sys.stderr)
        proc.wait()
        lost = sum(1 for r in records if r["lost"])
        orphans = sum(1 for r in records if r["orphans"])
        ok = sum(1 for r in records if not r["lost"] and not r["orphans"])
        bad += (len(records) - ok) + hangs + (proc.returncode not in (0, -9))
        print(f"| {pool} | {len(records)} | {ok} | {lost} | {hangs} | {orphans} | {time.monotonic() - t0:.0f} s |")
    return 1 if bad else 0


def _readline(proc: subprocess.Popen[str], deadline: float) -> str | None:
    """The child's next line; ``None`` if none came before ``deadline``."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(max(0.0, deadline - time.monotonic())):
            return None
    return proc.stdout.readline()


if __name__ == "__main__":
    raise SystemExit(main())
