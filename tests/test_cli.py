"""The ``aioflow`` command line: exit codes, JSON output, ``-i`` parsing, ``check``, Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from graphs import COUNTING_LOOP

import aioflow
from aioflow import cli
from aioflow.events import Event

if TYPE_CHECKING:
    from collections.abc import Iterator

TESTS_DIR = Path(__file__).parent
# Generous deadlines: only a hang reaches them.
HANG_DEADLINE = 60.0
# After the CLI exited, its workers are already gone; a process still there after this is a survivor.
GONE_DEADLINE = 30.0


def node(nid: Any, func: str = "tasks.inc", **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": func, **attrs}


def rv(source: Any, target: Any, name: str = "x") -> dict[str, Any]:
    """A link passing return_value as input ``name``."""
    return {
        "source": source,
        "target": target,
        "data_mapping": [{"source_output": "return_value", "target_input": name}],
    }


def defaults(**values: Any) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


CHAIN = {"graph": {"id": "chain", "label": "A chain"}, "nodes": [node("a"), node("b")], "links": [rv("a", "b")]}
# Two echo nodes; 'a' is the only start node, 'b' the only end node.
ECHOES = {
    "graph": {"id": "echoes"},
    "nodes": [node("a", "tasks.echo"), node("b", "tasks.echo")],
    "links": [{"source": "a", "target": "b"}],
}
LOOP = COUNTING_LOOP
FOREVER = {
    "graph": {"id": "forever"},
    "nodes": [node("a", "tasks.identity", force_start_node=True, default_inputs=defaults(value=True))],
    "links": [{"source": "a", "target": "a", "conditions": [{"source_output": "return_value", "value": True}]}],
}
FAILING = {"graph": {"id": "failing"}, "nodes": [node("a"), node("b", "tasks.fail")], "links": [rv("a", "b")]}
# 'ok' and 'bad' are independent: with --no-raise-on-error, 'ok' still finishes.
HALF_FAILING = {"graph": {"id": "half"}, "nodes": [node("ok"), node("bad", "tasks.fail")], "links": []}
# Two problems the loader reports together.
INVALID = {
    "graph": {"id": "broken"},
    "nodes": [node("a"), node("a"), node("b")],
    "links": [rv("a", "nowhere")],
}
BLOCKED = {
    "graph": {"id": "stuck"},
    "nodes": [node("s"), node("a"), node("b")],
    "links": [rv("s", "a"), rv("a", "b"), rv("b", "a", "y")],
}


def write_graph(directory: Path, doc: dict[str, Any], name: str = "graph.json") -> str:
    path = directory / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Call ``cli.main`` in this process; return the exit code, stdout and stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``aioflow run`` puts the current directory on sys.path; undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


# --------------------------------------------------------------------------- in-process: run


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``--version`` prints ``aioflow <version>`` and exits 0."""
    code, out, _ = run_main(capsys, "--version")
    assert code == 0
    assert out.strip() == f"aioflow {aioflow.__version__}"


