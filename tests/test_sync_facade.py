"""`aioflow.execute_graph`, the sync facade: with and without a running loop, loop choice, errors and Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
import uvloop
from conftest import STDLIB_SINGLETONS
from graphs import NB_DIAMOND, method_node, return_value_link

import aioflow

if TYPE_CHECKING:
    from collections.abc import Callable

TESTS_DIR = Path(__file__).resolve().parent

# The name of the thread `execute_graph` runs the engine in when a loop already
# runs in the calling thread (aioflow/scheduler/_sync.py).
SYNC_THREAD = "aioflow-sync"

# Generous deadlines; only a hang reaches them.
PROCESS_DEADLINE = 60.0  # a script to start its workers, a process tree to exit
INTERRUPT_DEADLINE = 30.0  # a script to end after Ctrl-C (it takes well under a second)

node = method_node
link = return_value_link
DIAMOND = NB_DIAMOND
DIAMOND_BY_NODE = {
    "start": {"return_value": 2},
    "left": {"return_value": 3},
    "right": {"return_value": 4},
    "total": {"return_value": 7},
}

# "first" succeeds, then "second" raises ValueError.
FAILING = {
    "graph": {"id": "failing"},
    "nodes": [node("first", "tasks.inc", x=1), node("second", "tasks.fail")],
    "links": [link("first", "second", "x")],
}

# "first" succeeds, then "slow" sleeps far longer than any timeout used here.
SLOW = {
    "graph": {"id": "slow"},
    "nodes": [node("first", "tasks.inc", x=1), node("slow", "tasks.sleep_python", seconds=3600)],
    "links": [link("first", "slow", "value")],
}

# Narrowed pool matrix for the error tests: one thread pool, one process pool.
THREAD_AND_PROCESS = [
    pytest.param({"pool_type": "thread", "max_workers": 2}, id="thread"),
    pytest.param({"pool_type": "process", "max_workers": 2, "context": "spawn"}, id="process-spawn"),
]
ALL_NODES = [{"all": True}]


class Recorder:
    """An ``on_event`` callback noting the thread and the loop class each event was emitted from."""

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.loops: set[type[asyncio.AbstractEventLoop]] = set()
        self.kinds: list[str] = []

    def __call__(self, event: aioflow.Event) -> None:
        self.threads.add(threading.current_thread().name)
        self.loops.add(type(asyncio.get_running_loop()))
        self.kinds.append(event.kind)


def sync_threads() -> list[str]:
    """Names of the facade's helper threads that are still alive."""
    return [t.name for t in threading.enumerate() if t.name == SYNC_THREAD]


def run_in_new_loop(coro_fn: Any, *, use_uvloop: bool = False) -> Any:
    """Run ``coro_fn()`` on a fresh loop in this thread (asyncio's, or uvloop's)."""
    factory = uvloop.new_event_loop if use_uvloop else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro_fn())


# --------------------------------------------------------------------------- a loop already runs


async def test_sync_call_inside_a_coroutine_matches_the_async_api(pool_config: dict[str, Any]) -> None:
    """Inside a running asyncio loop, execute_graph returns what execute_graph_async returns, via a helper thread that ends."""
    expected = await aioflow.execute_graph_async(DIAMOND, outputs=ALL_NODES, merge_outputs=False, **pool_config)
    recorder = Recorder()
    got = aioflow.execute_graph(DIAMOND, outputs=ALL_NODES, merge_outputs=False, on_event=recorder, **pool_config)
    assert isinstance(got, aioflow.Results)
    assert got == expected == DIAMOND_BY_NODE
    assert got.executions == expected.executions
    assert got.errors == expected.errors == {}
    assert recorder.threads == {SYNC_THREAD}
    assert sync_threads() == []


def test_sync_call_inside_a_running_uvloop_loop_matches_the_async_api(pool_config: dict[str, Any]) -> None:
    """Inside a running uvloop loop, execute_graph returns what execute_graph_async returns, via a helper thread that ends."""
    recorder = Recorder()

    async def main() -> tuple[aioflow.Results, aioflow.Results]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        expected = await aioflow.execute_graph_async(DIAMOND, outputs=ALL_NODES, merge_outputs=False, **pool_config)
        got = aioflow.execute_graph(DIAMOND, outputs=ALL_NODES, merge_outputs=False, on_event=recorder, **pool_config)
        return expected, got

    expected, got = run_in_new_loop(main, use_uvloop=True)
    assert got == expected == DIAMOND_BY_NODE
    assert got.executions == expected.executions
    assert recorder.threads == {SYNC_THREAD}
    assert sync_threads() == []


def test_sync_call_without_a_running_loop_runs_in_the_calling_thread() -> None:
    """Without a running loop, execute_graph runs the engine in the calling thread and starts no helper thread."""
    recorder = Recorder()
    got = aioflow.execute_graph(DIAMOND, outputs=ALL_NODES, merge_outputs=False, pool_type="thread", on_event=recorder)
    assert got == DIAMOND_BY_NODE
    assert recorder.threads == {threading.current_thread().name}
    assert recorder.kinds[0] == "graph.started"
    assert recorder.kinds[-1] == "graph.finished"


