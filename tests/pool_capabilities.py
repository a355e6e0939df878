"""What each local pool cannot do, and why: the one table the ``local_pool`` fixture reads.

A pool behaviour test takes the ``local_pool`` fixture (tests/conftest.py) and
runs once per local pool, as anyio's tests run once per ``anyio_backend``. A
test names what it needs, ``@pytest.mark.needs("processes")``; the fixture
leaves out the pools whose row in `CANNOT` lists it: those combinations are
deselected, their reason listed at the end of the run, never skipped, so
that no failure hides among them. Every capability a row does not list, the
pool has: a new pool runs every behaviour test until its row says otherwise.

Start methods: a test runs on each process pool with `DEFAULT_START_METHOD`
only, unless it is marked ``@pytest.mark.every_start_method("why")`` (its
behaviour depends on how workers start), or ``AIOFLOW_TEST_ALL_CONTEXTS=1``
is set (then every test runs with every start method).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: What a test may need, and what having it means.
CAPABILITIES = {
    "processes": "tasks run in worker processes: values are pickled, a worker has a pid and can die",
    "start methods": "the pool takes context='fork', 'forkserver' or 'spawn'",
    "nested processes": "a task may start a multiprocessing.Pool and a multiprocessing.Process of its own",
    "daemonic workers": "a task that starts a multiprocessing process is refused, naming the pools that allow it",
    "idle retirement": "workers start on demand and retire after idle_timeout",
    "event loop": "the pool serves execute_graph_async on a test's own event loop",
}

#: Per local pool, the capabilities it lacks, and why (the reason a deselected combination carries).
CANNOT: dict[str, dict[str, str]] = {
    "thread": {
        "processes": "its tasks run in threads of this process",
        "start methods": "threads have no start method: context is refused",
        "daemonic workers": "its tasks run in this process, which may start processes",
    },
    "process": {
        "daemonic workers": "its workers are non-daemonic, as the stdlib's since CPython 3.9",
    },
    "ndprocess": {
        "daemonic workers": "its workers are non-daemonic whatever the Python version: that is the pool's point",
    },
    "multiprocessing": {
        "nested processes": "multiprocessing.Pool's workers are daemonic",
        "idle retirement": "multiprocessing.Pool starts every worker up front and keeps it",
    },
    "ndmultiprocessing": {
        "daemonic workers": "its multiprocessing.Pool workers are non-daemonic: that is the pool's point",
        "idle retirement": "multiprocessing.Pool starts every worker up front and keeps it",
    },
    "billiard": {
        "nested processes": "billiard.Pool's workers are daemonic (they may start billiard processes only)",
    },
    "gevent": {
        "processes": "its tasks are greenlets of this process",
        "start methods": "greenlets have no start method: context is refused",
        "nested processes": "a task's multiprocessing.Pool would block the gevent hub: it is refused",
        "daemonic workers": "its tasks run in this process, which may start processes",
        "idle retirement": "greenlets cost nothing idle: there is nothing to retire",
        "event loop": "it runs under aioflow's bridge thread in a gevent-patched process, not on a test's loop",
    },
}

#: Pools that run only in a gevent-patched interpreter: the fixture runs a test body on them in a fresh one.
PATCHED_ONLY = frozenset({"gevent"})

START_METHODS = ("fork", "forkserver", "spawn")
#: Linux's default on CPython 3.11, and the fastest to start: the one method a test runs with by default.
DEFAULT_START_METHOD = "fork"
#: Set to 1 to run every test on every start method.
ALL_CONTEXTS_VARIABLE = "AIOFLOW_TEST_ALL_CONTEXTS"


@dataclass(frozen=True)
class LocalPool:
    """One local pool and start method: what the ``local_pool`` fixture gives a test."""

    pool_type: str
    context: str | None = None

    @property
    def id(self) -> str:
        """The test id: ``thread``, ``process-spawn``."""
        return self.pool_type if self.context is None else f"{self.pool_type}-{self.context}"

    @property
    def patched_only(self) -> bool:
        """Whether the pool runs only in a gevent-patched interpreter."""
        return self.pool_type in PATCHED_ONLY

    def can(self, capability: str) -> bool:
        """Whether the pool has ``capability`` (a key of `CAPABILITIES`)."""
        if capability not in CAPABILITIES:
            msg = f"unknown capability {capability!r}: one of {sorted(CAPABILITIES)}"
            raise ValueError(msg)
        return capability not in CANNOT[self.pool_type]

    def why_not(self, needs: list[str]) -> str | None:
        """Why this pool cannot run a test that ``needs`` these capabilities; None when it can."""
        missing = [need for need in needs if not self.can(need)]
        if not missing:
            return None
        return "; ".join(f"{self.pool_type} lacks {need!r}: {CANNOT[self.pool_type][need]}" for need in missing)

    def options(self, **more: Any) -> dict[str, Any]:
        """Keyword arguments for open_pool, execute_graph and Executor: this pool and start method, and ``more``."""
        chosen: dict[str, Any] = {"pool_type": self.pool_type}
        if self.context is not None:
            chosen["context"] = self.context
        return {**chosen, **more}


def local_pools(every_start_method: bool = False) -> list[LocalPool]:
    """Every local pool, with `DEFAULT_START_METHOD` or (``every_start_method``, or the variable set) every one."""
    every = every_start_method or os.environ.get(ALL_CONTEXTS_VARIABLE) == "1"
    methods = START_METHODS if every else (DEFAULT_START_METHOD,)
    result: list[LocalPool] = []
    for pool_type, cannot in CANNOT.items():
        contexts: tuple[str | None, ...] = (None,) if "start methods" in cannot else methods
        result.extend(LocalPool(pool_type, context) for context in contexts)
    return result
