"""Backends written outside aioflow, and the chunks a map cuts (stable for a given length and worker count)."""

from __future__ import annotations

import concurrent.futures
import warnings
from collections import deque
from typing import Any

import pytest

import aioflow.parallel as par
from aioflow.parallel._maps import cpu_count

from .par_tasks import inc, square


class ThreadBackend(par.ExecutorBackend):
    """The docs' example: a backend over any concurrent.futures executor."""

    name = "my-threads"
    uses_processes = False

    def _create_executor(self, workers: int) -> concurrent.futures.Executor:
        return concurrent.futures.ThreadPoolExecutor(workers)


class InlineBackend(par.Backend):
    """A transport of its own: runs each chunk in the caller, and records the chunks it was given."""

    name = "inline"
    uses_processes = False

    def __init__(self) -> None:
        self.chunks: list[tuple[int, int]] = []

    def open_session(self, fn: par.PicklableAndCallable[Any], workers: int) -> par.Session:
        return InlineSession(self, fn, workers)


class InlineSession(par.Session):
    remote = False

    def __init__(self, backend: InlineBackend, fn: par.PicklableAndCallable[Any], workers: int) -> None:
        self.backend = backend
        self.fn = fn
        self.capacity = 2 * workers
        self.pending: deque[tuple[int, list[Any]]] = deque()

    def submit(self, index: int, items: list[Any]) -> None:
        self.backend.chunks.append((index, len(items)))
        self.pending.append((index, items))

    def wait(self) -> list[tuple[int, Any]]:
        index, items = self.pending.popleft()
        return [(index, par.run_chunk(self.fn, items))]

    def close(self, abandoned: bool) -> None:
        self.pending.clear()


def test_executor_backend_subclass_runs_maps() -> None:
    """A third-party ExecutorBackend needs only _create_executor; shutdown() stops its executor."""
    backend = ThreadBackend()
    par.set_parallel_backend(backend)
    assert par.map(square, range(20), max_workers=2) == [x * x for x in range(20)]
    assert sorted(par.as_completed(square, range(20), max_workers=3, chunksize=1)) == [x * x for x in range(20)]


def test_backend_subclass_with_its_own_session() -> None:
    """A Backend with a Session of its own gets chunks in order and yields the right results."""
    backend = InlineBackend()
    par.set_parallel_backend(backend)
    assert par.map(inc, range(10), max_workers=2, chunksize=3) == list(range(1, 11))
    assert backend.chunks == [(0, 3), (1, 3), (2, 3), (3, 1)]


def test_default_chunks_are_stable() -> None:
    """The same length and worker count always give the same chunks: ceil(n / (4 * workers)) items each."""
    assert par.get_default_chunksize(range(100_000), 2) == 12_500
    assert par.get_default_chunksize(list(range(1000)), 2) == 125
    assert par.get_default_chunksize(range(16), 2) == 2
    assert par.get_default_chunksize(range(3), 8) == 1
    assert par.get_default_chunksize(iter(range(100)), 2) == par.UNSIZED_CHUNKSIZE
    runs = []
    for data in (range(100), list(range(100)), range(100)):
        backend = InlineBackend()
        par.set_parallel_backend(backend)
        par.map(inc, data, max_workers=2)
        runs.append(backend.chunks)
    assert runs[0] == runs[1] == runs[2]
    assert [size for _, size in runs[0]] == [13] * 7 + [9]


def test_generator_gets_the_fixed_chunk_size() -> None:
    """An input without len() is cut into chunks of UNSIZED_CHUNKSIZE."""
    backend = InlineBackend()
    par.set_parallel_backend(backend)
    assert par.map(inc, iter(range(40)), max_workers=2) == list(range(1, 41))
    assert [size for _, size in backend.chunks] == [16, 16, 8]


class FixedBackend(InlineBackend):
    """A backend that decides its worker count itself, as the MPI job's ranks do, and runs serially with one."""

    def __init__(self, workers: int) -> None:
        super().__init__()
        self.workers = workers

    def worker_limit(self) -> int | None:
        return None

    def worker_count(self, max_workers: int) -> int:
        return self.workers

    def ignored_max_workers(self, requested: int, workers: int) -> str | None:
        return None if requested == workers else f"asked for {requested}, runs {workers}"

    def serial_reason(self, workers: int) -> tuple[str, str] | None:
        return ("one worker", "give it two") if workers == 1 else None


def test_a_backend_that_fixes_its_worker_count_warns_when_max_workers_differs() -> None:
    """The map driver asks the backend (`Backend.ignored_max_workers`), not its class, whether to warn."""
    backend = FixedBackend(2)
    with pytest.warns(UserWarning, match="asked for 5, runs 2"):
        assert list(backend.imap(inc, range(4), max_workers=5)) == [1, 2, 3, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(backend.imap(inc, range(4), max_workers=2)) == [1, 2, 3, 4]
        assert list(backend.imap(inc, range(4))) == [1, 2, 3, 4]  # nothing asked, nothing ignored


def test_a_backend_says_when_a_map_would_run_serially() -> None:
    """`Backend.serial_reason` decides, with ``if_serial``'s choice applied by the map driver."""
    backend = FixedBackend(1)
    with pytest.raises(par.SerialExecutionError, match="one worker"):
        list(backend.imap(inc, range(4)))
    assert list(backend.imap(inc, range(4), if_serial="ignore")) == [1, 2, 3, 4]
    assert backend.chunks == []  # run in the caller, never on a session


def test_the_mpi_backend_states_its_fixed_count_and_its_serial_case() -> None:
    """MPI's own knowledge is in MPIBackend's answers, which the map driver asks for."""
    backend = par.MPIBackend()
    assert backend.ignored_max_workers(3, 3) is None
    note = backend.ignored_max_workers(8, 3)
    assert note is not None
    assert "mpiexec -n" in note
    assert backend.serial_reason(2) is None
    reason = backend.serial_reason(1)
    assert reason is not None
    assert "MPI size 2" in reason[0]


@pytest.mark.parametrize("pool_type", ["dask", "parsl", "mpi"])
def test_a_cluster_pool_backend_is_bounded_by_the_cluster_not_this_machine(pool_type: str) -> None:
    """The pool says its workers are elsewhere: no CPU bound, and calls are pickled as for processes."""
    backend = par.PoolBackend(pool_type)
    assert backend.worker_limit() is None
    assert backend.uses_processes


@pytest.mark.parametrize("pool_type", ["thread", "process"])
def test_a_local_pool_backend_is_bounded_by_this_machine(pool_type: str) -> None:
    backend = par.PoolBackend(pool_type)
    assert backend.worker_limit() == cpu_count()
    assert backend.uses_processes is (pool_type == "process")
