"""The example workflows: correct results on every pool, and every example script exits cleanly."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import aioflow

if TYPE_CHECKING:
    from types import ModuleType

    from conftest import ExecuteFn

REPO_ROOT = Path(__file__).resolve().parent.parent
# Relative to the repository root, as the README shows it.
PIPELINE = "examples/xrd_reduction/pipeline.json"
RUN_SCRIPTS = sorted(REPO_ROOT.glob("examples/**/run.py"))
# The fit's position error is about 0.002 degree; the scan's step is 0.05.
POSITION_TOLERANCE = 0.02
# Only a hang reaches it: a script runs in about a second.
SCRIPT_DEADLINE = 120.0
THREAD_ONLY = [{"pool_type": "thread", "max_workers": 2}]


@pytest.fixture(autouse=True)
def repo_root_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example tasks import as ``examples.xrd_reduction.tasks`` here and in every worker."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))


def xrd_tasks() -> ModuleType:
    """The example's task module (imported once the repository root is on the path)."""
    return importlib.import_module("examples.xrd_reduction.tasks")


def load_pipeline() -> aioflow.Graph:
    """The example graph, loaded the way run.py loads it."""
    return aioflow.load_graph(PIPELINE, root_dir=REPO_ROOT)


def simulated_positions(seed: int | None = None) -> list[float]:
    """The true peak positions of the scan the pipeline simulates, computed here directly."""
    options = {str(name): value for name, value in load_pipeline().nodes["simulate"].default_inputs.items()}
    if seed is not None:
        options["seed"] = seed
    return [p["two_theta"] for p in xrd_tasks().simulate_scan(**options)["true_peaks"]]


async def run_pipeline(execute: ExecuteFn, **options: Any) -> aioflow.Results:
    return await execute(PIPELINE, load_options={"root_dir": REPO_ROOT}, max_iterations=200, **options)


def assert_fitted_near(report: dict[str, Any], truth: list[float]) -> None:
    fitted = sorted(row["two_theta"] for row in report["peaks"])
    assert len(fitted) == len(truth), (fitted, truth)
    for found, true in zip(fitted, sorted(truth), strict=True):
        assert abs(found - true) < POSITION_TOLERANCE, (fitted, truth)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SCRIPT_DEADLINE,
        check=False,
    )


# --------------------------------------------------------------------------- the pipeline, on every pool


async def test_pipeline_fits_the_simulated_peak_positions(execute: ExecuteFn) -> None:
    """Every fitted peak lies within 0.02 degree of a simulated one, and the fit is graded good."""
    results = await run_pipeline(execute)
    assert results.errors == {}
    report = results["return_value"]
    assert_fitted_near(report, simulated_positions())
    assert report["quality"]["converged"] is True
    assert report["quality"]["grade"] == "good"
    assert [row["hkl"] for row in report["peaks"]] == ["111", "220", "311"]


async def test_refinement_loop_runs_more_than_once(execute: ExecuteFn) -> None:
    """The conditional back link runs the refinement step several times, once per convergence check."""
    results = await run_pipeline(execute)
    refine = results.executions[("fit", "refine")]
    assert refine > 1
    assert results.executions[("fit", "check")] == refine
    assert results["return_value"]["quality"]["iterations"] == refine


async def test_subgraph_nodes_run_once_under_their_tuple_ids(execute: ExecuteFn) -> None:
    """The subgraph is flattened: its nodes run as ('fit', inner id); every other node runs exactly once."""
    graph = load_pipeline()
    results = await run_pipeline(execute)
    assert "fit" not in graph.nodes
    assert set(results.executions) == set(graph.nodes)
    looped = {("fit", "refine"), ("fit", "check")}
    assert {n: c for n, c in results.executions.items() if n not in looped} == dict.fromkeys(
        set(graph.nodes) - looped, 1
    )


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("pool_config", THREAD_ONLY, indirect=True)
async def test_seed_input_simulates_another_scan(execute: ExecuteFn) -> None:
    """inputs= overrides the seed: another scan is simulated, and its peaks are fitted."""
    results = await run_pipeline(execute, inputs=[{"id": "simulate", "name": "seed", "value": 11}])
    report = results["return_value"]
    assert report["seed"] == 11
    truth = simulated_positions(11)
    assert truth != simulated_positions()
    assert_fitted_near(report, truth)


@pytest.mark.parametrize("pool_config", THREAD_ONLY, indirect=True)
async def test_max_refinements_input_ends_the_loop_early(execute: ExecuteFn) -> None:
    """A loop limit given to the subgraph's input node stops the refinement unconverged."""
    limit = [{"id": ["fit", "setup"], "name": "max_refinements", "value": 2}]
    results = await run_pipeline(execute, inputs=limit)
    assert results.executions[("fit", "refine")] == 2
    quality = results["return_value"]["quality"]
    assert quality["converged"] is False
    assert quality["grade"] == "poor"


# --------------------------------------------------------------------------- scripts and the command line


def test_examples_have_run_scripts() -> None:
    """The examples folder holds at least one run.py for the script test to run."""
    assert RUN_SCRIPTS, f"no examples/**/run.py under {REPO_ROOT}"


@pytest.mark.parametrize("script", RUN_SCRIPTS, ids=lambda p: str(p.parent.relative_to(REPO_ROOT)))
def test_example_script_exits_cleanly(script: Path) -> None:
    """Each example's run.py, started from the repository root, exits with code 0."""
    done = run_script(str(script.relative_to(REPO_ROOT)))
    assert done.returncode == 0, done.stderr


def test_xrd_script_runs_several_seeds_on_a_shared_pool() -> None:
    """run.py --seeds runs concurrent executions on one open process pool and reports each seed."""
    done = run_script("examples/xrd_reduction/run.py", "--seeds", "1", "2", "--pool", "process")
    assert done.returncode == 0, done.stderr
    assert "seed 1," in done.stdout
    assert "seed 2," in done.stdout


def test_cli_runs_the_pipeline_from_the_repo_root() -> None:
    """The command the README shows prints the report as JSON, with the seed given by -i."""
    done = run_script("-m", "aioflow", "run", PIPELINE, "-i", "simulate:seed=11", "--pool", "thread")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["return_value"]
    assert report["seed"] == 11
    assert_fitted_near(report, simulated_positions(11))