def test_run_prints_end_outputs_as_json_and_nothing_else(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A successful run exits 0, prints only the JSON results on stdout and nothing on stderr."""
    code, out, err = run_main(capsys, "run", write_graph(tmp_path, CHAIN), "--pool", "thread")
    assert code == 0
    assert json.loads(out) == {"return_value": 2}
    assert err == ""


def test_run_input_without_node_goes_to_start_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-i NAME=VALUE`` sets an input of the start nodes only."""
    path = write_graph(tmp_path, ECHOES)
    code, out, _ = run_main(
        capsys, "run", path, "--pool", "thread", "--outputs", "all", "--no-merge-outputs", "-i", "k=1"
    )
    assert code == 0
    assert json.loads(out) == {
        "a": {"return_value": {"args": [], "kwargs": {"k": 1}}},
        "b": {"return_value": {"args": [], "kwargs": {}}},
    }


def test_run_input_star_goes_to_every_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-i '*:NAME=VALUE'`` sets an input of every node."""
    path = write_graph(tmp_path, ECHOES)
    code, out, _ = run_main(
        capsys, "run", path, "--pool", "thread", "--outputs", "all", "--no-merge-outputs", "-i", "*:k=1"
    )
    assert code == 0
    assert json.loads(out) == {
        "a": {"return_value": {"args": [], "kwargs": {"k": 1}}},
        "b": {"return_value": {"args": [], "kwargs": {"k": 1}}},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("value=3", 3),
        ("value=2.5", 2.5),
        ("value=true", True),
        ("value=null", None),
        ("value=[1, 2]", [1, 2]),
        ('value={"a": {"b": 1}}', {"a": {"b": 1}}),
        ('value="3"', "3"),
        ("value=abc", "abc"),
        ("value=", ""),
        ("value=a=b:c", "a=b:c"),
    ],
)
def test_input_value_is_json_when_valid_else_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: Any
) -> None:
    """VALUE is parsed as JSON when it is valid JSON, else kept as the text typed."""
    path = write_graph(tmp_path, {"nodes": [node("a", "tasks.identity")]})
    code, out, _ = run_main(capsys, "run", path, "--pool", "thread", "-i", f"a:{text}")
    assert code == 0
    assert json.loads(out) == {"return_value": expected}


def test_input_int_looking_node_selects_an_int_node_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-i 0:x=5`` reaches the node whose id is the int 0."""
    path = write_graph(tmp_path, {"nodes": [node(0), node(1)], "links": [rv(0, 1)]})
    code, out, _ = run_main(capsys, "run", path, "--pool", "thread", "-i", "0:x=5")
    assert code == 0
    assert json.loads(out) == {"return_value": 7}


def test_input_string_node_id_wins_over_int(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When the graph has the node '7' (a string), ``-i 7:...`` selects it."""
    path = write_graph(tmp_path, {"nodes": [node("7", "tasks.identity")]})
    code, out, _ = run_main(capsys, "run", path, "--pool", "thread", "-i", "7:value=1")
    assert code == 0
    assert json.loads(out) == {"return_value": 1}


def test_subgraph_node_ids_are_json_lists_in_inputs_and_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tuple node id is typed as a JSON list in ``-i`` and printed as the same text as a key."""
    inner = {"graph": {"id": "inner"}, "nodes": [node("a", "tasks.echo")]}
    path = write_graph(tmp_path, {"nodes": [{"id": "sub", "task_type": "graph", "task_identifier": inner}]})
    code, out, _ = run_main(capsys, "run", path, "--pool", "thread", "--no-merge-outputs", "-i", '["sub", "a"]:k=1')
    assert code == 0
    assert json.loads(out) == {'["sub", "a"]': {"return_value": {"args": [], "kwargs": {"k": 1}}}}


def test_int_node_ids_become_string_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--no-merge-outputs`` keys results by node id; int ids print as JSON string keys."""
    path = write_graph(tmp_path, {"nodes": [node(0), node(1)], "links": [rv(0, 1)]})
    code, out, _ = run_main(capsys, "run", path, "--pool", "thread", "--no-merge-outputs", "--outputs", "all")
    assert code == 0
    assert json.loads(out) == {"0": {"return_value": 1}, "1": {"return_value": 2}}


def test_unserializable_values_and_keys_are_printed_with_repr() -> None:
    """Values JSON cannot hold are written with repr; tuple keys become JSON text at any depth."""
    text = cli.to_json({("sub", 1): {"value": {1, 2}, "nested": {("x", ("y",)): aioflow.MISSING}}})
    assert json.loads(text) == {'["sub", 1]': {"value": "{1, 2}", "nested": {'["x", ["y"]]': "MISSING"}}}


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("end", {"return_value": 2}),
        ("all", {"return_value": 2}),
        ("none", {}),
    ],
)
def test_outputs_option_selects_whose_outputs_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, expected: dict[str, Any]
) -> None:
    """``--outputs end|all|none`` selects the end nodes, all nodes (merged), or nothing."""
    code, out, _ = run_main(capsys, "run", write_graph(tmp_path, CHAIN), "--pool", "thread", "--outputs", option)
    assert code == 0
    assert json.loads(out) == expected


def test_outputs_all_without_merge_lists_every_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--outputs all --no-merge-outputs`` prints every node's outputs under its id."""
    path = write_graph(tmp_path, CHAIN)
    code, out, _ = run_main(capsys, "run", path, "--pool", "thread", "--outputs", "all", "--no-merge-outputs")
    assert code == 0
    assert json.loads(out) == {"a": {"return_value": 1}, "b": {"return_value": 2}}


def test_loop_runs_and_prints_its_last_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A graph with a cycle runs as a loop from the command line."""
    code, out, _ = run_main(capsys, "run", write_graph(tmp_path, LOOP), "--pool", "thread")
    assert code == 0
    assert json.loads(out) == {"_ppfdict": {"value": 4, "limit": 4, "small": False}}


def test_failed_node_exits_1_with_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A node that raises gives exit code 1, one ``aioflow: error:`` line naming it, and no stdout."""
    code, out, err = run_main(capsys, "run", write_graph(tmp_path, FAILING), "--pool", "thread")
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "aioflow: error: graph 'failing': node 'b' failed: ValueError: failed on purpose with ['x']"
    ]


def test_traceback_option_prints_the_task_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--traceback`` prints the full traceback, down to the task's own frame."""
    code, _, err = run_main(capsys, "run", write_graph(tmp_path, FAILING), "--pool", "thread", "--traceback")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "tasks.py" in err
    assert "aioflow.NodeError: graph 'failing': node 'b' failed" in err


def test_no_raise_on_error_prints_results_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--no-raise-on-error`` the other nodes' results print, and a failure still exits 1."""
    path = write_graph(tmp_path, HALF_FAILING)
    code, out, err = run_main(capsys, "run", path, "--pool", "thread", "--no-raise-on-error", "--no-merge-outputs")
    assert code == 1
    assert json.loads(out) == {"ok": {"return_value": 1}, "bad": {}}
    assert err.splitlines()[-1] == "aioflow: error: graph 'half': 1 node failed: 'bad'"


def test_no_raise_on_error_without_failure_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--no-raise-on-error`` exits 0 when every node succeeds."""
    code, out, _ = run_main(capsys, "run", write_graph(tmp_path, CHAIN), "--pool", "thread", "--no-raise-on-error")
    assert code == 0
    assert json.loads(out) == {"return_value": 2}


def test_timeout_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run past ``--timeout`` stops its tasks and exits 1 with a timeout message."""
    graph = {"graph": {"id": "slow"}, "nodes": [node("s", "tasks.sleep_python", default_inputs=defaults(seconds=600))]}
    code, out, err = run_main(capsys, "run", write_graph(tmp_path, graph), "--pool", "thread", "--timeout", "0.2")
    assert code == 1
    assert out == ""
    assert err.startswith("aioflow: error: graph 'slow': timed out after 0.2 s")


def test_iteration_limit_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A loop that runs past ``--max-iterations`` exits 1 and names the node."""
    path = write_graph(tmp_path, FOREVER)
    code, _, err = run_main(capsys, "run", path, "--pool", "thread", "--max-iterations", "3")
    assert code == 1
    assert "node 'a' would run more than max_iterations=3 times" in err


def test_lost_worker_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A worker process that dies under its task exits 1 and says the worker was lost."""
    graph = {"graph": {"id": "dies"}, "nodes": [node("d", "cli_tasks.die")]}
    path = write_graph(tmp_path, graph)
    code, _, err = run_main(capsys, "run", path, "--pool", "process", "--context", "fork", "--max-workers", "1")
    assert code == 1
    assert err.startswith("aioflow: error: graph 'dies': node 'd' failed: WorkerLostError:")
    assert "lost its worker process" in err


def test_invalid_graph_exits_2_listing_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``run`` on an invalid graph exits 2 and lists every problem the loader found."""
    path = write_graph(tmp_path, INVALID)
    code, out, err = run_main(capsys, "run", path, "--pool", "thread")
    assert code == 2
    assert out == ""
    assert err.startswith(f"aioflow: error: graph {path!r}: 2 problems:")
    assert "'a'" in err
    assert "'nowhere'" in err


def test_missing_graph_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A graph file that does not exist exits 2 with the paths tried."""
    code, _, err = run_main(capsys, "run", str(tmp_path / "nope.json"))
    assert code == 2
    assert err.startswith("aioflow: error: ")
    assert "no such graph file" in err


def test_blocked_cycle_exits_2_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cycle that can never fire is refused with exit 2."""
    code, _, err = run_main(capsys, "run", write_graph(tmp_path, BLOCKED), "--pool", "thread")
    assert code == 2
    assert "can never run" in err


def test_missing_extra_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ewokscore installed, a task type that needs the ewoks extra exits 2 and says what to install."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ewokscore" else real_find_spec(name, *a)
    )
    graph = {"graph": {"id": "classy"}, "nodes": [{"id": "c", "task_type": "class", "task_identifier": "pkg.Task"}]}
    code, _, err = run_main(capsys, "run", write_graph(tmp_path, graph), "--pool", "thread")
    assert code == 2
    assert "pip install 'aioflow[ewoks]'" in err


def test_invalid_option_value_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An option the engine refuses (``--max-workers 0``) exits 2 with the option's message."""
    code, _, err = run_main(capsys, "run", write_graph(tmp_path, CHAIN), "--pool", "thread", "--max-workers", "0")
    assert code == 2
    assert err == "aioflow: error: max_workers must be greater than 0: an int >= 1, or None (got 0 of type int)\n"


def test_unknown_input_node_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-i`` naming a node the graph lacks exits 2 and suggests a close one."""
    code, _, err = run_main(capsys, "run", write_graph(tmp_path, CHAIN), "--pool", "thread", "-i", "aa:x=1")
    assert code == 2
    assert "no node 'aa'" in err
    assert "did you mean 'a'?" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "GRAPH", "-i", "novalue"], "no '='"),
        (["run", "GRAPH", "-i", ":x=1"], "empty NODE"),
        (["run", "GRAPH", "-i", "a:=1"], "empty NAME"),
        (["run", "GRAPH", "--pool", "nope"], "invalid choice: 'nope'"),
        (["run", "GRAPH", "--timeout", "soon"], "invalid float value: 'soon'"),
        (["run", "GRAPH", "--outputs", "some"], "invalid choice: 'some'"),
        (["run"], "the following arguments are required: GRAPH"),
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """A wrong command line prints the usage and one ``aioflow: error:`` line, and exits 2."""
    path = write_graph(tmp_path, CHAIN)
    code, out, err = run_main(capsys, *(path if a == "GRAPH" else a for a in argv))
    assert code == 2
    assert out == ""
    assert err.startswith("usage: aioflow")
    last = err.splitlines()[-1]
    assert last.startswith("aioflow: error: ")
    assert message in last


def test_keyboard_interrupt_exits_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt during a run exits 130 with a one-line message (the real signal is tested below)."""

    def interrupted(*args: Any, **kwargs: Any) -> aioflow.Results:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "execute_graph", interrupted)
    code, out, err = run_main(capsys, "run", write_graph(tmp_path, CHAIN))
    assert code == 130
    assert out == ""
    assert err == "aioflow: interrupted\n"


