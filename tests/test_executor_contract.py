"""aioflow.Executor keeps the contract of the stdlib's executors.

Each test here is one behaviour that CPython's own test_concurrent_futures
checks (tests/compat/ runs it on aioflow), pinned on aioflow's side: what
``wait`` sees of a cancelled call, keyword names, a failing initializer, the
interpreter's exit, ``map``'s timeout and references, unpickling failures,
``max_tasks_per_child``, and the stdlib's constructor keywords. The task
functions are module-level, so that spawned workers import them by name.
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import pickle
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import psutil
import pytest

import aioflow
import aioflow.pools
from aioflow import Executor
from aioflow.pools._futures import Owned

if TYPE_CHECKING:
    from collections.abc import Iterator

# Generous: only a deadlock, or the bug a test is about, reaches them.
DEADLINE = 60.0
SCRIPT_TIMEOUT = 120.0

LOCAL_POOLS = [
    pytest.param({"pool_type": "thread", "max_workers": 1}, id="thread"),
    pytest.param({"pool_type": "process", "max_workers": 1, "context": "fork"}, id="process"),
]

#: Rebound by tests in this process only: a forked worker sees the new value, a spawned one the import-time one.
MARK = "as imported"


def inc(x: int) -> int:
    return x + 1


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def pid(*_: Any) -> int:
    return os.getpid()


def read_mark() -> str:
    return MARK


def in_another_process(previous_pid: int) -> bool:
    return previous_pid != os.getpid()


def thread_name() -> str:
    return threading.current_thread().name


def wait_for_file(path: str, *_: Any) -> bool:
    """Block until ``path`` exists: a gate any worker, in any process, sees open."""
    deadline = time.monotonic() + DEADLINE
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return True


def touch(path: str, *_: Any) -> str:
    """Create ``path``: the record, in any process, that a call ran."""
    Path(path).touch()
    return path


def fail_init(*_: Any) -> NoReturn:
    msg = "no initialization today"
    raise ValueError(msg)


def fail_init_when(gate: threading.Event) -> NoReturn:
    """A thread pool initializer that fails once ``gate`` is set."""
    gate.wait(DEADLINE)
    fail_init()


def set_mark(value: str) -> None:
    global MARK
    MARK = value


def sleep_and_print(seconds: float, text: str) -> None:
    time.sleep(seconds)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Payload:
    """An object only to be referred to: its disappearance is what some tests watch."""

    def method(self) -> str:
        return "ran"


def make_payload(_: Any) -> Payload:
    return Payload()


def _raise_unpickling_error() -> NoReturn:
    msg = "this value cannot be loaded"
    raise pickle.UnpicklingError(msg)


class FailsToLoad:
    """Pickles; loading it raises UnpicklingError."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _raise_unpickling_error, ()


