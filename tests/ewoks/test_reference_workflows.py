"""The reference workflows through the Ewoks door: each gives the reference's result, on every run.

Two suites run together in a subprocess, with the plugin ``ppf_shim`` (next
to this file):

- ewoksppf's own test suite, as installed (``ewoksppf.tests``): the plugin
  sends its engine calls to ``ewoks.execute_graph(graph, engine="aioflow", ...)``;
- ``ewokscore_examples.py`` (next to this file): ewokscore's example graphs in
  ewokscore's three persistence schemes, against ewokscore's expected results,
  through the same door.

The graphs, the keywords and the expected results are the installed
packages'. Every test passes; the only ones that do not run are those
ewoksppf skips itself (`UPSTREAM_SKIPS`). docs/ewoks-compat.md describes the
run and its results.

Some of ewokscore's examples also run through ``ewoks execute --engine
aioflow``, as a command.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ewokscore import load_graph
from ewokscore.tests.examples.graphs import get_graph, graph_names
from ewokscore.tests.utils.results import filter_expected_results
from ewokscore_examples import schemes

HERE = Path(__file__).resolve().parent

# ewoksppf skips these itself (they are skipped under ewoksppf too).
UPSTREAM_SKIPS = {
    "test_examples.py::test_execute_graph[None-self_trigger]",
    "test_examples.py::test_execute_graph[json-self_trigger]",
    "test_ppf_workflow23.py::test_ppf_workflow23[True]",
    "test_ppf_workflow23.py::test_ppf_workflow23[False]",
}

# ewoksppf's suite holds more tests than this: fewer means it was not collected as it should be.
MIN_PPF_TESTS = 55

# Only a hang reaches these (the suites take about 20 seconds).
PER_TEST_TIMEOUT = 60
SUITE_TIMEOUT = 300
COMMAND_TIMEOUT = 120


def _outcomes(junit: Path) -> dict[str, str]:
    """Test id (``file.py::name[params]``) -> ``passed``, ``failed`` or ``skipped``."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{Path(case.get('file', '')).name}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[test_id] = "failed"
        elif case.find("skipped") is not None:
            outcomes[test_id] = "skipped"
        else:
            outcomes[test_id] = "passed"
    return outcomes


def _run_reference_suites(tmp_path: Path) -> tuple[dict[str, str], str]:
    ini = tmp_path / "pytest.ini"
    # An ini of its own, and no conftest of this project: this project's pytest
    # settings (warnings as errors, strict markers, the leak check) are not ewoksppf's.
    ini.write_text(f"[pytest]\ntimeout = {PER_TEST_TIMEOUT}\n")
    junit = tmp_path / "junit.xml"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(tmp_path), "--confcutdir", str(HERE),
        "-p", "ppf_shim", "-p", "no:cacheprovider", "-q", "-rfE",
        f"--junitxml={junit}", "-o", "junit_family=xunit1",  # xunit1 names each test's file
        "--pyargs", "ewoksppf.tests", "ewokscore_examples",
    ]  # fmt: skip
    # A session of its own, so that a hang is ended with everything it started.
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the reference suites did not finish within {SUITE_TIMEOUT} s:\n{output}")
    except BaseException:  # Ctrl-C, or pytest-timeout: leave nothing running behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if not junit.exists():
        pytest.fail(f"the reference suites did not run (exit code {proc.returncode}):\n{output}")
    return _outcomes(junit), output


def test_reference_workflows_give_the_reference_results(tmp_path: Path) -> None:
    """Every test of ewoksppf's suite and every ewokscore example in every scheme passes through the Ewoks door."""
    outcomes, output = _run_reference_suites(tmp_path)
    failed = sorted(t for t, o in outcomes.items() if o == "failed")
    skipped = {t for t, o in outcomes.items() if o == "skipped"}
    examples = [t for t in outcomes if t.startswith("ewokscore_examples.py::")]
    assert not failed, f"reference tests that fail on aioflow: {failed}\n{output}"
    assert skipped == UPSTREAM_SKIPS, f"skipped: {sorted(skipped)}\n{output}"
    assert len(examples) == len(graph_names()) * len(schemes()), output
    assert len(outcomes) - len(examples) >= MIN_PPF_TESTS, output


def _printed_results(stdout: str) -> object:
    """The result ``ewoks execute`` prints after ``RESULTS:``."""
    lines = stdout.splitlines()
    return ast.literal_eval(lines[lines.index("RESULTS:") + 1])


@pytest.mark.parametrize(
    ("graph_name", "scheme"), [("triangle1", None), ("self_trigger", "nexus"), ("cyclic1", "json")]
)
def test_ewoks_execute_command_gives_the_expected_results(graph_name: str, scheme: str | None, tmp_path: Path) -> None:
    """``ewoks execute graph.json --engine aioflow --outputs end --merge-outputs`` prints ewokscore's expected result."""
    graph, expected = get_graph(graph_name)
    source = tmp_path / f"{graph_name}.json"
    source.write_text(json.dumps(graph))
    command = [sys.executable, "-m", "ewoks", "execute", str(source), "--engine", "aioflow"]
    command += ["--outputs", "end", "--merge-outputs"]
    if scheme is not None:
        command += ["--data-root-uri", str(tmp_path / "results"), "--data-scheme", scheme]
    out = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=COMMAND_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert _printed_results(out.stdout) == filter_expected_results(
        load_graph(graph), expected, end_only=True, merge=True
    )
