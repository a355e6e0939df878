"""aioflow.parallel maps on the default backend and on aioflow pools: results, order, errors, reuse."""

from __future__ import annotations

import concurrent.futures
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest

import aioflow
import aioflow.parallel as par

from .par_tasks import (
    block_until_file,
    die_on_two,
    fail_on_three,
    inc,
    nested_map,
    nested_map_ignore,
    nested_map_warn,
    pid,
    square,
    wait_for_file,
)

if TYPE_CHECKING:
    from pathlib import Path

# The backends every behaviour test runs on: the default, and aioflow pools by name.
BACKENDS = [
    pytest.param("multiprocess", id="multiprocess"),
    pytest.param("process", id="pool-process"),
    pytest.param("thread", id="pool-thread"),
    pytest.param("loky", id="loky"),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test runs once per backend, set as the default."""
    name: str = request.param
    par.set_parallel_backend(name)
    return name


def test_map_returns_results_in_input_order(backend: str) -> None:
    """map gives f(x) for every x, in input order, whatever the chunk size."""
    for chunksize in (None, 1, 7):
        assert par.map(square, range(100), max_workers=2, chunksize=chunksize) == [x * x for x in range(100)]


def test_imap_is_a_lazy_generator(backend: str) -> None:
    """imap returns an iterator; results arrive in order as they are consumed."""
    results = par.imap(inc, iter(range(50)), max_workers=2, chunksize=3)
    assert next(results) == 1
    assert list(results) == list(range(2, 51))


def test_empty_input_gives_no_results(backend: str) -> None:
    """An empty input maps to nothing, without error."""
    assert par.map(inc, [], max_workers=2) == []
    assert list(par.as_completed(inc, iter([]), max_workers=2)) == []


def test_as_completed_yields_in_completion_order(backend: str, tmp_path: Path) -> None:
    """With one item per chunk, results come as they finish: item 0 finishes only once the caller has item 1."""
    flag = tmp_path / "got-one"
    results = []
    for result in par.as_completed(wait_for_file, [(0, str(flag)), (1, str(flag))], max_workers=2, chunksize=1):
        results.append(result)
        flag.touch()
    assert results == [1, 0]


def test_as_completed_gives_every_result(backend: str) -> None:
    """as_completed yields each result exactly once."""
    assert sorted(par.as_completed(square, range(200), max_workers=2, chunksize=5)) == [x * x for x in range(200)]


def test_task_exception_propagates_with_the_workers_traceback(backend: str) -> None:
    """The first exception raised, in input order, reaches the caller; a process worker's traceback is its cause."""
    with pytest.raises(ValueError, match="bad item 3") as info:
        par.map(fail_on_three, range(10), max_workers=2, chunksize=2)
    assert any("item 3 of the input" in note for note in info.value.__notes__)
    if backend != "thread":
        assert "fail_on_three" in str(info.value.__cause__)
        assert "Traceback" in str(info.value.__cause__)


def test_unpicklable_function_fails_clearly_before_any_worker_starts() -> None:
    """A function that cannot be pickled, even by value, gets an error naming it and suggesting a module-level one."""
    lock = threading.Lock()

    def locked_inc(x: int) -> int:
        with lock:
            return x + 1

    before = set(psutil.Process().children())
    with pytest.raises(par.UnsendableFunctionError, match="locked_inc") as info:
        par.map(locked_inc, range(4), max_workers=2)
    assert "module level" in str(info.value)
    assert isinstance(info.value, aioflow.TransferError)
    assert set(psutil.Process().children()) == before


def test_lambdas_and_closures_travel_by_value() -> None:
    """Functions that pickle cannot send by reference run in worker processes too."""
    offset = 10
    assert par.map(lambda x: x + offset, range(5), max_workers=2) == [10, 11, 12, 13, 14]


def test_second_map_reuses_the_warm_workers() -> None:
    """Two maps in a row run on the same worker processes."""
    first = set(par.map(pid, range(64), max_workers=2, chunksize=1))
    second = set(par.map(pid, range(64), max_workers=2, chunksize=1))
    assert second <= first
    assert len(first) <= 2


def test_idle_workers_retire_after_idle_timeout() -> None:
    """A worker left idle for idle_timeout exits by itself; the next map starts fresh workers and succeeds."""
    par.set_parallel_backend(par.MultiprocessBackend(idle_timeout=0.5))
    first = set(par.map(pid, range(8), max_workers=2, chunksize=1))
    assert len(first) == 2
    deadline = time.monotonic() + 30
    while any(_running(p) for p in first):
        assert time.monotonic() < deadline, "idle workers did not retire"
        time.sleep(0.05)
    second = set(par.map(pid, range(8), max_workers=2, chunksize=1))
    assert len(second) == 2
    assert second.isdisjoint(first)
    assert not any(psutil.pid_exists(p) for p in first)  # the retired workers were reaped


def test_workers_idle_for_less_than_idle_timeout_are_reused() -> None:
    """Maps in quick succession keep their workers under an idle_timeout, and a leased worker never retires."""
    par.set_parallel_backend(par.MultiprocessBackend(idle_timeout=0.3))
    first = set(par.map(pid, range(8), max_workers=2, chunksize=1))
    second = set(par.map(pid, range(8), max_workers=2, chunksize=1))
    assert second == first
    # Workers leased by a map whose consumer pauses beyond idle_timeout wait for it: only idle ones retire.
    results = par.imap(pid, range(400), max_workers=2, chunksize=1)
    assert next(results) in first
    time.sleep(0.8)
    assert set(results) <= first


@pytest.mark.parametrize("value", [0, -1.0, "60", True])
def test_idle_timeout_is_validated(value: Any) -> None:
    """An invalid idle_timeout is refused with the option named."""
    with pytest.raises(aioflow.OptionError, match="idle_timeout"):
        par.MultiprocessBackend(idle_timeout=value)


def _running(pid_: int) -> bool:
    try:
        return bool(psutil.Process(pid_).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("backend", ["multiprocess", "process", "loky"], indirect=True)
def test_dead_worker_raises_worker_lost_error(backend: str) -> None:
    """A worker killed by a signal fails the map with WorkerLostError naming the signal; the next map works."""
    with pytest.raises(aioflow.WorkerLostError, match="SIGKILL"):
        par.map(die_on_two, range(6), max_workers=2, chunksize=1)
    assert par.map(inc, range(6), max_workers=2) == list(range(1, 7))


def test_stopping_early_leaves_no_busy_worker(tmp_path: Path) -> None:
    """Closing a map while chunks run kills the workers running them: no hang, the next map starts fresh ones."""
    flag = str(tmp_path / "never")
    results = par.imap(block_until_file, [(x, flag) for x in range(4)], max_workers=2, chunksize=1)
    assert next(results) == 0
    results.close()  # items 1-3 are blocked in workers
    assert par.map(inc, range(4), max_workers=2) == [1, 2, 3, 4]


def test_maps_consumed_in_turn_do_not_share_workers() -> None:
    """Two generators iterated alternately each get their own workers (no deadlock, right results)."""
    a = par.imap(inc, range(300), max_workers=2, chunksize=1)
    b = par.imap(square, range(300), max_workers=2, chunksize=1)
    pairs = list(zip(a, b, strict=True))
    assert pairs == [(x + 1, x * x) for x in range(300)]


def test_maps_from_two_threads_give_their_own_results() -> None:
    """Concurrent maps from several threads are independent."""
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        futures = [threads.submit(par.map, inc, range(k, k + 500), 2, False, "raise", 1) for k in (0, 1000)]
        assert [f.result() for f in futures] == [list(range(1, 501)), list(range(1001, 1501))]


def test_large_items_and_results_do_not_deadlock() -> None:
    """Chunks and results larger than a pipe's buffer flow both ways at once."""
    big = [bytes(300_000) for _ in range(8)]
    assert par.map(len, big, max_workers=2, chunksize=1) == [300_000] * 8


# ----------------------------------------------------------------------------- if_serial


def test_one_worker_or_one_item_runs_on_a_worker_process() -> None:
    """max_workers=1, or a single item in a list or a generator, is no serial run: it runs in a worker, as scinexus."""
    me = psutil.Process().pid
    one_worker = par.map(pid, range(3), max_workers=1)
    assert len(set(one_worker)) == 1
    assert me not in one_worker
    for single in ([1], iter([1])):
        assert par.map(pid, single, max_workers=2) != [me]


def test_if_serial_warn_runs_a_nested_map_in_the_worker() -> None:
    """if_serial='warn' warns, then runs the nested map in the worker's own process."""
    outcomes = par.map(nested_map_warn, range(2), max_workers=2)
    for x, (results, inner_pids, caught) in enumerate(outcomes):
        assert results == [x + 1, x + 1]
        assert inner_pids == [inner_pids[0]] * 2
        assert inner_pids[0] != psutil.Process().pid
        assert len(caught) == 1
        assert "maps do not nest" in caught[0]


def test_nested_map_is_serial() -> None:
    """A map called from a task in a worker would be serial: it raises there with 'raise', runs with 'ignore'."""
    with pytest.raises(par.SerialExecutionError, match="maps do not nest"):
        par.map(nested_map, range(2), max_workers=2)
    assert par.map(nested_map_ignore, range(2), max_workers=2) == [([1, 1], False), ([2, 2], False)]


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"max_workers": True}, "max_workers"),
        ({"chunksize": 0}, "chunksize"),
        ({"if_serial": "sometimes"}, "if_serial"),
        ({"use_mpi": "yes"}, "use_mpi"),
    ],
)
def test_invalid_options_are_refused_before_any_worker(kwargs: dict[str, Any], option: str) -> None:
    """Each invalid argument raises OptionError naming it and the value."""
    with pytest.raises(aioflow.OptionError, match=option):
        par.imap(inc, range(4), **kwargs)


