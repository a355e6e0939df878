"""The multiprocessing pools: results, worker death, stopping, and the daemonic limit."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import psutil
import pytest
from graphs import method_node, return_value_link

import aioflow
from aioflow.pools._multiprocessing import _MultiprocessingExecutor
from aioflow.pools._outcomes import BrokenMultiprocessingPool, Inbox, WorkerDied

MP_TASKS = Path(__file__).resolve().parent / "mp_tasks.py"

POOLS = ("multiprocessing", "ndmultiprocessing")
CONTEXTS = ("spawn", "fork", "forkserver")

# Generous: only a hang reaches it.
HANG_LIMIT = 60


def task(name: str) -> str:
    """The identifier of a task function of mp_tasks.py."""
    return f"{MP_TASKS}::{name}"


node = method_node


link = return_value_link


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_workers_start_at_once_even_when_scaling() -> None:
    """multiprocessing.Pool starts all its workers up front: scaling_workers=True behaves as False."""
    before = {p.pid for p in psutil.Process().children()}
    with aioflow.open_pool("multiprocessing", max_workers=3, context="fork", scaling_workers=True) as pool:
        aioflow.execute_graph({"nodes": [node("a", "tasks.inc")]}, pool=pool)
        workers = [p for p in psutil.Process().children() if p.pid not in before]
        assert len(workers) == 3


@pytest.mark.parametrize("pool_type", POOLS)
def test_unknown_pool_option_is_refused(pool_type: str) -> None:
    """pool_options other than multiprocessing.Pool's initializer, initargs, maxtasksperchild raise OptionError."""
    with pytest.raises(aioflow.OptionError, match="pool_options"):
        aioflow.open_pool(pool_type, pool_options={"max_tasks_per_child": 1})


@pytest.mark.timeout(HANG_LIMIT, method="thread")
def test_workers_retired_by_maxtasksperchild_are_not_taken_for_lost() -> None:
    """Workers that exit cleanly after maxtasksperchild calls are replaced, and no call fails."""
    graph = {"nodes": [node(f"n{i}", "tasks.pid") for i in range(6)]}
    results = aioflow.execute_graph(
        graph,
        pool_type="multiprocessing",
        context="fork",
        max_workers=1,
        pool_options={"maxtasksperchild": 1},
        merge_outputs=False,
    )
    assert len({r["return_value"] for r in results.values()}) == 6


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize("pool_type", POOLS)
def test_failing_initializer_fails_the_calls_instead_of_hanging(pool_type: str) -> None:
    """An initializer that raises fails the node with WorkerLostError whose cause shows the initializer's error."""
    import tasks

    graph = {"nodes": [node("a", "tasks.inc")]}
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(
            graph, pool_type=pool_type, context="fork", max_workers=1, pool_options={"initializer": tasks.fail}
        )
    assert isinstance(info.value.error, aioflow.WorkerLostError)
    assert "failed on purpose" in str(info.value.error.__cause__)


INTERRUPTED = """
import sys, aioflow
graph = {"nodes": [
    {"id": i, "task_type": "method", "task_identifier": sys.argv[1] + "::sleep_with_process",
     "default_inputs": [{"name": "directory", "value": sys.argv[2]}]}
    for i in range(2)
]}
if __name__ == "__main__":
    try:
        aioflow.execute_graph(graph, pool_type="ndmultiprocessing", context="spawn", max_workers=2)
    except KeyboardInterrupt:
        sys.exit(130)
"""


@pytest.mark.timeout(HANG_LIMIT, method="thread")
def test_ctrl_c_leaves_no_worker_nor_grandchild(tmp_path: Path) -> None:
    """SIGINT to a program running ndmultiprocessing tasks that started processes leaves none of them running."""
    records = tmp_path / "records"
    records.mkdir()
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    env = {**os.environ, "PYTHONPATH": str(MP_TASKS.parent.parent)}
    proc = subprocess.Popen([sys.executable, str(script), str(MP_TASKS), str(records)], env=env)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + HANG_LIMIT / 2
        while len(list(records.glob("*.json"))) < 2:
            assert time.monotonic() < deadline, "the tasks did not start"
            assert proc.poll() is None, "the program ended early"
            time.sleep(0.05)
        for path in records.glob("*.json"):
            record = json.loads(path.read_text())
            pids += [record["worker"], *record["children"]]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=HANG_LIMIT / 2) == 130
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:
            if _alive(pid):
                psutil.Process(pid).kill()


