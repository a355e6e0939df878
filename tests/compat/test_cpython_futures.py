"""CPython's own executor tests, run against `aioflow.Executor`.

CPython 3.11's ``Lib/test/test_concurrent_futures.py`` is not copied here: it
is read at test time from Debian's ``libpython3.11-testsuite`` package
(/usr/lib/python3.11/test/, installed by .ci/run). Its test classes run with
``executor_type`` replaced by factories of `aioflow.Executor` on the
``thread`` pool and on the ``process`` pool with each start method (``fork``,
``forkserver``, ``spawn``); nothing else is changed (cpython_futures/ does
the substitution, see its modules). Each kind runs in a subprocess of its
own, all four at once: CPython's tests mostly sleep, and so take about a
minute each.

The tests that fail, or are not run, must be exactly those of `EXCLUDED`,
each with its reason: a test that reads the stdlib executors' internals
(``_threads``, ``_processes``, ``_max_workers``, ``_broken``...), one that
names the stdlib's own class instead of ``executor_type`` (substitution
cannot reach it, so it is not run), or a documented difference of design. A
new failure fails this test, and so does a listed test that starts to pass:
the list stays true.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

HERE = Path(__file__).resolve().parent
SITE = HERE / "cpython_futures"

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
CPYTHON_TESTS = Path(f"/usr/lib/python{PYTHON}/test/test_concurrent_futures.py")
DEBIAN_PACKAGE = f"libpython{PYTHON}-testsuite"

#: ``thread``, then the process pool's start methods.
KINDS = ("thread", "fork", "forkserver", "spawn")
_METHODS = {"fork": "Fork", "forkserver": "Forkserver", "spawn": "Spawn"}

#: A reason that starts with this marks a test that is not run.
NOT_RUN = "not run: "

# A runner ends itself (with every thread's traceback) when one test hangs
# for 120 s; this only bounds a runner that cannot even do that.
RUN_TIMEOUT = 900

# Fewer passing tests than this, per kind, means the tests were not collected as they should be.
MIN_PASSED = 30


def _on_process_pools(test: str, reason: str) -> dict[str, str]:
    """``test`` (``Class.test_name``, the class without its start method) on each start method."""
    cls, _, name = test.partition(".")
    return {f"ProcessPool{method}{cls}.{name}": reason for method in _METHODS.values()}


_STDLIB_CLASS = NOT_RUN + "it runs the stdlib's own {} (not executor_type), so substituting cannot reach it"
_UNPICKLE = (
    "design difference: a call or result that cannot be unpickled (UnpicklingError, or a __reduce__ that calls "
    "sys.exit) fails its call with aioflow.TransferError, and the worker carries on; the stdlib breaks the whole "
    "pool with BrokenProcessPool"
)
_BROKEN_FLAG = (
    "reads the executor's private _broken flag (and expects the stdlib's CRITICAL record on the "
    "'concurrent.futures' logger; aioflow logs the initializer's failure on 'aioflow.pools', or sends it back "
    "from the worker): aioflow raises InitializerFailed, a concurrent.futures.BrokenExecutor, for the calls "
    "and for every later submit, as tests/test_executor_contract.py checks"
)

#: Test id (``Class.test_name``, CPython's class names) -> why it fails on aioflow, or why it is not run.
EXCLUDED: dict[str, str] = {
    # -------------------------------------------------------------- thread
    "ThreadPoolShutdownTest.test_threads_terminate": NOT_RUN
    + "reads _threads while its calls block on a semaphore that it releases only after that read; failing "
    "there leaves them blocked, and tearDown's shutdown(wait=True) waits for them forever",
    "ThreadPoolShutdownTest.test_context_manager_shutdown": _STDLIB_CLASS.format("ThreadPoolExecutor"),
    "ThreadPoolShutdownTest.test_del_shutdown": _STDLIB_CLASS.format("ThreadPoolExecutor"),
    "ThreadPoolShutdownTest.test_shutdown_no_wait": _STDLIB_CLASS.format("ThreadPoolExecutor"),
    "ThreadPoolShutdownTest.test_thread_names_assigned": _STDLIB_CLASS.format("ThreadPoolExecutor"),
    "ThreadPoolShutdownTest.test_thread_names_default": _STDLIB_CLASS.format("ThreadPoolExecutor"),
    "ThreadPoolShutdownTest.test_cancel_futures_wait_false": _STDLIB_CLASS.format(
        "ThreadPoolExecutor, imported by name in its script"
    ),
    "ThreadPoolExecutorTest.test_hang_global_shutdown_lock": _STDLIB_CLASS.format(
        "ThreadPoolExecutor and ProcessPoolExecutor"
    ),
    "ThreadPoolExecutorTest.test_default_workers": "reads the executor's private _max_workers",
    "ThreadPoolExecutorTest.test_saturation": "reads the executor's private _max_workers and _threads",
    "ThreadPoolExecutorTest.test_idle_thread_reuse": "reads the executor's private _threads",
    "ThreadPoolFailingInitializerTest.test_initializer": _BROKEN_FLAG,
    # -------------------------------------------------------------- process, every start method
    **_on_process_pools(
        "ProcessPoolShutdownTest.test_processes_terminate",
        NOT_RUN + "reads _processes while its calls block on a semaphore that it releases only after that read; "
        "failing there leaves them blocked, and tearDown's shutdown(wait=True) waits for them forever",
    ),
    **_on_process_pools(
        "ProcessPoolShutdownTest.test_context_manager_shutdown", _STDLIB_CLASS.format("ProcessPoolExecutor")
    ),
    **_on_process_pools("ProcessPoolShutdownTest.test_del_shutdown", _STDLIB_CLASS.format("ProcessPoolExecutor")),
    **_on_process_pools("ProcessPoolShutdownTest.test_shutdown_no_wait", _STDLIB_CLASS.format("ProcessPoolExecutor")),
    **_on_process_pools(
        "ProcessPoolShutdownTest.test_hang_gh83386",
        "CPython skips it for its own process pool (gh-83386), by an identity check that the substitution "
        "defeats; its script names multiprocessing without importing it, so it fails with a NameError before "
        "any executor is made",
    ),
    **_on_process_pools("ProcessPoolExecutorTest.test_saturation", "reads the executor's private _max_workers"),
    **_on_process_pools(
        "ProcessPoolExecutorTest.test_idle_process_reuse_one",
        "reads the executor's private _max_workers and _processes",
    ),
    **_on_process_pools(
        "ProcessPoolExecutorTest.test_idle_process_reuse_multiple",
        "reads the executor's private _max_workers and _processes",
    ),
    **_on_process_pools(
        "ProcessPoolExecutorTest.test_killed_child",
        "reads the executor's private _processes (and expects the whole pool broken by one killed worker, where "
        "aioflow fails only that worker's call: tests/pools/test_lost_workers.py)",
    ),
    **_on_process_pools(
        "ProcessPoolExecutorTest.test_max_tasks_per_child_defaults_to_spawn_context",
        "reads the executor's private _mp_context (aioflow also starts spawn workers by default with "
        "max_tasks_per_child: tests/test_executor_contract.py)",
    ),
    **_on_process_pools(
        "ProcessPoolExecutorTest.test_traceback",
        "expects the stdlib's private concurrent.futures.process._RemoteTraceback and its tb attribute as the "
        "__cause__; aioflow's cause is its own RemoteTraceback holding the same worker traceback",
    ),
    **_on_process_pools("FailingInitializerTest.test_initializer", _BROKEN_FLAG),
    **_on_process_pools("ExecutorDeadlockTest.test_error_at_task_unpickle", _UNPICKLE),
    **_on_process_pools("ExecutorDeadlockTest.test_exit_at_task_unpickle", _UNPICKLE),
    **_on_process_pools("ExecutorDeadlockTest.test_error_during_result_unpickle_in_result_handler", _UNPICKLE),
    **_on_process_pools("ExecutorDeadlockTest.test_exit_during_result_unpickle_in_result_handler", _UNPICKLE),
    **_on_process_pools(
        "ExecutorDeadlockTest.test_shutdown_deadlock_pickle",
        "reads the executor's private _executor_manager_thread",
    ),
    # -------------------------------------------------------------- process, forkserver and spawn
    **{
        f"ProcessPool{method}ProcessPoolExecutorTest.test_max_tasks_per_child": (
            "reads the executor's private _processes (max_tasks_per_child itself: tests/test_executor_contract.py)"
        )
        for method in ("Forkserver", "Spawn")
    },
}

#: Tests that CPython skips itself, on aioflow as on the stdlib.
UPSTREAM_SKIPS: dict[str, set[str]] = {
    "thread": set(),
    **{
        kind: {f"ProcessPool{method}ProcessPoolExecutorTest.test_max_workers_too_large"}  # Windows only
        for kind, method in _METHODS.items()
    },
}
UPSTREAM_SKIPS["fork"].add("ProcessPoolForkProcessPoolExecutorTest.test_max_tasks_early_shutdown")  # spawn only


def _kind_of(test_id: str) -> str:
    if test_id.startswith("ThreadPool"):
        return "thread"
    # The longest start method first: "ProcessPoolForkserver..." also starts with "ProcessPoolFork".
    methods = sorted(_METHODS.items(), key=lambda kind_method: -len(kind_method[1]))
    return next(kind for kind, method in methods if test_id.startswith(f"ProcessPool{method}"))


class _Run:
    """One runner subprocess: a kind of executor, its JSON-lines outcomes and its output."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.results = workdir / f"{kind}.jsonl"
        self.log = workdir / f"{kind}.log"
        self.not_run = sorted(t for t, r in EXCLUDED.items() if r.startswith(NOT_RUN) and _kind_of(t) == kind)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), env.get("PYTHONPATH")]))
        env["AIOFLOW_CPYTHON_FUTURES_FILE"] = str(CPYTHON_TESTS)
        cmd = [sys.executable, str(SITE / "run_cpython_futures.py"), kind, str(self.results), *self.not_run]
        self._output: IO[bytes] = self.log.open("wb")
        # A session of its own, so that a hang is ended with everything it started.
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=self._output, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait(self, deadline: float) -> None:
        try:
            self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:  # a timeout, Ctrl-C, pytest-timeout: leave nothing running behind
            self.kill()
            raise
        finally:
            self._output.close()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def outcomes(self) -> dict[str, str]:
        """Test id -> ``passed``, ``failed``, ``skipped`` or ``not run``, for the tests that ended."""
        if not self.results.exists():
            return {}
        with self.results.open() as lines:
            return {entry["id"]: entry["outcome"] for entry in map(json.loads, lines)}

    def output_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, _Run]:
    """The four runs, started together and all ended before any test looks at them."""
    if not CPYTHON_TESTS.is_file():
        pytest.fail(
            f"CPython's executor tests are missing: {CPYTHON_TESTS} comes with Debian's {DEBIAN_PACKAGE} package "
            f"(apt-get install {DEBIAN_PACKAGE}; .ci/run installs it)"
        )
    workdir = tmp_path_factory.mktemp("cpython_futures")
    deadline = time.monotonic() + RUN_TIMEOUT
    started: list[_Run] = []
    try:
        started.extend(_Run(kind, workdir) for kind in KINDS)
        for run in started:
            run.wait(deadline)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a run of CPython's executor tests did not end within {RUN_TIMEOUT} s")
    finally:
        for run in started:
            if run.proc.returncode is None:
                run.kill()
    return {run.kind: run for run in started}


