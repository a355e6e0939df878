"""A run journal through the Ewoks front end: ``ewoks.execute_graph(..., engine="aioflow", journal=...)`` and
``ewoks execute --engine aioflow -o journal=FILE``; and the journal beside ``varinfo``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from ewoks.bindings import execute_graph as ewoks_execute_graph

from aioflow.journal import JournalRun, list_runs, run_firings

REPO = Path(__file__).resolve().parents[2]
SUM_CHAIN = REPO / "examples" / "ewoks" / "sum_chain.json"


def test_the_ewoks_binding_records_the_run_and_resumes_it(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    first = JournalRun(path, run_id="first")
    result = ewoks_execute_graph(str(SUM_CHAIN), engine="aioflow", journal=first, pool_type="thread")
    [run] = list_runs(path)
    assert (run.run_id, run.state) == ("first", "finished")
    firings = run_firings(path, "first")
    assert firings
    assert all(f.status == "finished" for f in firings)
    again = JournalRun(path, run_id="again", resume="first")
    assert ewoks_execute_graph(str(SUM_CHAIN), engine="aioflow", journal=again, pool_type="thread") == result
    assert again.reused == len(firings)


def test_the_ewoks_cli_takes_a_journal_option(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    command = [
        sys.executable, "-m", "ewoks", "execute", str(SUM_CHAIN), "--engine", "aioflow",
        "-o", "pool_type=thread", "-o", f"journal={path}",
    ]  # fmt: skip
    out = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    [run] = list_runs(path)
    assert run.state == "finished"
    assert run.finished == len(run_firings(path, run.run_id)) > 0


def test_the_journal_and_varinfo_work_side_by_side(tmp_path: Path) -> None:
    """varinfo saves each task's outputs for ewokscore; the journal records the run: both happen."""
    path = tmp_path / "runs.sqlite"
    varinfo = {"root_uri": str(tmp_path / "saved"), "scheme": "json"}
    ewoks_execute_graph(str(SUM_CHAIN), engine="aioflow", journal=path, varinfo=varinfo, pool_type="thread")
    assert list(Path(varinfo["root_uri"]).rglob("*.json"))
    [run] = list_runs(path)
    assert run.state == "finished"


def test_the_ewoks_cli_runs_with_the_cache(tmp_path: Path) -> None:
    """``-o cache=true``: a second run takes every ewokscore task's outputs from the first, code digested."""
    path = tmp_path / "runs.sqlite"
    command = [
        sys.executable, "-m", "ewoks", "execute", str(SUM_CHAIN), "--engine", "aioflow",
        "-o", "pool_type=thread", "-o", f"journal={path}", "-o", "cache=true",
    ]  # fmt: skip
    for _ in range(2):
        out = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert out.returncode == 0, out.stderr
    first, second = list_runs(path)
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT task_digest, reused_from FROM firings WHERE run_id = ? ORDER BY seq", (second.run_id,)
        ).fetchall()
    assert rows
    assert all(task is not None and source is not None and source.startswith(first.run_id) for task, source in rows)
