"""A run journal on the cluster pools: the driver records every firing, resumes, and answers from the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphs import method_node, return_value_link

import aioflow
from aioflow.journal import JournalRun, list_runs, run_firings

if TYPE_CHECKING:
    from pathlib import Path


def _chain(n: int) -> dict[str, Any]:
    nodes = [method_node(0, "tasks.inc", x=0)] + [method_node(i, "tasks.inc") for i in range(1, n)]
    links = [return_value_link(i - 1, i, "x") for i in range(1, n)]
    return {"graph": {"id": f"chain{n}"}, "nodes": nodes, "links": links}


def test_a_dask_run_is_journaled_and_a_second_one_comes_from_the_cache(local_cluster: Any, tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    options: dict[str, Any] = {"pool_type": "dask", "pool_options": {"address": local_cluster.scheduler_address}}
    first = aioflow.execute_graph(_chain(6), journal=JournalRun(path, run_id="one", cache=True), **options)
    assert first == {"return_value": 6}
    firings = run_firings(path, "one")
    assert [(f.node_id, f.status) for f in firings] == [(i, "finished") for i in range(6)]
    assert [f.outputs for f in firings] == [{"return_value": i + 1} for i in range(6)]
    again = JournalRun(path, run_id="two", cache=True)
    assert aioflow.execute_graph(_chain(6), journal=again, **options) == first
    assert again.reused == 6
    assert [(r.run_id, r.state, r.finished) for r in list_runs(path)] == [
        ("one", "finished", 6),
        ("two", "finished", 6),
    ]
