"""What every local pool does alike, tested once and run on each: the ``local_pool`` fixture.

Each test runs once per local pool (tests/conftest.py, ``local_pool``), with
one start method unless it is marked ``every_start_method``. It names what
it needs (``@pytest.mark.needs``); the pools that lack it are left out, with
the reason tests/pool_capabilities.py gives. A test only one pool can have
stays in that pool's file under tests/pools/. The gevent pool runs a test
body in a fresh gevent-patched interpreter.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from graphs import NB_DIAMOND, method_node
from pool_capabilities import CANNOT, CAPABILITIES, LocalPool

import aioflow
from aioflow import Executor
from aioflow.pools._outcomes import WorkerDied

POOLS_DIR = Path(__file__).resolve().parent / "pools"

# Generous: only a hang, or a process that does not stop, reaches it.
DEADLINE = 60.0

#: The pools that need a cluster started first (tests/clusters): not local.
CLUSTER_POOLS = {"dask", "parsl", "mpi"}


def task(name: str) -> str:
    """The identifier of a task function of tests/pools/nd_tasks.py (loaded by path in every worker)."""
    return f"{POOLS_DIR / 'nd_tasks.py'}::{name}"


pytestmark = pytest.mark.usefixtures("billiard_singletons")


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int]) -> list[int]:
    """Wait until every process in ``pids`` has ended; return those still running at the deadline."""
    end = time.monotonic() + DEADLINE
    running = [p for p in pids if not _gone(p)]
    while running and time.monotonic() < end:
        time.sleep(0.05)
        running = [p for p in running if not _gone(p)]
    return running


def _read_pid(pid_file: Path) -> int:
    """The pid a task wrote to ``pid_file``."""
    return int(pid_file.read_text())


# --------------------------------------------------------------------------- the table


def test_every_pool_of_this_installation_is_local_or_a_cluster_pool() -> None:
    """A pool added to aioflow gets a row in the capability table, and so runs every behaviour test."""
    assert set(aioflow.available_pools()) == set(CANNOT) | CLUSTER_POOLS


def test_the_table_names_known_capabilities_only() -> None:
    """Each reason a row gives is for a capability a test can need."""
    assert {need for row in CANNOT.values() for need in row} <= set(CAPABILITIES)
    with pytest.raises(ValueError, match="unknown capability"):
        LocalPool("thread").can("teleport")


def test_a_pool_that_lacks_a_need_is_deselected_with_its_reason() -> None:
    """Collecting a test that needs nested processes leaves out multiprocessing, and says why in the summary."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_a_task_starts_a_pool_and_a_process_of_its_own",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert any(line.endswith("[ndprocess-fork]") for line in collected), done.stdout
    assert not any("[multiprocessing-" in line for line in collected), done.stdout
    assert "deselected" in done.stdout
    assert f"multiprocessing lacks 'nested processes': {CANNOT['multiprocessing']['nested processes']}" in done.stdout


# --------------------------------------------------------------------------- results


@pytest.mark.every_start_method("a graph's first task is the first thing a fresh worker runs")
def test_diamond(local_pool: LocalPool) -> None:
    """A diamond graph gives its result, and each node runs once."""
    results = aioflow.execute_graph(NB_DIAMOND, **local_pool.options(max_workers=2))
    assert dict(results) == {"return_value": 7}
    assert results.executions == {"start": 1, "left": 1, "right": 1, "total": 1}


@pytest.mark.every_start_method("a graph's first task is the first thing a fresh worker runs")
async def test_diamond_async(local_pool: LocalPool) -> None:
    """execute_graph_async gives the diamond's result on every event loop."""
    results = await aioflow.execute_graph_async(NB_DIAMOND, **local_pool.options(max_workers=2))
    assert dict(results) == {"return_value": 7}
    assert results.executions == {"start": 1, "left": 1, "right": 1, "total": 1}


@pytest.mark.needs("processes")
def test_one_worker_runs_every_node(local_pool: LocalPool) -> None:
    """With max_workers=1 every node runs in the same worker process: never a process per task."""
    graph = {"nodes": [method_node(f"n{i}", "tasks.pid") for i in range(10)]}
    results = aioflow.execute_graph(graph, merge_outputs=False, **local_pool.options(max_workers=1))
    pids = {r["return_value"] for r in results.values()}
    assert len(pids) == 1
    assert pids != {os.getpid()}


def worker_identity() -> tuple[int, int]:
    """The process and thread a task runs in (see `worker_at_rendezvous`): its worker, on any local pool."""
    return os.getpid(), threading.get_native_id()


