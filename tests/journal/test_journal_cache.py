"""The cache (``cache=True``): a firing of the same task, code included, on the same inputs is taken from the journal.

Tasks live in a module written for each test, so that a test can edit it:
the cache must notice an edited task, and an edited module, and say why in
``aioflow plan`` and ``aioflow why``.
"""

from __future__ import annotations

import collections
import sqlite3
import sys
import uuid
from typing import TYPE_CHECKING, Any

import journal_tasks
import pytest

import aioflow
from aioflow import OptionError, cli
from aioflow.journal import JournalRun, plan

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TASKS = """
import os

LOG = {log!r}


def _log(name):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (name + "\\n").encode())
    finally:
        os.close(fd)


def a(x):
    _log("a")
    return x + 1


def b(y, k=0):
    _log("b")
    return y * 2 + k
"""

OTHER = """
import os


def c(z, log):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"c\\n")
    os.close(fd)
    return -z
"""


class Tasks:
    """A task module of this test's own, on ``sys.path``, and the log its tasks write."""

    def __init__(self, tmp_path: Path) -> None:
        self.name = f"cache_tasks_{uuid.uuid4().hex[:8]}"
        self.other = f"{self.name}_other"
        self.log = tmp_path / "log"
        self.file = tmp_path / f"{self.name}.py"
        self.file.write_text(TASKS.format(log=str(self.log)))
        (tmp_path / f"{self.other}.py").write_text(OTHER)

    def edit(self, old: str, new: str) -> None:
        text = self.file.read_text()
        assert old in text
        self.file.write_text(text.replace(old, new))

    def runs(self) -> collections.Counter[str]:
        counts = collections.Counter(self.log.read_text().split()) if self.log.exists() else collections.Counter()
        self.log.unlink(missing_ok=True)
        return counts

    def graph(self, x: int = 1, **b_inputs: Any) -> dict[str, Any]:
        b_defaults = [{"name": k, "value": v} for k, v in b_inputs.items()]
        return {
            "graph": {"id": "cached"},
            "nodes": [
                {"id": "a", "task_type": "method", "task_identifier": f"{self.name}.a",
                 "default_inputs": [{"name": "x", "value": x}]},
                {"id": "b", "task_type": "method", "task_identifier": f"{self.name}.b", "default_inputs": b_defaults},
                {"id": "c", "task_type": "method", "task_identifier": f"{self.other}.c",
                 "default_inputs": [{"name": "z", "value": 5}, {"name": "log", "value": str(self.log)}]},
            ],
            "links": [
                {"source": "a", "target": "b", "data_mapping": [{"source_output": "return_value", "target_input": "y"}]}
            ],
        }  # fmt: skip


@pytest.fixture
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tasks]:
    monkeypatch.syspath_prepend(str(tmp_path))
    made = Tasks(tmp_path)
    yield made
    for name in (made.name, made.other):
        sys.modules.pop(name, None)


def _reasons(graph: dict[str, Any], path: Path) -> dict[Any, tuple[str, str]]:
    planned = plan(graph, path)
    return {f.node_id: (f.action, f.reason) for f in (*planned.firings, *planned.not_reached)}


def _reused_from(path: Path, run_id: str) -> dict[str, str | None]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT node_id, reused_from FROM firings WHERE run_id = ? ORDER BY seq", (run_id,))
        return {node.strip('"'): source for node, source in rows}


@pytest.mark.parametrize("pool_type", ["thread", "process"])
def test_a_second_run_takes_every_firing_from_the_cache(tasks: Tasks, tmp_path: Path, pool_type: str) -> None:
    path = tmp_path / "runs.sqlite"
    first = aioflow.execute_graph(
        tasks.graph(), journal=JournalRun(path, run_id="one", cache=True), pool_type=pool_type, merge_outputs=False
    )
    assert tasks.runs() == {"a": 1, "b": 1, "c": 1}
    again = JournalRun(path, run_id="two", cache=True)
    second = aioflow.execute_graph(tasks.graph(), journal=again, pool_type=pool_type, merge_outputs=False)
    assert tasks.runs() == {}
    assert second == first == {"b": {"return_value": 4}, "c": {"return_value": -5}}
    assert again.reused == 3
    seqs = {str(f.node_id): f.seq for f in aioflow.journal.run_firings(path, "one")}
    assert _reused_from(path, "two") == {node: f"one:{seq}" for node, seq in seqs.items()}
    assert set(_reused_from(path, "one").values()) == {None}