def test_unknown_backend_name_suggests_the_closest() -> None:
    """A misspelt backend name lists the names and suggests one."""
    with pytest.raises(aioflow.OptionError, match="did you mean 'multiprocess'"):
        par.set_parallel_backend("multiproces")


def test_backend_choice_by_name_is_shared() -> None:
    """A name always gives the same backend object (so its warm workers are shared); 'threads' is 'thread'."""
    assert par.get_parallel_backend("threads") is par.get_parallel_backend("thread")
    par.set_parallel_backend("loky")
    assert isinstance(par.get_parallel_backend(), par.LokyBackend)
    par.set_parallel_backend(None)
    assert par.get_parallel_backend() is par.get_parallel_backend(par.DEFAULT_BACKEND)


def test_errors_pickle_round_trip() -> None:
    """The module's errors survive pickling with their fields."""
    for error in (
        par.SerialExecutionError("f", "max_workers is 1", "pass max_workers=2"),
        par.UnsendableFunctionError("f", "TypeError: no"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)


def test_errors_live_in_the_error_tree() -> None:
    """The map's errors are aioflow errors, importable from aioflow and aioflow.parallel alike."""
    assert par.SerialExecutionError is aioflow.SerialExecutionError
    assert par.UnsendableFunctionError is aioflow.UnsendableFunctionError
    assert par.SerialExecutionWarning is aioflow.SerialExecutionWarning
    assert issubclass(aioflow.SerialExecutionError, aioflow.AioflowError)
    assert issubclass(aioflow.SerialExecutionError, RuntimeError)
    assert issubclass(aioflow.UnsendableFunctionError, aioflow.TransferError)
    assert issubclass(aioflow.SerialExecutionWarning, UserWarning)
    assert repr(aioflow.SerialExecutionError("f", "r", "a")).startswith("SerialExecutionError(")
    assert aioflow.UnsendableFunctionError.__module__ == "aioflow"
