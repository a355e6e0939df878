"""The idle-worker policy of the scaling pools: the most recently idle worker takes the next call.

`aioflow.pools._idle.Workers` on its own, then the pools that use it
(``thread``, ``process``, ``billiard``): a chain of calls never starts a
second worker, the workers a burst started retire during a trickle of calls
that the warm one serves, and the next call goes to the worker that became
idle last. Calls go straight to each pool's executor; process workers fork,
so that the functions of this module are there in every worker.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import aioflow
from aioflow.pools._idle import Workers

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Iterator

# Generous: only a failure (a worker that never retires, a hang) reaches it.
DEADLINE = 60.0

POOLS = ["thread", "process", "billiard"]

PREFIX = "idle-policy"


# --------------------------------------------------------------------------- the policy alone


def test_the_most_recently_idle_worker_is_taken_first() -> None:
    workers: Workers[str] = Workers()
    for name in "abc":
        workers.add(name)
    for name in "bca":
        workers.idle(name)
    assert [workers.take(), workers.take(), workers.take(), workers.take()] == ["a", "c", "b", None]
    assert len(workers) == 3
    assert workers.idle_count == 0


def test_the_least_recently_idle_worker_is_taken_for_retirement() -> None:
    workers: Workers[str] = Workers()
    for name in "abc":
        workers.add(name)
        workers.idle(name)
    assert workers.take_oldest() == "a"
    assert workers.take() == "c"
    assert workers.idle_count == 1


def test_idle_workers_expire_least_recently_idle_first() -> None:
    workers: Workers[str] = Workers(idle_timeout=0.0)
    for name in "abc":
        workers.add(name)
    for name in "cab":
        workers.idle(name)
    assert workers.next_expiry() == 0.0
    assert workers.expired() == ["c", "a", "b"]
    assert len(workers) == 0
    assert workers.next_expiry() is None


def test_expired_workers_stay_idle_until_they_take_their_retirement_job() -> None:
    workers: Workers[str] = Workers(idle_timeout=0.0)
    for name in "ab":
        workers.add(name)
        workers.idle(name)
    assert workers.expiry() == (2, None)
    assert workers.take_oldest() == "a"
    assert workers.expiry() == (1, None)
    workers.idle_timeout = 3600.0
    workers.idle("a")
    due, left = workers.expiry()
    assert due == 0
    assert left is not None
    assert 0.0 < left <= 3600.0


def test_without_an_idle_timeout_nothing_expires() -> None:
    workers: Workers[str] = Workers(idle_timeout=None)
    workers.add("a")
    workers.idle("a")
    assert workers.expired() == []
    assert workers.next_expiry() is None
    assert workers.expiry() == (0, None)
    assert "a" in workers


def test_a_worker_taken_by_a_caller_does_not_leave_by_itself() -> None:
    workers: Workers[str] = Workers(idle_timeout=0.0)
    workers.add("a")
    workers.idle("a")
    assert workers.take() == "a"
    assert not workers.leave_if_idle("a")  # its wait timed out as a caller took it: it runs that call
    assert "a" in workers
    workers.idle("a")
    assert workers.leave_if_idle("a")
    assert "a" not in workers
    assert not workers.remove("a")


# --------------------------------------------------------------------------- in the pools


def who() -> tuple[int, str]:
    """The worker running this call: its process and thread (names are never reused, idents may be)."""
    return os.getpid(), threading.current_thread().name


def hold(directory: str, index: int, count: int) -> tuple[int, str]:
    """Wait until ``count`` calls hold a worker each, then until call ``index`` is released; return `who`."""
    folder = Path(directory)
    (folder / f"started-{index}").touch()
    deadline = time.monotonic() + DEADLINE
    while len(list(folder.glob("started-*"))) < count or not (folder / f"release-{index}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"call {index} was never released")
        time.sleep(0.005)
    return who()


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def _workers(pool_type: str, executor: Any) -> int:
    """How many workers the pool runs now."""
    if pool_type == "thread":
        return len([t for t in threading.enumerate() if t.name.startswith(PREFIX)])
    return len(executor.worker_pids())


def _open(pool_type: str, idle_timeout: float | None) -> aioflow.Pool:
    if pool_type == "thread":
        return aioflow.open_pool(
            "thread", max_workers=3, idle_timeout=idle_timeout, pool_options={"thread_name_prefix": PREFIX}
        )
    return aioflow.open_pool(pool_type, max_workers=3, idle_timeout=idle_timeout, context="fork")


@pytest.fixture(params=POOLS)
def pool_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _burst(executor: concurrent.futures.Executor, directory: Path, order: Iterator[int]) -> list[tuple[int, str]]:
    """Three calls held on three workers at once, released in ``order``, each once the one before has returned."""
    futures = [executor.submit(hold, str(directory), i, 3) for i in range(3)]
    ran = []
    for i in order:
        (directory / f"release-{i}").touch()
        ran.append(futures[i].result(timeout=DEADLINE))
    assert len(set(ran)) == 3
    return ran


def test_calls_submitted_from_the_done_callback_stay_on_one_worker(pool_type: str) -> None:
    """Each call submitted from the previous one's done-callback finds its worker idle: one worker in all."""
    length = 20
    with _open(pool_type, idle_timeout=None) as pool:
        executor = pool.executor
        ran: list[tuple[int, str]] = []
        done = threading.Event()

        def next_call(future: concurrent.futures.Future[tuple[int, str]]) -> None:
            ran.append(future.result())
            if len(ran) == length:
                done.set()
            else:
                executor.submit(who).add_done_callback(next_call)

        executor.submit(who).add_done_callback(next_call)
        assert done.wait(DEADLINE)
        assert len(set(ran)) == 1
        assert _workers(pool_type, executor) == 1


def test_calls_submitted_once_the_previous_returned_stay_on_one_worker(pool_type: str) -> None:
    """A call submitted once the previous one's result is in finds its worker idle: one worker in all."""
    with _open(pool_type, idle_timeout=None) as pool:
        executor = pool.executor
        ran = {executor.submit(who).result(timeout=DEADLINE) for _ in range(20)}
        assert len(ran) == 1
        assert _workers(pool_type, executor) == 1


def test_the_next_call_runs_on_the_most_recently_idle_worker(pool_type: str, tmp_path: Path) -> None:
    """Three workers become idle one after another: the next call goes to the last, twice in a row."""
    with _open(pool_type, idle_timeout=None) as pool:
        executor = pool.executor
        ran = _burst(executor, tmp_path, iter([1, 0, 2]))
        assert executor.submit(who).result(timeout=DEADLINE) == ran[-1]
        assert executor.submit(who).result(timeout=DEADLINE) == ran[-1]
        assert _workers(pool_type, executor) == 3


def test_a_trickle_after_a_burst_lets_the_surplus_workers_retire(pool_type: str, tmp_path: Path) -> None:
    """After a burst of three, a trickle of calls runs on the most recently idle worker; the two others retire."""
    with _open(pool_type, idle_timeout=1.0) as pool:
        executor = pool.executor
        warm = _burst(executor, tmp_path, iter([0, 1, 2]))[-1]
        trickle: set[tuple[int, str]] = set()

        def surplus_retired() -> bool:
            trickle.add(executor.submit(who).result(timeout=DEADLINE))
            return _workers(pool_type, executor) == 1

        _wait_for(surplus_retired, "the surplus workers to retire")
        assert trickle == {warm}
