"""Resuming a run from its journal: finished firings are not run again, and the results are an uninterrupted run's.

The hard case runs for real: a driving process is SIGKILLed at a random
moment of a 1,004-node graph (branches, a loop, an error handler), and the
run is resumed from what its journal had committed.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import journal_tasks
import pytest

import aioflow
from aioflow import JournalError, NodeError
from aioflow.journal import JournalRun, list_runs, run_firings

HERE = Path(__file__).resolve().parent


def _log_counts(log: Path) -> collections.Counter[str]:
    return collections.Counter(log.read_text().split()) if log.exists() else collections.Counter()


def _fixable(log: Path, flag: Path) -> dict[str, Any]:
    return journal_tasks.fixable_graph(str(log), str(flag))


def test_a_failed_run_resumes_without_running_what_finished(tmp_path: Path) -> None:
    log, flag, path = tmp_path / "log", tmp_path / "flag", tmp_path / "runs.sqlite"
    graph = _fixable(log, flag)
    with pytest.raises(NodeError):
        aioflow.execute_graph(graph, journal=JournalRun(path, run_id="first"), pool_type="thread")
    assert _log_counts(log) == {"a:1": 1, "b:1": 1}
    flag.touch()  # the fix
    run = JournalRun(path, run_id="second", resume="first")
    results = aioflow.execute_graph(graph, journal=run, pool_type="thread")
    assert results["return_value"] == 1 + 1 + 100 + 1
    assert run.reused == 1
    assert _log_counts(log) == {"a:1": 1, "b:1": 2, "c:1": 1}  # a did not run again
    states = {r.run_id: (r.state, r.finished, r.failed) for r in list_runs(path)}
    assert states == {"first": ("failed", 1, 1), "second": ("finished", 3, 0)}
    # The resumed run is complete by itself: resuming it reuses all three.
    again = JournalRun(path, run_id="third", resume="second")
    assert aioflow.execute_graph(graph, journal=again, pool_type="thread") == results
    assert again.reused == 3
    assert _log_counts(log) == {"a:1": 1, "b:1": 2, "c:1": 1}


def test_a_firing_with_other_inputs_runs_again(tmp_path: Path) -> None:
    log, flag, path = tmp_path / "log", tmp_path / "flag", tmp_path / "runs.sqlite"
    flag.touch()
    graph = _fixable(log, flag)
    aioflow.execute_graph(graph, journal=JournalRun(path, run_id="first"), pool_type="thread")
    run = JournalRun(path, run_id="second", resume="first")
    results = aioflow.execute_graph(
        graph, journal=run, pool_type="thread", inputs=[{"id": "a", "name": "x", "value": 5}]
    )
    assert results["return_value"] == 5 + 1 + 100 + 1
    assert run.reused == 0  # a's inputs changed, and so did those of b and c
    assert _log_counts(log) == {"a:1": 2, "b:1": 2, "c:1": 2}


def test_resuming_with_another_graph_or_an_unknown_run_is_refused(tmp_path: Path) -> None:
    log, flag, path = tmp_path / "log", tmp_path / "flag", tmp_path / "runs.sqlite"
    flag.touch()
    graph = _fixable(log, flag)
    aioflow.execute_graph(graph, journal=JournalRun(path, run_id="first"), pool_type="thread")
    changed = _fixable(log, flag)
    changed["links"] = changed["links"][:1]
    with pytest.raises(JournalError, match=r"run 'first' ran another graph .*: it cannot be resumed with this one"):
        aioflow.execute_graph(changed, journal=JournalRun(path, resume="first"), pool_type="thread")
    with pytest.raises(JournalError, match="has no run 'nope' to resume"):
        aioflow.execute_graph(graph, journal=JournalRun(path, resume="nope"), pool_type="thread")
    with pytest.raises(JournalError, match="has a run 'first' already"):
        aioflow.execute_graph(graph, journal=JournalRun(path, run_id="first"), pool_type="thread")
    assert [r.run_id for r in list_runs(path)] == ["first"]  # nothing was recorded of the refused runs
    assert _log_counts(log)["a:1"] == 1


DRIVER = textwrap.dedent(
    """
    import sys
    import aioflow, journal_tasks
    from aioflow.journal import JournalRun
    path, log, run_id, pool = sys.argv[1:5]
    graph = journal_tasks.big_graph(log)
    aioflow.execute_graph(graph, journal=JournalRun(path, run_id=run_id), pool_type=pool, max_workers=4)
    """
)

ALL: dict[str, Any] = {"outputs": [{"all": True}], "merge_outputs": False}


def _kill_at_random(path: Path, log: Path, pool: str, rng: random.Random) -> tuple[str, bool]:
    """Start the driver, SIGKILL it once its journal holds a random number of finished firings; the run id, killed."""
    run_id = f"killed-{rng.randrange(10**9)}"
    threshold = rng.randrange(20, 950)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    errors = path.with_suffix(".stderr")
    with errors.open("wb") as err:  # a file, not a pipe: a driver that writes much never waits on it
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(path), str(log), run_id, pool], env=env, stderr=err)
    killed = False
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if journal_tasks.finished_firings(path, run_id) >= threshold:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed or proc.returncode == 0, errors.read_text()
    return run_id, killed


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_run_whose_driver_was_killed_resumes_to_the_same_results(tmp_path: Path, pool: str) -> None:
    rng = random.Random(f"{pool}-{os.getpid()}-{time.time()}")
    reference_log = tmp_path / "reference.log"
    expected = aioflow.execute_graph(
        journal_tasks.big_graph(str(reference_log)), pool_type="thread", max_workers=4, **ALL
    )
    kills = 0
    for attempt in range(3):
        path, log = tmp_path / f"runs-{attempt}.sqlite", tmp_path / f"run-{attempt}.log"
        run_id, killed = _kill_at_random(path, log, pool, rng)
        kills += killed
        recorded = {(f.node_id, f.execution) for f in run_firings(path, run_id) if f.status == "finished"}
        resumed = JournalRun(path, run_id=f"resumed-{attempt}", resume=run_id)
        results = aioflow.execute_graph(
            journal_tasks.big_graph(str(log)), journal=resumed, pool_type=pool, max_workers=4, **ALL
        )
        assert journal_tasks.without_log(results, log) == journal_tasks.without_log(expected, reference_log)
        assert results.executions == expected.executions
        counts = _log_counts(log)
        twice = [f"{node}:{number}" for node, number in recorded if counts[f"{node}:{number}"] != 1]
        assert twice == [], f"finished before the kill, and run again: {twice}"
        assert resumed.reused >= len([r for r in recorded if r[0] != "bad"])
        runs = {r.run_id: r for r in list_runs(path)}
        if killed:
            assert runs[run_id].state == "running"  # its process died: it never ended
            assert runs[run_id].ended is None
        assert runs[resumed.run_id].state == "finished"
    assert kills >= 1
