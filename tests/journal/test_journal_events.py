"""What a journal keeps of a run's events: each firing's row, every retried attempt, a cancelled node.

A journal of the previous schema version (2, without the ``attempts`` table) is read
as it is and brought up to date when a run is written to it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from graphs import method_node

import aioflow
from aioflow.journal import AttemptRecord, JournalRun, list_runs, run_firings
from aioflow.journal._store import SCHEMA_VERSION

CONTROL = Path(__file__).resolve().parents[1] / "control_tasks.py"


def flaky(tmp_path: Path) -> dict[str, Any]:
    """One node that fails twice (OSError) and succeeds on its third attempt."""
    node = method_node("flaky", f"{CONTROL}::fails_until", directory=str(tmp_path), succeed_on=3)
    node["aioflow"] = {"retries": 2, "retry_delay": 0.01}
    return {"graph": {"id": "flaky"}, "nodes": [node]}


def test_every_retried_attempt_is_kept_with_its_firing(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    events: list[aioflow.Event] = []
    run = JournalRun(path, run_id="r")
    result = aioflow.execute_graph(
        flaky(tmp_path), journal=run, pool_type="process", max_workers=1, on_event=events.append
    )
    assert result == {"return_value": 3}
    (firing,) = run_firings(path, "r")
    assert firing.status == "finished"
    assert [(a.attempt, a.error) for a in firing.attempts] == [(1, "OSError: attempt 1"), (2, "OSError: attempt 2")]
    retried = [e for e in events if e.kind == "node.retried"]
    # The journal's attempts are the events': the same workers, in order, at their times.
    assert [a.worker_pid for a in firing.attempts] == [e.worker_pid for e in retried]
    assert all(a.worker_pid is not None and a.worker_pid != os.getpid() for a in firing.attempts)
    assert firing.started is not None
    assert firing.ended is not None
    assert firing.started <= firing.attempts[0].ended <= firing.attempts[1].ended <= firing.ended


def test_a_firing_that_ran_once_has_no_attempts(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    aioflow.execute_graph({"nodes": [method_node("a", "tasks.inc", x=1)]}, journal=JournalRun(path, run_id="r"))
    assert [f.attempts for f in run_firings(path, "r")] == [()]


async def test_a_cancelled_node_is_kept_as_failed_by_a_cancellation(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    graph = {
        "nodes": [
            method_node("long", f"{CONTROL}::spin", directory=str(tmp_path), seconds=30),
            method_node("handler", "tasks.inc", x=1),
        ],
        "links": [{"source": "long", "target": "handler", "on_error": True}],
    }
    async with aioflow.start(graph, journal=JournalRun(path, run_id="r"), pool_type="thread") as run:
        async for event in run.events():
            if event.kind == "node.started" and event.node_id == "long":
                await asyncio.to_thread(_wait_for, tmp_path / "spin")
                assert run.cancel("long")
        await run
    firings = {f.node_id: f for f in run_firings(path, "r")}
    assert firings["long"].status == "failed"
    assert firings["long"].error is not None
    assert firings["long"].error.startswith("NodeCancelledError: ")
    assert firings["handler"].status == "finished"


def _wait_for(path: Path) -> None:
    end = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.01)


def _as_version_2(path: Path) -> None:
    """Make the journal at ``path`` what the previous version of aioflow wrote: no ``attempts`` table."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TABLE attempts")
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    finally:
        conn.close()


def test_a_journal_of_the_previous_version_is_read_then_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    aioflow.execute_graph({"nodes": [method_node("a", "tasks.inc", x=1)]}, journal=JournalRun(path, run_id="old"))
    _as_version_2(path)
    before = path.read_bytes()
    # Read as it is: nothing changes.
    assert [r.run_id for r in list_runs(path)] == ["old"]
    assert [(f.node_id, f.attempts) for f in run_firings(path, "old")] == [("a", ())]
    assert path.read_bytes() == before
    # A run written to it brings it to this version; the old run is still there.
    result = aioflow.execute_graph(flaky(tmp_path), journal=JournalRun(path, run_id="new"))
    assert result == {"return_value": 3}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    finally:
        conn.close()
    assert [r.run_id for r in list_runs(path)] == ["old", "new"]
    (firing,) = run_firings(path, "new")
    assert [a.attempt for a in firing.attempts] == [1, 2]
    assert isinstance(firing.attempts[0], AttemptRecord)


def test_a_journal_of_a_version_older_than_any_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    aioflow.execute_graph({"nodes": [method_node("a", "tasks.inc", x=1)]}, journal=JournalRun(path, run_id="old"))
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(aioflow.JournalError, match="has schema version 1; this aioflow reads version 3"):
        list_runs(path)