# --------------------------------------------------------------------------- which loop


@pytest.mark.parametrize("inside_loop", [False, True], ids=["no-loop", "inside-loop"])
@pytest.mark.parametrize(
    ("option", "expected"),
    [
        pytest.param(True, uvloop.Loop, id="uvloop-true"),
        pytest.param(False, asyncio.SelectorEventLoop, id="uvloop-false"),
    ],
)
def test_uvloop_option_selects_the_loop_class(option: bool | None, expected: type, inside_loop: bool) -> None:
    """uvloop=True runs the engine on uvloop (installed here), uvloop=False on asyncio's own loop."""
    recorder = Recorder()

    def call() -> aioflow.Results:
        return aioflow.execute_graph(DIAMOND, pool_type="thread", uvloop=option, on_event=recorder)

    async def call_from_coroutine() -> aioflow.Results:
        return call()

    got = run_in_new_loop(call_from_coroutine) if inside_loop else call()
    assert got == {"return_value": 7}
    assert recorder.loops == {expected}
    assert recorder.threads == ({SYNC_THREAD} if inside_loop else {threading.current_thread().name})


def inc_chain(n: int) -> dict[str, Any]:
    """``n`` nodes in a line, each adding one to its predecessor's value."""
    nodes = [{"id": i, "task_type": "method", "task_identifier": "tasks.inc"} for i in range(n)]
    links = [
        {"source": i, "target": i + 1, "data_mapping": [{"source_output": "return_value", "target_input": "x"}]}
        for i in range(n - 1)
    ]
    return {"graph": {"id": f"chain{n}"}, "nodes": nodes, "links": links}


@pytest.mark.parametrize("inside_loop", [False, True], ids=["no-loop", "inside-loop"])
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(lambda: inc_chain(99), asyncio.SelectorEventLoop, id="dict-99-nodes"),
        pytest.param(lambda: inc_chain(100), uvloop.Loop, id="dict-100-nodes"),
        pytest.param(lambda: aioflow.load_graph(inc_chain(99)), asyncio.SelectorEventLoop, id="graph-99-nodes"),
        pytest.param(lambda: aioflow.load_graph(inc_chain(100)), uvloop.Loop, id="graph-100-nodes"),
        pytest.param(lambda: json.dumps(inc_chain(3)), uvloop.Loop, id="json-string-not-read-ahead"),
    ],
)
def test_default_uvloop_runs_graphs_of_100_nodes_or_more_on_uvloop(
    given: Callable[[], Any], expected: type, inside_loop: bool
) -> None:
    """uvloop=None: uvloop for a graph of 100 nodes or more (or one it does not count), asyncio's loop below."""
    recorder = Recorder()
    graph = given()

    def call() -> aioflow.Results:
        return aioflow.execute_graph(graph, pool_type="thread", on_event=recorder, outputs=[])

    async def call_from_coroutine() -> aioflow.Results:
        return call()

    run_in_new_loop(call_from_coroutine) if inside_loop else call()
    assert recorder.loops == {expected}
    assert "graph.finished" in recorder.kinds


@pytest.mark.parametrize("value", ["yes", 1, 0], ids=repr)
@pytest.mark.parametrize("inside_loop", [False, True], ids=["no-loop", "inside-loop"])
def test_invalid_uvloop_option_raises_option_error_before_running(inside_loop: bool, value: object) -> None:
    """A uvloop value other than True, False or None raises OptionError naming the option, and nothing runs."""
    recorder = Recorder()

    def call() -> aioflow.Results:
        return aioflow.execute_graph(DIAMOND, pool_type="thread", uvloop=value, on_event=recorder)  # type: ignore[arg-type]

    async def call_from_coroutine() -> aioflow.Results:
        return call()

    with pytest.raises(aioflow.OptionError) as info:
        run_in_new_loop(call_from_coroutine) if inside_loop else call()
    assert info.value.option == "uvloop"  # type: ignore[attr-defined]
    assert "'uvloop'" in str(info.value)
    assert recorder.kinds == []
    assert sync_threads() == []


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("pool_config", THREAD_AND_PROCESS, indirect=True)
async def test_node_error_crosses_the_helper_thread(pool_config: dict[str, Any]) -> None:
    """A NodeError raised in the helper thread reaches the caller unchanged: type, node, cause and results."""
    options: dict[str, Any] = {"outputs": ALL_NODES, "merge_outputs": False, **pool_config}
    with pytest.raises(aioflow.NodeError) as async_info:
        await aioflow.execute_graph_async(FAILING, **options)
    with pytest.raises(aioflow.NodeError) as sync_info:
        aioflow.execute_graph(FAILING, **options)
    error = sync_info.value
    assert type(error) is aioflow.NodeError
    assert error.node_id == "second"
    assert isinstance(error.__cause__, ValueError)
    assert error.error is error.__cause__
    assert error.results == async_info.value.results == {"first": {"return_value": 2}, "second": {}}
    assert list(error.results.errors) == ["second"]
    assert sync_threads() == []


