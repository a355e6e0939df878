"""No map and no pool starts an absurd number of workers: counts are clamped to the CPUs and the items, or refused.

Nothing here starts more than two worker processes: absurd counts are
checked by their refusal, which comes before any worker starts.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psutil
import pytest

import aioflow
import aioflow.parallel as par
from aioflow.pools._options import MAX_WORKERS

from .par_tasks import pid

CPUS = len(os.sched_getaffinity(0))

# Backends whose workers are processes of this machine.
PROCESS_BACKENDS = ["multiprocess", "process", "loky"]

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


# ----------------------------------------------------------------------------- maps


def _new_workers(before: set[int]) -> set[int]:
    """Child processes started since ``before`` (the stdlib's and loky's trackers left out)."""
    found = set()
    for child in psutil.Process().children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if child.pid not in before and "resource_tracker" not in cmdline and "forkserver" not in cmdline:
            found.add(child.pid)
    return found


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children()}


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_as_completed_clamps_to_the_cpus_and_the_items(backend: str) -> None:
    """as_completed with max_workers=8 over 4 items starts at most min(CPUs, 4) worker processes, as scinexus."""
    par.set_parallel_backend(backend)
    before = _children()
    pids = set(par.as_completed(pid, range(4), max_workers=8, chunksize=1))
    started = _new_workers(before)
    assert pids <= started
    assert len(started) <= min(CPUS, 4)


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
@pytest.mark.parametrize(
    ("items", "chunksize"),
    [(1, None), (10, 10)],
    ids=["one-item", "one-chunk"],
)
@pytest.mark.parametrize("kind", [list, iter], ids=["list", "generator"])
def test_never_more_workers_than_chunks(backend: str, kind: Any, items: int, chunksize: int | None) -> None:
    """A map whose input fits in one chunk starts one worker, whatever max_workers asks."""
    par.set_parallel_backend(backend)
    before = _children()
    pids = par.map(pid, kind(range(items)), max_workers=2, chunksize=chunksize)
    assert len(set(pids)) == 1
    assert len(_new_workers(before)) == 1


@pytest.mark.parametrize("backend", [*PROCESS_BACKENDS, "thread"])
def test_empty_input_starts_no_worker(backend: str) -> None:
    """No item, no worker: the map gives nothing and starts nothing."""
    par.set_parallel_backend(backend)
    before = _children()
    threads = threading.active_count()
    assert par.map(pid, [], max_workers=2) == []
    assert list(par.as_completed(pid, iter([]), max_workers=2)) == []
    assert not _new_workers(before)
    assert threading.active_count() == threads


@pytest.mark.parametrize("backend", [*PROCESS_BACKENDS, "thread"])
def test_imap_refuses_more_workers_than_cpus(backend: str) -> None:
    """imap and map refuse max_workers above the CPU count (scinexus's rule), before any worker starts."""
    par.set_parallel_backend(backend)
    before = _children()
    for count in (CPUS + 1, 9999):
        with pytest.raises(aioflow.OptionError, match=rf"max_workers \({count}\) must be less than or equal to CPU"):
            par.imap(pid, range(4), max_workers=count)
        with pytest.raises(ValueError, match="CPU count"):
            par.map(pid, range(4), max_workers=count)
    assert not _new_workers(before)


def test_a_cluster_backend_refuses_an_absurd_count() -> None:
    """Where the workers are not this machine's (a cluster pool), the pools' bound applies, before anything starts."""
    backend = par.PoolBackend("dask", pool_options={"address": "tcp://127.0.0.1:1"})  # never connected to
    with pytest.raises(aioflow.OptionError, match=rf"must be less than or equal to {MAX_WORKERS}"):
        backend.imap(pid, range(4), max_workers=MAX_WORKERS + 1)
    with pytest.raises(aioflow.OptionError, match=rf"must be less than or equal to {MAX_WORKERS}"):
        backend.as_completed(pid, range(4), max_workers=9999)
