"""aioflow.Executor and aioflow.parallel on the cluster pools: the local pools' behaviour tests, run on ``dask`` and ``parsl``.

The test functions are those of tests/test_executor.py and
tests/parallel/test_map.py, imported unchanged: pytest collects them here
too, with this module's ``executor`` and ``backend`` fixtures, which give an
`aioflow.Executor` on an open cluster pool and a `PoolBackend` of that
cluster set as the default. Each cluster starts once for this module (the
``cluster`` fixture is module-scoped and parametrized, so pytest runs every
test of one pool before the other's).

Local only, as they need what a cluster pool does not give: tests that share
memory with the calls (a ``threading.Event`` as a gate, a closure recording
what ran), that kill a worker process by pid or by signal, that count or
reuse local worker processes, or that need the fork start method. The cluster
pools' lost workers are tested in test_dask.py and test_parsl.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import tasks
from parallel.test_map import (
    test_as_completed_gives_every_result,
    test_as_completed_yields_in_completion_order,
    test_empty_input_gives_no_results,
    test_imap_is_a_lazy_generator,
    test_map_returns_results_in_input_order,
    test_task_exception_propagates_with_the_workers_traceback,
)
from test_executor import (
    test_a_chain_of_futures_runs_in_order,
    test_a_failed_dependency_fails_its_dependents,
    test_any_concurrent_future_is_a_dependency,
    test_cancelling_a_waiting_call_cascades_and_it_never_runs,
    test_futures_inside_containers_are_resolved,
    test_map_raises_the_task_error,
    test_map_reads_a_long_generator_lazily,
    test_map_returns_results_in_order,
    test_submit_returns_the_result,
)

import aioflow
import aioflow.parallel as par

from .conftest import START_DEADLINE
from .parsl_fixtures import parsl_dfk, parsl_run_dir

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aioflow.pools import Pool

__all__ = [
    # module-scoped fixtures, used by name
    "parsl_dfk",
    "parsl_run_dir",
    # the shared tests, collected here on the cluster pools
    "test_a_chain_of_futures_runs_in_order",
    "test_a_failed_dependency_fails_its_dependents",
    "test_any_concurrent_future_is_a_dependency",
    "test_as_completed_gives_every_result",
    "test_as_completed_yields_in_completion_order",
    "test_cancelling_a_waiting_call_cascades_and_it_never_runs",
    "test_empty_input_gives_no_results",
    "test_futures_inside_containers_are_resolved",
    "test_imap_is_a_lazy_generator",
    "test_map_raises_the_task_error",
    "test_map_reads_a_long_generator_lazily",
    "test_map_returns_results_in_input_order",
    "test_map_returns_results_in_order",
    "test_submit_returns_the_result",
    "test_task_exception_propagates_with_the_workers_traceback",
]


@pytest.fixture(scope="module", params=["dask", "parsl"])
def cluster(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``pool_type`` and ``pool_options`` of a running cluster: the module's LocalCluster, or its Parsl DFK."""
    if request.param == "dask":
        local_cluster = request.getfixturevalue("local_cluster")
        return {"pool_type": "dask", "pool_options": {"address": local_cluster.scheduler_address}}
    return {"pool_type": "parsl", "pool_options": {"dfk": request.getfixturevalue("parsl_dfk")}}


@pytest.fixture(scope="module")
def cluster_pool(cluster: dict[str, Any]) -> Iterator[Pool]:
    """One pool open on the cluster for all the module's Executor tests (closed before the other pool's tests)."""
    with aioflow.open_pool(cluster["pool_type"], pool_options=cluster["pool_options"]) as pool:
        # Warm: the pool's client and threads exist before any test's leak check takes its snapshot.
        with aioflow.Executor(pool=pool) as warm_up:
            assert warm_up.submit(tasks.inc, 1).result(timeout=START_DEADLINE) == 2
        yield pool


@pytest.fixture
def executor(cluster_pool: Pool) -> Iterator[aioflow.Executor]:
    """An Executor on the open cluster pool (which it leaves open)."""
    with aioflow.Executor(pool=cluster_pool) as ex:
        yield ex


@pytest.fixture
def backend(cluster: dict[str, Any]) -> Iterator[str]:
    """A PoolBackend on the cluster, as the default backend; its pool is closed after the test."""
    pool_backend = par.PoolBackend(cluster["pool_type"], pool_options=cluster["pool_options"])
    par.set_parallel_backend(pool_backend)
    try:
        yield pool_backend.name
    finally:
        par.set_parallel_backend(None)
        pool_backend.shutdown()
