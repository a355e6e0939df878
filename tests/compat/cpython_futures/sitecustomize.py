"""Run at the start of every process of a CPython ``test_concurrent_futures`` run against aioflow.

This directory is on ``PYTHONPATH`` only in that run (tests/compat/test_cpython_futures.py
sets it), so Python imports this module at start-up in the runner, in the
worker processes it spawns and in the scripts CPython's tests start with
``assert_python_ok``. In each it makes two names resolve, as they do in
CPython's own test run:

- ``test.test_concurrent_futures``: loaded by path from the file named by
  ``AIOFLOW_CPYTHON_FUTURES_FILE`` (Debian's ``libpython3.11-testsuite``),
  beside this interpreter's own ``test.support``. Worker processes import
  it to unpickle the module's functions (``mul``, ``sleep_and_print``...),
  and the scripts import it by that name.
- ``concurrent.futures.<factory name>``: the scripts of CPython's shutdown
  tests run ``from concurrent.futures import {executor_type.__name__}``; the
  factory of ``aioflow_executors`` is found there, so the script runs aioflow.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

MODULE = "test.test_concurrent_futures"


class _CPythonTestFinder(importlib.abc.MetaPathFinder):
    """Finds ``test.test_concurrent_futures`` at a path outside the interpreter's ``test`` package."""

    def __init__(self, path: str) -> None:
        self.path = path

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path)


def _install() -> None:
    path = os.environ.get("AIOFLOW_CPYTHON_FUTURES_FILE")
    if not path:
        return
    sys.meta_path.insert(0, _CPythonTestFinder(path))
    import concurrent.futures

    import aioflow_executors

    for name in aioflow_executors.__all__:
        setattr(concurrent.futures, name, getattr(aioflow_executors, name))


_install()