@pytest.mark.parametrize("pool_config", THREAD_AND_PROCESS, indirect=True)
async def test_timeout_error_crosses_the_helper_thread(pool_config: dict[str, Any]) -> None:
    """An ExecutionTimeoutError raised in the helper thread reaches the caller with its timeout, running nodes and results."""
    with pytest.raises(aioflow.ExecutionTimeoutError) as info:
        aioflow.execute_graph(SLOW, timeout=2, outputs=ALL_NODES, merge_outputs=False, **pool_config)
    error = info.value
    assert type(error) is aioflow.ExecutionTimeoutError
    assert isinstance(error, TimeoutError)
    assert error.timeout == 2
    assert error.running == ("slow",)
    assert error.results == {"first": {"return_value": 2}}
    assert sync_threads() == []


async def test_callback_error_crosses_the_helper_thread() -> None:
    """An exception raised by on_event in the helper thread reaches the caller as the same exception."""

    class CallbackFailed(Exception):
        pass

    def on_event(event: aioflow.Event) -> None:
        if event.kind == "node.finished":
            raise CallbackFailed(event.node_id)

    with pytest.raises(CallbackFailed):
        aioflow.execute_graph(DIAMOND, pool_type="thread", on_event=on_event)
    assert sync_threads() == []


# --------------------------------------------------------------------------- Ctrl-C

# Run as ``python interrupt_me.py MODE CONTEXT MARKER...``: executes one
# long-sleeping task per marker on a process pool, from a plain script
# (MODE no-loop) or from a coroutine (MODE asyncio.run / run_until_complete).
# On KeyboardInterrupt it reports what is left of the execution, exits 42.
INTERRUPT_SCRIPT = """
from __future__ import annotations

import asyncio
import sys
import threading

import psutil

import aioflow

MODE, CONTEXT, MARKERS = sys.argv[1], sys.argv[2], sys.argv[3:]
GRAPH = {
    "graph": {"id": "sleepers"},
    "nodes": [
        {
            "id": f"sleeper{i}",
            "task_type": "method",
            "task_identifier": "nb_tasks.mark_and_sleep",
            "default_inputs": [{"name": "path", "value": marker}],
        }
        for i, marker in enumerate(MARKERS)
    ],
    "links": [],
}


def run() -> None:
    aioflow.execute_graph(GRAPH, pool_type="process", context=CONTEXT, max_workers=len(MARKERS))


async def run_from_coroutine() -> None:
    run()


def live_workers() -> int:
    count = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "resource_tracker" not in cmdline and "forkserver" not in cmdline:
            count += 1
    return count


if __name__ == "__main__":
    try:
        if MODE == "no-loop":
            run()
        elif MODE == "asyncio.run":
            asyncio.run(run_from_coroutine())
        elif MODE == "run_until_complete":
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(run_from_coroutine())
            finally:
                loop.close()
        else:
            sys.exit(f"unknown mode {MODE!r}")
    except KeyboardInterrupt:
        threads = [t.name for t in threading.enumerate() if t.name == "aioflow-sync"]
        print(f"interrupted; live workers: {live_workers()}; sync threads: {threads}", flush=True)
        sys.exit(42)
    print("finished without an interruption", flush=True)
"""


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a script and everything below it (cleanup after a failure)."""
    try:
        root = psutil.Process(proc.pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.communicate()


def wait_for_markers(proc: subprocess.Popen[str], markers: list[Path]) -> None:
    """Wait until every task has started (created its marker), failing if the script ends first."""
    deadline = time.monotonic() + PROCESS_DEADLINE
    while not all(m.exists() for m in markers):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the script ended (code {proc.returncode}) before its tasks started:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"the tasks did not start within {PROCESS_DEADLINE} s")
        time.sleep(0.05)


@pytest.mark.parametrize("context", ["spawn", "fork"])
@pytest.mark.parametrize("mode", ["no-loop", "asyncio.run", "run_until_complete"])
def test_ctrl_c_interrupts_execution_and_stops_every_worker(tmp_path: Path, mode: str, context: str) -> None:
    """Ctrl-C during execute_graph raises KeyboardInterrupt in the caller after every worker is gone; no process survives."""
    script = tmp_path / "interrupt_me.py"
    script.write_text(INTERRUPT_SCRIPT)
    markers = [tmp_path / "first.started", tmp_path / "second.started"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, context, *map(str, markers)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the Ctrl-C below reaches it alone
    )
    try:
        wait_for_markers(proc, markers)
        tree = psutil.Process(proc.pid).children(recursive=True)
        workers = [p for p in tree if not any(s in " ".join(p.cmdline()) for s in STDLIB_SINGLETONS)]
        assert len(workers) == len(markers)
        # A terminal's Ctrl-C sends SIGINT to the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=INTERRUPT_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the script was still running {INTERRUPT_DEADLINE} s after Ctrl-C")
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 42, err
    assert out == "interrupted; live workers: 0; sync threads: []\n"
    _, alive = psutil.wait_procs(tree, timeout=PROCESS_DEADLINE)
    assert [p.pid for p in alive] == []