def test_sigint_ignored_and_stop_is_prompt_for_a_long_task() -> None:
    """Stopping a long task by timeout returns well before the task would end."""
    graph = {"nodes": [node("a", "tasks.sleep", seconds=3600)]}
    started = time.monotonic()
    with pytest.raises(aioflow.ExecutionTimeoutError):
        aioflow.execute_graph(graph, pool_type="ndmultiprocessing", context="fork", max_workers=1, timeout=1)
    assert time.monotonic() - started < HANG_LIMIT


# --------------------------------------------------------------------------- stopping whatever the pipes hold


def _half_task(executor: Any) -> None:
    """The task pipe holds the rest of a message whose header a worker read before it was killed."""
    payload = ForkingPickler.dumps(None)
    os.write(executor._generation.pool._inqueue._writer.fileno(), bytes(payload))


def _half_result(executor: Any) -> None:
    """The result pipe holds the start of a message a worker was killed while writing: its reader waits for the rest."""
    os.write(executor._generation.pool._outqueue._writer.fileno(), struct.pack("!i", 1 << 20) + b"partial")


def _garbled_result(executor: Any) -> None:
    """The result pipe holds a whole message that does not unpickle (read out of step after a kill)."""
    os.write(executor._generation.pool._outqueue._writer.fileno(), struct.pack("!i", 8) + b"garbage!")


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize("daemonic", [True, False])
@pytest.mark.parametrize("corrupt", [_half_task, _half_result, _garbled_result])
def test_stopping_survives_what_killed_workers_leave_in_the_pipes(corrupt: Any, daemonic: bool) -> None:
    """Aborting a pool whose task or result pipe a killed worker left out of step raises nothing and ends everything.

    The state is written into the pool's real pipes while the only worker
    is busy (nobody else reads them), as a worker killed in the middle of a
    read or a write leaves them.
    """
    executor = _MultiprocessingExecutor(processes=1, context=multiprocessing.get_context("fork"), daemonic=daemonic)
    assert executor._generation is not None
    pool: Any = executor._generation.pool
    threads = [executor._watcher, pool._worker_handler, pool._task_handler, pool._result_handler]
    workers = [p.pid for p in pool._pool]
    future = executor.submit(time.sleep, 3600)
    deadline = time.monotonic() + HANG_LIMIT / 2
    while not future.running():
        assert time.monotonic() < deadline, "the call did not start"
        time.sleep(0.01)
    corrupt(executor)
    executor.abort()
    assert isinstance(future.exception(timeout=HANG_LIMIT / 2), BrokenMultiprocessingPool)
    for thread in threads:
        thread.join(timeout=HANG_LIMIT / 2)
        assert not thread.is_alive(), thread.name
    assert not [pid for pid in workers if _alive(pid)]


# --------------------------------------------------------------------------- a dead worker fails its own call only

ALL = [pytest.param(p, c, id=f"{p}-{c}") for p in POOLS for c in CONTEXTS]


