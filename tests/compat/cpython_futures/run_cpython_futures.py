"""Run CPython's executor tests of one kind against aioflow: ``run_cpython_futures.py KIND OUT [SKIP...]``.

KIND is ``thread``, ``fork``, ``forkserver`` or ``spawn``; OUT receives one
JSON line per test as it ends (``{"id", "outcome", "seconds", "detail"}``;
the tests not run first, with the outcome ``not run``),
so a run that hangs still tells which tests ended and which one hung. SKIP
are test ids (``Class.test_name``) not to run. A test that runs longer than
``PER_TEST_TIMEOUT`` seconds ends the run with every thread's traceback on
stderr. Started by tests/compat/test_cpython_futures.py, with this directory
on ``PYTHONPATH`` (see ``sitecustomize``).
"""

from __future__ import annotations

import faulthandler
import gc
import importlib
import json
import sys
import time
import unittest
from typing import IO, Any

PER_TEST_TIMEOUT = 120

# Where a hang's tracebacks go: the process's own stderr (some of CPython's
# tests replace sys.stderr in this process, as a failing unpickle does).
_STDERR_FD = 2


class _Recorder(unittest.TextTestResult):
    """Writes each test's outcome to ``out`` when it ends, its ``tearDown`` included."""

    def __init__(self, out: IO[str], stream: Any, descriptions: bool, verbosity: int) -> None:
        super().__init__(stream, descriptions, verbosity)
        self.out = out
        self.started = 0.0
        self.outcome: tuple[str, str] = ("passed", "")

    def startTest(self, test: unittest.TestCase) -> None:
        faulthandler.dump_traceback_later(PER_TEST_TIMEOUT, exit=True, file=_STDERR_FD)
        self.started = time.monotonic()
        self.outcome = ("passed", "")
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        # An executor that a failed test left behind sits in a reference
        # cycle (its frame, a future, the future's exception's traceback):
        # collected now, it stops its workers at once, as the stdlib's do when
        # collected, instead of holding multiprocessing's resource tracker
        # (and so the end of the run) until its idle workers retire.
        gc.collect()
        faulthandler.cancel_dump_traceback_later()
        outcome, detail = self.outcome
        line = {
            "id": f"{type(test).__name__}.{test._testMethodName}",
            "outcome": outcome,
            "seconds": round(time.monotonic() - self.started, 2),
        }
        if detail:
            line["detail"] = detail
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    def _fail(self, test: unittest.TestCase, detail: str) -> None:
        if self.outcome[0] != "failed":  # the first failure tells most (tearDown may fail after it)
            self.outcome = ("failed", detail)

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._fail(test, self.failures[-1][1])

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        self._fail(test, self.errors[-1][1])

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self.outcome = ("skipped", reason)


def main(kind: str, out_path: str, skip: set[str]) -> int:
    # CPython's scripts (assert_python_ok) must see this run's PYTHONPATH:
    # without it they would start in isolated mode (-I), where neither
    # test.test_concurrent_futures nor aioflow's executors can be found.
    script_helper = importlib.import_module("test.support.script_helper")
    setattr(script_helper, "__cached_interp_requires_environment", True)

    from cpython_executor_tests import CASES, kind_of

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    not_run: list[str] = []
    for name, case in CASES.items():
        if kind_of(case) != kind:
            continue
        for test_name in loader.getTestCaseNames(case):
            test_id = f"{name}.{test_name}"
            if test_id in skip:
                not_run.append(test_id)
            else:
                suite.addTest(case(test_name))
    with open(out_path, "w") as out:
        out.writelines(json.dumps({"id": test_id, "outcome": "not run"}) + "\n" for test_id in not_run)
        runner = unittest.TextTestRunner(
            stream=sys.stderr,
            verbosity=2,
            resultclass=lambda stream, descriptions, verbosity: _Recorder(out, stream, descriptions, verbosity),
        )
        runner.run(suite)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], set(sys.argv[3:])))
