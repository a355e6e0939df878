"""scinexus's own parallel tests, run against `aioflow.parallel`.

scinexus's tests are not copied here: the test downloads scinexus's source
distribution (version `SCINEXUS_VERSION`, checked against its SHA-256) from
the package index with ``pip download``, once per machine into a cache in the
temporary directory, and extracts ``tests/test_parallel.py`` and
``tests/test_parallel_mpi.py`` with the ``pyproject.toml`` that configures
them. Without access to the index the test fails, saying so.

What is adapted: only which module ``scinexus.parallel`` is. The cache holds a
package ``scinexus`` whose ``parallel`` module replaces itself, as it is
imported, with `alias_of_aioflow_parallel` (a module alias in
``sys.modules``): every name is looked up on `aioflow.parallel`, and a name
aioflow does not have (scinexus's private helpers, such as
``_clamp_max_workers_local``) is an `Absent` stand-in that fails, naming it,
when a test uses it. A stand-in is needed because the test module imports
those helpers at its top: without one, its import would fail and with it
every test, public or not. An alias, rather than rewriting the import line,
because worker processes (loky's are spawned) import the test module again
by name, and find the same alias there. scinexus itself is not installed:
its parallel tests import nothing else of it.

The tests run as scinexus's CI runs them: those of ``test_parallel.py`` with
``-m "not mpi"`` (its ``test`` session also leaves out the one ``slow``
test; it is run here), and the MPI tests of ``test_parallel_mpi.py`` under
``mpiexec -n 4 python -m mpi4py.futures -m pytest -m mpi``, with every MPI
library installed here (tests/mpi_launch.py).
The tests that fail must be exactly those of `EXCLUDED`, each with its
reason: a test of scinexus's internals (a private name, or a module global
patched), or a difference of design documented in docs/parallel.md. A new
failure fails this test, and so does a listed test that passes. Tests may be
skipped only by scinexus's own conditions (too few CPUs).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from mpi_launch import Launcher, launchers

import aioflow.parallel

#: The release tested against: scinexus's latest when this was written (pinned, so that a run is reproducible).
SCINEXUS_VERSION = "2026.10.26"
SDIST_SHA256 = "2672a588d65806364d82dcca4975c0cc0be5f54a94801416efe78998ae1f17a6"
SDIST = f"scinexus-{SCINEXUS_VERSION}.tar.gz"

#: What is taken from the source distribution.
MEMBERS = ("tests/test_parallel.py", "tests/test_parallel_mpi.py", "pyproject.toml")

#: Where the source distribution and its extracted tests are kept between runs.
CACHE = Path(tempfile.gettempdir()) / "aioflow-test-cache" / f"scinexus-{SCINEXUS_VERSION}"

#: The tests each run collects (``-m "not mpi"``, ``-m mpi``); fewer means they were not collected as they should be.
EXPECTED_TESTS = 145
EXPECTED_MPI_TESTS = 30

#: The MPI job of the MPI tests, as scinexus's CI launches it: the master and three worker ranks.
MPI_PROCESSES = 4

# pip download, then the run: each bounded (a hang inside a test ends it after TEST_TIMEOUT).
DOWNLOAD_TIMEOUT = 300
RUN_TIMEOUT = 600
TEST_TIMEOUT = 120
# Seconds the launcher has to exit once the report is written (`_run`).
LAUNCHER_GRACE = 30

# The package the tests import: scinexus.parallel is the alias.
_ALIAS_PACKAGE = {
    "__init__.py": '"""scinexus, as its parallel tests see it: only its parallel module, which is aioflow.parallel."""\n',
    "parallel.py": (
        '"""Replaced, as it is imported, by aioflow.parallel under this name (tests/compat/test_scinexus_parallel.py)."""\n'
        "import sys\n\n"
        "from test_scinexus_parallel import alias_of_aioflow_parallel\n\n"
        "sys.modules[__name__] = alias_of_aioflow_parallel(__name__)\n"
    ),
}

_INTERNAL = "scinexus internals: "
_DESIGN = "design difference (docs/parallel.md): "
_GIL_PROBE = (
    _INTERNAL + "monkeypatches scinexus's private GIL probe _gil_enabled, which aioflow.parallel does not have; "
    "aioflow reads sys._is_gil_enabled itself (its default also turns to threads without the GIL: "
    "tests/parallel/test_scinexus_api.py::test_the_default_follows_the_gil)"
)
_RESOLVER = (
    _INTERNAL + "calls scinexus's private resolver {}; aioflow's public functions follow the same rules "
    "(tests/parallel/test_scinexus_api.py, tests/parallel/test_worker_counts.py)"
)
_MPI_GLOBAL = (
    _INTERNAL + "patches or reloads scinexus's module globals MPI / USING_MPI (how scinexus imports mpi4py); "
    "aioflow imports mpi4py only when a map needs it, so that import aioflow.parallel never runs MPI_Init"
)


def _each(test: str, params: list[str], reason: str) -> dict[str, str]:
    return {f"test_parallel.py::{test}[{param}]": reason for param in params}


#: Test id -> why it fails on aioflow.parallel.
EXCLUDED: dict[str, str] = {
    # -------------------------------------------------------------- scinexus's private names and globals
    "test_parallel.py::test_effective_backend_caches_mpi": _INTERNAL
    + "calls scinexus's private _effective_backend and patches its globals USING_MPI, MPI and _mpi_backend",
    "test_parallel.py::test_clamp_max_workers_local_valid": _RESOLVER.format("_clamp_max_workers_local"),
    "test_parallel.py::test_clamp_max_workers_local_too_large": _RESOLVER.format("_clamp_max_workers_local"),
    **_each(
        "test_max_workers_below_one_refused",
        ["-1-resolve0", "-1-resolve1", "0-resolve0", "0-resolve1"],
        _RESOLVER.format("_resolve_max_workers_local / _clamp_max_workers_local"),
    ),
    **_each(
        "test_max_workers_none_is_the_default",
        ["resolve0", "resolve1"],
        _RESOLVER.format("_resolve_max_workers_local / _clamp_max_workers_local"),
    ),
    **_each(
        "test_max_workers_bool_refused",
        ["True-resolve0", "True-resolve1", "False-resolve0", "False-resolve1"],
        _RESOLVER.format("_resolve_max_workers_local / _clamp_max_workers_local"),
    ),
    **_each(
        "test_max_workers_non_integer_refused",
        [f"{v}-resolve{r}" for v in ("max_workers0", "max_workers1", "2.5") for r in (0, 1)],
        _RESOLVER.format("_resolve_max_workers_local / _clamp_max_workers_local"),
    ),
    **_each(
        "test_max_workers_numpy_integer_accepted",
        ["resolve0", "resolve1"],
        _RESOLVER.format("_resolve_max_workers_local / _clamp_max_workers_local"),
    ),
    **_each("test_worker_budget", ["4-3", "8-7", "2-1", "1-1"], _RESOLVER.format("_worker_budget")),
    "test_parallel.py::test_resolve_max_workers_mpi_none_takes_the_pool": _RESOLVER.format("_resolve_max_workers_mpi"),
    "test_parallel.py::test_resolve_max_workers_mpi_matching_request_is_quiet": _RESOLVER.format(
        "_resolve_max_workers_mpi"
    ),
    **_each(
        "test_resolve_max_workers_mpi_reports_a_request_it_cannot_meet",
        ["3", "8"],
        _RESOLVER.format("_resolve_max_workers_mpi"),
    ),
    **_each(
        "test_resolve_max_workers_mpi_below_one_refused", ["-1", "0"], _RESOLVER.format("_resolve_max_workers_mpi")
    ),
    **_each(
        "test_resolve_max_workers_mpi_non_integer_refused",
        ["True", "max_workers1", "2.5"],
        _RESOLVER.format("_resolve_max_workers_mpi"),
    ),
    "test_parallel.py::test_resolve_max_workers_mpi_accepts_a_numpy_count": _RESOLVER.format(
        "_resolve_max_workers_mpi"
    ),
    "test_parallel.py::test_resolve_chunksize_empty": _RESOLVER.format("_resolve_chunksize"),
    "test_parallel.py::test_resolve_chunksize_keeps_what_the_caller_asked_for": _RESOLVER.format("_resolve_chunksize"),
    **_each("test_chunksize_below_one_refused", ["-1", "0"], _RESOLVER.format("_resolve_chunksize")),
    **_each("test_chunksize_bool_refused", ["True", "False"], _RESOLVER.format("_resolve_chunksize")),
    **_each(
        "test_chunksize_non_integer_refused",
        ["chunksize0", "chunksize1", "2.5"],
        _RESOLVER.format("_resolve_chunksize"),
    ),
    "test_parallel.py::test_chunksize_numpy_integer_accepted": _RESOLVER.format("_resolve_chunksize"),
    "test_parallel.py::test_get_rank_thread_unknown_thread": _INTERNAL
    + "calls scinexus's private _get_rank_thread (a thread of the caller's own is rank 0 and the master in aioflow "
    "too: tests/parallel/test_scinexus_api.py::test_a_thread_of_the_callers_own_is_the_master)",
    "test_parallel.py::test_gil_enabled_reports_the_probe": _INTERNAL + "calls scinexus's private _gil_enabled",
    "test_parallel.py::test_gil_enabled_without_the_probe": _INTERNAL + "calls scinexus's private _gil_enabled",
    "test_parallel.py::test_default_is_threads_without_the_gil": _GIL_PROBE,
    "test_parallel.py::test_default_follows_the_gil_being_switched_back_on": _GIL_PROBE,
    "test_parallel.py::test_refused_backend_leaves_the_choice_to_be_made_again": _GIL_PROBE,
    "test_parallel.py::test_module_map_runs_in_one_process_without_the_gil": _GIL_PROBE,
    "test_parallel.py::test_locks_are_replaced_after_a_fork": _INTERNAL
    + "reads scinexus's private locks _default_backend_lock and _rank_lock and calls _replace_locks_after_fork",
    "test_parallel.py::test_set_parallel_backend_mpi_not_available": _MPI_GLOBAL,
    "test_parallel.py::test_dont_use_mpi_env_var": _MPI_GLOBAL,
    "test_parallel.py::test_mpi_import_error_fallback": _MPI_GLOBAL,
    # -------------------------------------------------------------- documented differences of design
    "test_parallel.py::test_thread_ranks_are_not_reused_by_a_later_pool": _DESIGN
    + "warm workers: a backend keeps its workers between maps, and a worker keeps its rank (no two live workers "
    "ever share one); scinexus starts a new pool, with new ranks, for every map",
    "test_parallel.py::test_thread_nested_pool_ranks_differ_from_the_outer_worker": _DESIGN
    + "maps do not nest: a map called from a worker of another map runs in that worker, as if_serial says "
    "(here it raises SerialExecutionError), where scinexus starts a pool inside the worker; scinexus skips this "
    "test below 4 CPUs",
    "test_parallel.py::test_get_size": _DESIGN
    + "aioflow.parallel.get_size() is the MPI job's size (1 outside MPI), as aioflow has documented from its "
    "first release; scinexus's module get_size() (the CPU count) is get_parallel_backend().get_size() in aioflow",
    # -------------------------------------------------------------- under mpiexec
    **{
        f"test_parallel_mpi.py::{test}": _INTERNAL
        + "sets scinexus's private MPIBackend._workers to 1 to play a job with one worker (aioflow's rule for "
        "one MPI worker is if_serial's, as scinexus's)"
        for test in (
            "test_imap_mpi_if_serial_raise_size_1",
            "test_imap_mpi_if_serial_warn_size_1",
            "test_as_completed_mpi_if_serial_raise_size_1",
            "test_as_completed_mpi_if_serial_warn_size_1",
        )
    },
    "test_parallel_mpi.py::test_as_completed_mpi_not_using_mpi": _MPI_GLOBAL,
    **{
        f"test_parallel_mpi.py::test_as_completed_mpi_sends_no_chunk_size[{param}]": _INTERNAL
        + "patches scinexus's module global MPIfutures (its handle on mpi4py.futures)"
        for param in ("None", "5")
    },
    "test_parallel_mpi.py::test_mpi_get_size_is_the_pool_the_job_has": _INTERNAL
    + "opens an executor through scinexus's private MPIBackend._futures",
    "test_parallel_mpi.py::test_is_master_process_mpi_server": _DESIGN
    + "scinexus tells a worker by the script's name (sys.argv[0] == 'server.py', which the test patches); "
    "aioflow asks MPI for the rank (and knows a task running in a worker): rank 0 is the master",
}

#: scinexus's own skip conditions: a test may be skipped only with one of these reasons.
UPSTREAM_SKIP_REASONS = ("requires at least 2 CPU cores", "requires at least 4 CPU cores")

_AFFINITY = len(os.sched_getaffinity(0))
if _AFFINITY != multiprocessing.cpu_count():
    # aioflow counts the CPUs this process may run on, scinexus all the machine's: they differ only where the
    # process is pinned to fewer (taskset, cgroup cpusets).
    _PINNED = _DESIGN + (
        f"aioflow counts the {_AFFINITY} CPUs this process may run on, where scinexus's test expects "
        f"multiprocessing.cpu_count() ({multiprocessing.cpu_count()})"
    )
    for _test in ("test_multiprocess_get_size", "test_loky_get_size", "test_thread_get_size"):
        EXCLUDED[f"test_parallel.py::{_test}"] = _PINNED
    EXCLUDED["test_parallel.py::test_thread_as_completed_max_workers_clamped"] = _PINNED


# --------------------------------------------------------------------------- the alias


class Absent:
    """Stands for a name of ``scinexus.parallel`` that `aioflow.parallel` does not have: calling it fails, naming it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: object, **kwargs: object) -> None:
        msg = f"scinexus.parallel.{self.name} is scinexus's own: aioflow.parallel has no {self.name!r}"
        raise AttributeError(msg)

    def __repr__(self) -> str:
        return f"<absent from aioflow.parallel: {self.name}>"


