"""Executions give back what they take: no file descriptor outlives its pool."""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest
from graphs import method_node

import aioflow

POOLS = ["thread", "process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard"]


def _open_fds() -> set[str]:
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("pool_type", POOLS)
def test_repeated_executions_leak_no_file_descriptor(pool_type: str) -> None:
    """Pipes, sentinels and locks of each execution's pool are closed once it ends."""
    graph = {"nodes": [method_node("a", "tasks.inc", x=1)]}
    options: dict[str, Any] = {} if pool_type == "thread" else {"context": "fork"}
    # The first execution may open what lives as long as the interpreter
    # (a resource tracker's pipe, a semaphore tracker): not counted.
    aioflow.execute_graph(graph, pool_type=pool_type, max_workers=2, **options)
    before = _open_fds()
    for _ in range(5):
        assert aioflow.execute_graph(graph, pool_type=pool_type, max_workers=2, **options) == {"return_value": 2}
    assert _open_fds() - before == set()