def test_unexpected_error_exits_1_and_points_to_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that is not an aioflow error exits 1, names its type and suggests ``--traceback``."""

    def broken(*args: Any, **kwargs: Any) -> aioflow.Results:
        msg = "boom"
        raise RuntimeError(msg)

    monkeypatch.setattr(cli, "execute_graph", broken)
    code, _, err = run_main(capsys, "run", write_graph(tmp_path, CHAIN))
    assert code == 1
    assert err == "aioflow: error: RuntimeError: boom (run with --traceback to see where)\n"


def test_root_dir_resolves_paths_inside_the_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subgraph file is found under ``--root-dir``, while GRAPH stays relative to the current directory."""
    lib = tmp_path / "lib"
    lib.mkdir()
    write_graph(lib, {"graph": {"id": "inner"}, "nodes": [node("x")]}, "inner.json")
    write_graph(
        tmp_path,
        {"graph": {"id": "outer"}, "nodes": [{"id": "sub", "task_type": "graph", "task_identifier": "inner.json"}]},
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(capsys, "run", "graph.json", "--pool", "thread", "--root-dir", "lib")
    assert code == 0
    assert json.loads(out) == {"return_value": 1}
    code, _, err = run_main(capsys, "run", "graph.json", "--pool", "thread")
    assert code == 2
    assert "inner.json" in err


def test_run_puts_the_current_directory_on_sys_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aioflow run`` puts the current directory first on sys.path, as ``python -m`` does."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    code, _, _ = run_main(capsys, "run", write_graph(tmp_path, CHAIN), "--pool", "thread")
    assert code == 0
    assert sys.path[0] == str(tmp_path)


# --------------------------------------------------------------------------- progress bar


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_leaves_stdout_pure_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When stderr is a terminal a bar counts nodes there; stdout still holds only the JSON."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = cli.main(["run", write_graph(tmp_path, CHAIN), "--pool", "thread"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert json.loads(out) == {"return_value": 2}
    assert "2/2" in terminal.getvalue()
    assert "A chain" in terminal.getvalue()


def test_progress_total_grows_when_loops_run_nodes_again() -> None:
    """The bar counts every node execution; when loops exceed the node count, the total follows."""
    bar = cli.ProgressBar("loop")

    def event(kind: Any, **fields: Any) -> Event:
        return Event(kind=kind, graph_id="loop", time=0.0, **fields)

    bar(event("graph.started", total=2))
    bar(event("node.started", node_id="a", number=1))
    bar(event("node.finished", node_id="a", number=1))
    assert (bar.completed, bar.total) == (1, 2)
    bar(event("node.finished", node_id="a", number=2))
    bar(event("node.failed", node_id="a", number=3, error=ValueError("x")))
    assert (bar.completed, bar.failed, bar.total) == (3, 1, 3)


def test_importing_the_cli_does_not_import_rich() -> None:
    """``import aioflow.cli`` stays cheap: rich is imported only to show a bar."""
    code = "import sys, aioflow.cli; print('rich' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_DEADLINE, check=True
    )
    assert done.stdout.strip() == "False"