class ExitsOnLoad:
    """Pickles; loading it calls sys.exit (a SystemExit in whichever thread loads it)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return sys.exit, (3,)


def make(cls: type[Any]) -> Any:
    return cls()


@pytest.fixture(params=LOCAL_POOLS)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """One worker, on threads and on processes."""
    with Executor(**request.param) as ex:
        yield ex


# --------------------------------------------------------------------------- cancellation and wait()


def test_a_cancelled_call_is_done_for_wait_and_as_completed(executor: Executor, tmp_path: Path) -> None:
    """A call cancelled in the queue, or while it waits for a dependency, ends wait() and as_completed()."""
    gate = tmp_path / "gate"
    blocker = executor.submit(wait_for_file, str(gate))
    queued = executor.submit(inc, 1)
    waiting = executor.submit(inc, blocker)
    try:
        assert queued.cancel()
        assert waiting.cancel()
        done, not_done = concurrent.futures.wait([queued, waiting], timeout=DEADLINE)
        assert done == {queued, waiting}
        assert not not_done
        assert set(concurrent.futures.as_completed([queued, waiting], timeout=DEADLINE)) == {queued, waiting}
    finally:
        gate.touch()
    assert blocker.result(timeout=DEADLINE) is True


def test_calls_submitted_while_a_worker_is_free_count_as_started(tmp_path: Path) -> None:
    """As with the stdlib: shutdown(cancel_futures=True) right after submitting still runs one call per worker.

    The workers (spawned: they take a while to start) are free when the first
    two calls arrive, so those two count as running at once; the others wait.
    """
    gate = tmp_path / "gate"
    ex = Executor("process", max_workers=2, context="spawn")
    try:
        first = [ex.submit(wait_for_file, str(gate)) for _ in range(2)]
        queued = [ex.submit(inc, i) for i in range(6)]
        assert [f.running() for f in first] == [True, True]
        ex.shutdown(wait=False, cancel_futures=True)
        assert [f.cancelled() for f in first + queued] == [False, False] + [True] * 6
    finally:
        gate.touch()
    assert [f.result(timeout=DEADLINE) for f in first] == [True, True]
    ex.shutdown(wait=True)


# --------------------------------------------------------------------------- keywords


def test_an_owned_call_passes_on_keywords_named_like_its_own_parameters() -> None:
    """The wrapper a pool runs a call in gives ``self`` and ``fn`` to the function (through every pool's
    Executor: tests/test_pool_behaviour.py)."""
    assert Owned(object(), capture)(self=2, fn=3) == ((), {"self": 2, "fn": 3})


# --------------------------------------------------------------------------- a failing initializer


def test_a_failing_thread_initializer_breaks_the_executor_as_the_stdlib_s() -> None:
    """Queued calls fail with BrokenExecutor (not CancelledError), and so does every later submit."""
    gate = threading.Event()
    with Executor("thread", max_workers=1, initializer=fail_init_when, initargs=(gate,)) as ex:
        futures = [ex.submit(inc, i) for i in range(3)]
        gate.set()
        for future in futures:
            with pytest.raises(aioflow.pools.InitializerFailed) as info:
                future.result(timeout=DEADLINE)
            assert isinstance(info.value, concurrent.futures.BrokenExecutor)
            assert isinstance(info.value.__cause__, ValueError)
        with pytest.raises(aioflow.pools.InitializerFailed, match="initializer failed"):
            ex.submit(inc, 1)


def test_a_thread_initializer_failing_after_shutdown_began_lets_the_other_threads_stop() -> None:
    """The failure fails the queued calls, and leaves shutdown's signal to stop for the threads already working."""
    first_done, fail_now, release = threading.Event(), threading.Event(), threading.Event()

    def init() -> None:  # the first thread's initializer works, the second one's fails when told
        if first_done.is_set():
            fail_now.wait(DEADLINE)
            fail_init()
        first_done.set()

    pool = aioflow.open_pool("thread", max_workers=2, idle_timeout=None, pool_options={"initializer": init})
    executor = pool.executor
    busy = executor.submit(release.wait, DEADLINE)
    deadline = time.monotonic() + DEADLINE
    while not busy.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = executor.submit(inc, 1)  # starts the second thread, whose initializer waits
    closing = threading.Thread(target=pool.close)  # one shutdown, one signal to stop: it waits for both threads
    closing.start()
    while not executor._shutdown and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    fail_now.set()
    with pytest.raises(concurrent.futures.BrokenExecutor):
        queued.result(timeout=DEADLINE)
    release.set()
    closing.join(DEADLINE)
    assert not closing.is_alive()
    assert busy.result(timeout=0) is True


def test_a_failing_process_initializer_breaks_the_executor_as_the_stdlib_s() -> None:
    with Executor("process", max_workers=1, context="fork", initializer=fail_init) as ex:
        with pytest.raises(concurrent.futures.BrokenExecutor, match="initializer failed") as info:
            ex.submit(inc, 1).result(timeout=DEADLINE)
        assert "ValueError('no initialization today')" in str(info.value)
        with pytest.raises(concurrent.futures.BrokenExecutor):
            ex.submit(inc, 1)


# --------------------------------------------------------------------------- interpreter exit

_PENDING_AT_EXIT = """
import sys
import aioflow
from test_executor_contract import sleep_and_print

if __name__ == "__main__":
    pool_type, context, shutdown = sys.argv[1], sys.argv[2] or None, sys.argv[3]
    ex = aioflow.Executor(pool_type, max_workers=2, context=context)
    for word in ("apple", "pear", "plum"):
        ex.submit(sleep_and_print, 0.3, word)
    if shutdown == "no-wait":
        ex.shutdown(wait=False)
"""

_SUBMIT_AT_EXIT = """
import atexit
import sys
import aioflow

@atexit.register
def submit_last():
    try:
        ex.submit(id, None)
    except RuntimeError as exc:
        print("refused:", exc)

if __name__ == "__main__":
    ex = aioflow.Executor(sys.argv[1], max_workers=2, context=sys.argv[2] or None)
    ex.submit(id, 42).result()
"""

EXIT_CONFIGS = [
    pytest.param("thread", "", id="thread"),
    pytest.param("process", "fork", id="process-fork"),
    pytest.param("process", "spawn", id="process-spawn"),
]


def _run_script(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, check=False
    )


