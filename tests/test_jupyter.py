"""aioflow inside a real Jupyter kernel: top-level ``await``, the sync facade, notebook tasks, errors and interrupts.

Each test starts its own ipykernel (the same kernel a notebook talks to),
sends it cells over the Jupyter protocol, and reads what the cell printed or
returned from the iopub messages, and its status from the ``execute_reply``.
The fixture always shuts the kernel down and waits until every process it
started has ended.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from conftest import STDLIB_SINGLETONS
from graphs import NB_DIAMOND, method_node, return_value_link
from jupyter_client.manager import KernelManager, start_new_kernel

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jupyter_client.blocking.client import BlockingKernelClient

TESTS_DIR = Path(__file__).resolve().parent

# Generous deadlines: a cell here takes well under a second, a kernel starts
# in one or two. Only a hang reaches them.
CELL_DEADLINE = 60.0
KERNEL_START_DEADLINE = 60.0
# Waiting for processes (workers to start, the kernel's tree to exit).
PROCESS_DEADLINE = 60.0

node = method_node
link = return_value_link
DIAMOND = NB_DIAMOND
DIAMOND_RESULT = {"return_value": 7}

# "first" succeeds, then "second" raises ValueError.
FAILING = {
    "graph": {"id": "failing"},
    "nodes": [node("first", "tasks.inc", x=1), node("second", "tasks.fail")],
    "links": [link("first", "second", "x")],
}

# Two functions defined by a notebook cell: double(double(5)) = 20.
NOTEBOOK_TASKS = {
    "graph": {"id": "notebook"},
    "nodes": [node("once", "__main__.double", x=5), node("twice", "__main__.double")],
    "links": [link("once", "twice", "x")],
}

# Both nodes run in a worker: the square, and the worker's process id.
IN_WORKERS = {
    "graph": {"id": "in_workers"},
    "nodes": [node("square", "nb_tasks.square", x=7), node("pid", "nb_tasks.worker_pid")],
    "links": [],
}

# How a cell calls the engine: the sync facade on the kernel's running loop,
# or a top-level await.
CALL_FORMS = {
    "sync": "aioflow.execute_graph({args})",
    "await": "await aioflow.execute_graph_async({args})",
}


@dataclass
class Cell:
    """What one executed cell produced.

    Attributes:
        status: the ``execute_reply`` status: ``ok``, ``error`` or ``aborted``.
        stdout: everything the cell printed.
        result: the ``text/plain`` of the cell's value (``None`` when it has none).
        ename: the exception class name of the cell's error output.
        evalue: the exception message of the cell's error output.
        traceback: the error output's traceback lines (with terminal colours).
        reply_ename: the exception class name given in the ``execute_reply``.
    """

    status: str
    stdout: str
    result: str | None
    ename: str | None
    evalue: str | None
    traceback: list[str]
    reply_ename: str | None

    def value(self) -> Any:
        """The cell's value, parsed back from its ``repr``."""
        assert self.status == "ok", f"cell failed: {self.ename}: {self.evalue}"
        assert self.result is not None, "the cell has no value"
        return ast.literal_eval(self.result)

    def printed(self) -> Any:
        """The last line the cell printed, parsed as JSON."""
        assert self.status == "ok", f"cell failed: {self.ename}: {self.evalue}"
        return json.loads(self.stdout.strip().splitlines()[-1])