# --------------------------------------------------------------------------- in-process: check


def test_check_prints_a_summary_of_a_valid_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``check`` prints id, label, counts, start and end nodes and exits 0."""
    code, out, err = run_main(capsys, "check", write_graph(tmp_path, CHAIN))
    assert code == 0
    assert err == ""
    assert out.splitlines() == [
        "graph 'chain' (A chain): valid",
        "  nodes:       2",
        "  links:       1",
        "  start nodes: 'a'",
        "  end nodes:   'b'",
        "  cycles:      none",
    ]


def test_check_reports_cycles_as_loops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A graph with a runnable cycle is valid; ``check`` lists the cycle and says it runs as a loop."""
    code, out, _ = run_main(capsys, "check", write_graph(tmp_path, LOOP))
    assert code == 0
    assert "  cycles:      1 (each runs as a loop)" in out.splitlines()
    assert "    - 'again'" in out.splitlines()


def test_check_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``check --json`` prints the summary as JSON."""
    code, out, _ = run_main(capsys, "check", write_graph(tmp_path, LOOP), "--json")
    assert code == 0
    assert json.loads(out) == {
        "id": "loop",
        "label": "loop",
        "valid": True,
        "nodes": 3,
        "links": 3,
        "start_nodes": ["start"],
        "end_nodes": ["end"],
        "cycles": [["again"]],
        "problems": [],
    }


def test_check_invalid_graph_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``check`` on an invalid graph exits 2 and prints one line per problem on stderr."""
    path = write_graph(tmp_path, INVALID)
    code, out, err = run_main(capsys, "check", path)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"aioflow: error: graph {path!r}: 2 problems:"
    assert len(lines) == 3
    assert all(line.startswith("  - ") for line in lines[1:])


