"""CPython's executor test classes, with aioflow's executors in place of the stdlib's.

Each test class of CPython's ``test_concurrent_futures`` that runs on an
executor (the module's own mixins, combined by ``create_executor_tests`` or
by hand) gets a subclass here of the same name whose ``executor_type`` is the
factory of `aioflow_executors` for its kind: ``thread``, or ``process`` with
the start method its mixin passes as ``mp_context``. Nothing else changes:
the test bodies, ``setUp`` and ``tearDown`` are CPython's.

The subclasses are built when this module is imported, in every process
that imports it: a spawned worker unpickles ``SomeTest._test_traceback`` by
this module's name, as CPython's workers do by the test module's.
"""

from __future__ import annotations

import importlib
import unittest
from typing import Any

from aioflow_executors import AioflowProcessPoolExecutor, AioflowThreadPoolExecutor

# Found by path (sitecustomize), beside this interpreter's own test.support.
cpython = importlib.import_module("test.test_concurrent_futures")

__all__ = ["CASES", "kind_of", "setUpModule"]

#: CPython's module fixture (it cleans up multiprocessing's helper processes at the end).
setUpModule = cpython.setUpModule


def kind_of(case: type[Any]) -> str:
    """``thread``, or the start method of a process-pool test class (``fork``, ``forkserver``, ``spawn``)."""
    if issubclass(case, cpython.ThreadPoolMixin):
        return "thread"
    return str(case.ctx)


def _adapted(case: type[Any]) -> type[unittest.TestCase]:
    factory = AioflowThreadPoolExecutor if kind_of(case) == "thread" else AioflowProcessPoolExecutor
    namespace = {"executor_type": staticmethod(factory), "__module__": __name__, "__qualname__": case.__name__}
    return type(case.__name__, (case,), namespace)


def _executor_cases() -> list[type[Any]]:
    return [
        value
        for value in vars(cpython).values()
        if isinstance(value, type) and issubclass(value, unittest.TestCase) and hasattr(value, "executor_type")
    ]


#: Adapted test class name -> class, every executor kind together.
CASES: dict[str, type[unittest.TestCase]] = {case.__name__: _adapted(case) for case in _executor_cases()}
globals().update(CASES)