@pytest.mark.parametrize("shutdown", ["none", "no-wait"])
@pytest.mark.parametrize(("pool_type", "context"), EXIT_CONFIGS)
def test_calls_pending_at_interpreter_exit_run_before_it_exits(pool_type: str, context: str, shutdown: str) -> None:
    """As with the stdlib: without shutdown, or after shutdown(wait=False), the submitted calls still run."""
    done = _run_script(_PENDING_AT_EXIT, pool_type, context, shutdown)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["apple", "pear", "plum"], done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(("pool_type", "context"), EXIT_CONFIGS)
def test_submit_after_interpreter_exit_raises_runtime_error(pool_type: str, context: str) -> None:
    done = _run_script(_SUBMIT_AT_EXIT, pool_type, context)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused: cannot schedule new futures after interpreter shutdown"
    assert done.stderr == ""


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_an_executor_dropped_without_shutdown_stops_its_workers() -> None:
    """As the stdlib's: once garbage-collected (its calls have ended), its own pool's workers exit."""
    ex = Executor("process", max_workers=1, context="fork", idle_timeout=None)  # no retirement when idle
    worker = psutil.Process(ex.submit(pid).result(timeout=DEADLINE))
    del ex
    gc.collect()
    deadline = time.monotonic() + DEADLINE
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(worker)


# --------------------------------------------------------------------------- map and references


def test_map_cancels_the_call_whose_result_timed_out(executor: Executor, tmp_path: Path) -> None:
    """As the stdlib's map: the call it timed out on does not run later (nor do the ones after it)."""
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    ran.mkdir()
    blocker = executor.submit(wait_for_file, str(gate))
    results = executor.map(touch, [str(ran / "second"), str(ran / "third")], timeout=0)
    try:
        with pytest.raises(TimeoutError):
            next(results)
    finally:
        results.close()
        gate.touch()
    assert blocker.result(timeout=DEADLINE) is True
    executor.shutdown(wait=True)
    assert list(ran.iterdir()) == []


def test_map_keeps_no_reference_to_a_result_it_handed_out(executor: Executor) -> None:
    for item in executor.map(make_payload, range(4), chunksize=2):
        ref = weakref.ref(item)
        del item
        assert ref() is None


def test_a_finished_call_s_function_is_freed_without_garbage_collection(executor: Executor) -> None:
    """The executor drops a call's function once it ended: reference counting frees it, no collection needed."""
    payload = Payload()
    freed = threading.Event()
    ref = weakref.ref(payload, lambda _: freed.set())
    gc.disable()
    try:
        future = executor.submit(payload.method)
        del payload
        assert future.result(timeout=DEADLINE) == "ran"
        assert freed.wait(DEADLINE), ref()
    finally:
        gc.enable()


# --------------------------------------------------------------------------- unpickling failures


@pytest.mark.parametrize("cls", [FailsToLoad, ExitsOnLoad])
def test_a_call_that_cannot_be_unpickled_in_the_worker_is_a_transfer_error(cls: type[Any]) -> None:
    """Never a bare UnpicklingError, never a SystemExit in the caller; the worker carries on."""
    with Executor("process", max_workers=1, context="fork") as ex:
        worker = ex.submit(pid).result(timeout=DEADLINE)
        with pytest.raises(aioflow.TransferError, match="could not be unpickled in the worker") as info:
            ex.submit(capture, cls()).result(timeout=DEADLINE)
        assert "task capture" in str(info.value)
        assert ex.submit(pid).result(timeout=DEADLINE) == worker


@pytest.mark.parametrize("cls", [FailsToLoad, ExitsOnLoad])
def test_a_result_that_cannot_be_unpickled_here_is_a_transfer_error(cls: type[Any]) -> None:
    with Executor("process", max_workers=1, context="fork") as ex:
        with pytest.raises(aioflow.TransferError, match="result could not be unpickled in the calling process"):
            ex.submit(make, cls).result(timeout=DEADLINE)
        assert ex.submit(inc, 1).result(timeout=DEADLINE) == 2


# --------------------------------------------------------------------------- max_tasks_per_child


