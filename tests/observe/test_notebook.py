"""A run's live display in a real Jupyter kernel: shown once, updated in place, a final summary; off when asked; nothing outside a kernel.

One notebook runs in a real ipykernel (nbclient, as a notebook front end
runs it) for the whole module; the tests read its cells' outputs, and the
display messages the kernel sent for each cell (``display_data``, then
``update_display_data`` with the same display id), captured as they came.
The tasks are functions the notebook defines (``__main__.nap``), run on the
thread pool.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nbformat
import pytest
from graphs import method_node, return_value_link
from nbclient import NotebookClient

import aioflow

if TYPE_CHECKING:
    from pathlib import Path

    from nbformat import NotebookNode

# Generous deadlines: the notebook takes a few seconds, a script well under
# one; only a hang reaches them.
NOTEBOOK_DEADLINE = 90
SCRIPT_DEADLINE = 60.0

# How long each slow task sleeps: long enough that the display (updated every
# 0.25 s) is updated several times while the graph runs.
NAP = 0.3

node = method_node
link = return_value_link

# a -> b -> c, each sleeping NAP seconds; "bad" fails (ValueError) once a has run.
SLOW = {
    "graph": {"id": "slow"},
    "nodes": [
        *(node(n, "__main__.nap", x=1, delay=NAP) for n in "abc"),
        node("bad", "__main__.boom"),
    ],
    "links": [link("a", "b", "x"), link("b", "c", "x"), link("a", "bad", "x")],
}

# a -> b -> c, quick.
CHAIN = {
    "graph": {"id": "chain"},
    "nodes": [node(n, "__main__.nap", x=1, delay=0) for n in "abc"],
    "links": [link("a", "b", "x"), link("b", "c", "x")],
}

# More nodes than the display gives a chip each (NODE_TABLE_LIMIT = 50).
WIDE = {
    "graph": {"id": "wide"},
    "nodes": [node(f"n{i}", "__main__.nap", x=i, delay=0) for i in range(60)],
    "links": [],
}

SETUP = f"""
import asyncio, json, os, time
import aioflow

def nap(x, delay):
    time.sleep(delay)
    return x + 1

def boom(x):
    raise ValueError("boom on purpose")

SLOW = json.loads({json.dumps(json.dumps(SLOW))})
CHAIN = json.loads({json.dumps(json.dumps(CHAIN))})
WIDE = json.loads({json.dumps(json.dumps(WIDE))})
"""

# The notebook's cells after SETUP, by name; a name in RAISING marks a cell
# that ends with an exception (the run's).
CELLS = {
    "await": 'await aioflow.execute_graph_async(SLOW, pool_type="thread", raise_on_error=False)',
    "sync": """
        asyncio.get_running_loop()  # raises unless the kernel's loop runs this cell: execute_graph uses its helper thread
        aioflow.execute_graph(SLOW, pool_type="thread", raise_on_error=False)
    """,
    "failed": 'await aioflow.execute_graph_async(SLOW, pool_type="thread")',
    # b is running when the timeout expires (1.5 NAP).
    "timeout": 'aioflow.execute_graph(SLOW, pool_type="thread", raise_on_error=False, timeout=0.45)',
    "cancelled": """
        b_started = asyncio.Event()

        def on_event(event):
            if event.kind == "node.started" and event.node_id == "b":
                b_started.set()

        async with aioflow.start(SLOW, pool_type="thread", raise_on_error=False, on_event=on_event) as run:
            await b_started.wait()
            run.cancel()
            try:
                await run
            except asyncio.CancelledError:
                print("cancelled")
    """,
    "off": 'await aioflow.execute_graph_async(CHAIN, pool_type="thread", display=False)',
    "off_sync": 'aioflow.execute_graph(CHAIN, pool_type="thread", display=False)',
    "env_off": """
        os.environ["AIOFLOW_DISPLAY"] = "0"
        await aioflow.execute_graph_async(CHAIN, pool_type="thread")
    """,
    "env_off_display_true": """
        await aioflow.execute_graph_async(CHAIN, pool_type="thread", display=True)
        del os.environ["AIOFLOW_DISPLAY"]
    """,
    "events": """
        shown, hidden = [], []
        await aioflow.execute_graph_async(CHAIN, pool_type="thread", on_event=shown.append)
        await aioflow.execute_graph_async(CHAIN, pool_type="thread", on_event=hidden.append, display=False)
        print(json.dumps({
            "shown": [[e.kind, e.node_id] for e in shown],
            "hidden": [[e.kind, e.node_id] for e in hidden],
        }))
    """,
    "wide": 'aioflow.execute_graph(WIDE, pool_type="thread")',
}
RAISING = {"failed", "timeout"}


@dataclass
class Message:
    """One display message the kernel sent for a cell."""

    kind: str  # display_data or update_display_data
    display_id: str | None
    html: str


@dataclass
class Cell:
    """One executed cell: its outputs as the notebook keeps them, and the display messages sent for it."""

    outputs: list[NotebookNode]
    messages: list[Message] = field(default_factory=list)

    def displays(self) -> list[NotebookNode]:
        """The cell's ``display_data`` outputs."""
        return [out for out in self.outputs if out.output_type == "display_data"]

    def display(self) -> NotebookNode:
        """The cell's one display output."""
        displays = self.displays()
        assert len(displays) == 1, f"expected one display output, got {len(displays)}"
        return displays[0]

    def html(self) -> str:
        """The HTML the cell's display shows now (its final state)."""
        text: str = self.display().data["text/html"]
        return text

    def stdout(self) -> str:
        return "".join(out.text for out in self.outputs if out.output_type == "stream" and out.name == "stdout")

    def error(self) -> str | None:
        errors = [out.ename for out in self.outputs if out.output_type == "error"]
        return errors[0] if errors else None


