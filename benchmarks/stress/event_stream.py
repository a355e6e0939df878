"""The event stream at scale: 2,000-node runs read by a slow async reader, a sync reader and the callback at once.

    python benchmarks/stress/event_stream.py --runs 20
    python benchmarks/stress/event_stream.py --runs 50 --pools process billiard --seed 3

Each run executes, under `aioflow.start`, a fan-out of one source and 1,999
children (``benchtasks.inc``) on the pool (x2, ``fork`` for process pools),
while three readers read its events: the ``on_event`` callback (the reference),
a sync reader in a thread of its own with a buffer of 10,000 (it must read every
event), and an async reader with a small buffer (``--buffer``) that pauses now and
then, so that it falls behind. Checked for every run: the run's results; every
stream ends (no hang, ``--timeout``); the sync reader read exactly the callback's
events; the slow reader read an ordered subsequence of them, plus ``events.lost``
events whose totals make up the rest; ``graph.finished`` is the last event of all
three; every firing's events are ``node.queued``, ``node.started``, then its end.
One line per pool: runs, bad runs, events per run, events the slow reader lost.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchtasks, for the workers forked from here

import aioflow

POOLS = ("thread", "process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard")
WIDTH = 1999


def _graph() -> dict[str, Any]:
    source: dict[str, Any] = {"id": "s", "task_type": "method", "task_identifier": "benchtasks.inc"}
    source["default_inputs"] = [{"name": "x", "value": 0}]
    children = [{"id": i, "task_type": "method", "task_identifier": "benchtasks.inc"} for i in range(WIDTH)]
    links = [
        {"source": "s", "target": i, "data_mapping": [{"source_output": "return_value", "target_input": "x"}]}
        for i in range(WIDTH)
    ]
    return {"graph": {"id": "stream"}, "nodes": [source, *children], "links": links}


def _problems(called: list[aioflow.Event], synced: list[aioflow.Event], slow: list[aioflow.Event]) -> list[str]:
    problems = []
    if synced != called:
        problems.append(f"the sync reader read {len(synced)} events, the callback saw {len(called)}")
    lost = sum(e.total for e in slow if e.kind == "events.lost")
    kept = [e for e in slow if e.kind != "events.lost"]
    position = {id(e): i for i, e in enumerate(called)}
    indices = [position.get(id(e), -1) for e in kept]
    if -1 in indices or indices != sorted(indices):
        problems.append("the slow reader read events out of order, or ones the callback never saw")
    if len(kept) + lost != len(called):
        problems.append(f"the slow reader read {len(kept)} and lost {lost}, of {len(called)}")
    for name, events in (("callback", called), ("sync", synced), ("slow", kept)):
        if not events or events[-1].kind != "graph.finished":
            problems.append(f"the {name} reader's last event is not graph.finished")
    by_seq: dict[int, list[str]] = {}
    for event in called:
        if event.kind.startswith("node."):
            by_seq.setdefault(event.seq, []).append(event.kind)
    if len(by_seq) != WIDTH + 1 or any(k != ["node.queued", "node.started", "node.finished"] for k in by_seq.values()):
        problems.append("a firing's events are not queued, started, finished")
    return problems


async def _one_run(pool: str, buffer: int, rng: random.Random) -> tuple[list[str], int, int]:
    called: list[aioflow.Event] = []
    synced: list[aioflow.Event] = []
    slow: list[aioflow.Event] = []
    options: dict[str, Any] = {"pool_type": pool, "max_workers": 2}
    if pool != "thread":
        options["context"] = "fork"
    async with aioflow.start(_graph(), on_event=called.append, **options) as run:
        stream = run.events()
        reader = threading.Thread(target=lambda: synced.extend(stream), name="sync reader")
        reader.start()
        async for event in run.events(buffer=buffer):
            slow.append(event)
            if rng.random() < 0.01:
                await asyncio.sleep(rng.uniform(0.001, 0.02))  # falls behind
        results = await run
        await asyncio.to_thread(reader.join)
    problems = _problems(called, synced, slow)
    if results != {"return_value": 2}:
        problems.append(f"results {results!r}")
    return problems, len(called), sum(e.total for e in slow if e.kind == "events.lost")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pools", nargs="+", choices=POOLS, default=list(POOLS))
    parser.add_argument("--buffer", type=int, default=200, help="the slow reader's buffer (events)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a run may take before it is a hang")
    args = parser.parse_args(argv)
    print("| pool | runs | bad | events per run | lost by the slow reader (median) | time |")
    print("|---|---|---|---|---|---|")
    failed = False
    for pool in args.pools:
        rng = random.Random(args.seed)
        bad, counts, losses = 0, [], []
        start = time.monotonic()
        for _ in range(args.runs):
            problems, count, lost = asyncio.run(asyncio.wait_for(_one_run(pool, args.buffer, rng), args.timeout))
            if problems:
                bad += 1
                print(f"  {pool}: {'; '.join(problems)}", file=sys.stderr)
            counts.append(count)
            losses.append(lost)
        failed |= bad > 0
        median_lost = sorted(losses)[len(losses) // 2]
        took = time.monotonic() - start
        print(f"| {pool} | {args.runs} | {bad} | {counts[0]} | {median_lost} | {took:.0f} s |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
