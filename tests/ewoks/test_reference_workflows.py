"""ewoksppf's own test workflows, run on aioflow.

The installed ``ewoksppf.tests`` suite runs in a subprocess, with the plugin
``ppf_shim`` (next to this file) sending its engine calls to
`aioflow.ewoks.execute_graph`. The graphs and the expected results are
ewoksppf's, unchanged. The reference tests that fail must be exactly those of
`EXPECTED_DIFFERENCES` and `KNOWN_GAPS`: a new failure fails this test, and so
does a listed test that starts to pass (then remove it from the list, and from
``docs/ewoks-compat.md``).

The whole suite is run (about 60 tests, a few seconds): ewoksppf does not
parametrize its tests by pool type, and the shim runs every test on the thread
pool (see ``ppf_shim.py`` for why).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# Reference tests whose expected result aioflow deliberately does not give
# (the graph format spec, §10), with the reason. docs/ewoks-compat.md lists them too.
EXPECTED_DIFFERENCES: dict[str, str] = {
    "test_ppf_workflow2.py::test_workflow2": (
        "raise_on_error=False: ewoksppf returns the failed task's inputs plus 'WorkflowException' and "
        "'WorkflowExceptionInstance' as the result; aioflow returns the merged end-node outputs (a failed "
        "node gives {}) and reports the failure in Results.errors"
    ),
    **{
        f"test_examples.py::test_execute_graph[{scheme}-triangle1]": (
            "every node of this loop is an end node; ewoksppf returns the outputs of the last one to finish "
            "(task2, result 10), aioflow merges the last outputs of all three in a stable order, so task3's "
            "(result 9) come last"
        )
        for scheme in ("None", "json")
    },
}

# Reference tests aioflow does not pass yet, with the reason: gaps, not decisions.
KNOWN_GAPS: dict[str, str] = {}

# ewoksppf skips these itself (they are skipped under ewoksppf too).
UPSTREAM_SKIPS = {
    "test_examples.py::test_execute_graph[None-self_trigger]",
    "test_examples.py::test_execute_graph[json-self_trigger]",
    "test_ppf_workflow23.py::test_ppf_workflow23[True]",
    "test_ppf_workflow23.py::test_ppf_workflow23[False]",
}

# Fewer passing tests than this means the suite was not collected as it should be.
MIN_PASSED = 50

# Only a hang reaches these (the suite takes a few seconds).
PER_TEST_TIMEOUT = 60
SUITE_TIMEOUT = 100


def _outcomes(junit: Path) -> dict[str, str]:
    """Test id (``file.py::name[params]``) -> ``passed``, ``failed`` or ``skipped``."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rpartition(".")[2]
        test_id = f"{module}.py::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[test_id] = "failed"
        elif case.find("skipped") is not None:
            outcomes[test_id] = "skipped"
        else:
            outcomes[test_id] = "passed"
    return outcomes


def _run_reference_suite(tmp_path: Path) -> tuple[dict[str, str], str]:
    ini = tmp_path / "pytest.ini"
    # An ini of its own: this project's pytest settings (warnings as errors,
    # strict markers) are not ewoksppf's.
    ini.write_text(f"[pytest]\ntimeout = {PER_TEST_TIMEOUT}\n")
    junit = tmp_path / "junit.xml"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(tmp_path),
        "-p", "ppf_shim", "-p", "no:cacheprovider", "-q", "-rfE",
        f"--junitxml={junit}", "--pyargs", "ewoksppf.tests",
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
        pytest.fail(f"ewoksppf's suite did not finish within {SUITE_TIMEOUT} s:\n{output}")
    except BaseException:  # Ctrl-C, or pytest-timeout: leave nothing running behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if not junit.exists():
        pytest.fail(f"ewoksppf's suite did not run (exit code {proc.returncode}):\n{output}")
    return _outcomes(junit), output


def test_reference_workflows_give_the_reference_results(tmp_path: Path) -> None:
    """ewoksppf's workflows pass on aioflow, except the documented differences."""
    outcomes, output = _run_reference_suite(tmp_path)
    failed = {t for t, o in outcomes.items() if o == "failed"}
    skipped = {t for t, o in outcomes.items() if o == "skipped"}
    passed = {t for t, o in outcomes.items() if o == "passed"}
    expected_failures = set(EXPECTED_DIFFERENCES) | set(KNOWN_GAPS)
    unexpected = sorted(failed - expected_failures)
    now_passing = sorted(expected_failures - failed)
    assert not unexpected, f"reference tests that fail on aioflow: {unexpected}\n{output}"
    assert not now_passing, f"listed as failing but did not fail (update the list): {now_passing}\n{output}"
    assert skipped == UPSTREAM_SKIPS, f"skipped: {sorted(skipped)}\n{output}"
    assert len(passed) >= MIN_PASSED, output