@pytest.mark.parametrize(
    ("old", "new", "why", "ran"),
    [
        # Its outputs change: so do b's inputs, and b runs too.
        ("return x + 1", "return x + 10", "the code of `{name}.a` changed", {"a": 1, "b": 1}),
        # A helper of its module, which is b's too: both run again.
        ("def _log(name):", "def _log(name):  # edited", "the module of `{name}.a` changed (not `{name}.a` itself)",
         {"a": 1, "b": 1}),
    ],
    ids=["task", "module"],
)  # fmt: skip
def test_editing_a_task_or_its_module_runs_it_again_and_what_its_new_outputs_reach(
    tasks: Tasks, tmp_path: Path, old: str, new: str, why: str, ran: dict[str, int]
) -> None:
    path = tmp_path / "runs.sqlite"
    aioflow.execute_graph(tasks.graph(), journal=path, cache=True, pool_type="thread")
    tasks.runs()
    tasks.edit(old, new)
    reasons = _reasons(tasks.graph(), path)
    assert reasons["a"] == ("run", why.format(name=tasks.name))
    assert reasons["b"] == ("run", "its inputs come from `a`, which runs")
    assert reasons["c"][0] == "reuse"  # another module
    assert tasks.runs() == {}  # planning runs no task
    aioflow.execute_graph(tasks.graph(), journal=path, cache=True, pool_type="process")
    assert tasks.runs() == ran


def test_a_task_that_runs_again_and_gives_what_it_gave_leaves_what_follows_to_the_cache(
    tasks: Tasks, tmp_path: Path
) -> None:
    path = tmp_path / "runs.sqlite"
    graph = tasks.graph()
    graph["links"].append(
        {"source": "a", "target": "c", "data_mapping": [{"source_output": "return_value", "target_input": "z"}]}
    )
    first = aioflow.execute_graph(graph, journal=path, cache=True, pool_type="thread", merge_outputs=False)
    tasks.runs()
    tasks.edit("def _log(name):", "def _log(name):  # edited")  # a and b run again; a gives 2 again
    again = aioflow.execute_graph(graph, journal=path, cache=True, pool_type="thread", merge_outputs=False)
    assert again == first
    assert tasks.runs() == {"a": 1, "b": 1}  # c (another module) took its unchanged inputs from the cache