async def test_an_open_pool_s_warm_worker_runs_the_next_execution(local_pool: LocalPool) -> None:
    """Two executions on one open pool of one worker run in the same worker; closing the pool ends it."""
    graph = {"nodes": [method_node("w", "test_pool_behaviour.worker_identity")]}
    async with aioflow.open_pool(**local_pool.options(max_workers=1)) as pool:
        first = await aioflow.execute_graph_async(graph, pool=pool)
        second = await aioflow.execute_graph_async(graph, pool=pool)
    assert first == second
    assert (first["return_value"][0] == os.getpid()) == (not local_pool.can("processes"))
    assert pool.closed


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments a call received (module-level: spawned workers import it by name)."""
    return args, kwargs


def test_keywords_named_like_aioflow_s_own_parameters_reach_the_function(local_pool: LocalPool) -> None:
    """Every keyword reaches the function, those named like the executor's own parameters too."""
    with Executor(**local_pool.options(max_workers=1)) as ex:
        future = ex.submit(capture, 1, self=2, fn=3, owner=4)
        assert future.result(timeout=DEADLINE) == ((1,), {"self": 2, "fn": 3, "owner": 4})
        with pytest.raises(TypeError):
            ex.submit(fn=capture)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- options


@pytest.mark.needs("start methods")
def test_an_unknown_start_method_is_refused_before_any_worker_starts(local_pool: LocalPool) -> None:
    """An unknown start method raises OptionError and starts no process."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(aioflow.OptionError, match="context"):
        aioflow.execute_graph(NB_DIAMOND, pool_type=local_pool.pool_type, context="vfork")
    with pytest.raises(aioflow.OptionError, match="context"):
        aioflow.open_pool(local_pool.pool_type, context="thread")
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


# --------------------------------------------------------------------------- errors and values


@pytest.mark.needs("processes")
def test_a_task_s_exception_keeps_the_worker_s_traceback(local_pool: LocalPool) -> None:
    """A task's exception reaches the caller as is, with the worker's traceback text as its cause."""
    graph = {"nodes": [method_node("bad", "tasks.fail", reason=1)]}
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(graph, **local_pool.options(max_workers=1))
    error = info.value.error
    assert isinstance(error, ValueError)
    assert "failed on purpose" in str(error)
    assert "Traceback" in str(error.__cause__)


@pytest.mark.needs("processes")
def test_an_unpicklable_result_names_the_node_and_the_type(local_pool: LocalPool) -> None:
    """A result that cannot be pickled fails its node with TransferError; the other node and the pool carry on."""
    graph = {
        "graph": {"id": "lock"},
        "nodes": [method_node("l", "tasks.unpicklable_output"), method_node("ok", "tasks.inc", x=1)],
    }
    with aioflow.open_pool(**local_pool.options(max_workers=1)) as pool:
        results = aioflow.execute_graph(graph, pool=pool, raise_on_error=False, merge_outputs=False)
        error = results.errors["l"]
        assert isinstance(error, aioflow.TransferError), repr(error)
        assert "graph 'lock': node 'l': a value of type '_thread.lock' cannot be sent between processes" in str(error)
        assert "use pool_type='thread'" in str(error)
        assert results["ok"]["return_value"] == 2
        assert aioflow.execute_graph(NB_DIAMOND, pool=pool) == {"return_value": 7}


@pytest.mark.needs("processes")
def test_an_unpicklable_input_names_the_node_and_the_type(local_pool: LocalPool) -> None:
    """An input that cannot be pickled fails its node with TransferError before it reaches a worker."""
    graph = {"graph": {"id": "lock"}, "nodes": [method_node("i", "tasks.identity")]}
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(graph, startargs={"value": threading.Lock()}, **local_pool.options(max_workers=1))
    assert isinstance(info.value.error, aioflow.TransferError), repr(info.value.error)
    message = "graph 'lock': node 'i': a value of type '_thread.lock' cannot be sent between processes"
    assert message in str(info.value.error)


# --------------------------------------------------------------------------- processes of their own


@pytest.mark.every_start_method("whether a worker is daemonic is settled as it starts")
@pytest.mark.needs("nested processes")
def test_a_task_starts_a_pool_and_a_process_of_its_own(local_pool: LocalPool) -> None:
    """The task sees a non-daemonic process, and starts a multiprocessing Pool and Process."""
    graph = {
        "nodes": [
            method_node("info", task("worker_info")),
            method_node("pool", task("nested_pool"), values=[-1, -2, 3]),
            method_node("process", task("nested_process")),
        ]
    }
    results = aioflow.execute_graph(graph, merge_outputs=False, **local_pool.options(max_workers=2))
    assert results["info"]["return_value"]["daemon"] is False
    assert results["pool"]["return_value"] == [1, 2, 3]
    assert results["process"]["return_value"] == 0


@pytest.mark.every_start_method("whether a worker is daemonic is settled as it starts")
@pytest.mark.needs("daemonic workers")
def test_a_task_starting_a_process_on_daemonic_workers_is_told_which_pools_allow_it(local_pool: LocalPool) -> None:
    """multiprocessing refuses a daemonic worker's children at once; the error names the pools that allow them."""
    graph = {"nodes": [method_node("info", task("worker_info")), method_node("process", task("nested_process"))]}
    results = aioflow.execute_graph(
        graph, merge_outputs=False, raise_on_error=False, **local_pool.options(max_workers=1)
    )
    assert results["info"]["return_value"]["daemon"] is True
    error = results.errors["process"]
    assert isinstance(error, RuntimeError)
    assert f"the workers of the {local_pool.pool_type!r} pool are daemonic" in str(error)
    assert "daemonic processes are not allowed to have children" in str(error)
    assert "pool_type 'ndmultiprocessing', 'ndprocess' or 'process'" in str(error)
    assert "AssertionError: daemonic processes" in str(error.__cause__)  # the worker's traceback


