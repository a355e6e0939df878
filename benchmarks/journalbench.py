"""What a run journal costs: runs with and without one, a resume of a finished run, the file's size per firing.

    python benchmarks/journalbench.py              # the targets' sizes
    python benchmarks/journalbench.py --smoke      # tiny sizes, once each

Each figure is the median of ``--repeats`` runs in this process, alternating with
and without the journal (a new journal file per run), the graph loaded before the
clock starts (`benchmarks/workloads.py`):

- journal on / off: fanout:10000 and chain:10000 on ``thread`` x2, fanout:1000 on
  ``process`` x2 (fork). Target <= 1.15x;
- resume of a 10,000-node run (fanout:10000) whose firings all finished, on ``thread``
  x2: the time to return its results (every firing answered from the journal).
  Target < 1 s;
- bytes of journal file per firing, for ``inc``'s small outputs (one int);
- a rerun of fanout:10000 with ``cache=True`` whose every firing comes from the first
  run's, against the run without a journal (reported, no target).

Prints a Markdown table.
"""

# ruff: noqa: T201 - a command-line tool: printing is its output

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # needs the path above when run as a script

import aioflow
from aioflow.journal import JournalRun


def timed(graph: Any, pool: str, journal: Any) -> float:
    options: dict[str, Any] = {"context": "fork"} if pool == "process" else {}
    t0 = time.perf_counter()
    aioflow.execute_graph(graph, pool_type=pool, max_workers=2, journal=journal, **options)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    big, small = (200, 50) if args.smoke else (10000, 1000)
    rows = [("thread", f"fanout:{big}"), ("thread", f"chain:{big}"), ("process", f"fanout:{small}")]
    print("| benchmark | with journal | without | ratio | target |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for pool, spec in rows:
            graph = aioflow.load_graph(workloads.make(spec).graph)
            timed(graph, pool, None)  # warm the imports
            on, off = [], []
            for _ in range(repeats):
                off.append(timed(graph, pool, None))
                on.append(timed(graph, pool, folder / f"{uuid.uuid4().hex}.sqlite"))
            a, b = statistics.median(on), statistics.median(off)
            print(f"| journal on / off, {pool} x2 {spec} | {a:.3f} s | {b:.3f} s | {a / b:.2f}x | <= 1.15x |")

        graph = aioflow.load_graph(workloads.make(f"fanout:{big}").graph)
        times, size = [], 0.0
        for _ in range(repeats):
            path = folder / f"{uuid.uuid4().hex}.sqlite"
            first = JournalRun(path, run_id="first")
            aioflow.execute_graph(graph, pool_type="thread", max_workers=2, journal=first)
            size = path.stat().st_size / len(graph.nodes)
            resumed = JournalRun(path, run_id="again", resume="first")
            t0 = time.perf_counter()
            aioflow.execute_graph(graph, pool_type="thread", max_workers=2, journal=resumed)
            times.append(time.perf_counter() - t0)
            assert resumed.reused == len(graph.nodes), resumed.reused
        print(
            f"| resume of fanout:{big}, every firing finished (thread x2) | {statistics.median(times):.3f} s | - | - | < 1 s |"
        )
        print(f"| journal file per firing, fanout:{big} (inc, one int) | {size:,.0f} bytes | - | - | - |")

        # The cache: a run answered entirely from an earlier run's firings,
        # against the same run without a journal (its tasks run).
        cached, plain = [], []
        for _ in range(repeats):
            path = folder / f"{uuid.uuid4().hex}.sqlite"
            aioflow.execute_graph(graph, pool_type="thread", max_workers=2, journal=JournalRun(path, cache=True))
            again = JournalRun(path, cache=True)
            cached.append(timed(graph, "thread", again))
            assert again.reused == len(graph.nodes), again.reused
            plain.append(timed(graph, "thread", None))
        a, b = statistics.median(cached), statistics.median(plain)
        print(
            f"| rerun of fanout:{big} from the cache (thread x2) / run without journal | {a:.3f} s | {b:.3f} s "
            f"| {a / b:.2f}x | - |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
