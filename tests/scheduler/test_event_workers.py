"""Which process ran each firing: ``Event.worker_pid`` / ``worker_host``, and the journal's worker columns."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

import aioflow
from aioflow.journal import JournalRun, run_firings

if TYPE_CHECKING:
    from pathlib import Path

    from aioflow.events import Event

LOCAL_PROCESS_POOLS = ["process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard"]

GRAPH: dict[str, Any] = {
    "graph": {"id": "pids"},
    "nodes": [{"id": i, "task_type": "method", "task_identifier": "os.getpid"} for i in range(6)]
    + [{"id": "bad", "task_type": "method", "task_identifier": "os.kill"}],  # no arguments: a TypeError
    "links": [],
}


def _run(pool_type: str, tmp_path: Path) -> tuple[list[Event], dict[Any, Any], Path]:
    events: list[Event] = []
    path = tmp_path / "runs.sqlite"
    results = aioflow.execute_graph(
        GRAPH, pool_type=pool_type, max_workers=2, on_event=events.append, journal=JournalRun(path, run_id="r"),
        outputs=[{"all": True}], merge_outputs=False, raise_on_error=False,
    )  # fmt: skip
    return events, results, path


@pytest.mark.parametrize("pool_type", ["thread", *LOCAL_PROCESS_POOLS])
def test_each_ended_firing_names_the_process_that_ran_it(pool_type: str, tmp_path: Path) -> None:
    events, results, path = _run(pool_type, tmp_path)
    host = socket.gethostname()
    finished = {e.node_id: (e.worker_pid, e.worker_host) for e in events if e.kind == "node.finished"}
    assert finished == {i: (results[i]["return_value"], host) for i in range(6)}
    if pool_type == "thread":
        assert {pid for pid, _ in finished.values()} == {os.getpid()}
    else:
        assert os.getpid() not in {pid for pid, _ in finished.values()}
    [failed] = [e for e in events if e.kind == "node.failed"]
    assert failed.worker_host == host
    assert failed.worker_pid is not None
    assert failed.worker_pid == os.getpid() if pool_type == "thread" else failed.worker_pid != os.getpid()
    assert all(e.worker_pid is None for e in events if e.kind in ("node.started", "graph.started", "graph.finished"))
    recorded = {f.node_id: (f.worker_pid, f.worker_host) for f in run_firings(path, "r")}
    assert recorded == {**finished, "bad": (failed.worker_pid, host)}


def test_a_firing_answered_from_the_journal_names_no_worker(tmp_path: Path) -> None:
    _, _, path = _run("process", tmp_path)
    events: list[Event] = []
    again = JournalRun(path, run_id="again", resume="r")
    aioflow.execute_graph(GRAPH, pool_type="process", max_workers=2, on_event=events.append, journal=again,
                          raise_on_error=False)  # fmt: skip
    assert again.reused == 6
    answered = [e for e in events if e.kind == "node.finished"]
    assert len(answered) == 6
    assert all(e.worker_pid is None and e.worker_host is None for e in answered)
    [failed] = [e for e in events if e.kind == "node.failed"]
    assert failed.worker_pid is not None  # it ran again, on a worker
    first = {f.node_id: f.seq for f in run_firings(path, "r")}
    records = {f.node_id: f for f in run_firings(path, "again")}
    assert {i: records[i].reused_from for i in range(6)} == {i: f"r:{first[i]}" for i in range(6)}
    assert all(records[i].worker_pid is None for i in range(6))


GEVENT_PROGRAM = """
from gevent import monkey

monkey.patch_all()
import os

import aioflow

events = []
graph = {"nodes": [{"id": i, "task_type": "method", "task_identifier": "os.getpid"} for i in range(4)]}
aioflow.execute_graph(graph, pool_type="gevent", on_event=events.append)
print({e.worker_pid for e in events if e.kind == "node.finished"} == {os.getpid()})
"""


def test_the_gevent_pool_names_this_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_PROGRAM], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_the_engines_quick_node_event_is_the_event_the_class_makes() -> None:
    """`aioflow.events.node_event` fills every field, as ``Event(...)`` does."""
    import dataclasses

    from aioflow.events import Event, node_event

    error = ValueError("x")
    quick = node_event("node.failed", "g", 1.5, ("s", 1), 2, error, 42, "h")
    made = Event(kind="node.failed", graph_id="g", time=1.5, node_id=("s", 1), number=2, error=error,
                 worker_pid=42, worker_host="h")  # fmt: skip
    assert quick == made
    assert hash(quick) == hash(made)
    assert repr(quick) == repr(made)
    assert set(vars(quick)) == {f.name for f in dataclasses.fields(Event)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.number = 3  # type: ignore[misc]
