"""``varinfo`` (results saved and reused) and ``execinfo`` (ewoks events) with real files and a real handler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ewoksppf
import pytest
from ewokscore.events import cleanup as cleanup_events
from ewokscore.tests import test_workflow_events as reference
from ewoksutils.event_utils import FIELD_TYPES
from ewoksutils.sqlite3_utils import connect, select
from twin_tasks import TWINS

import aioflow
import aioflow.ewoks

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]
TASKS = "examples.ewoks.tasks"
COUNTED = "counted_tasks"  # next to this file

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


def mixed_chain(log_file: Path) -> dict[str, Any]:
    """Two ``class`` tasks, then two counted ``method`` tasks; every node but the first has linked inputs."""
    log = {"name": "log_file", "value": str(log_file)}
    return {
        "graph": {"id": "mixed"},
        "nodes": [
            {
                "id": "first",
                "task_type": "class",
                "task_identifier": f"{TASKS}.Add",
                "default_inputs": [{"name": "a", "value": 1}, log],
            },
            {
                "id": "second",
                "task_type": "class",
                "task_identifier": f"{TASKS}.Add",
                "default_inputs": [{"name": "b", "value": 10}, log],
            },
            {
                "id": "m1",
                "task_type": "method",
                "task_identifier": f"{COUNTED}.add_logged",
                "default_inputs": [{"name": "b", "value": 2}, {"name": "name", "value": "m1"}, log],
            },
            {
                "id": "m2",
                "task_type": "method",
                "task_identifier": f"{COUNTED}.add_logged",
                "default_inputs": [{"name": "name", "value": "m2"}, log],
            },
        ],
        "links": [
            {"source": "first", "target": "second", "data_mapping": [{"source_output": "result", "target_input": "a"}]},
            {"source": "second", "target": "m1", "data_mapping": [{"source_output": "result", "target_input": "a"}]},
            # Two links into m2: its inputs come from two different upstream outputs.
            {"source": "m1", "target": "m2", "data_mapping": [{"source_output": "return_value", "target_input": "a"}]},
            {"source": "second", "target": "m2", "data_mapping": [{"source_output": "result", "target_input": "b"}]},
        ],
    }


def ran(log_file: Path) -> list[str]:
    """The nodes that really ran, in the log's order (one line per execution)."""
    if not log_file.exists():
        return []
    return [line.split()[0] for line in log_file.read_text().splitlines()]


def saved_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def run_ppf(graph: dict[str, Any], root: Path) -> Any:
    return ewoksppf.execute_graph(graph, varinfo={"root_uri": str(root), "scheme": "json"}, pool_type="thread")


def run_aioflow(graph: dict[str, Any], root: Path, pool: dict[str, Any]) -> Any:
    return aioflow.ewoks.execute_graph(graph, varinfo={"root_uri": str(root), "scheme": "json"}, **pool)


EXPECTED_MIXED = {"return_value": 24}  # first 1, second 11, m1 13, m2 13 + 11


@pytest.mark.parametrize("pool", POOLS)
def test_saved_files_are_named_as_under_ewoksppf(tmp_path: Path, pool: dict[str, Any]) -> None:
    """The same graph saves the same files under root_uri on ewoksppf and on aioflow."""
    log_file = tmp_path / "executions.log"
    assert run_ppf(mixed_chain(log_file), tmp_path / "ppf") == EXPECTED_MIXED
    assert run_aioflow(mixed_chain(log_file), tmp_path / "aioflow", pool) == EXPECTED_MIXED
    assert ran(log_file) == ["first", "second", "m1", "m2"] * 2
    ppf_files = saved_files(tmp_path / "ppf")
    # Each of the 4 tasks saves its outputs container and its one output.
    assert len(ppf_files) == 8
    assert saved_files(tmp_path / "aioflow") == ppf_files


@pytest.mark.parametrize("pool", POOLS)
def test_results_saved_by_ewoksppf_are_reused_by_aioflow(tmp_path: Path, pool: dict[str, Any]) -> None:
    """aioflow finds every task done in what ewoksppf saved: it runs none of them, and returns the same result."""
    log_file = tmp_path / "executions.log"
    root = tmp_path / "cache"
    assert run_ppf(mixed_chain(log_file), root) == EXPECTED_MIXED
    assert ran(log_file) == ["first", "second", "m1", "m2"]
    before = saved_files(root)
    assert run_aioflow(mixed_chain(log_file), root, pool) == EXPECTED_MIXED
    assert ran(log_file) == ["first", "second", "m1", "m2"]  # nothing ran again
    assert saved_files(root) == before


@pytest.mark.parametrize("pool", POOLS)
def test_results_saved_by_aioflow_are_reused_by_ewoksppf(tmp_path: Path, pool: dict[str, Any]) -> None:
    """ewoksppf finds every task done in what aioflow saved."""
    log_file = tmp_path / "executions.log"
    root = tmp_path / "cache"
    assert run_aioflow(mixed_chain(log_file), root, pool) == EXPECTED_MIXED
    assert sorted(ran(log_file)) == ["first", "m1", "m2", "second"]
    before = saved_files(root)
    assert run_ppf(mixed_chain(log_file), root) == EXPECTED_MIXED
    assert len(ran(log_file)) == 4  # nothing ran again
    assert saved_files(root) == before