def test_check_json_invalid_graph_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``check --json`` on an invalid graph prints ``valid: false`` with every problem, and exits 2."""
    path = write_graph(tmp_path, INVALID)
    code, out, _ = run_main(capsys, "check", path, "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["valid"] is False
    assert doc["id"] == path
    assert len(doc["problems"]) == 2


def test_check_runs_the_preflight_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A graph that loads but cannot run (a blocked cycle) is reported invalid with exit 2."""
    code, out, err = run_main(capsys, "check", write_graph(tmp_path, BLOCKED))
    assert code == 2
    assert out.splitlines()[0] == "graph 'stuck': INVALID"
    assert "the cycle 'a' -> 'b' can never run" in err


def test_check_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``check`` on a file that does not exist exits 2."""
    code, _, err = run_main(capsys, "check", str(tmp_path / "nope"))
    assert code == 2
    assert "no such graph file" in err


# --------------------------------------------------------------------------- the real console script


def console_script() -> str:
    """The installed ``aioflow`` console script, next to this interpreter."""
    path = Path(sys.executable).parent / "aioflow"
    assert path.is_file(), f"the console script is not installed at {path} (pip install -e .)"
    return str(path)


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [console_script(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_DEADLINE, check=False
    )


def test_script_runs_a_graph_with_task_modules_from_the_current_directory(tmp_path: Path) -> None:
    """The console script runs a graph on the process pool, importing a task module from the current directory."""
    (tmp_path / "local_cli_tasks.py").write_text("def triple(x=0):\n    return 3 * x\n", encoding="utf-8")
    graph = {"graph": {"id": "local"}, "nodes": [node("t", "local_cli_tasks.triple")]}
    write_graph(tmp_path, graph)
    done = run_script("run", "graph.json", "-i", "x=14", "--pool", "process", "--max-workers", "1", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {"return_value": 42}


def test_script_failing_node_exits_1(tmp_path: Path) -> None:
    """The console script exits 1 on a failing node, with one error line and no stdout."""
    write_graph(tmp_path, FAILING)
    done = run_script("run", "graph.json", "--pool", "process", "--max-workers", "1", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "aioflow: error: graph 'failing': node 'b' failed: ValueError: failed on purpose with ['x']\n"


def test_script_bad_graph_exits_2(tmp_path: Path) -> None:
    """The console script exits 2 on an invalid graph, for run and check alike."""
    write_graph(tmp_path, INVALID)
    for command in ("run", "check"):
        done = run_script(command, "graph.json", cwd=tmp_path)
        assert done.returncode == 2, command
        assert done.stderr.startswith("aioflow: error: graph 'graph.json': 2 problems:"), command


@contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """Children started inside get Python's default Ctrl-C handling, even if this process ignores SIGINT.

    An ignored signal stays ignored across exec, and Python then never raises
    KeyboardInterrupt; a handled one is reset to the default.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for(predicate: Any, what: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll ``predicate`` until it holds; fail if the CLI exits first or a hang deadline passes."""
    deadline = time.monotonic() + HANG_DEADLINE
    while not predicate():
        assert proc.poll() is None, f"the CLI exited (code {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {HANG_DEADLINE} s"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("pool", "context"),
    [
        ("process", "fork"),
        ("process", "spawn"),
        ("process", "forkserver"),
        ("ndprocess", "spawn"),
        ("multiprocessing", "fork"),
        ("ndmultiprocessing", "forkserver"),
        ("billiard", "fork"),
    ],
)
def test_ctrl_c_exits_130_and_stops_every_worker(tmp_path: Path, pool: str, context: str) -> None:
    """SIGINT to ``aioflow run`` exits 130 and leaves no process of its tree alive (workers and their children)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    # Both tasks start a child process and wait for it: the tree is CLI -> workers -> children.
    graph = {
        "graph": {"id": "sleepers"},
        "nodes": [
            node(name, "cli_tasks.child_sleep_marked", default_inputs=defaults(marker_dir=str(markers), name=name))
            for name in ("one", "two")
        ],
    }
    write_graph(tmp_path, graph)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "aioflow", "run", "graph.json", "--pool", pool, "--max-workers", "2"]
    argv += ["--context", context]
    # Files, not pipes: a surviving grandchild would hold a pipe open and hide the exit.
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err, sigint_not_ignored():
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=err, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        wait_for(lambda: len(list(markers.iterdir())) == 2, "running tasks", proc)
        cli_process = psutil.Process(proc.pid)
        tree = [cli_process, *cli_process.children(recursive=True)]
        task_pids = {int(pid) for marker in markers.iterdir() for pid in marker.read_text().split()}
        assert task_pids <= {p.pid for p in tree}, "the workers and their children belong to the CLI's tree"

        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=HANG_DEADLINE)
        assert code == 130, (tmp_path / "err").read_text()
        assert (tmp_path / "err").read_text() == "aioflow: interrupted\n"
        assert (tmp_path / "out").read_text() == ""
        _, alive = psutil.wait_procs(tree, timeout=GONE_DEADLINE)
        survivors = [f"{p.pid}: {' '.join(p.cmdline())}" for p in alive]
        assert not survivors, "processes outlived the CLI:\n" + "\n".join(survivors)
    finally:
        # Whatever the outcome, stop what this test started (by pid; psutil checks pid reuse).
        if proc.poll() is None:
            proc.kill()
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=HANG_DEADLINE)


