"""``varinfo`` (results saved and reused) and ``execinfo`` (ewoks events) with real files and a real handler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from ewokscore.events import cleanup as cleanup_events
from ewokscore.tests import test_workflow_events as reference
from ewoksutils.event_utils import FIELD_TYPES
from ewoksutils.sqlite3_utils import connect, select

import aioflow
import aioflow.ewoks

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]
TASKS = "examples.ewoks.tasks"

POOLS = [
    pytest.param({"pool_type": "thread"}, id="thread"),
    pytest.param({"pool_type": "process", "context": "spawn", "max_workers": 2}, id="process-spawn"),
]


@pytest.fixture(autouse=True)
def closed_event_handlers() -> Iterator[None]:
    """The event handlers this process opened are closed after each test."""
    yield
    cleanup_events()


def read_events(database: Path) -> list[dict[str, Any]]:
    """Every event in the database, in the order it was written (the handlers write synchronously)."""
    with connect(database) as conn:
        return list(select(conn, "ewoks_events", field_types=FIELD_TYPES))


def sqlite_execinfo(database: Path) -> dict[str, Any]:
    handler = {
        "class": "ewokscore.events.handlers.Sqlite3EwoksEventHandler",
        "arguments": [{"name": "uri", "value": str(database)}],
    }
    return {"handlers": [handler]}


@pytest.mark.parametrize("pool", POOLS)
def test_successful_chain_sends_ten_events_in_order(tmp_path: Path, pool: dict[str, Any]) -> None:
    """A 3-node chain sends job and workflow start, each node's start and end (from the workers), then the ends."""
    database = tmp_path / "events.db"
    reference.run_succesfull_workfow(database, aioflow.ewoks.execute_graph, **pool)
    events = read_events(database)
    reference.assert_succesfull_workfow_events(events)
    kinds = [(e["context"], e["node_id"], e["type"]) for e in events]
    assert kinds[:2] == [("job", None, "start"), ("workflow", None, "start")]
    assert kinds[-2:] == [("workflow", None, "end"), ("job", None, "end")]
    assert [k for k in kinds if k[0] == "node"] == [
        ("node", f"node{i}", t) for i in (1, 2, 3) for t in ("start", "end")
    ]
    assert {e["engine"] for e in events} == {"aioflow"}
    assert len({e["job_id"] for e in events}) == 1


@pytest.mark.parametrize("pool", POOLS)
def test_failed_node_sends_its_error_in_the_events(tmp_path: Path, pool: dict[str, Any]) -> None:
    """A failing node ends its node, workflow and job events with its error, as ewokscore's engines do."""
    database = tmp_path / "events.db"
    reference.run_failed_workfow(database, aioflow.ewoks.execute_graph, **pool)
    reference.assert_failed_workfow_events(read_events(database))


def test_native_door_sends_events_too(tmp_path: Path) -> None:
    """``aioflow.execute_graph(execinfo=...)`` sends the same events, with the given job id."""
    database = tmp_path / "events.db"
    graph = {
        "graph": {"id": "one"},
        "nodes": [{"id": "m", "task_type": "method", "task_identifier": "tasks.inc", "default_inputs": []}],
    }
    execinfo = {**sqlite_execinfo(database), "job_id": "job-42"}
    assert aioflow.execute_graph(graph, execinfo=execinfo, pool_type="thread") == {"return_value": 1}
    events = read_events(database)
    assert [(e["context"], e["type"]) for e in events] == [
        ("job", "start"),
        ("workflow", "start"),
        ("node", "start"),
        ("node", "end"),
        ("workflow", "end"),
        ("job", "end"),
    ]
    assert {e["job_id"] for e in events} == {"job-42"}
    assert {e["workflow_id"] for e in events if e["context"] != "job"} == {"one"}


