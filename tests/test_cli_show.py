"""``aioflow show``: a picture of a graph written by the command, in a real subprocess where it matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from graphs import COUNTING_LOOP

from aioflow import cli
from aioflow.graph._draw import DOT_ENV

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

SVG = "{http://www.w3.org/2000/svg}"
# Only a hang reaches it: the command takes about half a second.
DEADLINE = 60.0

SUB = {
    "graph": {"id": "sub", "input_nodes": [{"id": "in", "node": "t"}], "output_nodes": [{"id": "out", "node": "t"}]},
    "nodes": [{"id": "t", "task_type": "method", "task_identifier": "tasks.inc"}],
}


def write_graph(path: Path, doc: dict[str, Any] = COUNTING_LOOP) -> Path:
    path.write_text(json.dumps(doc))
    return path


def show(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m aioflow show ARGS`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "aioflow", "show", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def node_ids(svg: str) -> set[str]:
    root = ET.fromstring(svg.encode("utf-8"))
    return {g.get("id", "") for g in root.iter(f"{SVG}g") if "aioflow-node" in g.get("class", "").split()}


def test_show_writes_the_svg_file_named_by_o(tmp_path: Path) -> None:
    """The SVG goes to OUT; stderr says where; stdout stays empty."""
    write_graph(tmp_path / "loop.json")
    done = show("loop.json", "-o", "picture.svg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == "aioflow: picture of graph 'loop' written to picture.svg\n"
    assert node_ids((tmp_path / "picture.svg").read_text()) == {"node-start", "node-again", "node-end"}


def test_show_writes_next_to_the_current_directory_by_default(tmp_path: Path) -> None:
    """Without -o, the picture is the graph file's name with .svg, in the current directory."""
    (tmp_path / "graphs").mkdir()
    (tmp_path / "out").mkdir()
    write_graph(tmp_path / "graphs" / "loop.json")
    done = show(str(tmp_path / "graphs" / "loop.json"), cwd=tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert node_ids((tmp_path / "out" / "loop.svg").read_text()) == {"node-start", "node-again", "node-end"}
    assert not (tmp_path / "graphs" / "loop.svg").exists()


def test_show_to_stdout(tmp_path: Path) -> None:
    """-o - writes the SVG to stdout and nothing to stderr."""
    write_graph(tmp_path / "loop.json")
    done = show("loop.json", "-o", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert node_ids(done.stdout) == {"node-start", "node-again", "node-end"}


def test_show_without_dot_fails_naming_graphviz_but_writes_dot_text(tmp_path: Path) -> None:
    """With no dot program, SVG is refused (exit 2, a message naming graphviz); the .dot text is still written."""
    write_graph(tmp_path / "loop.json")
    missing = {DOT_ENV: str(tmp_path / "no-such-dot")}
    done = show("loop.json", "-o", "loop.svg", cwd=tmp_path, env=missing)
    assert done.returncode == cli.EXIT_USAGE
    assert "aioflow: error: drawing a graph needs Graphviz's `dot` program" in done.stderr
    assert "apt install graphviz" in done.stderr
    assert not (tmp_path / "loop.svg").exists()

    done = show("loop.json", "-o", "loop.dot", cwd=tmp_path, env=missing)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "loop.dot").read_text()
    assert text.startswith('digraph "loop" {')
    assert 'id="node-again"' in text


def test_show_png_and_pdf(tmp_path: Path) -> None:
    """The suffix picks the format: .png and .pdf are drawn by dot; --format overrides the suffix."""
    graph = str(write_graph(tmp_path / "loop.json"))
    assert cli.main(["show", graph, "-o", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert cli.main(["show", graph, "-o", str(tmp_path / "a.pdf")]) == 0
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF-")
    assert cli.main(["show", graph, "-o", str(tmp_path / "a.txt"), "--format", "dot"]) == 0
    assert (tmp_path / "a.txt").read_text().startswith("digraph")


def test_show_refuses_an_unknown_suffix_and_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OUT whose suffix names no format, or whose directory does not exist, is a usage error (exit 2)."""
    graph = str(write_graph(tmp_path / "loop.json"))
    assert cli.main(["show", graph, "-o", str(tmp_path / "a.jpg")]) == cli.EXIT_USAGE
    assert "from its suffix: use .svg, .dot, .gv, .png, .pdf, or --format" in capsys.readouterr().err
    assert cli.main(["show", graph, "-o", str(tmp_path / "no" / "a.svg")]) == cli.EXIT_USAGE
    assert "its directory does not exist" in capsys.readouterr().err
    assert not (tmp_path / "a.jpg").exists()


def test_show_reports_an_invalid_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A graph that does not load gives exit 2 and the loader's message, and no file."""
    graph = write_graph(tmp_path / "bad.json", {"nodes": [], "links": [{"source": "a", "target": "b"}]})
    assert cli.main(["show", str(graph), "-o", str(tmp_path / "bad.svg")]) == cli.EXIT_USAGE
    assert "no node 'a'" in capsys.readouterr().err
    assert not (tmp_path / "bad.svg").exists()


def test_show_reports_a_failing_dot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dot that fails gives exit 1 and what it wrote on stderr."""
    script = tmp_path / "dot"
    script.write_text("#!/bin/sh\ncat >/dev/null\necho 'Error: out of memory' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv(DOT_ENV, str(script))
    graph = str(write_graph(tmp_path / "loop.json"))
    assert cli.main(["show", graph, "-o", str(tmp_path / "loop.svg")]) == cli.EXIT_FAILED
    assert "exit code 1: Error: out of memory" in capsys.readouterr().err


def test_show_finds_subgraph_files_under_root_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--root-dir is where subgraph files are looked up, as for 'aioflow check'; their nodes are drawn in a cluster."""
    (tmp_path / "main").mkdir()
    (tmp_path / "lib").mkdir()
    write_graph(tmp_path / "lib" / "sub.json", SUB)
    main = {
        "graph": {"id": "main"},
        "nodes": [
            {"id": "a", "task_type": "method", "task_identifier": "tasks.inc"},
            {"id": "s", "task_type": "graph", "task_identifier": "sub.json"},
        ],
        "links": [{"source": "a", "target": "s", "sub_target": "in"}],
    }
    graph = str(write_graph(tmp_path / "main" / "main.json", main))
    out = str(tmp_path / "main.svg")
    assert cli.main(["show", graph, "-o", out]) == cli.EXIT_USAGE
    assert "sub.json" in capsys.readouterr().err
    assert cli.main(["show", graph, "-o", out, "--root-dir", str(tmp_path / "lib")]) == 0
    svg = (tmp_path / "main.svg").read_text()
    assert node_ids(svg) == {"node-a", "node-%5B%22s%22%2C%22t%22%5D"}
    clusters = [g for g in ET.fromstring(svg.encode()).iter(f"{SVG}g") if "cluster" in g.get("class", "").split()]
    assert [g.get("id") for g in clusters] == ["cluster-s"]
