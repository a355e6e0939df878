"""Fixtures of the parallel-map tests: warm workers are stopped after each test.

Backends keep their workers warm between maps on purpose (module-level, until
`aioflow.parallel.shutdown()` or interpreter exit), and the suite's leak check
(``no_leaks`` in tests/conftest.py) fails a test whose processes or threads
outlive it. ``stop_warm_workers`` depends on ``no_leaks``, so it is torn down
first: it stops every backend's workers, then the leak check sees nothing
left, which also proves that ``shutdown()`` stops everything. Reuse is
tested within one test (two maps, the same worker pids).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import aioflow.parallel

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session", autouse=True)
def loky_resource_tracker() -> None:
    """Start loky's resource tracker before any leak check takes its snapshot.

    Like multiprocessing's (which the leak check ignores), it is one process per
    interpreter that loky starts on first use and keeps until exit.
    """
    from loky.backend.resource_tracker import ensure_running

    ensure_running()


@pytest.fixture(autouse=True)
def stop_warm_workers(no_leaks: None) -> Iterator[None]:
    """After each test: the default backend again, and every warm worker stopped."""
    yield
    aioflow.parallel.set_parallel_backend(None)
    aioflow.parallel.shutdown()