@pytest.mark.parametrize("pool_type", ["process", "ndprocess"])
def test_a_worker_retires_after_max_tasks_per_child(pool_type: str) -> None:
    with Executor(pool_type, max_workers=1, context="forkserver", max_tasks_per_child=2) as ex:
        pids = [ex.submit(pid).result(timeout=DEADLINE) for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert len(set(pids)) == 3


def test_max_tasks_per_child_starts_spawned_workers_and_refuses_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the stdlib: without a context, workers are spawned; with fork, a ValueError (OptionError)."""
    monkeypatch.setattr(sys.modules[__name__], "MARK", "rebound in the parent")
    with Executor("process", max_workers=1, max_tasks_per_child=1) as ex:
        assert ex.submit(read_mark).result(timeout=DEADLINE) == "as imported"  # not a fork of this process
    with pytest.raises(aioflow.OptionError, match="max_tasks_per_child"):
        Executor("process", max_tasks_per_child=1, context="fork")
    with pytest.raises(aioflow.OptionError, match="max_tasks_per_child"):
        Executor("process", max_tasks_per_child=0, context="spawn")


def test_pool_options_take_max_tasks_per_child_in_graph_executions() -> None:
    """open_pool and execute_graph accept it (pool_options): with one worker, each node gets a new one."""
    graph = {
        "nodes": [
            {"id": "a", "task_type": "method", "task_identifier": "test_executor_contract.pid"},
            {"id": "b", "task_type": "method", "task_identifier": "test_executor_contract.in_another_process"},
        ],
        "links": [
            {"source": "a", "target": "b", "data_mapping": [{"source_output": "return_value", "target_input": 0}]}
        ],
    }
    options = {"max_tasks_per_child": 1}
    with aioflow.open_pool("ndprocess", max_workers=1, context="forkserver", pool_options=options) as pool:
        assert aioflow.execute_graph(graph, pool=pool) == {"return_value": True}
    assert aioflow.execute_graph(graph, pool_type="process", max_workers=1, pool_options=options) == {
        "return_value": True
    }


# --------------------------------------------------------------------------- the stdlib's constructor keywords


def test_mp_context_chooses_the_start_method(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    monkeypatch.setattr(sys.modules[__name__], "MARK", "rebound in the parent")
    with Executor("process", max_workers=1, mp_context=multiprocessing.get_context("fork")) as ex:
        assert ex.submit(read_mark).result(timeout=DEADLINE) == "rebound in the parent"
    with Executor("process", max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert ex.submit(read_mark).result(timeout=DEADLINE) == "as imported"
    with pytest.raises(aioflow.OptionError, match="mp_context"):
        Executor("process", context="fork", mp_context=multiprocessing.get_context("spawn"))
    with pytest.raises(aioflow.OptionError, match="mp_context"):
        Executor("process", mp_context="spawn")  # type: ignore[arg-type]


@pytest.mark.parametrize("pool_type", ["thread", "process"])
def test_initializer_and_initargs_run_in_each_worker(pool_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "MARK", MARK)  # restored after: a thread initializer sets it here
    context = None if pool_type == "thread" else "fork"
    with Executor(pool_type, max_workers=1, initializer=set_mark, initargs=("initialized",), context=context) as ex:
        assert ex.submit(read_mark).result(timeout=DEADLINE) == "initialized"


def test_thread_name_prefix_names_the_threads() -> None:
    with Executor("thread", max_workers=1, thread_name_prefix="SpecialPool") as ex:
        assert ex.submit(thread_name).result(timeout=DEADLINE).startswith("SpecialPool_")


def test_each_option_is_given_once_and_only_to_an_own_pool() -> None:
    with pytest.raises(aioflow.OptionError, match="given once"):
        Executor("thread", initializer=inc, pool_options={"initializer": inc})
    with pytest.raises(aioflow.OptionError, match="pool_options"):
        Executor("process", thread_name_prefix="x")
    with aioflow.open_pool("thread") as pool, pytest.raises(aioflow.OptionError, match="with pool="):
        Executor(pool=pool, initializer=inc)


# --------------------------------------------------------------------------- a pool whose executor refuses


class _RefusingExecutor(concurrent.futures.Executor):
    """An executor that lost its workers between the pool handing it out and the call reaching it."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> NoReturn:
        raise concurrent.futures.BrokenExecutor("a worker died while the call was being sent")


class _RefusingPool(aioflow.Pool):
    name = "refusing"

    def _create_executor(self) -> concurrent.futures.Executor:
        return _RefusingExecutor()

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        pass


def test_a_broken_executor_refusing_a_call_is_translated_as_a_failure_in_it() -> None:
    """What the pool's executor raises at submit becomes aioflow's public error, as a failure reported later would."""
    pool = _RefusingPool(aioflow.pools.PoolOptions(max_workers=1))
    try:
        with Executor(pool=pool) as ex:
            with pytest.raises(aioflow.WorkerLostError, match="lost its worker process") as info:
                ex.submit(inc, 1).result(timeout=DEADLINE)
            assert isinstance(info.value.__cause__, concurrent.futures.BrokenExecutor)
    finally:
        pool.close()
