"""The pool compatibility matrix: every task kind on every pool and start method.

A cell either gives the right result, or fails within `CELL_LIMIT` seconds
with an error saying what is incompatible and what to use instead. It never
hangs: each cell runs with ``timeout=CELL_LIMIT``, and a timeout counts as a
failed cell.

Used by ``tests/pools/test_matrix.py`` (one run of every cell) and as a
script for the stress run and the table in ``docs/pools.md``::

    python tests/pools/matrix.py --repeat 10 --out matrix.json   # not in CI
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class Cell:
    pool: str
    context: str | None
    kind: str
    outcome: str  # "ok", "clear error", "unclear error", "wrong result", "hang"
    seconds: float
    message: str = ""


def cells(pools: tuple[str, ...] | None = None) -> list[tuple[str, str | None, str]]:
    """Every (pool, context, kind) of the matrix for the pools of this installation."""
    chosen = pools or tuple(p for p in aioflow.available_pools() if p != "gevent")
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
        clear = any(word in message for word in EXPLAINS) and any(p in message for p in aioflow.available_pools())
        return Cell(pool, context, kind, "clear error" if clear else "unclear error", seconds, message)
    seconds = time.monotonic() - start
    if results.get("return_value") != expected:
        return Cell(pool, context, kind, "wrong result", seconds, repr(dict(results)))
    return Cell(pool, context, kind, "ok", seconds)


def table(runs: list[list[Cell]]) -> str:
    """A Markdown table: one row per (pool, context), one column per task kind."""
    by_key: dict[tuple[str, str | None, str], list[Cell]] = {}
    for run in runs:
        for cell in run:
            by_key.setdefault((cell.pool, cell.context, cell.kind), []).append(cell)
    rows = sorted({(p, c) for p, c, _ in by_key}, key=lambda pc: (pc[0], pc[1] or ""))
    lines = ["| pool | start method | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for pool, context in rows:
        marks = []
        for kind in KINDS:
            outcomes = {c.outcome for c in by_key.get((pool, context, kind), [])}
            if outcomes == {"ok"}:
                marks.append("yes")
            elif outcomes == {"clear error"}:
                marks.append("refused (clear error)")
            else:
                marks.append(" / ".join(sorted(outcomes)) or "-")
        lines.append(f"| {pool} | {context or '-'} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    runs = []
    for i in range(args.repeat):
        run = [run_cell(*cell) for cell in cells()]
        runs.append(run)
        bad = [c for c in run if c.outcome not in ("ok", "clear error")]
        sys.stderr.write(f"run {i + 1}/{args.repeat}: {len(run)} cells, {len(bad)} bad\n")
        for c in bad:
            sys.stderr.write(f"  {c}\n")
    sys.stdout.write(table(runs) + "\n")
    if args.out:
        args.out.write_text(json.dumps([[asdict(c) for c in run] for run in runs], indent=1))
    return 0 if all(c.outcome in ("ok", "clear error") for run in runs for c in run) else 1


if __name__ == "__main__":
    raise SystemExit(main())