class Kernel:
    """One running ipykernel, and a client that sends it cells."""

    def __init__(self, manager: KernelManager, client: BlockingKernelClient, cwd: Path) -> None:
        self.manager = manager
        self.client = client
        self.cwd = cwd
        provisioner = manager.provisioner
        assert provisioner is not None
        self.process = psutil.Process(provisioner.process.pid)  # type: ignore[attr-defined]

    def submit(self, code: str) -> str:
        """Send a cell without waiting for it; return its message id."""
        msg_id: str = self.client.execute(textwrap.dedent(code), stop_on_error=False)
        return msg_id

    def collect(self, msg_id: str) -> Cell:
        """Wait until the cell ``msg_id`` is done; return what it produced."""
        deadline = time.monotonic() + CELL_DEADLINE
        stdout: list[str] = []
        result: str | None = None
        error: dict[str, Any] = {}
        while True:  # iopub, until the kernel goes idle after this cell
            msg = self._next(self.client.get_iopub_msg, deadline, msg_id)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                stdout.append(content["text"])
            elif kind == "execute_result":
                result = content["data"].get("text/plain")
            elif kind == "error":
                error = content
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self._next(self.client.get_shell_msg, deadline, msg_id)["content"]
        return Cell(
            status=reply["status"],
            stdout="".join(stdout),
            result=result,
            ename=error.get("ename"),
            evalue=error.get("evalue"),
            traceback=list(error.get("traceback", [])),
            reply_ename=reply.get("ename"),
        )

    @staticmethod
    def _next(get: Any, deadline: float, msg_id: str) -> dict[str, Any]:
        """The next message of one channel that belongs to the cell ``msg_id``."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no answer from the kernel within {CELL_DEADLINE} s")
            try:
                msg: dict[str, Any] = get(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def run(self, code: str) -> Cell:
        """Execute one cell and wait for it."""
        return self.collect(self.submit(code))

    def define(self, name: str, value: Any) -> None:
        """Bind ``name`` in the notebook to ``value`` (JSON-compatible), and import what cells use."""
        cell = self.run(
            f"import asyncio, json, os, threading\nimport aioflow\n{name} = json.loads({json.dumps(value)!r})"
        )
        assert cell.status == "ok", f"{cell.ename}: {cell.evalue}"

    def workers(self) -> list[psutil.Process]:
        """The kernel's child processes that are pool workers (not stdlib helpers)."""
        result = []
        for proc in self.process.children():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue
            if not any(s in cmdline for s in STDLIB_SINGLETONS):
                result.append(proc)
        return result

    def shutdown(self) -> None:
        """Stop the kernel; fail if any process it started outlives it."""
        try:
            tree = [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)
        _, alive = psutil.wait_procs(tree, timeout=PROCESS_DEADLINE)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        if alive:
            pytest.fail(f"processes of the kernel outlived it: {[p.pid for p in alive]}")


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    """A fresh ipykernel whose cwd is a temporary directory; task modules import through PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    manager, client = start_new_kernel(
        kernel_name="python3", startup_timeout=KERNEL_START_DEADLINE, cwd=str(tmp_path), env=env
    )
    running = Kernel(manager, client, tmp_path)
    try:
        yield running
    finally:
        running.shutdown()


def wait_for_files(paths: list[Path]) -> None:
    """Wait until every file exists (tasks create them when they start)."""
    deadline = time.monotonic() + PROCESS_DEADLINE
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            pytest.fail(f"tasks did not start within {PROCESS_DEADLINE} s: {[str(p) for p in paths]}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- results


def test_top_level_await_returns_results(kernel: Kernel) -> None:
    """``await aioflow.execute_graph_async(...)`` at the top level of a cell returns the graph's results."""
    kernel.define("GRAPH", DIAMOND)
    cell = kernel.run(
        """
        results = await aioflow.execute_graph_async(GRAPH, pool_type="thread")
        dict(results)
        """
    )
    assert cell.value() == DIAMOND_RESULT


def test_sync_call_on_the_running_kernel_loop_returns_results(kernel: Kernel) -> None:
    """``aioflow.execute_graph(...)`` in a cell (the kernel's loop is running) returns the results from a helper thread that ends."""
    kernel.define("GRAPH", DIAMOND)
    cell = kernel.run(
        """
        asyncio.get_running_loop()  # raises unless the kernel's loop runs this cell
        seen = set()
        results = aioflow.execute_graph(
            GRAPH, pool_type="thread", on_event=lambda e: seen.add(threading.current_thread().name)
        )
        left = [t.name for t in threading.enumerate() if t.name == "aioflow-sync"]
        print(json.dumps({"threads": sorted(seen), "left": left}))
        dict(results)
        """
    )
    assert cell.value() == DIAMOND_RESULT
    assert cell.printed() == {"threads": ["aioflow-sync"], "left": []}


@pytest.mark.parametrize("form", list(CALL_FORMS))
def test_function_defined_in_the_notebook_runs_on_the_thread_pool(kernel: Kernel, form: str) -> None:
    """A function defined in a cell runs as ``__main__.<name>`` on the thread pool."""
    kernel.define("GRAPH", NOTEBOOK_TASKS)
    assert kernel.run("def double(x): return 2 * x").status == "ok"
    call = CALL_FORMS[form].format(args='GRAPH, pool_type="thread"')
    cell = kernel.run(f"dict({call})")
    assert cell.value() == {"return_value": 20}


