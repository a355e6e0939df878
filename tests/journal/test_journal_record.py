"""``execute_graph(..., journal=...)``: every firing of a run recorded, loops and failures included."""

from __future__ import annotations

import os
import pickle
import socket
from typing import TYPE_CHECKING, Any

import journal_tasks
import pytest

import aioflow
from aioflow import NodeError, OptionError
from aioflow.journal import JournalRun, list_runs, run_firings
from aioflow.journal._record import MAX_OUTPUTS, graph_digest, inputs_digest, node_from_key, node_key

if TYPE_CHECKING:
    from pathlib import Path


def _link(source: str, target: str, output: str, name: str | int, **extra: Any) -> dict[str, Any]:
    return {"source": source, "target": target, "data_mapping": [{"source_output": output, "target_input": name}],
            **extra}  # fmt: skip


def _positional(nid: str, func: str, *values: Any) -> dict[str, Any]:
    inputs = [{"name": i, "value": v} for i, v in enumerate(values) if v is not None]
    return {"id": nid, "task_type": "method", "task_identifier": func, "default_inputs": inputs}


CHAIN: dict[str, Any] = {
    "graph": {"id": "chain"},
    "nodes": [_positional("a", "operator.add", 1, 2), _positional("b", "operator.mul", None, 10)],
    "links": [_link("a", "b", "return_value", 0)],
}


@pytest.mark.parametrize("pool_type", ["thread", "process"])
def test_each_firing_is_recorded_with_its_outputs(tmp_path: Path, pool_type: str) -> None:
    path = tmp_path / "runs.sqlite"
    run = JournalRun(path, run_id="first")
    results = aioflow.execute_graph(CHAIN, journal=run, pool_type=pool_type, max_workers=2)
    assert results["return_value"] == 30
    [summary] = list_runs(path)
    assert summary.run_id == "first"
    assert (summary.graph_id, summary.state, summary.finished, summary.failed) == ("chain", "finished", 2, 0)
    assert summary.ended is not None
    assert summary.ended >= summary.started
    assert (summary.host, summary.pid) == (socket.gethostname(), os.getpid())
    firings = run_firings(path, "first")
    assert [(f.seq, f.node_id, f.execution, f.status) for f in firings] == [
        (0, "a", 1, "finished"),
        (1, "b", 1, "finished"),
    ]
    assert firings[0].outputs == {"return_value": 3}
    assert firings[1].outputs == {"return_value": 30}
    assert firings[1].inputs_digest == inputs_digest({0: 3, 1: 10})
    assert all(f.ended is not None and f.started is not None and f.ended >= f.started for f in firings)


def test_a_path_gives_a_new_run_each_time(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    aioflow.execute_graph(CHAIN, journal=path, pool_type="thread")
    aioflow.execute_graph(CHAIN, journal=str(path), pool_type="thread")
    runs = list_runs(path)
    assert len(runs) == 2
    assert len({r.run_id for r in runs}) == 2
    assert {r.state for r in runs} == {"finished"}


# A loop: "loop" feeds itself while its count is below 5 (journal_tasks.count).
def _loop_graph(log: Path) -> dict[str, Any]:
    return journal_tasks.big_graph(str(log), stages=1, width=1, pause=0)


def test_a_loop_records_each_iteration_as_a_firing_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    graph = _loop_graph(tmp_path / "log")
    aioflow.execute_graph(graph, journal=JournalRun(path, run_id="loop"), pool_type="thread")
    firings = run_firings(path, "loop")
    assert sorted(f.seq for f in firings) == list(range(len(firings)))
    loops = [f for f in firings if f.node_id == "loop"]
    assert [f.execution for f in loops] == [1, 2, 3, 4, 5]
    assert [f.outputs["_ppfdict"]["n"] for f in loops if f.outputs is not None] == [1, 2, 3, 4, 5]
    assert all(f.status == "finished" for f in loops)
    by_node = {f.node_id: f for f in firings}
    assert by_node["bad"].status == "failed"
    assert by_node["handler"].outputs == {"return_value": "handled"}


def test_a_failed_node_and_a_failed_run_are_recorded(tmp_path: Path) -> None:
    graph = {
        "graph": {"id": "fails"},
        "nodes": [_positional("ok", "operator.add", 1, 1), _positional("bad", "operator.truediv", 1, 0)],
        "links": [],
    }
    path = tmp_path / "runs.sqlite"
    with pytest.raises(NodeError):
        aioflow.execute_graph(graph, journal=JournalRun(path, run_id="r"), pool_type="thread")
    [summary] = list_runs(path)
    assert summary.state == "failed"
    by_node = {f.node_id: f for f in run_firings(path, "r")}
    assert by_node["bad"].status == "failed"
    assert by_node["bad"].error == "ZeroDivisionError: division by zero"
    assert by_node["bad"].outputs is None


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("not today")


def make_unpicklable() -> Unpicklable:
    return Unpicklable()


def test_outputs_that_cannot_be_pickled_are_noted_not_stored(tmp_path: Path) -> None:
    graph = {
        "graph": {"id": "odd"},
        "nodes": [{"id": "x", "task_type": "method", "task_identifier": f"{__name__}.make_unpicklable"}],
        "links": [],
    }
    path = tmp_path / "runs.sqlite"
    results = aioflow.execute_graph(graph, journal=JournalRun(path, run_id="r"), pool_type="thread")
    assert isinstance(results["return_value"], Unpicklable)
    [firing] = run_firings(path, "r")
    assert firing.status == "finished"
    assert firing.outputs is None
    assert firing.outputs_note == "not stored: they cannot be pickled (TypeError: not today)"


def test_an_invalid_journal_option_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"'journal' must be a file path or an aioflow\.journal\.JournalRun"):
        aioflow.execute_graph(CHAIN, journal=42, pool_type="thread")