def counted_chain(log_file: Path, a: int) -> dict[str, Any]:
    return {
        "graph": {"id": "counted"},
        "nodes": [
            {
                "id": "first",
                "task_type": "class",
                "task_identifier": f"{TASKS}.Add",
                "default_inputs": [{"name": "a", "value": a}, {"name": "log_file", "value": str(log_file)}],
            },
            {
                "id": "second",
                "task_type": "class",
                "task_identifier": f"{TASKS}.Add",
                "default_inputs": [{"name": "b", "value": 10}, {"name": "log_file", "value": str(log_file)}],
            },
            {"id": "double", "task_type": "method", "task_identifier": f"{TASKS}.double"},
        ],
        "links": [
            {"source": "first", "target": "second", "data_mapping": [{"source_output": "result", "target_input": "a"}]},
            {
                "source": "second",
                "target": "double",
                "data_mapping": [{"source_output": "result", "target_input": "x"}],
            },
        ],
    }


@pytest.mark.parametrize("pool", POOLS)
def test_saved_results_are_reused_by_a_later_run(tmp_path: Path, pool: dict[str, Any]) -> None:
    """With ``varinfo``, outputs are saved under root_uri; a second run with the same inputs runs no task again."""
    log_file = tmp_path / "executions.log"
    varinfo = {"root_uri": str(tmp_path / "cache"), "scheme": "json"}
    outputs = [{"all": True}]
    first = aioflow.ewoks.execute_graph(
        counted_chain(log_file, 1), varinfo=varinfo, outputs=outputs, merge_outputs=False, **pool
    )
    assert first == {"first": {"result": 1}, "second": {"result": 11}, "double": {"return_value": 22}}
    assert sorted(line.split()[0] for line in log_file.read_text().splitlines()) == ["first", "second"]
    saved = list((tmp_path / "cache").rglob("*.json"))
    assert len([p for p in saved if p.parent.name == "return_value"]) == 1  # the method node's result too
    assert len([p for p in saved if p.parent.name == "result"]) == 2

    again = aioflow.ewoks.execute_graph(
        counted_chain(log_file, 1), varinfo=varinfo, outputs=outputs, merge_outputs=False, **pool
    )
    assert again == first
    assert len(log_file.read_text().splitlines()) == 2  # nothing ran again

    other = aioflow.execute_graph(counted_chain(log_file, 2), varinfo=varinfo, outputs=[{"id": "double"}], **pool)
    assert other == {"return_value": 24}
    assert len(log_file.read_text().splitlines()) == 4  # new inputs: both class tasks ran


def test_no_varinfo_means_nothing_is_saved(tmp_path: Path) -> None:
    """An empty root_uri (the ewoks CLI default) saves nothing and runs every task each time."""
    log_file = tmp_path / "executions.log"
    varinfo = {"root_uri": "", "scheme": "nexus"}
    for _ in range(2):
        aioflow.ewoks.execute_graph(counted_chain(log_file, 1), varinfo=varinfo, pool_type="thread")
    assert len(log_file.read_text().splitlines()) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["executions.log"]


def test_task_options_reach_every_task(tmp_path: Path) -> None:
    """``task_options`` are keyword arguments of every ewokscore task (here: profiling files)."""
    profiles = tmp_path / "profiles"
    graph = counted_chain(tmp_path / "executions.log", 1)
    result = aioflow.ewoks.execute_graph(
        graph, task_options={"profile_directory": str(profiles)}, execinfo={"job_id": "j1"}, pool_type="thread"
    )
    assert result == {"return_value": 22}
    assert len(list(profiles.rglob("*.prof"))) == 3


def test_ewoks_cli_with_sqlite3_events(tmp_path: Path) -> None:
    """``ewoks execute --engine aioflow --sqlite3 db`` records the job, workflow and every node's events."""
    database = tmp_path / "events.db"
    command = [
        sys.executable,
        "-m",
        "ewoks",
        "execute",
        str(REPO / "examples" / "ewoks" / "sum_chain.json"),
        "--engine",
        "aioflow",
        "--sqlite3",
        str(database),
        "-j",
        "cli-job",
    ]
    out = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "FINISHED" in out.stdout
    events = read_events(database)
    assert [(e["context"], e["node_id"], e["type"]) for e in events] == [
        ("job", None, "start"),
        ("workflow", None, "start"),
        ("node", "first", "start"),
        ("node", "first", "end"),
        ("node", "second", "start"),
        ("node", "second", "end"),
        ("node", "double", "start"),
        ("node", "double", "end"),
        ("workflow", None, "end"),
        ("job", None, "end"),
    ]
    assert {e["job_id"] for e in events} == {"cli-job"}
