"""A worker that dies while it is being started, before it has read its start-up data, is a worker that died.

With ``spawn`` and ``forkserver`` the parent writes each new worker its
start-up data (the preparation data and the pickled process object, with the
pool's ``initargs``) into a pipe the worker reads. When that data is larger
than the pipe's buffer, the write waits for the worker: if the worker is gone
by then, the standard library's ``spawn`` start waits forever (the parent
keeps the pipe's read end open itself) and its ``forkserver`` start raises
``BrokenPipeError`` in whichever thread started the worker. Either must only
cost a worker: it is replaced, it counts as a worker that died before it was
ready, and no caller sees the error.

Each test runs an execution in a fresh interpreter (`SCRIPT`), in a session
of its own, with a hard timeout, where the N-th worker started dies before
it reads a byte: with ``spawn`` the multiprocessing executable is a shell
script (`DIE_AT_SPAWN`) that exits at once instead of running Python, with
``forkserver`` a module the fork server preloads (`DIE_AT_FORK`) ends the
child right after the fork. Which starts die is counted in a directory of
tokens (one ``mkdir`` per start, atomic). The ``initargs`` are larger than a
pipe's buffer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

#: Seconds an execution may take: generous, only a hang reaches it.
HANG_LIMIT = 120

#: Seconds the processes of a finished execution's session get to end (the fork server and trackers go with it).
EXIT_GRACE = 10

POOLS = ("multiprocessing", "ndmultiprocessing", "process", "ndprocess", "billiard")
CONTEXTS = ("spawn", "forkserver")

#: The pools that queue a call until a worker takes it: a worker that dies as it starts costs no call.
QUEUEING = ("multiprocessing", "ndmultiprocessing", "billiard")

#: What the pools name the option that retires a worker after some calls (a replacement starts then).
TASKS_PER_CHILD = {"process": "max_tasks_per_child", "ndprocess": "max_tasks_per_child"}

#: Which starts die (the first start is 0): at the pool's first start, or when workers are replaced.
DEATHS = {"first": (0, 3), "replacement": (2, 5), "always": (0, 1_000_000)}

DIE_AT_SPAWN = """#!/bin/sh
# The N-th spawned worker (its command line ends with --multiprocessing-fork, or billiard's --billiard-fork) exits at once.
case "$*" in
*--multiprocessing-fork* | *--billiard-fork*)
    i=0
    while ! mkdir "{tokens}/$i" 2>/dev/null; do i=$((i + 1)); done
    if [ "$i" -ge {first} ] && [ "$i" -lt {last} ]; then exit 3; fi;;
esac
exec "{python}" "$@"
"""

DIE_AT_FORK = """
# Preloaded by the fork server: the N-th process it forks exits at once, before it reads anything.
import itertools
import os

_SERVER = os.getpid()


def _die_at_start():
    if os.getppid() != _SERVER:
        return  # forked by a worker, not by the fork server
    tokens = os.environ["DIE_TOKENS"]
    for i in itertools.count():
        try:
            os.mkdir(os.path.join(tokens, str(i)))
        except FileExistsError:
            continue
        if int(os.environ["DIE_FIRST"]) <= i < int(os.environ["DIE_LAST"]):
            os._exit(3)
        return


os.register_at_fork(after_in_child=_die_at_start)
"""

SCRIPT = """
import json
import multiprocessing
import os
import sys
import time

#: Larger than a pipe's buffer (64 KiB): writing it waits for the worker to read it.
BLOB_SIZE = 1 << 20


def check_blob(blob):
    assert len(blob) == BLOB_SIZE


def twice(x):
    return 2 * x