# --------------------------------------------------------------------------- stopping


@pytest.mark.needs("processes")
def test_a_timeout_kills_the_workers_and_what_their_tasks_started(local_pool: LocalPool, tmp_path: Path) -> None:
    """A timeout raises ExecutionTimeoutError; no worker, nor any process a task started, survives it."""
    # A multiprocessing.Process needs a non-daemonic worker; a subprocess does not.
    nested = local_pool.can("nested processes")
    inputs = {"directory": str(tmp_path), "with_process": nested}
    graph = {"nodes": [method_node(n, task("sleep_with_children"), **inputs) for n in ("a", "b")]}
    with pytest.raises(aioflow.ExecutionTimeoutError) as info:
        aioflow.execute_graph(graph, timeout=5, **local_pool.options(max_workers=2))
    assert sorted(info.value.running) == ["a", "b"]
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(records) == 2, "both tasks should have started their children within the timeout"
    pids = [pid for r in records for pid in [r["worker"], *r["children"]]]
    assert len(pids) == (6 if nested else 4)
    assert _wait_gone(pids) == []


# --------------------------------------------------------------------------- idle workers


def worker_at_rendezvous(directory: str, count: int) -> tuple[int, int]:
    """Wait until ``count`` calls run at the same time (each a worker of its own); return this worker's identity.

    The identity is the process and the thread's native id, which the system
    does not hand out again soon after the thread ends (a retired thread's
    replacement has another), on a thread pool as on a process pool.
    """
    Path(directory, f"{os.getpid()}-{threading.get_native_id()}").touch()
    end = time.monotonic() + DEADLINE
    while len(list(Path(directory).iterdir())) < count:
        if time.monotonic() > end:
            msg = f"only {len(list(Path(directory).iterdir()))} of {count} calls ran at the same time"
            raise TimeoutError(msg)
        time.sleep(0.01)
    return os.getpid(), threading.get_native_id()


def _running(worker: tuple[int, int]) -> bool:
    """Whether a worker identity of `worker_at_rendezvous` still runs: its process, or its thread here."""
    pid, thread = worker
    if pid != os.getpid():
        return not _gone(pid)
    return any(t.native_id == thread for t in threading.enumerate())


def _burst(pool: aioflow.Pool, directory: Path, count: int) -> set[tuple[int, int]]:
    """Run ``count`` calls that must run at the same time; return the workers that ran them."""
    directory.mkdir()
    graph = {
        "nodes": [
            method_node(i, "test_pool_behaviour.worker_at_rendezvous", directory=str(directory), count=count)
            for i in range(count)
        ]
    }
    results = aioflow.execute_graph(graph, pool=pool, merge_outputs=False, timeout=DEADLINE)
    workers = {tuple(r["return_value"]) for r in results.values()}
    assert len(workers) == count
    return workers


def _listed_workers(pool: aioflow.Pool) -> set[int]:
    """The pids of the workers a process pool's executor counts as its own (none for a thread pool)."""
    return set(getattr(pool.executor, "worker_pids", list)())