def test_an_exception_digests_the_same_however_it_pickles() -> None:
    """An error handler's inputs hold the failed node's exception: equal exceptions, equal digests.

    An exception whose ``__dict__`` was once looked at (as some libraries'
    code does) pickles with it, empty: another pickle, the same exception.
    """
    plain = ValueError("broken")
    looked_at = ValueError("broken")
    assert looked_at.__dict__ == {}
    assert pickle.dumps(plain) != pickle.dumps(looked_at)
    assert inputs_digest({"e": plain, "n": 1}) == inputs_digest({"e": looked_at, "n": 1})
    with_trace = {"errorMessage": "broken", "traceBack": ["File 'a.py'"]}
    elsewhere = {"errorMessage": "broken", "traceBack": ["File '/elsewhere/a.py'"]}
    assert inputs_digest({"WorkflowException": with_trace}) == inputs_digest({"WorkflowException": elsewhere})
    other = {"errorMessage": "other", "traceBack": ["File 'a.py'"]}
    assert inputs_digest({"WorkflowException": with_trace}) != inputs_digest({"WorkflowException": other})
    looked_at.detail = 3  # type: ignore[attr-defined]
    assert inputs_digest({"e": plain, "n": 1}) != inputs_digest({"e": looked_at, "n": 1})


def test_node_ids_and_digests() -> None:
    import json

    for nid in ("a", 3, ("sub", "a"), ("outer", ("inner", 2)), 'q"x', "b\\s", "é", "tab\t", "", "\x7f", "a b/c"):
        assert node_from_key(node_key(nid)) == nid
        assert node_key(nid) == json.dumps(nid, separators=(",", ":"))
    assert inputs_digest({"b": 1, "a": 2}) == inputs_digest({"a": 2, "b": 1})
    assert inputs_digest({"a": 2}) != inputs_digest({"a": 3})
    assert inputs_digest({"a": Unpicklable()}) is None
    shared = "x" * 20
    copied = "".join(["x"] * 20)
    assert inputs_digest({"a": shared, "b": {"c": shared}}) == inputs_digest({"a": shared, "b": {"c": copied}})
    assert inputs_digest({"a": {"p": 1, "q": 2}}) == inputs_digest({"a": {"q": 2, "p": 1}})
    assert inputs_digest({"a": [1, 2]}) != inputs_digest({"a": (1, 2)})
    assert inputs_digest({"a": {1: 2}}) != inputs_digest({"a": ((1, 2),)})
    assert inputs_digest({"e": ValueError("x")}) == inputs_digest({"e": ValueError("x")})
    assert inputs_digest({"e": ValueError("x")}) != inputs_digest({"e": ValueError("y")})
    assert inputs_digest({"e": ValueError("x")}) != inputs_digest({"e": TypeError("x")})
    looped: list[Any] = []
    looped.append(looped)
    assert inputs_digest({"a": looped}) is None
    one = aioflow.load_graph(CHAIN)
    other_inputs = aioflow.load_graph({**CHAIN, "nodes": [_positional("a", "operator.add", 1, 3), CHAIN["nodes"][1]]})
    other_task = aioflow.load_graph({**CHAIN, "nodes": [_positional("a", "operator.sub", 1, 2), CHAIN["nodes"][1]]})
    no_link = aioflow.load_graph({**CHAIN, "links": []})
    assert graph_digest(one) == graph_digest(aioflow.load_graph(CHAIN)) == graph_digest(other_inputs)
    assert len({graph_digest(one), graph_digest(other_task), graph_digest(no_link)}) == 3
    assert MAX_OUTPUTS == 64 * 1024 * 1024
    assert pickle.loads(pickle.dumps(one.links)) == one.links