def test_function_defined_in_the_notebook_on_a_spawn_pool_points_to_the_thread_pool(kernel: Kernel) -> None:
    """A notebook function on a spawn process pool fails with a NodeError whose ImportError names the thread pool."""
    kernel.define("GRAPH", NOTEBOOK_TASKS)
    assert kernel.run("def double(x): return 2 * x").status == "ok"
    cell = kernel.run('aioflow.execute_graph(GRAPH, pool_type="process", context="spawn", max_workers=1)')
    assert cell.status == "error"
    assert cell.ename == "NodeError"
    assert cell.evalue is not None
    assert "ImportError" in cell.evalue
    assert "'__main__.double'" in cell.evalue
    assert "thread pool" in cell.evalue


@pytest.mark.parametrize("context", ["spawn", "fork"])
@pytest.mark.parametrize("form", list(CALL_FORMS))
def test_process_pool_runs_tasks_from_an_importable_module(kernel: Kernel, form: str, context: str) -> None:
    """On a process pool, tasks of a module on the kernel's path run in worker processes that end with the call."""
    kernel.define("GRAPH", IN_WORKERS)
    call = CALL_FORMS[form].format(args=f'GRAPH, pool_type="process", context="{context}", merge_outputs=False')
    cell = kernel.run(f"dict({call})")
    results = cell.value()
    assert results["square"] == {"return_value": 49}
    worker = results["pid"]["return_value"]
    assert worker != kernel.process.pid
    assert worker not in {p.pid for p in kernel.workers()}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("form", list(CALL_FORMS))
def test_failing_node_shows_node_error_and_kernel_stays_usable(kernel: Kernel, form: str) -> None:
    """A failing node makes the cell fail with NodeError (its ValueError chained); the next cells run normally."""
    kernel.define("FAILING", FAILING)
    kernel.define("GRAPH", DIAMOND)
    call = CALL_FORMS[form].format(args='FAILING, pool_type="thread"')
    cell = kernel.run(call)
    assert cell.status == "error"
    assert cell.ename == cell.reply_ename == "NodeError"
    assert cell.evalue is not None
    assert "'second'" in cell.evalue
    assert "failed on purpose" in cell.evalue
    assert any("ValueError" in line for line in cell.traceback)

    details = kernel.run(
        f"""
        try:
            {call}
        except aioflow.NodeError as exc:
            error = exc
        print(json.dumps({{
            "node": error.node_id,
            "cause": type(error.__cause__).__name__,
            "errors": list(error.results.errors),
            "threads": [t.name for t in threading.enumerate() if t.name == "aioflow-sync"],
        }}))
        """
    )
    assert details.printed() == {"node": "second", "cause": "ValueError", "errors": ["second"], "threads": []}
    again = CALL_FORMS[form].format(args='GRAPH, pool_type="thread"')
    assert kernel.run(f"dict({again})").value() == DIAMOND_RESULT


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_interrupting_the_kernel_stops_a_sync_call_and_its_workers(kernel: Kernel, context: str) -> None:
    """Interrupting a cell blocked in ``execute_graph`` raises KeyboardInterrupt after its workers are gone."""
    markers = [kernel.cwd / "a.started", kernel.cwd / "b.started"]
    sleepers = {
        "graph": {"id": "sleepers"},
        "nodes": [node(p.stem, "nb_tasks.mark_and_sleep", path=str(p)) for p in markers],
        "links": [],
    }
    kernel.define("SLEEPERS", sleepers)
    kernel.define("GRAPH", DIAMOND)
    msg_id = kernel.submit(f'aioflow.execute_graph(SLEEPERS, pool_type="process", context="{context}", max_workers=2)')
    wait_for_files(markers)
    workers = kernel.workers()
    assert len(workers) == 2
    kernel.manager.interrupt_kernel()
    cell = kernel.collect(msg_id)
    assert cell.status == "error"
    assert cell.ename == "KeyboardInterrupt"
    # The facade waits for the execution's cleanup before it re-raises.
    assert [p.pid for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert kernel.run('dict(aioflow.execute_graph(GRAPH, pool_type="thread"))').value() == DIAMOND_RESULT