class _AliasModule(types.ModuleType):
    """`aioflow.parallel` under another name. Attributes set on it (tests patching globals) stay on the alias."""

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(aioflow.parallel, name)
        except AttributeError:
            if name.startswith("__"):
                raise
            return Absent(name)


def alias_of_aioflow_parallel(name: str) -> types.ModuleType:
    """A module named ``name`` whose every name is `aioflow.parallel`'s, or an `Absent` stand-in."""
    return _AliasModule(name, aioflow.parallel.__doc__)


# --------------------------------------------------------------------------- obtaining the tests


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download() -> Path:
    """The source distribution, from the cache or the package index; fails the test if it cannot be had."""
    sdist = CACHE / SDIST
    if sdist.is_file() and _sha256(sdist) == SDIST_SHA256:
        return sdist
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", scratch]
        command.append(f"scinexus=={SCINEXUS_VERSION}")
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pip download of scinexus=={SCINEXUS_VERSION} did not end within {DOWNLOAD_TIMEOUT} s")
        got = Path(scratch) / SDIST
        if done.returncode != 0 or not got.is_file():
            pytest.fail(
                f"could not download scinexus=={SCINEXUS_VERSION}'s source distribution from the package index, "
                f"which this test needs (network access to it): {' '.join(command)} exited {done.returncode}\n"
                + done.stderr[-3000:]
            )
        if _sha256(got) != SDIST_SHA256:
            pytest.fail(f"{SDIST} from the package index is not the one pinned here (SHA-256 {_sha256(got)})")
        os.replace(got, sdist)
    return sdist


