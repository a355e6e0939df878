"""No map and no pool starts an absurd number of workers: counts are clamped to the CPUs and the items, or refused.

Nothing here starts more than two worker processes: absurd counts are
checked by their refusal, which comes before any worker starts.
"""

from __future__ import annotations

import pytest

import aioflow
from aioflow.pools._base import MAX_WORKERS

# Every pool type that needs no cluster and no patched process.
LOCAL_POOLS = ["thread", "process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard"]


@pytest.mark.parametrize("pool_type", LOCAL_POOLS)
def test_a_pool_refuses_an_absurd_worker_count(pool_type: str) -> None:
    """max_workers above the bound is an OptionError naming the bound, raised before any worker starts."""
    with pytest.raises(aioflow.OptionError, match=rf"an int from 1 to {MAX_WORKERS}"):
        aioflow.open_pool(pool_type, max_workers=MAX_WORKERS + 1)


@pytest.mark.parametrize("pool_type", LOCAL_POOLS)
def test_a_pool_accepts_the_bound_itself(pool_type: str) -> None:
    """max_workers equal to the bound is valid (opening a pool starts no worker)."""
    aioflow.open_pool(pool_type, max_workers=MAX_WORKERS).close()


def test_the_bound_reaches_every_door() -> None:
    """Executor and execute_graph refuse the absurd count too, before running anything."""
    with pytest.raises(aioflow.OptionError, match="max_workers"):
        aioflow.Executor("process", max_workers=9999)
    graph = {"graph": {"id": "g"}, "nodes": [{"id": "a", "task_type": "method", "task_identifier": "tasks.inc"}]}
    with pytest.raises(aioflow.OptionError, match="max_workers"):
        aioflow.execute_graph(graph, pool_type="process", max_workers=9999)


def test_the_bound_is_at_least_one_worker_per_cpu() -> None:
    """On a machine with more CPUs than the bound, one worker per CPU stays allowed."""
    import os

    assert MAX_WORKERS >= 1024
    assert MAX_WORKERS >= (os.cpu_count() or 1)