class RecordingClient(NotebookClient):
    """nbclient's client, recording every display message of each cell before it applies it."""

    def __init__(self, nb: NotebookNode, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.sent: dict[int, list[Message]] = {}

    def process_message(self, msg: dict[str, Any], cell: NotebookNode, cell_index: int) -> NotebookNode | None:
        kind = msg["msg_type"]
        if kind in ("display_data", "update_display_data"):
            content = msg["content"]
            display_id = (content.get("transient") or {}).get("display_id")
            html = content["data"].get("text/html", "")
            self.sent.setdefault(cell_index, []).append(Message(kind, display_id, html))
        return super().process_message(msg, cell, cell_index)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cell]:
    """The notebook's cells, executed in a real kernel, by name (nbclient shuts the kernel down at the end)."""
    names = list(CELLS)
    v4: Any = nbformat.v4  # untyped
    nb = v4.new_notebook()
    nb.cells = [v4.new_code_cell(SETUP)]
    for name in names:
        cell = v4.new_code_cell(textwrap.dedent(CELLS[name]).strip())
        if name in RAISING:
            cell.metadata["tags"] = ["raises-exception"]
        nb.cells.append(cell)
    client = RecordingClient(
        nb,
        timeout=NOTEBOOK_DEADLINE,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}},
    )
    client.execute()
    return {name: Cell(list(nb.cells[i].outputs), client.sent.get(i, [])) for i, name in enumerate(["setup", *names])}


def state(html: str) -> dict[str, str]:
    """The run's state as the display's root element carries it (``data-status``, ``data-done``...)."""
    root = re.search(r'<div class="aioflow-run" ([^>]*)>', html)
    assert root is not None, f"not the display of a run: {html[:200]}"
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', root.group(1)))


def node_states(html: str) -> dict[str, str]:
    """Node id -> the state its chip shows."""
    return dict(re.findall(r'data-node="([^"]*)" data-state="([^"]*)"', html))


# --------------------------------------------------------------------------- updated in place


@pytest.mark.parametrize("name", ["await", "sync"])
def test_run_shows_one_display_that_updates_in_place(notebook: dict[str, Cell], name: str) -> None:
    """A run in a cell (awaited, or the sync call on the running loop) sends one display, then updates of that same display."""
    cell = notebook[name]
    kinds = [m.kind for m in cell.messages]
    assert kinds[0] == "display_data"
    assert kinds.count("display_data") == 1
    assert kinds.count("update_display_data") >= 3
    assert {m.display_id for m in cell.messages} == {cell.messages[0].display_id}
    assert cell.messages[0].display_id is not None
    assert state(cell.messages[0].html)["status"] == "starting"
    middle = [state(m.html) for m in cell.messages[1:-1]]
    assert any(s["status"] == "running" and 0 < int(s["done"]) < int(s["total"]) for s in middle), middle
    # The notebook keeps one output, which holds the last update.
    assert len(cell.displays()) == 1
    assert cell.html() == cell.messages[-1].html


@pytest.mark.parametrize("name", ["await", "sync"])
def test_final_display_is_the_run_summary(notebook: dict[str, Cell], name: str) -> None:
    """Once the run is over the display shows every node done, the counts, and the failed node with its error."""
    cell = notebook[name]
    html = cell.html()
    assert state(html) == {
        "graph": "slow",
        "status": "finished with errors",
        "done": "4",
        "total": "4",
        "running": "0",
        "finished": "3",
        "failed": "1",
    }
    assert node_states(html) == {"a": "finished", "b": "finished", "c": "finished", "bad": "failed"}
    assert "ValueError: boom on purpose" in html
    text = cell.display().data["text/plain"]
    assert text.startswith("aioflow graph 'slow': finished with errors, 4/4 nodes done")
    assert "bad: ValueError: boom on purpose" in text


# --------------------------------------------------------------------------- how a run ends


