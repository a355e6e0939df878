"""Stress runs of wide and long graphs in gevent-patched processes: counts hangs and lost results.

Each run is a fresh interpreter that calls ``monkey.patch_all()`` before
anything else, then ``aioflow.execute_graph`` on a graph file (default
scaling options) with the ``gevent`` pool (or the ``thread`` pool), and
checks that every node ran once and that the sinks sum to the workload's
checksum. The parent gives each run a hard timeout and kills its whole
process group when it is reached: that run counts as a hang.

Shapes (`benchmarks/workloads.py` builds them, checksums included):
``fanout`` is one source and 999 targets, ``chain`` 1,000 nodes in a line,
``lattice`` 32 layers of 32 nodes, each joining the whole layer before it.

    python benchmarks/stress/gevent_stress.py                      # 200 runs of each shape, gevent pool
    python benchmarks/stress/gevent_stress.py --pools gevent thread --shapes fanout --runs 50
    python benchmarks/stress/gevent_stress.py --switch-interval 1e-5 --runs 20   # threads race far more often

A race between the hub's thread and the bridge thread needs a thread switch
at the wrong instant: ``--switch-interval`` (`sys.setswitchinterval` in each
run; Python's default is 5 ms) makes switches, and so such races, far more
frequent. The hub callback that waited for a future's lock held by the
bridge thread hung one lattice run in 200 at the default, and 20 in 20 at
``1e-5``.

Not part of CI: 200 runs of the three shapes take several minutes. The exit
code is 1 when any run hung, crashed or lost a result. The runs import
aioflow as the parent does: to stress a fixed tree while it is being edited,
put a copy of it first on ``PYTHONPATH``.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output
import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    from gevent import monkey  # first thing in a run, as the pool's users must

    monkey.patch_all()

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = HERE.parent
sys.path.insert(0, str(BENCHMARKS))

import workloads  # benchmarks/ is put on the path just above

#: The workload of each shape.
SHAPES = {"fanout": "fanout:999", "chain": "chain:1000", "lattice": "lattice:32x32"}

#: Marks the line a run prints its outcome on.
TAG = "STRESS "


def child(graph_file: str, spec: str, pool: str, switch_interval: str) -> None:
    """One run, in this patched interpreter: execute the graph file, print what came out."""
    import aioflow

    if float(switch_interval) > 0:
        sys.setswitchinterval(float(switch_interval))

    work = workloads.make(spec)
    start = time.perf_counter()
    results = aioflow.execute_graph(graph_file, pool_type=pool, merge_outputs=False)
    seconds = time.perf_counter() - start
    executions = dict(results.executions)
    checksum = sum(results[s]["return_value"] for s in work.sinks if s in results)
    lost = work.n_nodes - sum(1 for count in executions.values() if count == 1)
    outcome = {"lost": lost, "checksum_ok": checksum == work.checksum, "seconds": seconds}
    print(TAG + json.dumps(outcome), flush=True)


def one_run(graph_file: Path, spec: str, pool: str, timeout: float, switch_interval: float) -> dict[str, object]:
    """Run one child with a hard timeout; return its outcome, or a hang or crash record."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, __file__, "--child", str(graph_file), spec, pool, str(switch_interval)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return {"kind": "hang", "stderr": err}
    for line in out.splitlines():
        if line.startswith(TAG):
            outcome: dict[str, object] = json.loads(line[len(TAG) :])
            lost = outcome["lost"] or not outcome["checksum_ok"]
            return {"kind": "lost" if lost else "ok", "stderr": err, **outcome}
    return {"kind": "crash", "stderr": err, "returncode": proc.returncode}


def stress(pool: str, shape: str, runs: int, timeout: float, switch_interval: float, workdir: Path) -> bool:
    """``runs`` runs of one shape on one pool; print the tally; True when every run was fine."""
    spec = SHAPES[shape]
    graph_file = workdir / f"{shape}.json"
    graph_file.write_text(json.dumps(workloads.make(spec).graph))
    tally = {"ok": 0, "hang": 0, "lost": 0, "crash": 0}
    blocking_errors = 0  # runs whose stderr shows a hub callback that tried to block
    shown = False
    start = time.monotonic()
    for index in range(runs):
        record = one_run(graph_file, spec, pool, timeout, switch_interval)
        kind = str(record["kind"])
        tally[kind] += 1
        err = str(record["stderr"])
        blocking_errors += "BlockingSwitchOutError" in err
        if kind != "ok" and not shown:
            shown = True  # the first failure's stderr says why: one is enough
            print(f"  run {index}: {kind}; stderr tail:\n    " + "\n    ".join(err.splitlines()[-25:]), flush=True)
    elapsed = time.monotonic() - start
    print(
        f"{pool:7} {shape:8} runs {runs:4}  ok {tally['ok']:4}  hangs {tally['hang']:3}  lost {tally['lost']:3}  "
        f"crashes {tally['crash']:3}  BlockingSwitchOutError {blocking_errors:3}  {elapsed:7.1f} s",
        flush=True,
    )
    return tally["ok"] == runs


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", nargs="+", default=["gevent"], choices=["gevent", "thread"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--runs", type=int, default=200, help="runs of each shape on each pool (default 200)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a run counts as hung (default 60)")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=0.0,
        help="the runs' sys.setswitchinterval in seconds: smaller makes threads race more often (default: Python's)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fine = [
            stress(p, s, args.runs, args.timeout, args.switch_interval, Path(tmp))
            for p in args.pools
            for s in args.shapes
        ]
    return 0 if all(fine) else 1


if __name__ == "__main__":
    sys.exit(main())
