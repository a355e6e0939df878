"""Run journals: every firing of a run recorded in an SQLite file (the standard library's ``sqlite3``).

- `JournalRun`: the execution hooks that record one run
  (``execute_graph(..., journal="runs.sqlite")`` adds them), and with
  ``resume=RUN_ID`` continue an earlier one without running again what it
  finished;
- `list_runs`, `run_firings` (`FiringRecord`, `AttemptRecord`), `stored_graph`: what a journal holds;
- `plan` (`plan_async`): what a run with ``cache=True`` would run and
  reuse, and why, without running a task;
- `JournalError`: a file that is not a journal, of another schema version,
  corrupt, or a write that failed.

See docs/journal.md. Names are imported on first access: ``import aioflow``
does not import ``sqlite3``.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._plan import Plan as Plan
    from ._plan import PlannedFiring as PlannedFiring
    from ._plan import plan as plan
    from ._plan import plan_async as plan_async
    from ._read import AttemptRecord as AttemptRecord
    from ._read import FiringRecord as FiringRecord
    from ._read import RunSummary as RunSummary
    from ._read import list_runs as list_runs
    from ._read import run_firings as run_firings
    from ._read import stored_graph as stored_graph
    from ._record import JournalRun as JournalRun
    from ._store import JournalError as JournalError

_WHERE = {
    "AttemptRecord": "._read",
    "FiringRecord": "._read",
    "RunSummary": "._read",
    "list_runs": "._read",
    "run_firings": "._read",
    "stored_graph": "._read",
    "JournalRun": "._record",
    "Plan": "._plan",
    "PlannedFiring": "._plan",
    "plan": "._plan",
    "plan_async": "._plan",
    "JournalError": "._store",
}

__all__ = [
    "AttemptRecord",
    "FiringRecord",
    "JournalError",
    "JournalRun",
    "Plan",
    "PlannedFiring",
    "RunSummary",
    "list_runs",
    "plan",
    "plan_async",
    "run_firings",
    "stored_graph",
]


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