pytestmark = pytest.mark.timeout(RUN_TIMEOUT + 60)


@pytest.mark.parametrize("kind", KINDS)
def test_cpython_executor_tests_pass_on_aioflow(runs: dict[str, _Run], kind: str) -> None:
    """Every CPython executor test of ``kind`` passes on aioflow but those of `EXCLUDED`, which fail."""
    run = runs[kind]
    outcomes = run.outcomes()
    tail = run.output_tail()
    assert run.proc.returncode == 0, f"the {kind} run ended with exit code {run.proc.returncode}:\n{tail}"
    by_outcome: dict[str, set[str]] = {"passed": set(), "failed": set(), "skipped": set(), "not run": set()}
    for test, outcome in outcomes.items():
        by_outcome[outcome].add(test)
    expected = {t for t, r in EXCLUDED.items() if _kind_of(t) == kind and not r.startswith(NOT_RUN)}
    unexpected = sorted(by_outcome["failed"] - expected)
    now_passing = sorted(expected - by_outcome["failed"])
    assert not unexpected, f"CPython tests that fail on aioflow ({kind}): {unexpected}\n{tail}"
    assert not now_passing, f"listed as failing but did not fail (update EXCLUDED): {now_passing}\n{tail}"
    assert by_outcome["skipped"] == UPSTREAM_SKIPS[kind], f"skipped ({kind}): {sorted(by_outcome['skipped'])}"
    # A test listed as not run that CPython no longer has is an error in the list too.
    assert by_outcome["not run"] == set(run.not_run), f"not among CPython's tests: {set(run.not_run) - set(outcomes)}"
    assert len(by_outcome["passed"]) >= MIN_PASSED, f"only {len(by_outcome['passed'])} tests passed ({kind}):\n{tail}"
