"""A worker that dies fails its own node with WorkerLostError: node, pid, and what ended it, as fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from graphs import method_node

import aioflow

if TYPE_CHECKING:
    from pathlib import Path

POOLS = [
    pytest.param("process", "fork", id="process-fork"),
    pytest.param("process", "spawn", id="process-spawn"),
    pytest.param("ndprocess", "forkserver", id="ndprocess-forkserver"),
]

HOW = [("SIGKILL", -9, "SIGKILL"), ("SIGTERM", -15, "SIGTERM"), ("exit3", 3, None)]


@pytest.mark.parametrize(("pool_type", "context"), POOLS)
@pytest.mark.parametrize(("how", "exitcode", "signal"), HOW)
def test_lost_worker_is_named_by_node_pid_and_exit(
    tmp_path: Path, pool_type: str, context: str, how: str, exitcode: int, signal: str | None
) -> None:
    pid_file = tmp_path / "pid"
    graph = {
        "graph": {"id": "deaths"},
        "nodes": [
            method_node("victim", "remote_error_tasks.die", pid_file=str(pid_file), how=how),
            method_node("healthy", "remote_error_tasks.value", x=4),
        ],
    }
    results = aioflow.execute_graph(
        graph,
        pool_type=pool_type,
        context=context,
        max_workers=2,
        raise_on_error=False,
        outputs=[{"all": True}],
        merge_outputs=False,
        timeout=60,
    )
    assert results["healthy"]["return_value"] == 4
    error = results.errors["victim"]
    assert isinstance(error, aioflow.WorkerLostError), repr(error)
    pid = int(pid_file.read_text())
    assert (error.node_id, error.pid, error.exitcode, error.signal) == ("victim", pid, exitcode, signal)
    assert f"pid {pid}" in str(error)
    assert (signal or f"exit code {exitcode}") in str(error)