def test_changed_inputs_run_again_and_say_which(tasks: Tasks, tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    aioflow.execute_graph(tasks.graph(x=1), journal=path, cache=True, pool_type="thread")
    tasks.runs()
    reasons = _reasons(tasks.graph(x=2, k=5), path)
    assert reasons["a"] == ("run", "input `x` changed 1 → 2")
    assert reasons["b"] == ("run", "its inputs come from `a`, which runs")
    aioflow.execute_graph(tasks.graph(x=1, k=5), journal=path, cache=True, pool_type="thread")
    assert tasks.runs() == {"b": 1}
    # b's earliest and latest firings differ in k: the latest is compared.
    assert _reasons(tasks.graph(x=1, k=6), path)["b"] == ("run", "input `k` changed 5 → 6")
    assert _reasons(tasks.graph(x=1), path)["b"][0] == "reuse"  # the first run's firing is still there


def test_a_run_without_the_cache_runs_everything_and_keeps_no_identities(tasks: Tasks, tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    aioflow.execute_graph(tasks.graph(), journal=path, pool_type="thread")
    aioflow.execute_graph(tasks.graph(), journal=path, pool_type="thread")
    assert tasks.runs() == {"a": 2, "b": 2, "c": 2}
    reason = _reasons(tasks.graph(), path)["a"]
    assert reason[0] == "run"
    assert reason[1].startswith("no earlier result with the cache on")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM firings WHERE task_digest IS NOT NULL").fetchone() == (0,)


def test_a_task_whose_code_cannot_be_read_is_never_taken_from_the_cache(tasks: Tasks, tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    graph = tasks.graph()
    graph["nodes"].append({"id": "lost", "task_type": "method", "task_identifier": "no_such_module_here.f"})
    aioflow.execute_graph(tasks.graph(), journal=path, cache=True, pool_type="thread")
    action, reason = _reasons(graph, path)["lost"]
    assert action == "run"
    assert reason.startswith("its code could not be read here (ImportError: cannot import 'no_such_module_here.f'")


def test_loops_branches_and_error_handlers_come_from_the_cache(tmp_path: Path) -> None:
    log, path = tmp_path / "log", tmp_path / "runs.sqlite"
    graph = journal_tasks.big_graph(str(log), stages=3, width=5, pause=0.0)
    first = aioflow.execute_graph(graph, journal=path, cache=True, pool_type="thread", raise_on_error=False)
    log.unlink()
    second = aioflow.execute_graph(graph, journal=path, cache=True, pool_type="thread", raise_on_error=False)
    # The failed node fails again (a failure is not cached); its handler's
    # inputs (the error) are the same, so it comes from the cache.
    assert log.read_text().split() == ["bad:1"]
    assert journal_tasks.without_log(dict(second), log) == journal_tasks.without_log(dict(first), log)
    steps = plan(graph, path).firings
    assert [f.execution for f in steps if f.node_id == "loop"] == [1, 2, 3, 4, 5]
    assert {f.action for f in steps if f.node_id != "bad"} == {"reuse"}


def test_what_a_condition_on_a_running_node_hides_is_not_reached(tasks: Tasks, tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    graph = tasks.graph()
    graph["nodes"].append({"id": "d", "task_type": "method", "task_identifier": f"{tasks.name}.b"})
    graph["links"].append(
        {"source": "a", "target": "d", "data_mapping": [{"source_output": "return_value", "target_input": "y"}],
         "conditions": [{"source_output": "return_value", "value": 3}]}
    )  # fmt: skip
    aioflow.execute_graph(graph, journal=path, cache=True, pool_type="thread")  # a gives 2: d does not run
    assert _reasons(graph, path)["d"] == (
        "not reached",
        "it would not run: no link to it fires (a condition does not hold, or there is no error to handle)",
    )
    graph["nodes"][0]["default_inputs"] = [{"name": "x", "value": 2}]  # a runs: d may
    assert _reasons(graph, path)["d"] == ("not reached", "whether it runs depends on what `a` will produce")


def test_resume_true_continues_the_latest_unfinished_run_of_the_graph(tmp_path: Path) -> None:
    log, flag, path = tmp_path / "log", tmp_path / "flag", tmp_path / "runs.sqlite"
    graph = journal_tasks.fixable_graph(str(log), str(flag))
    with pytest.raises(aioflow.NodeError):
        aioflow.execute_graph(graph, journal=path, pool_type="thread")
    flag.touch()
    run = JournalRun(path, resume=True)
    aioflow.execute_graph(graph, journal=run, pool_type="thread")
    first = next(r.run_id for r in aioflow.journal.list_runs(path) if r.state == "failed")
    assert run.resumed == first
    assert collections.Counter(log.read_text().split()) == {"a:1": 1, "b:1": 2, "c:1": 1}
    # Nothing left unfinished: the next run starts afresh.
    aioflow.execute_graph(graph, journal=path, resume=True, pool_type="thread")
    assert collections.Counter(log.read_text().split()) == {"a:1": 2, "b:1": 3, "c:1": 2}


def test_cache_and_resume_need_a_journal_path(tmp_path: Path) -> None:
    graph = {"nodes": [{"id": "a", "task_type": "method", "task_identifier": "operator.neg",
                        "default_inputs": [{"name": 0, "value": 1}]}]}  # fmt: skip
    with pytest.raises(OptionError, match="'cache' needs a journal"):
        aioflow.execute_graph(graph, cache=True)
    with pytest.raises(OptionError, match="'resume' needs a journal"):
        aioflow.execute_graph(graph, resume=True)
    with pytest.raises(OptionError, match="given to the JournalRun itself"):
        aioflow.execute_graph(graph, journal=JournalRun(tmp_path / "j.sqlite"), cache=True)
    with pytest.raises(OptionError, match="'cache' must be True or False"):
        JournalRun(tmp_path / "j.sqlite", cache="yes")  # type: ignore[arg-type]


def test_plan_and_why_on_the_command_line(
    tasks: Tasks, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.json").write_text(json.dumps(tasks.graph()))
    path = str(tmp_path / "runs.sqlite")
    assert cli.main(["run", "g.json", "--journal", path, "--cache", "--pool", "thread"]) == 0
    assert cli.main(["run", "g.json", "--journal", path, "--cache", "--pool", "thread"]) == 0
    assert tasks.runs() == {"a": 1, "b": 1, "c": 1}
    capsys.readouterr()
    assert cli.main(["runs", path, "--json"]) == 0
    assert [(run["finished"], run["reused"]) for run in json.loads(capsys.readouterr().out)] == [(3, 0), (3, 3)]
    assert cli.main(["plan", "g.json", "--journal", path, "-i", "a:x=3"]) == 0
    out, err = capsys.readouterr()
    lines = {node: (action, reason) for action, node, reason in (line.split(None, 2) for line in out.splitlines())}
    assert lines["a"] == ("run", "input `x` changed 1 → 3")
    assert lines["b"] == ("run", "its inputs come from `a`, which runs")
    assert lines["c"][0] == "reuse"
    assert lines["c"][1].startswith("same code and inputs as firing ")
    assert "2 to run, 1 reused, 0 not reached" in err
    assert cli.main(["why", "g.json", "b", "--journal", path, "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["node_id"], e["action"]) for e in entries] == [("b", "reuse")]
    assert cli.main(["why", "g.json", "nope", "--journal", path]) == 2
    assert tasks.runs() == {}