@pytest.mark.parametrize(
    ("options", "signal_it", "expected"),
    [([], True, 130), (["--timeout", "1"], False, 1)],
    ids=["ctrl-c", "timeout"],
)
def test_thread_task_waiting_on_a_child_leaves_no_process(
    tmp_path: Path, options: list[str], signal_it: bool, expected: int
) -> None:
    """A thread task blocked waiting for ``sleep`` cannot be interrupted: ``aioflow run`` kills the sleep on its way out.

    After a real SIGINT to the CLI's pid alone (not its process group), or
    a timeout, neither the CLI nor its ``sleep`` grandchild remains.
    """
    markers = tmp_path / "markers"
    markers.mkdir()
    graph = {
        "graph": {"id": "waiter"},
        "nodes": [
            node("wait", "cli_tasks.command_sleep_marked", default_inputs=defaults(marker_dir=str(markers), name="w"))
        ],
    }
    write_graph(tmp_path, graph)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "aioflow", "run", "graph.json", "--pool", "thread", *options]
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err, sigint_not_ignored():
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=err, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        wait_for(lambda: (markers / "w").exists(), "a running task", proc)
        cli_process = psutil.Process(proc.pid)
        tree = [cli_process, *cli_process.children(recursive=True)]
        sleeper = int((markers / "w").read_text())
        assert sleeper in {p.pid for p in tree}, "the sleep is a child of the CLI process"

        if signal_it:
            os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=HANG_DEADLINE)
        stderr = (tmp_path / "err").read_text()
        assert code == expected, stderr
        if signal_it:
            assert stderr.endswith("aioflow: interrupted\n")
        else:
            assert "timed out" in stderr
        _, alive = psutil.wait_procs(tree, timeout=GONE_DEADLINE)
        survivors = [f"{p.pid}: {' '.join(p.cmdline())}" for p in alive]
        assert not survivors, "processes outlived the CLI:\n" + "\n".join(survivors)
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=HANG_DEADLINE)
