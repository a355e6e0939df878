"""Parsl's own ParslPoolExecutor tests, run against ``aioflow.parsl.ParslPoolExecutor``.

Parsl's tests of its ``concurrent.futures`` interface are not copied here:
they are imported at test time from the installed parsl package
(``parsl/tests/sites/test_concurrent.py``), with the module's
``ParslPoolExecutor`` replaced by aioflow's drop-in,
``aioflow.parsl.ParslPoolExecutor`` (``aioflow.Executor`` on the parsl pool,
with Parsl's constructor and app cache). Nothing else is changed: each of
Parsl's test functions runs as it is, in this process, on the local
HighThroughputExecutor its own config describes.

The tests that fail must be exactly those of `EXPECTED_FAILURES`, each
failing with the error listed there, for the reason given. A new failure
fails here, and so does a listed test that passes or fails otherwise: the
list stays true.
"""

from __future__ import annotations

import gc
import importlib
import logging
import re
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest
from clusters.parsl_fixtures import GONE_DEADLINE, assert_no_parsl_processes

import aioflow
import aioflow.parsl
from aioflow.pools._parsl import _current_dfk

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

#: Where the installed parsl keeps its ParslPoolExecutor tests.
PARSL_TESTS = "parsl.tests.sites.test_concurrent"

#: The name of the thread that stops an executor's own pool after ``shutdown(wait=False)`` (aioflow/_executor.py).
CLOSER_THREAD = "aioflow-executor-close"

#: Parsl's tests in that module when this list was written; any others it has now run too.
KNOWN_TESTS = ("test_chaining", "test_executor", "test_init_errors", "test_with_dfk")


class Failure(NamedTuple):
    """How a listed test fails on aioflow, and why."""

    error: type[BaseException]
    pattern: str  # searched in the error's message
    reason: str


#: Parsl's tests that fail against aioflow.parsl.ParslPoolExecutor: none.
EXPECTED_FAILURES: dict[str, Failure] = {}


def _import_parsl_tests() -> ModuleType:
    """Parsl's test module, as the installed parsl has it.

    Its tests carry Parsl's own ``local`` marker, which Parsl's conftest
    registers (this suite does not load it): pytest's warning that the
    marker is unknown is not about this suite.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        return importlib.import_module(PARSL_TESTS)


def _parsl_tests() -> ModuleType:
    try:
        return _import_parsl_tests()
    except ImportError as exc:
        pytest.fail(f"the installed parsl has no ParslPoolExecutor tests ({PARSL_TESTS}): {exc}")


def _test_names() -> list[str]:
    try:
        module = _import_parsl_tests()
    except ImportError:  # each known test then fails, saying so
        return list(KNOWN_TESTS)
    found = {name for name, value in vars(module).items() if name.startswith("test_") and callable(value)}
    return sorted(found | set(KNOWN_TESTS))


@pytest.fixture
def parsl_tests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    """Parsl's test module with ``ParslPoolExecutor`` substituted, run in ``tmp_path``; nothing of Parsl outlives it.

    Parsl's configs write their run directory (``runinfo``) in the working
    directory, and its worker blocks are not children of this process: they
    are found by that directory.
    """
    module = _parsl_tests()
    monkeypatch.setattr(module, "ParslPoolExecutor", aioflow.parsl.ParslPoolExecutor)
    monkeypatch.chdir(tmp_path)
    closers_before = _closer_threads()
    yield module
    try:
        _wait_for_closers(_closer_threads() - closers_before)
        left = _current_dfk()
        if left is not None:  # a test that broke inside a DFK of its own: do not let it reach the next one
            left.cleanup()
            pytest.fail(f"a DataFlowKernel was left loaded: {left!r}")
    finally:
        _close_parsl_log_files(tmp_path)
        assert_no_parsl_processes(tmp_path)


def _closer_threads() -> set[threading.Thread]:
    """The threads in which aioflow executors shut down with ``wait=False`` stop their pools."""
    return {thread for thread in threading.enumerate() if thread.name == CLOSER_THREAD}


def _wait_for_closers(threads: set[threading.Thread]) -> None:
    """Wait (up to `GONE_DEADLINE` in all) for pools a test left closing in the background to be closed.

    ``shutdown(wait=False)`` returns at once, and a thread cleans the
    executor's DFK up once its calls have ended: the checks below must see
    what it leaves, not race it.
    """
    deadline = time.monotonic() + GONE_DEADLINE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _close_parsl_log_files(run_dir: Path) -> None:
    """Close the log files that the test's DFKs left open under ``run_dir``.

    Parsl's configs log to ``runinfo/.../parsl.log`` by default, and a DFK's
    cleanup detaches that file's handler without closing it (Parsl's
    ``set_file_logger``): whichever test runs when the garbage collector
    finds it (pytest's log capture keeps Parsl's records, and through them
    the DFK, until after this teardown) would get Parsl's ResourceWarning,
    an error in this suite.
    """
    for handler in gc.get_objects():
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(run_dir):
            handler.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", _test_names())
def test_parsl_pool_executor_tests_pass_on_aioflow(parsl_tests: ModuleType, name: str) -> None:
    """Parsl's test ``name`` passes against aioflow.parsl.ParslPoolExecutor, or fails as `EXPECTED_FAILURES` says."""
    test = getattr(parsl_tests, name, None)
    assert test is not None, f"Parsl no longer has {name} (update KNOWN_TESTS and EXPECTED_FAILURES)"
    expected = EXPECTED_FAILURES.get(name)
    if expected is None:
        test()
        return
    error: BaseException | None = None
    try:
        test()
    except expected.error as exc:
        error = exc
    assert error is not None, f"{name} passes now: remove it from EXPECTED_FAILURES"
    assert re.search(expected.pattern, str(error)), f"{name} fails otherwise than listed: {error!r}"
