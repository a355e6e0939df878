"""``aioflow run --journal FILE`` and ``aioflow runs FILE``."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import journal_tasks

from aioflow import cli
from aioflow.journal import run_firings

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

GRAPH = {
    "graph": {"id": "sum"},
    "nodes": [
        {"id": "a", "task_type": "method", "task_identifier": "operator.add",
         "default_inputs": [{"name": 0, "value": 2}, {"name": 1, "value": 3}]},
    ],
    "links": [],
}  # fmt: skip


def test_run_records_in_the_journal_and_runs_lists_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "sum.json"
    graph.write_text(json.dumps(GRAPH))
    journal = tmp_path / "runs.sqlite"
    assert cli.main(["run", str(graph), "--pool", "thread", "--journal", str(journal)]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert json.loads(out) == {"return_value": 5}
    match = re.search(r"run ([0-9a-f]{32}) recorded in ", err)
    assert match is not None, err
    run_id = match.group(1)
    [firing] = run_firings(journal, run_id)
    assert (firing.node_id, firing.status, firing.outputs) == ("a", "finished", {"return_value": 5})

    assert cli.main(["runs", str(journal)]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RUN", "GRAPH", "STARTED", "STATE", "DONE", "FAILED", "UNENDED", "REUSED"]
    assert lines[1].split()[:2] == [run_id, "sum"]
    assert lines[1].split()[-5:] == ["finished", "1", "0", "0", "0"]

    assert cli.main(["runs", str(journal), "--json"]) == cli.EXIT_OK
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["run_id"], listed["state"], listed["finished"]) == (run_id, "finished", 1)


def test_runs_of_a_file_that_is_not_a_journal_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a journal")
    assert cli.main(["runs", str(path)]) == cli.EXIT_USAGE
    assert "is not a journal (not an SQLite database)" in capsys.readouterr().err
    assert cli.main(["runs", str(tmp_path / "missing.sqlite")]) == cli.EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite").exists()


def test_resume_continues_a_failed_run_from_the_graph_the_journal_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, flag = tmp_path / "log", tmp_path / "flag"

    graph = journal_tasks.fixable_graph(str(log), str(flag), third=False)
    graph_file = tmp_path / "fixable.json"
    graph_file.write_text(json.dumps(graph))
    journal = tmp_path / "runs.sqlite"
    assert cli.main(["run", str(graph_file), "--pool", "thread", "--journal", str(journal)]) == cli.EXIT_FAILED
    first = re.search(r"run ([0-9a-f]{32}) recorded", capsys.readouterr().err)
    assert first is not None
    graph_file.unlink()  # the journal kept the graph
    flag.touch()
    assert cli.main(["resume", str(journal), first.group(1), "--pool", "thread"]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert json.loads(out) == {"return_value": 102}
    assert f"resuming {first.group(1)}" in err
    assert log.read_text().split() == ["a:1", "b:1", "b:1"]  # a ran once, b failed then ran
    assert cli.main(["resume", str(journal), "no-such-run", "--pool", "thread"]) == cli.EXIT_USAGE
    assert "has no run 'no-such-run'" in capsys.readouterr().err