def test_failed_run_ends_as_failed_with_its_error(notebook: dict[str, Cell]) -> None:
    """A node error that stops the run: the cell raises NodeError, the display says failed, the node running then is stopped."""
    cell = notebook["failed"]
    assert cell.error() == "NodeError"
    html = cell.html()
    assert state(html)["status"] == "failed"
    assert state(html)["running"] == "0"
    assert node_states(html) == {"a": "finished", "b": "stopped", "c": "not run", "bad": "failed"}
    assert "ValueError: boom on purpose" in html
    assert "1 not run" in html
    assert cell.messages[-1].kind == "update_display_data"


def test_timed_out_run_ends_as_timed_out(notebook: dict[str, Cell]) -> None:
    """A run past its ``timeout``: the cell raises ExecutionTimeoutError, and the display says so."""
    cell = notebook["timeout"]
    assert cell.error() == "ExecutionTimeoutError"
    html = cell.html()
    assert state(html)["status"] == "timed out"
    assert "ExecutionTimeoutError" in html


def test_cancelled_run_ends_as_cancelled(notebook: dict[str, Cell]) -> None:
    """A run cancelled through its handle: the display's final state says cancelled, with node b stopped."""
    cell = notebook["cancelled"]
    assert cell.error() is None
    assert cell.stdout().strip() == "cancelled"
    html = cell.html()
    assert state(html)["status"] == "cancelled"
    assert node_states(html)["b"] == "stopped"


# --------------------------------------------------------------------------- turning it off


@pytest.mark.parametrize("name", ["off", "off_sync", "env_off"])
def test_turned_off_run_shows_nothing(notebook: dict[str, Cell], name: str) -> None:
    """``display=False``, awaited or sync, or ``AIOFLOW_DISPLAY=0``: no display output, no display message."""
    cell = notebook[name]
    assert cell.error() is None
    assert cell.displays() == []
    assert cell.messages == []


def test_display_true_wins_over_the_environment(notebook: dict[str, Cell]) -> None:
    """``display=True`` shows the run even when ``AIOFLOW_DISPLAY=0``."""
    cell = notebook["env_off_display_true"]
    assert state(cell.html())["status"] == "finished"
    assert node_states(cell.html()) == {"a": "finished", "b": "finished", "c": "finished"}


def test_on_event_gets_every_event_in_order_with_the_display_on(notebook: dict[str, Cell]) -> None:
    """The user's ``on_event`` sees the same events, in the same order, with the display on and off."""
    cell = notebook["events"]
    seen = json.loads(cell.stdout())
    expected = [["graph.started", None]]
    for n in "abc":
        expected += [["node.queued", n], ["node.started", n], ["node.finished", n]]
    expected.append(["graph.finished", None])
    assert seen["shown"] == seen["hidden"] == expected
    assert len(cell.displays()) == 1  # the first run's; the second has display=False


def test_large_graph_shows_counts_without_a_chip_per_node(notebook: dict[str, Cell]) -> None:
    """A graph of more than 50 nodes: the display gives the counts, and no per-node states."""
    html = notebook["wide"].html()
    assert state(html)["done"] == state(html)["total"] == "60"
    assert state(html)["status"] == "finished"
    assert node_states(html) == {}
    assert "aioflow-nodes" not in html


# --------------------------------------------------------------------------- outside a kernel

# A script that runs a graph with display=True, then prints what it imported.
SCRIPT = """
import json, sys
{prelude}
import aioflow
graph = {{"graph": {{"id": "g"}}, "nodes": [{{"id": "a", "task_type": "method", "task_identifier": "tasks.inc"}}]}}
results = aioflow.execute_graph(graph, pool_type="thread", display=True)
print(json.dumps({{
    "results": dict(results),
    "ipython": "IPython" in sys.modules,
    "display_module": "aioflow.observe._notebook" in sys.modules,
}}))
"""


def run_script(prelude: str, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """Run SCRIPT in a fresh interpreter; return what it printed last (as JSON), and everything it printed."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(prelude=prelude)],
        capture_output=True,
        text=True,
        timeout=SCRIPT_DEADLINE,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def test_outside_a_kernel_nothing_is_shown_and_ipython_is_not_imported(tmp_path: Path) -> None:
    """In a plain interpreter a run with ``display=True`` prints nothing, and imports neither IPython nor the display."""
    seen, stdout = run_script("", tmp_path)
    assert seen == {"results": {"return_value": 1}, "ipython": False, "display_module": False}
    assert stdout.count("\n") == 1  # only the script's own line


def test_ipython_imported_outside_a_kernel_shows_nothing(tmp_path: Path) -> None:
    """A script that imports IPython is not a kernel: the run shows nothing (no text repr printed in place of a display)."""
    seen, stdout = run_script("import IPython", tmp_path)
    assert seen["results"] == {"return_value": 1}
    assert seen["ipython"] is True
    assert stdout.count("\n") == 1
    assert "aioflow graph" not in stdout


def test_display_takes_only_true_false_or_none() -> None:
    """Another value of ``display`` is an OptionError naming it, raised before anything runs."""
    with pytest.raises(aioflow.OptionError, match=r"'display' must be True, False or None \(got 'yes'"):
        aioflow.execute_graph(CHAIN, pool_type="thread", display="yes")