@pytest.mark.every_start_method("a retired worker's exit is read from the process object its start method made")
@pytest.mark.needs("idle retirement")
def test_idle_workers_retire_and_the_next_task_starts_a_new_one(local_pool: LocalPool, tmp_path: Path) -> None:
    """After a burst, workers idle for idle_timeout exit; the next task starts a fresh one, and a burst grows the pool."""
    with aioflow.open_pool(**local_pool.options(max_workers=3, idle_timeout=0.3)) as pool:
        burst = _burst(pool, tmp_path / "burst", 3)
        deadline = time.monotonic() + DEADLINE
        # Until they have exited, and are gone from the list of workers a process pool keeps.
        while any(map(_running, burst)) or _listed_workers(pool):
            assert time.monotonic() < deadline, "the idle workers never retired"
            time.sleep(0.05)
        graph = {"nodes": [method_node("w", "test_pool_behaviour.worker_identity")]}
        after = aioflow.execute_graph(graph, pool=pool, timeout=DEADLINE)["return_value"]
        assert tuple(after) not in burst
        assert not _burst(pool, tmp_path / "again", 2) & burst


@pytest.mark.needs("idle retirement")
@pytest.mark.parametrize(
    "options", [{"idle_timeout": None}, {"scaling_workers": False, "idle_timeout": 0.2}], ids=["never", "fixed"]
)
def test_workers_stay_without_idle_timeout_or_scaling(
    local_pool: LocalPool, options: dict[str, Any], tmp_path: Path
) -> None:
    """idle_timeout=None, or scaling_workers=False, keeps every worker, and the next task runs on one of them."""
    with aioflow.open_pool(**local_pool.options(max_workers=2, **options)) as pool:
        workers = _burst(pool, tmp_path / "burst", 2)
        time.sleep(1.0)  # five times the idle timeout of the "fixed" case
        assert all(map(_running, workers))
        assert _listed_workers(pool) == ({pid for pid, _ in workers} if local_pool.can("processes") else set())
        graph = {"nodes": [method_node("w", "test_pool_behaviour.worker_identity")]}
        assert tuple(aioflow.execute_graph(graph, pool=pool, timeout=DEADLINE)["return_value"]) in workers


# --------------------------------------------------------------------------- lost workers

#: How a task ends its worker (remote_error_tasks.die), the exit code and signal the error names.
DEATHS = [("SIGKILL", -9, "SIGKILL"), ("SIGTERM", -15, "SIGTERM"), ("exit3", 3, None)]


@pytest.mark.every_start_method("a worker's end is read from the process object its start method made")
@pytest.mark.needs("processes")
@pytest.mark.parametrize(("how", "exitcode", "signal"), DEATHS)
def test_a_lost_worker_fails_its_node_only_named_by_node_pid_and_exit(
    tmp_path: Path, local_pool: LocalPool, how: str, exitcode: int, signal: str | None
) -> None:
    """The node whose worker died fails with WorkerLostError (node, pid, how it ended); the others run once each."""
    pid_file = tmp_path / "pid"
    graph = {
        "graph": {"id": "deaths"},
        "nodes": [
            method_node("victim", f"{POOLS_DIR / 'remote_error_tasks.py'}::die", pid_file=str(pid_file), how=how),
            *(method_node(f"ok{i}", "tasks.identity", value=i) for i in range(6)),
        ],
    }
    results = aioflow.execute_graph(
        graph,
        raise_on_error=False,
        outputs=[{"all": True}],
        merge_outputs=False,
        timeout=DEADLINE,
        **local_pool.options(max_workers=2),
    )
    assert {f"ok{i}": results[f"ok{i}"]["return_value"] for i in range(6)} == {f"ok{i}": i for i in range(6)}
    assert all(results.executions[f"ok{i}"] == 1 for i in range(6))
    error = results.errors["victim"]
    assert isinstance(error, aioflow.WorkerLostError), repr(error)
    pid = _read_pid(pid_file)
    assert (error.node_id, error.pid, error.exitcode, error.signal) == ("victim", pid, exitcode, signal)
    assert f"graph 'deaths': node 'victim' lost its worker process (pid {pid}" in str(error)
    assert (signal or f"exit code {exitcode}") in str(error)
    assert isinstance(error.__cause__, WorkerDied)
    assert (signal or f"exit code {exitcode}") in str(error.__cause__)


