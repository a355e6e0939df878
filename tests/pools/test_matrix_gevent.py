"""The compatibility matrix in a gevent-patched process: the right result, or a clear error within 5 s.

Each cell runs in a fresh interpreter that calls ``gevent.monkey.patch_all()``
before importing aioflow (patching is process-wide); see
`matrix.patched_groups` for which cells share one. All cells run once, two
interpreters at a time, in a module-scoped fixture; each test checks one.
"""

from __future__ import annotations

import time

import psutil
import pytest
from matrix import CELL_LIMIT, IN_PROCESS, Cell, patched_cells, run_group, run_patched

#: Task kinds that start a pool whose handler threads block the gevent hub.
HUB_BLOCKING_POOLS = {"mppool": "multiprocessing.Pool", "bpool": "billiard.Pool"}


@pytest.fixture(scope="module")
def patched_results() -> dict[tuple[str, str | None, str, str], Cell]:
    return {(c.pool, c.context, c.kind, c.api): c for c in run_patched(jobs=2)}


@pytest.mark.parametrize(("pool", "context", "kind", "api"), patched_cells(), ids=lambda v: str(v))
def test_patched_cell(
    patched_results: dict[tuple[str, str | None, str, str], Cell], pool: str, context: str | None, kind: str, api: str
) -> None:
    """Each cell gives its result, or its known refusal with a message naming the cause and the way out."""
    cell = patched_results[(pool, context, kind, api)]
    assert cell.seconds < CELL_LIMIT, cell
    if pool not in IN_PROCESS:
        # Refused before any worker starts: multiprocessing's queues and locks hang under gevent.
        assert cell.outcome == "clear error", cell
        assert f"the {pool!r} pool cannot run in a process that gevent has monkey-patched" in cell.message
        assert "pool_type='gevent'" in cell.message
        assert "'thread'" in cell.message
    elif kind in HUB_BLOCKING_POOLS:
        # The task's pool would block the hub for good: the task fails at once instead.
        assert cell.outcome == "clear error", cell
        assert f"node {kind!r} failed: RuntimeError: {HUB_BLOCKING_POOLS[kind]} cannot run" in cell.message
        assert "gevent has monkey-patched" in cell.message
        assert "ProcessPoolExecutor" in cell.message
        assert "multiprocessing.Process" in cell.message
    else:
        # "ok" means the execution returned the task's known value (checked in the interpreter).
        assert cell.outcome == "ok", cell


def test_a_hung_cell_is_killed_with_its_process_tree() -> None:
    """A task that blocks the hub (no timeout can fire) is killed after CELL_LIMIT, with what it started."""
    start = time.monotonic()
    [cell] = run_group([("gevent", None, "blockhub", "sync")])
    elapsed = time.monotonic() - start
    assert cell.outcome == "hang", cell
    assert elapsed < CELL_LIMIT + 30, elapsed  # it was stopped (a generous bound: startup included)
    assert f"killed after {CELL_LIMIT:.1f} s" in cell.message  # by the cell limit, not earlier
    [pid] = [int(part.split()[1]) for part in cell.message.split("; printed: ")[1:] if part.startswith("grandchild")]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_rest_of_a_group_runs_after_a_hang() -> None:
    """When a cell hangs, the cells after it in the same group run in a new interpreter."""
    cells = run_group([("thread", None, "blockhub", "sync"), ("thread", None, "simple", "async")])
    assert [c.outcome for c in cells] == ["hang", "ok"], cells