def test_a_firing_still_running_is_in_the_journal_as_started_and_a_short_one_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A firing that outlasts a hand-over to the writer (10 ms) has a ``started`` row while it runs, updated at its
    end; a firing that ends before it is written once, as it ends."""
    import threading
    import time

    from aioflow.journal import _store

    handed: list[tuple[str, Any]] = []
    write_all = _store.Writer.write_all

    def spy(self: _store.Writer, statements: list[Any]) -> None:
        handed.extend(statements)
        write_all(self, statements)

    monkeypatch.setattr(_store.Writer, "write_all", spy)
    path = tmp_path / "runs.sqlite"
    graph = {
        "graph": {"id": "slow"},
        "nodes": [
            _positional("quick", "operator.neg", 1),
            {"id": "slow", "task_type": "method", "task_identifier": "time.sleep",
             "default_inputs": [{"name": 0, "value": 1.0}]},
        ],
        "links": [],
    }  # fmt: skip
    done = threading.Event()

    def run() -> None:
        aioflow.execute_graph(graph, journal=JournalRun(path, run_id="r"), pool_type="thread")
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    seen = None
    deadline = time.monotonic() + 30
    while seen is None and time.monotonic() < deadline and not done.is_set():
        try:
            seen = next((f for f in run_firings(path, "r") if f.node_id == "slow" and f.status == "started"), None)
        except aioflow.JournalError:
            pass  # not created yet
        time.sleep(0.02)
    worker.join(60)
    assert seen is not None, "the running firing was not in the journal while it ran"
    assert [(f.node_id, f.status) for f in run_firings(path, "r")] == [("quick", "finished"), ("slow", "finished")]
    of_quick = [(sql.split()[0], params) for sql, params in handed if params[:3] == ("r", 0, '"quick"') or (
        sql.startswith("UPDATE") and params[-2:] == ("r", 0))]  # fmt: skip
    assert [(verb, params[8]) for verb, params in of_quick] == [("INSERT", "finished")]
    of_slow = [sql.split()[0] for sql, params in handed if params[:2] == ("r", 1) or params[-2:] == ("r", 1)]
    assert of_slow == ["INSERT", "UPDATE"]


GEVENT_PROGRAM = """
from gevent import monkey

monkey.patch_all()
import sys

import aioflow
from aioflow.journal import JournalRun, list_runs

path = sys.argv[1]
graph = {"nodes": [{"id": i, "task_type": "method", "task_identifier": "operator.neg",
                    "default_inputs": [{"name": 0, "value": i}]} for i in range(50)]}
first = aioflow.execute_graph(graph, journal=JournalRun(path, cache=True), pool_type="gevent", merge_outputs=False)
again = JournalRun(path, cache=True)
second = aioflow.execute_graph(graph, journal=again, pool_type="gevent", merge_outputs=False)
print(first == second, again.reused, [(r.state, r.finished) for r in list_runs(path)])
"""


def test_a_gevent_patched_program_journals_its_runs_on_the_gevent_pool(tmp_path: Path) -> None:
    """The writer is a thread of the journal's own: under gevent's patching too, runs are recorded and cached."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", GEVENT_PROGRAM, str(tmp_path / "runs.sqlite")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True 50 [('finished', 50), ('finished', 50)]"