def _new_idle_workers(before: set[int]) -> list[psutil.Process]:
    """The processes below this one started since ``before``, but the fork server and the trackers."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.pid in before or proc.children() or "_tracker" in " ".join(proc.cmdline()):
                continue
        except psutil.Error:
            continue
        found.append(proc)
    return found


@pytest.mark.every_start_method("a worker's end is read from the process object its start method made")
@pytest.mark.needs("processes")
def test_workers_killed_while_idle_do_not_fail_the_next_execution(local_pool: LocalPool) -> None:
    """Every worker of an open pool SIGKILLed between two executions: the second one still runs in full."""
    graph = {"nodes": [method_node(f"n{i}", "tasks.identity", value=i) for i in range(6)]}
    expected = {f"n{i}": {"return_value": i} for i in range(6)}
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with aioflow.open_pool(**local_pool.options(max_workers=2)) as pool:
        assert aioflow.execute_graph(graph, pool=pool, merge_outputs=False, timeout=DEADLINE) == expected
        victims = _new_idle_workers(before)
        assert victims
        for victim in victims:
            victim.kill()
        # Until they are reaped, and gone from the pool's list of workers that
        # take calls where it has one (the process pools): those hand a call to
        # an idle worker whose death they have not read yet, and fail it.
        listed = getattr(pool.executor, "worker_pids", list)
        deadline = time.monotonic() + DEADLINE
        while any(psutil.pid_exists(v.pid) or v.pid in listed() for v in victims):
            assert time.monotonic() < deadline, "the killed workers were never reaped"
            time.sleep(0.01)
        assert aioflow.execute_graph(graph, pool=pool, merge_outputs=False, timeout=DEADLINE) == expected


@pytest.mark.needs("processes")
def test_a_dead_worker_s_replacement_runs_the_error_handler_and_the_next_executions(local_pool: LocalPool) -> None:
    """On an open pool of one worker, after a worker death: its node's on_error handler runs, then the next executions.

    The replacement is a warm worker: the execution after the handler's runs on it.
    """
    boom = method_node("boom", task("exit_worker"), code=5)
    handled = {
        "nodes": [boom, method_node("handler", "tasks.pid")],
        "links": [{"source": "boom", "target": "handler", "on_error": True}],
    }
    with aioflow.open_pool(**local_pool.options(max_workers=1)) as pool:
        with pytest.raises(aioflow.NodeError) as info:
            aioflow.execute_graph({"nodes": [boom]}, pool=pool, timeout=DEADLINE)
        assert isinstance(info.value.error, aioflow.WorkerLostError)
        results = aioflow.execute_graph(handled, pool=pool, merge_outputs=False, timeout=DEADLINE)
        again = aioflow.execute_graph({"nodes": [method_node("p", "tasks.pid")]}, pool=pool, timeout=DEADLINE)
        assert aioflow.execute_graph(NB_DIAMOND, pool=pool, timeout=DEADLINE) == {"return_value": 7}
    assert not results.errors
    assert results.executions == {"boom": 1, "handler": 1}
    assert results["handler"]["return_value"] not in (os.getpid(), None)
    assert again["return_value"] == results["handler"]["return_value"]


# --------------------------------------------------------------------------- forked while another thread imports


@pytest.mark.needs("processes")
def test_a_worker_forked_while_another_thread_imports_a_module_can_import_it(
    local_pool: LocalPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked worker does not inherit a half-made import and its held lock: it imports the module afresh.

    The parent's thread is inside the module's body when the worker forks;
    the worker then unpickles a call of a function of that module. Without
    `aioflow.pools._lifecycle.forget_unfinished_imports` it waits forever
    for a lock whose holder does not exist in it.
    """
    (tmp_path / "slowly_imported.py").write_text("import time\ntime.sleep(1.5)\n\n\ndef value():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slowly_imported", raising=False)
    importer = threading.Thread(target=importlib.import_module, args=("slowly_imported",))
    importer.start()
    try:
        time.sleep(0.3)  # the thread is in the module's body now
        graph = {"nodes": [method_node("v", "slowly_imported.value")]}
        results = aioflow.execute_graph(graph, timeout=DEADLINE, **local_pool.options(max_workers=1, context="fork"))
    finally:
        importer.join()
    assert results == {"return_value": 42}


def test_the_modules_are_copied_whole_even_if_they_change_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked worker reads ``sys.modules`` while a finalizer or another thread may import: it copies again."""
    from aioflow.pools import _lifecycle

    class Changing(dict[str, Any]):
        """A modules dict whose first two copies fail as a dict that changed size does."""

        failures = 2

        def copy(self) -> dict[str, Any]:
            if Changing.failures:
                Changing.failures -= 1
                msg = "dictionary changed size during iteration"
                raise RuntimeError(msg)
            return dict(self)

    modules = Changing(sys.modules)
    monkeypatch.setattr(sys, "modules", modules)
    copied = _lifecycle._modules_now()
    monkeypatch.undo()
    assert Changing.failures == 0
    assert dict(copied) == dict(modules)
