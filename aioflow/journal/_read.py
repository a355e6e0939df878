"""Reading a journal: its runs, and the firings of one run.

Reads never block a run that writes the same file (WAL mode), and see
every batch it has committed.

Imports: `_store`, `_record` (node ids as stored).
"""

from __future__ import annotations

import os
import pickle
import sqlite3
from typing import TYPE_CHECKING, Any, NamedTuple

from ._record import node_from_key
from ._store import JournalError, connect_to_read

if TYPE_CHECKING:
    from ..graph import Graph, NodeId

__all__ = ["AttemptRecord", "FiringRecord", "RunSummary", "list_runs", "run_firings", "stored_graph"]


class RunSummary(NamedTuple):
    """One run of a journal, as ``aioflow runs`` lists it.

    Attributes:
        run_id: the run's id.
        graph_id: the graph it ran.
        started / ended: wall-clock times (``time.time()``); ``ended`` is
            ``None`` while it runs, or when its process died.
        state: ``running`` (also when its process died before the end),
            ``finished``, ``failed``, ``cancelled`` or ``timeout``.
        host / pid: the process that drove it.
        finished / failed: how many of its firings ended so.
        started_firings: how many firings were started and not ended.
        reused: how many of its finished firings were taken from the
            journal (a resumed run's, a cached run's) instead of run.
    """

    run_id: str
    graph_id: str
    started: float
    ended: float | None
    state: str
    host: str
    pid: int
    finished: int
    failed: int
    started_firings: int
    reused: int = 0


class FiringRecord(NamedTuple):
    """One firing of a run, as the journal holds it.

    ``worker_pid`` and ``worker_host``: the process that ran it, when the
    pool told (`aioflow.events.Event`); ``reused_from``: the firing its
    outputs were taken from (``RUN_ID:SEQ``) when it did not run;
    ``attempts``: its failed attempts that its node's ``retries`` ran again,
    in order (the row itself is about its last attempt).
    """

    seq: int
    node_id: NodeId
    execution: int
    status: str
    inputs_digest: str | None
    started: float | None
    ended: float | None
    error: str | None
    outputs: dict[Any, Any] | None
    outputs_note: str | None
    worker_pid: int | None = None
    worker_host: str | None = None
    reused_from: str | None = None
    attempts: tuple[AttemptRecord, ...] = ()


class AttemptRecord(NamedTuple):
    """A failed attempt of a firing that ran again (a ``node.retried`` event), as the journal holds it."""

    attempt: int
    ended: float
    error: str | None
    worker_pid: int | None = None
    worker_host: str | None = None


_RUNS = """
SELECT r.run_id, r.graph_id, r.started, r.ended, r.state, r.host, r.pid,
       COALESCE(SUM(f.status = 'finished'), 0), COALESCE(SUM(f.status = 'failed'), 0),
       COALESCE(SUM(f.status = 'started'), 0), COALESCE(SUM(f.reused_from IS NOT NULL), 0)
FROM runs AS r LEFT JOIN firings AS f ON f.run_id = r.run_id
GROUP BY r.run_id ORDER BY r.started, r.run_id
"""

_FIRINGS = """
SELECT seq, node_id, execution, status, inputs_digest, started, ended, error, outputs, outputs_note,
       worker_pid, worker_host, reused_from
FROM firings WHERE run_id = ? ORDER BY seq
"""

_ATTEMPTS = """
SELECT seq, attempt, ended, error, worker_pid, worker_host FROM attempts WHERE run_id = ? ORDER BY seq, attempt
"""


def list_runs(path: str | os.PathLike[str]) -> list[RunSummary]:
    """Every run of the journal at ``path``, oldest first.

    Raises:
        JournalError: there is no journal at ``path``, or it cannot be read.
    """
    return [RunSummary(*row) for row in _fetch(path, _RUNS)]


def run_firings(path: str | os.PathLike[str], run_id: str) -> list[FiringRecord]:
    """The firings of run ``run_id``, in their order in the run, outputs unpickled.

    Raises:
        JournalError: no journal at ``path``, no such run, or it cannot be read.
    """
    if not _fetch(path, "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
        raise JournalError(os.fspath(path), f"has no run {run_id!r}")
    attempts: dict[int, list[AttemptRecord]] = {}
    if _fetch(path, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'attempts'"):  # version 3
        for seq, *attempt in _fetch(path, _ATTEMPTS, (run_id,)):
            attempts.setdefault(seq, []).append(AttemptRecord(*attempt))
    return [
        FiringRecord(
            seq, node_from_key(node), execution, status, digest, started, ended, error,
            pickle.loads(outputs) if outputs is not None else None, note, pid, host, source,
            tuple(attempts.get(seq, ())),
        )
        for seq, node, execution, status, digest, started, ended, error, outputs, note, pid, host, source in _fetch(
            path, _FIRINGS, (run_id,)
        )
    ]  # fmt: skip


def stored_graph(path: str | os.PathLike[str], run_id: str) -> Graph:
    """The graph run ``run_id`` ran, as the journal kept it (to resume it without its file).

    Raises:
        JournalError: no journal at ``path``, no such run, or the run's graph
            could not be kept (a default input that cannot be pickled).
    """
    rows = _fetch(path, "SELECT graph FROM runs WHERE run_id = ?", (run_id,))
    if not rows:
        raise JournalError(os.fspath(path), f"has no run {run_id!r}")
    if rows[0][0] is None:
        raise JournalError(
            os.fspath(path),
            f"run {run_id!r}: its graph could not be kept (it cannot be pickled); resume it from its file",
        )
    graph: Graph = pickle.loads(rows[0][0])  # the journal's own pickle
    return graph


def _fetch(path: str | os.PathLike[str], sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """The rows of one query of the journal at ``path``, read-only.

    Raises:
        JournalError: no journal at ``path``, or it cannot be read.
    """
    conn = connect_to_read(path)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(os.fspath(path), f"cannot be read ({exc})") from exc
    finally:
        conn.close()
