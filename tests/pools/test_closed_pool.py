"""A closed pool refuses to be used with `aioflow.PoolClosedError`, a `RuntimeError` (docs/api.md)."""

from __future__ import annotations

import pytest
import tasks
from graphs import method_node

import aioflow

# Every pool that opens without a cluster or a launcher; a closed one starts nothing.
POOLS = ["thread", "process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard", "dask", "parsl"]

# Generous: only a hang reaches it.
DEADLINE = 60


def closed(pool_type: str) -> aioflow.Pool:
    pool = aioflow.open_pool(pool_type)
    pool.close()
    return pool


@pytest.mark.parametrize("pool_type", POOLS)
def test_the_executor_of_a_closed_pool_is_refused_with_a_runtime_error(pool_type: str) -> None:
    pool = closed(pool_type)
    with pytest.raises(RuntimeError) as info:
        _ = pool.executor
    assert isinstance(info.value, aioflow.PoolClosedError)
    assert isinstance(info.value, aioflow.PoolError)
    assert info.value.pool == pool_type
    assert str(info.value) == f"the {pool_type!r} pool is closed; open a new one with aioflow.open_pool()"


@pytest.mark.parametrize("pool_type", ["thread", "process", "billiard"])
def test_a_call_to_an_executor_on_a_closed_pool_fails_with_a_runtime_error(pool_type: str) -> None:
    with aioflow.Executor(pool=closed(pool_type)) as executor:
        error = executor.submit(tasks.inc, 1).exception(timeout=DEADLINE)
    assert isinstance(error, aioflow.PoolClosedError)
    assert isinstance(error, RuntimeError)


@pytest.mark.parametrize("pool_type", ["thread", "process", "billiard"])
def test_an_execution_on_a_closed_pool_is_refused_before_anything_runs(pool_type: str) -> None:
    """execute_graph(pool=closed) raises the PoolClosedError itself, before any node runs."""
    graph = {"graph": {"id": "late"}, "nodes": [method_node("a", "tasks.inc")]}
    events: list[aioflow.Event] = []
    with pytest.raises(aioflow.PoolClosedError, match=f"the {pool_type!r} pool is closed") as info:
        aioflow.execute_graph(graph, pool=closed(pool_type), on_event=events.append)
    assert isinstance(info.value, RuntimeError)
    assert events == []


def test_a_closed_parsl_pool_s_dfk_is_refused() -> None:
    pool = closed("parsl")
    with pytest.raises(aioflow.PoolClosedError, match="the 'parsl' pool is closed"):
        _ = pool.dfk  # type: ignore[attr-defined]


async def test_a_closed_dask_pool_cannot_fetch_what_it_kept() -> None:
    pool = closed("dask")
    with pytest.raises(aioflow.PoolClosedError, match="the 'dask' pool is closed; the results it kept"):
        await pool.afetch([object()])