def _extracted() -> Path:
    """A directory with scinexus's parallel tests, their pyproject.toml and the alias package (made once)."""
    made_by = hashlib.sha256(repr((MEMBERS, _ALIAS_PACKAGE)).encode()).hexdigest()[:12]
    target = CACHE / f"run-{made_by}"  # made again when what it holds changes
    if target.is_dir():
        return target
    sdist = _download()
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        staging = Path(scratch) / "run"
        with tarfile.open(sdist) as archive:
            for member in MEMBERS:
                source = archive.extractfile(f"scinexus-{SCINEXUS_VERSION}/{member}")
                assert source is not None, member
                (staging / Path(member).name).parent.mkdir(parents=True, exist_ok=True)
                (staging / Path(member).name).write_bytes(source.read())
        package = staging / "alias" / "scinexus"
        package.mkdir(parents=True)
        for name, text in _ALIAS_PACKAGE.items():
            (package / name).write_text(text)
        try:
            os.replace(staging, target)
        except OSError:  # another run made it first
            shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- the run


def _run(workdir: Path, report: Path, launch: list[str], selection: list[str], env: dict[str, str]) -> str:
    """Run scinexus's tests of ``selection`` with ``launch`` (the interpreter, or mpiexec and it); their output."""
    here = Path(__file__).resolve().parent
    path = [str(workdir / "alias"), str(here), str(workdir), env.get("PYTHONPATH", "")]
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    command = [
        *launch,
        "-m",
        "pytest",
        *selection,
        "-c",
        "pyproject.toml",
        "--rootdir",
        ".",
        "--noconftest",
        "-p",
        "no:cacheprovider",
        f"--timeout={TEST_TIMEOUT}",
        f"--junitxml={report}",
        "-q",
    ]
    # A session of its own: whatever the run leaves behind (a hung worker) is ended with it.
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + RUN_TIMEOUT
    reported: float | None = None  # when the report was found whole
    try:
        while True:
            try:
                output, _ = proc.communicate(timeout=2)  # retrying loses no output
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if reported is None and _whole(report):
                    reported = now
                if reported is not None and now - reported > LAUNCHER_GRACE:
                    # Every test ran and the report is written; Open MPI's mpiexec now
                    # and then hangs after its ranks have exited. Its ranks' results stand.
                    os.killpg(proc.pid, signal.SIGKILL)
                    output, _ = proc.communicate()
                    output += f"\n[the launcher did not exit within {LAUNCHER_GRACE} s of the report: killed]"
                    break
                if now > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    output, _ = proc.communicate()
                    pytest.fail(f"scinexus's parallel tests did not end within {RUN_TIMEOUT} s:\n{output[-5000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return output


def _whole(report: Path) -> bool:
    """Whether pytest has written the whole report (it writes it last, once every test ran)."""
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return False
    return root.tag == "testsuite" or root.find("testsuite") is not None


def _outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """Test id -> (``passed``, ``failed`` or ``skipped``, the message)."""
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        skipped = case.find("skipped")
        if problem is not None:
            outcomes[test] = ("failed", problem.get("message", ""))
        elif skipped is not None:
            outcomes[test] = ("skipped", skipped.get("message", ""))
        else:
            outcomes[test] = ("passed", "")
    return outcomes


def _check(report: Path, output: str, test_file: str, expected_tests: int) -> str:
    """Assert that exactly the tests of `EXCLUDED` from ``test_file`` failed; the counts, in a line."""
    tail = output[-5000:]
    assert report.is_file(), f"the run wrote no report:\n{tail}"
    outcomes = _outcomes(report)
    assert len(outcomes) == expected_tests, f"{len(outcomes)} tests ran, not {expected_tests}:\n{tail}"
    excluded = {test: reason for test, reason in EXCLUDED.items() if test.startswith(f"{test_file}::")}
    failed = {test: message for test, (outcome, message) in outcomes.items() if outcome == "failed"}
    skipped = {test: message for test, (outcome, message) in outcomes.items() if outcome == "skipped"}
    new = {test: message for test, message in failed.items() if test not in excluded}
    assert not new, "scinexus tests that fail on aioflow.parallel:\n" + "\n".join(f"{t}: {m}" for t, m in new.items())
    passing = sorted(test for test in excluded if outcomes.get(test, ("",))[0] == "passed")
    assert not passing, f"listed in EXCLUDED but passed (take them off the list): {passing}"
    missing = sorted(test for test in excluded if test not in outcomes)
    assert not missing, f"listed in EXCLUDED but not among scinexus's tests: {missing}"
    foreign = {t: m for t, m in skipped.items() if not any(reason in m for reason in UPSTREAM_SKIP_REASONS)}
    assert not foreign, f"skipped, and not by scinexus's own conditions: {foreign}"
    passed = len(outcomes) - len(failed) - len(skipped)
    internals = sum(1 for test in failed if excluded[test].startswith(_INTERNAL))
    return (
        f"scinexus {SCINEXUS_VERSION} {test_file} on aioflow.parallel: {passed} passed, {len(failed)} excluded "
        f"({internals} of scinexus internals, {len(failed) - internals} design differences), "
        f"{len(skipped)} skipped by scinexus (too few CPUs), of {len(outcomes)}"
    )


pytestmark = pytest.mark.timeout(DOWNLOAD_TIMEOUT + RUN_TIMEOUT + 60)


def test_scinexus_parallel_tests_pass_on_aioflow_parallel(tmp_path: Path) -> None:
    """Every scinexus parallel test passes on aioflow.parallel, but those of `EXCLUDED`, which fail."""
    report = tmp_path / "report.xml"
    launch = [sys.executable]
    output = _run(_extracted(), report, launch, ["test_parallel.py", "-m", "not mpi"], dict(os.environ))
    counts = _check(report, output, "test_parallel.py", EXPECTED_TESTS)
    print(f"\n{counts}")  # noqa: T201 - the counts, for the record (pytest -s shows them)


@pytest.mark.parametrize("launcher", launchers(), ids=str)
def test_scinexus_mpi_tests_pass_on_aioflow_parallel(tmp_path: Path, launcher: Launcher) -> None:
    """Under ``mpiexec -n 4 python -m mpi4py.futures``, as scinexus's CI: every MPI test passes but those excluded."""
    report = tmp_path / "report.xml"
    launch = [*launcher.command(MPI_PROCESSES), sys.executable, "-m", "mpi4py.futures"]
    output = _run(_extracted(), report, launch, ["test_parallel_mpi.py", "-m", "mpi"], launcher.environ())
    counts = _check(report, output, "test_parallel_mpi.py", EXPECTED_MPI_TESTS)
    print(f"\n{counts} ({launcher})")  # noqa: T201 - the counts, for the record (pytest -s shows them)