def left_behind():
    # Every process of ours but the fork server and the trackers, once the pool is closed: none may stay.
    import psutil

    me = os.getpid()
    deadline = time.monotonic() + 10
    while True:
        found = []
        for proc in psutil.Process(me).children(recursive=True):
            try:
                cmdline = " ".join(proc.cmdline())
                if "_tracker" in cmdline or (proc.ppid() == me and "forkserver" in cmdline):
                    continue
                found.append(f"{proc.pid} {proc.status()}")
            except psutil.NoSuchProcess:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def main(pool_type, context, die_at, tasks_option):
    import aioflow

    if context == "spawn":
        multiprocessing.set_executable(die_at)
        if pool_type == "billiard":
            import billiard

            billiard.set_executable(die_at)
    else:
        multiprocessing.get_context("forkserver").set_forkserver_preload([die_at])
    identifier = f"{os.path.abspath(__file__)}::twice"
    graph = {
        "nodes": [
            {"id": f"n{i}", "task_type": "method", "task_identifier": identifier,
             "default_inputs": [{"name": "x", "value": i}]}
            for i in range(6)
        ]
    }
    options = {"initializer": check_blob, "initargs": (b"x" * BLOB_SIZE,)}
    if tasks_option:
        options[tasks_option] = 1
    results = aioflow.execute_graph(
        graph, pool_type=pool_type, context=context, max_workers=2, pool_options=options,
        raise_on_error=False, outputs=[{"all": True}], merge_outputs=False,
    )
    record = {"results": {}, "errors": {}, "left_behind": left_behind()}
    for i in range(6):
        node = f"n{i}"
        if node in results.errors:
            error = results.errors[node]
            record["errors"][node] = {
                "type": type(error).__name__,
                "message": str(error),
                "exitcode": getattr(error, "exitcode", None),
            }
        else:
            record["results"][node] = results[node]["return_value"]
    print("RECORD " + json.dumps(record), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
"""


def _session_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_dying_starts(
    tmp_path: Path, pool_type: str, context: str, deaths: str, tasks_option: str = ""
) -> dict[str, Any]:
    """Run `SCRIPT` with the starts ``DEATHS[deaths]`` dying; return its record. Fails on a hang or a leftover process."""
    first, last = DEATHS[deaths]
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    script = tmp_path / "dying_starts.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "DIE_TOKENS": str(tokens), "DIE_FIRST": str(first), "DIE_LAST": str(last)}
    if context == "spawn":
        die_at = tmp_path / "python"
        die_at.write_text(DIE_AT_SPAWN.format(tokens=tokens, first=first, last=last, python=sys.executable))
        die_at.chmod(0o755)
        target = str(die_at)
    else:
        (tmp_path / "die_at_fork.py").write_text(DIE_AT_FORK)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
        target = "die_at_fork"
    command = [sys.executable, str(script), pool_type, context, target, tasks_option]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=HANG_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the execution hung (killed after {HANG_LIMIT} s):\n{err[-4000:]}")
    finally:
        deadline = time.monotonic() + EXIT_GRACE
        while _session_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _session_alive(proc.pid)
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-4000:]
    assert not left, "processes of the execution outlived it"
    lines = [line for line in out.splitlines() if line.startswith("RECORD ")]
    assert lines, err[-4000:]
    record: dict[str, Any] = json.loads(lines[-1][len("RECORD ") :])
    assert record["left_behind"] == [], "processes left once the pool was closed"
    assert sum(1 for _ in tokens.iterdir()) > first, "no start died: the test tests nothing"
    return record


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("pool_type", POOLS)
@pytest.mark.parametrize("deaths", ["first", "replacement"])
def test_worker_dying_as_it_starts_costs_no_other_call(
    tmp_path: Path, pool_type: str, context: str, deaths: str
) -> None:
    """Workers that die before reading their start-up data are replaced; only their own call (if any) fails.

    The pools that queue calls lose none (a dead worker had taken none); the
    process pools hand a call to a worker as it starts, and that call fails
    with WorkerLostError naming the worker's exit, as for any worker that
    dies. No ``BrokenPipeError`` (or other ``OSError``) reaches a caller.
    """
    tasks_option = TASKS_PER_CHILD.get(pool_type, "maxtasksperchild") if deaths == "replacement" else ""
    record = run_dying_starts(tmp_path, pool_type, context, deaths, tasks_option)
    for node, error in record["errors"].items():
        assert (error["type"], error["exitcode"]) == ("WorkerLostError", 3), f"{node}: {error}"
    if pool_type in QUEUEING:
        assert record["errors"] == {}
    assert record["results"] == {f"n{i}": 2 * i for i in range(6) if f"n{i}" not in record["errors"]}
    assert len(record["results"]) >= 3


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("pool_type", POOLS)
def test_workers_that_always_die_as_they_start_break_the_pool(tmp_path: Path, pool_type: str, context: str) -> None:
    """Every start dies: every call fails with WorkerLostError, within a bounded time, and nothing is left."""
    record = run_dying_starts(tmp_path, pool_type, context, "always")
    assert record["results"] == {}
    for node, error in record["errors"].items():
        assert error["type"] == "WorkerLostError", f"{node}: {error}"
    if pool_type in ("multiprocessing", "ndmultiprocessing"):
        assert all("in a row died before they were ready" in e["message"] for e in record["errors"].values())


@pytest.mark.parametrize("method", CONTEXTS)
def test_on_a_python_it_was_not_written_for_a_worker_starts_as_the_stdlib_starts_it(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """The process pools open on any Python: there, the start the stdlib's internals are overridden for is the stdlib's."""
    import multiprocessing.popen_forkserver
    import multiprocessing.popen_spawn_posix

    from aioflow.pools import _mp_start

    stdlib = {"spawn": multiprocessing.popen_spawn_posix.Popen, "forkserver": multiprocessing.popen_forkserver.Popen}
    for running, overridden in [(("cpython", (3, 99, 0)), False), (_mp_start._running_version(), True)]:
        monkeypatch.setattr(_mp_start, "_running_version", lambda running=running: running)
        process = _mp_start.start_context(method).Process(target=int)
        process.start()
        process.join(HANG_LIMIT)
        assert process.exitcode == 0
        assert (type(process._popen) is not stdlib[method]) is overridden
        process.close()