def _chain(name: str, length: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``name0 -> name1 -> ...``: node ``name{j}`` returns ``j + 1``."""
    nodes = [node(f"{name}{j}", task("inc_slowly"), **({"x": 0} if j == 0 else {})) for j in range(length)]
    links = [link(f"{name}{j}", f"{name}{j + 1}", "x") for j in range(length - 1)]
    return nodes, links


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize(("pool_type", "context"), ALL)
def test_healthy_chains_keep_every_result_when_one_branch_kills_its_worker(pool_type: str, context: str) -> None:
    """Four chains beside a branch whose task SIGKILLs its worker: all 20 healthy results, one WorkerLostError."""
    nodes: list[dict[str, Any]] = [node("victim", task("kill_worker_after"), seconds=0.05)]
    links: list[dict[str, Any]] = []
    for i in range(4):
        chain_nodes, chain_links = _chain(f"c{i}_", 5)
        nodes += chain_nodes
        links += chain_links
    results = aioflow.execute_graph(
        {"graph": {"id": "chains"}, "nodes": nodes, "links": links},
        pool_type=pool_type,
        context=context,
        max_workers=2,
        raise_on_error=False,
        outputs=[{"all": True}],
        merge_outputs=False,
        timeout=HANG_LIMIT / 2,
    )
    assert set(results.errors) == {"victim"}
    assert isinstance(results.errors["victim"], aioflow.WorkerLostError)
    assert results.errors["victim"].signal == "SIGKILL"
    healthy = {f"c{i}_{j}": j + 1 for i in range(4) for j in range(5)}
    assert {n: results[n]["return_value"] for n in healthy} == healthy


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize(("pool_type", "context"), ALL)
def test_calls_queued_behind_a_dying_call_all_finish(pool_type: str, context: str) -> None:
    """With one worker, the calls queued in the pool behind a call that kills its worker run on its replacement."""
    graph = {
        "nodes": [node("victim", task("kill_worker"))] + [node(f"n{i}", "tasks.inc", x=i) for i in range(24)],
    }
    results = aioflow.execute_graph(
        graph,
        pool_type=pool_type,
        context=context,
        max_workers=1,
        raise_on_error=False,
        outputs=[{"all": True}],
        merge_outputs=False,
        timeout=HANG_LIMIT / 2,
    )
    assert set(results.errors) == {"victim"}
    assert {f"n{i}": results[f"n{i}"]["return_value"] for i in range(24)} == {f"n{i}": i + 1 for i in range(24)}


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("daemonic", [True, False])
def test_executor_keeps_every_queued_call_when_a_worker_dies(context: str, daemonic: bool) -> None:
    """Forty calls queued in the stdlib pool behind one that kills its worker: only that one fails, with its pid."""
    import mp_tasks
    import tasks

    executor = _MultiprocessingExecutor(processes=2, context=multiprocessing.get_context(context), daemonic=daemonic)
    try:
        victim = executor.submit(mp_tasks.kill_worker_after, 0.1)
        healthy = [executor.submit(mp_tasks.inc_slowly, i, 0.005) for i in range(40)]
        assert [f.result(timeout=HANG_LIMIT / 2) for f in healthy] == [i + 1 for i in range(40)]
        error = victim.exception(timeout=HANG_LIMIT / 2)
        assert isinstance(error, WorkerDied), repr(error)
        assert error.signal == "SIGKILL"
        assert not _alive(error.pid)
        # The executor carries on.
        assert executor.submit(tasks.inc, 1).result(timeout=HANG_LIMIT / 2) == 2
    finally:
        executor.shutdown(wait=True)


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("daemonic", [True, False])
def test_calls_move_to_a_new_pool_when_a_worker_dies_holding_the_task_lock(context: str, daemonic: bool) -> None:
    """A worker dies holding the task queue's read lock: the calls no worker started run on a new pool."""
    import mp_tasks

    executor = _MultiprocessingExecutor(processes=2, context=multiprocessing.get_context(context), daemonic=daemonic)
    try:
        first = executor._generation
        victim = executor.submit(mp_tasks.die_holding_the_task_lock)
        healthy = [executor.submit(mp_tasks.inc_slowly, i, 0.005) for i in range(30)]
        assert [f.result(timeout=HANG_LIMIT / 2) for f in healthy] == [i + 1 for i in range(30)]
        error = victim.exception(timeout=HANG_LIMIT / 2)
        assert isinstance(error, WorkerDied), repr(error)
        assert error.signal == "SIGKILL"
        assert first is not None
        assert first.retired
        assert executor._generation is not first
    finally:
        executor.shutdown(wait=True)


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize(("pool_type", "context"), ALL)
def test_a_worker_killed_at_start_up_is_replaced(pool_type: str, context: str, tmp_path: Path) -> None:
    """The first worker SIGKILLs itself in the initializer: the pool starts another, and every node runs."""
    import mp_tasks

    graph = {"nodes": [node(f"n{i}", "tasks.inc", x=i) for i in range(6)]}
    results = aioflow.execute_graph(
        graph,
        pool_type=pool_type,
        context=context,
        max_workers=2,
        pool_options={"initializer": mp_tasks.die_once_at_start, "initargs": (str(tmp_path / "died"),)},
        merge_outputs=False,
        timeout=HANG_LIMIT / 2,
    )
    assert (tmp_path / "died").exists()
    assert {n: r["return_value"] for n, r in results.items()} == {f"n{i}": i + 1 for i in range(6)}


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize("pool_type", POOLS)
def test_workers_that_always_die_at_start_up_fail_the_calls(pool_type: str) -> None:
    """An initializer that ends every worker fails the node with WorkerLostError instead of hanging."""
    import mp_tasks

    graph = {"nodes": [node("a", "tasks.inc")]}
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(
            graph,
            pool_type=pool_type,
            context="fork",
            max_workers=2,
            pool_options={"initializer": mp_tasks.die_at_start},
            timeout=HANG_LIMIT / 2,
        )
    assert isinstance(info.value.error, aioflow.WorkerLostError)
    assert "exit code 4" in str(info.value.error)


# --------------------------------------------------------------------------- values that cannot cross


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize("pool_type", POOLS)
def test_unpicklable_function_is_a_transfer_error(pool_type: str) -> None:
    """An Executor call whose function cannot be pickled fails with TransferError; the next call runs."""
    import tasks

    with aioflow.Executor(pool_type, max_workers=1, context="spawn") as executor:
        with pytest.raises(aioflow.TransferError, match="cannot be sent between processes"):
            executor.submit(lambda x: x, 1).result(timeout=HANG_LIMIT / 2)
        assert executor.submit(tasks.inc, 1).result(timeout=HANG_LIMIT / 2) == 2


@pytest.mark.timeout(HANG_LIMIT, method="thread")
@pytest.mark.parametrize(("pool_type", "context"), ALL)
def test_result_whose_class_cannot_be_imported_here_fails_its_call_only(pool_type: str, context: str) -> None:
    """A result of a class defined in a task file loaded by path: TransferError naming it, no worker reported dead."""
    graph = {"graph": {"id": "point"}, "nodes": [node("p", task("make_point")), node("ok", "tasks.pid")]}
    with aioflow.open_pool(pool_type, max_workers=1, context=context) as pool:
        results = aioflow.execute_graph(graph, pool=pool, raise_on_error=False, merge_outputs=False)
        error = results.errors["p"]
        assert isinstance(error, aioflow.TransferError), repr(error)
        assert re.search(
            r"graph 'point': node 'p': a value of type 'aioflow_task_file_mp_tasks_\w+\.Point'", str(error)
        )
        assert "cannot be imported in the calling process" in str(error)
        # The worker that sent it is alive and runs the next execution.
        worker = results["ok"]["return_value"]
        assert _alive(worker)
        again = aioflow.execute_graph({"nodes": [node("ok", "tasks.pid")]}, pool=pool)
        assert again == {"return_value": worker}


def test_inbox_returns_whole_messages_and_never_waits_for_the_rest() -> None:
    """The watcher's read of a worker's pipe: whole messages only, and half of one does not block it.

    The write end stays open, as it does when a process the task started
    outlives a worker killed in the middle of a message.
    """
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        inbox = Inbox(reader.fileno())
        writer.send_bytes(b"one")
        writer.send_bytes(b"two")
        assert inbox.receive() == [b"one", b"two"]
        assert inbox.receive() == []
        big = os.urandom(200_000)  # more than the pipe holds: read while it is written
        frame = struct.pack("!i", len(big)) + big + struct.pack("!i", 5) + b"after" + struct.pack("!i", 9) + b"half"
        received: list[bytes] = []
        while frame:
            frame = frame[os.write(writer.fileno(), frame[:30_000]) :]
            received += inbox.receive()
        assert received == [big, b"after"]
        assert inbox.receive() == []  # "half" waits for five more bytes, without blocking
        assert not inbox.eof
        writer.close()
        assert inbox.receive() == []
        assert inbox.eof
    finally:
        writer.close()
        reader.close()


# --------------------------------------------------------------------------- stopping one call stops that call only


@pytest.mark.parametrize("daemonic", [True, False], ids=["multiprocessing", "ndmultiprocessing"])
def test_stopping_a_call_as_it_ends_never_kills_the_next_call_of_its_worker(daemonic: bool) -> None:
    """A worker sends a call's outcome and takes its next call before the pool reads that outcome.

    Stopping the first call in that moment must leave the second alone: each
    call ``a`` below is stopped at about the time it ends, with the call ``b``
    queued behind it on the pool's only worker; ``b`` must always succeed,
    whatever became of ``a`` (done, or stopped: its worker killed).
    """
    executor = _MultiprocessingExecutor(processes=1, context=multiprocessing.get_context("fork"), daemonic=daemonic)
    rng = random.Random(7)
    stopped = 0
    try:
        for _ in range(150):
            a = executor.submit(time.sleep, 0.002)
            b = executor.submit(os.getpid)
            deadline = time.monotonic() + HANG_LIMIT / 2
            while not (a.running() or a.done()):
                assert time.monotonic() < deadline, "the call did not start"
            # Around the moment the call ends: before, at, and just after.
            until = time.monotonic() + 0.002 + rng.uniform(-0.0015, 0.001)
            while time.monotonic() < until:
                pass
            executor.stop_job(a)
            assert isinstance(b.result(timeout=HANG_LIMIT / 2), int)
            if isinstance(a.exception(timeout=HANG_LIMIT / 2), WorkerDied):
                stopped += 1
    finally:
        executor.abort()
    # Some calls were stopped for real (else the test proves nothing), some ended first.
    assert 0 < stopped < 150