def test_changed_upstream_input_reruns_only_what_depends_on_it(tmp_path: Path) -> None:
    """A new value at the start gives new identities all the way down; a node whose inputs are unchanged is reused."""
    log_file = tmp_path / "executions.log"
    root = tmp_path / "cache"
    assert run_ppf(mixed_chain(log_file), root) == EXPECTED_MIXED
    graph = mixed_chain(log_file)
    graph["nodes"][2]["default_inputs"][0]["value"] = 3  # m1's b: first and second are unchanged
    assert run_aioflow(graph, root, {"pool_type": "thread"}) == {"return_value": 25}
    assert ran(log_file) == ["first", "second", "m1", "m2", "m1", "m2"]


def counted_loop(log_file: Path, *, feed_back: bool) -> dict[str, Any]:
    """``a`` (a + 1) -> ``b`` (+ 1) -> ``a`` when ``b`` gives 2: ``a`` gets ``b``'s result back, or only a trigger."""
    log = {"name": "log_file", "value": str(log_file)}
    back: dict[str, Any] = {
        "source": "b",
        "target": "a",
        "required": False,
        "conditions": [{"source_output": "return_value", "value": 2}],
    }
    if feed_back:
        back["data_mapping"] = [{"source_output": "return_value", "target_input": "a"}]
    node_b: dict[str, Any] = {
        "id": "b",
        "task_type": "method",
        "task_identifier": f"{COUNTED}.add_logged",
        "default_inputs": [{"name": "b", "value": 1}, {"name": "name", "value": "b"}, log],
    }
    return {
        "graph": {"id": "loop"},
        "nodes": [
            {
                "id": "a",
                "force_start_node": True,
                "task_type": "method",
                "task_identifier": f"{COUNTED}.add_logged",
                "default_inputs": [
                    {"name": "a", "value": 0},
                    {"name": "b", "value": 1},
                    {"name": "name", "value": "a"},
                    log,
                ],
            },
            node_b,
        ],
        "links": [
            {"source": "a", "target": "b", "data_mapping": [{"source_output": "return_value", "target_input": "a"}]},
            back,
        ],
    }


def test_loop_iterations_with_new_data_run_and_are_saved_apart(tmp_path: Path) -> None:
    """Each iteration's inputs come from the previous one's outputs: new identities, so every iteration runs."""
    log_file = tmp_path / "executions.log"
    root = tmp_path / "cache"
    result = run_aioflow(counted_loop(log_file, feed_back=True), root, {"pool_type": "thread"})
    # a: 0+1=1, b: 1+1=2 -> back to a with a=2: a 3, b 4: the loop ends.
    assert result == {"return_value": 4}
    assert ran(log_file) == ["a", "b", "a", "b"]
    assert len([p for p in root.rglob("*.json") if p.parent.name == "return_value"]) == 4
    again = run_aioflow(counted_loop(log_file, feed_back=True), root, {"pool_type": "thread"})
    assert again == result
    assert len(ran(log_file)) == 4  # every iteration was found saved


def test_loop_iterations_with_identical_inputs_are_done_after_the_first(tmp_path: Path) -> None:
    """A task fed the same inputs again is done: its saved outputs are reused and it does not run (as under ewoksppf).

    Here the loop's data never changes, so it only ends at max_iterations; without persistence the
    tasks run on every iteration.
    """
    log_file = tmp_path / "executions.log"
    with pytest.raises(aioflow.IterationLimitError):
        run_aioflow(
            counted_loop(log_file, feed_back=False), tmp_path / "cache", {"pool_type": "thread", "max_iterations": 3}
        )
    assert ran(log_file) == ["a", "b"]
    log_file.unlink()
    with pytest.raises(aioflow.IterationLimitError):
        aioflow.ewoks.execute_graph(counted_loop(log_file, feed_back=False), max_iterations=3, pool_type="thread")
    assert ran(log_file) == ["a", "b"] * 3


@pytest.fixture
def twins() -> Iterator[None]:
    TWINS.reset()
    yield
    TWINS.reset()


@pytest.mark.usefixtures("twins")
@pytest.mark.parametrize("scheme", ["nexus", "json"])
def test_twin_tasks_save_their_outputs_one_at_a_time(scheme: str, tmp_path: Path) -> None:
    """Two executions of one task with the same inputs take turns: the second loads what the first saved."""
    graph = {
        "graph": {"id": "twins"},
        "nodes": [
            {
                "id": node_id,
                "task_type": "class",
                "task_identifier": "twin_tasks.WaitForTwin",
                "default_inputs": [{"name": "x", "value": 7}],
            }
            for node_id in ("one", "two")
        ],
    }
    varinfo = {"root_uri": str(tmp_path), "scheme": scheme}
    result = aioflow.ewoks.execute_graph(graph, pool_type="thread", max_workers=2, varinfo=varinfo)
    assert result == {"result": 7}
    assert (TWINS.ran, TWINS.most_at_once) == (1, 1)


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
