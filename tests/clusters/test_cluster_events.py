"""The cluster pools report the same events as the local ones (the driver makes them)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from graphs import method_node, return_value_link

import aioflow

from .conftest import distributed

if TYPE_CHECKING:
    from aioflow.events import Event


def _chain(n: int) -> dict[str, Any]:
    nodes = [method_node(0, "tasks.inc", x=0)] + [method_node(i, "tasks.inc") for i in range(1, n)]
    links = [return_value_link(i - 1, i, "x") for i in range(1, n)]
    return {"graph": {"id": f"chain{n}"}, "nodes": nodes, "links": links}


def test_a_dask_run_reports_every_firing_s_events(local_cluster: Any) -> None:
    """Calls sent ahead to the cluster before their node fires still read queued -> started -> finished, in order."""
    seen: list[Event] = []
    options: dict[str, Any] = {"pool_type": "dask", "pool_options": {"address": local_cluster.scheduler_address}}
    assert aioflow.execute_graph(_chain(5), on_event=seen.append, **options) == {"return_value": 5}
    assert seen[0].kind == "graph.started"
    assert seen[-1].kind == "graph.finished"
    assert seen[-1].state == "finished"
    with distributed().Client(local_cluster, set_as_default=False) as client:
        worker_pids = set(client.run(os.getpid).values())
    by_seq: dict[int, list[str]] = {}
    for event in seen[1:-1]:
        by_seq.setdefault(event.seq, []).append(event.kind)
        if event.kind == "node.finished":  # the Dask worker that ran it
            assert event.worker_pid in worker_pids
            assert event.worker_host is not None
        else:
            assert (event.worker_pid, event.worker_host) == (None, None)
    assert by_seq == {i: ["node.queued", "node.started", "node.finished"] for i in range(5)}
    order = [(e.seq, e.kind) for e in seen[1:-1] if e.kind == "node.finished"]
    assert order == [(i, "node.finished") for i in range(5)]
