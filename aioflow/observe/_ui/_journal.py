"""The web view of a run journal (``aioflow ui JOURNAL``): its runs, and each run drawn with its firings' states.

A run's page is drawn from the graph the journal kept (`aioflow.journal.stored_graph`)
and coloured from its firings. While the journal says the run is
``running`` and a page watches it, the server re-reads the file every
`POLL_INTERVAL` s (in a worker thread, on a read-only connection, and only
when SQLite's ``data_version`` says another connection committed something)
and pushes what changed over the same event stream as a live run's: the page
never polls. The firings are read without their outputs: nothing is
unpickled but the graph, and a poll costs one small query.

A journal's run belongs to the process that drives it: it cannot be
cancelled from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
from typing import TYPE_CHECKING, Any

from ...journal import JournalError, list_runs, stored_graph
from ...journal._record import node_from_key
from ...journal._store import connect_to_read
from ._drawing import graph_document, jsonable, node_key, node_keys
from ._feed import QUEUE_BOUND, Changes, Channel
from ._layout import layout
from ._server import SiteError

if TYPE_CHECKING:
    from ...graph import NodeId

__all__ = ["POLL_INTERVAL", "JournalRunReader", "JournalSite"]

#: Seconds between two reads of a running run's journal: the journal's writer commits a batch about as
#: often, and a page twice a second looks live.
POLL_INTERVAL = 0.5

# How a journal writes the error of a firing cancelled from outside (``run.cancel(node)``).
_CANCELLED = "NodeCancelledError:"

_RUN = "SELECT graph_id, started, ended, state, host, pid FROM runs WHERE run_id = ?"
_FIRINGS = """
SELECT seq, node_id, execution, status, started, ended, error, worker_pid, worker_host, reused_from
FROM firings WHERE run_id = ? ORDER BY seq
"""


class JournalRunReader:
    """One run of a journal as the page shows it: the drawing, and what changed since the last `read`.

    Uses one read-only connection (`close` it), from one thread at a time.

    Raises:
        JournalError: no journal at ``path``, or it has no run ``run_id``.
    """

    def __init__(self, path: str | os.PathLike[str], run_id: str) -> None:
        self.path = os.fspath(path)
        self.run_id = run_id
        self._conn = connect_to_read(path)
        self._version: int | None = None
        self._records: dict[str, dict[str, Any]] = {}
        try:
            row = self._query(_RUN, (run_id,))
            if not row:
                raise JournalError(self.path, f"has no run {run_id!r}")
            self.graph_id: str = row[0][0]
            self.document, self._keys = self._drawing()
        except BaseException:
            self._conn.close()
            raise
        self.label: str = self.document["label"]
        self._drawn = [entry["key"] for entry in self.document["nodes"]]

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot be read ({exc})") from exc

    def _drawing(self) -> tuple[dict[str, Any], dict[NodeId, str]]:
        """The graph kept for the run, drawn; without it (not kept, or it does not unpickle here), its nodes alone."""
        try:
            graph = stored_graph(self.path, self.run_id)
        except Exception as exc:  # JournalError, or a default input whose class does not import here
            reason = str(exc) if isinstance(exc, JournalError) else f"{type(exc).__name__}: {exc}"
            ids = list(dict.fromkeys(node_from_key(row[0]) for row in self._query(
                "SELECT node_id FROM firings WHERE run_id = ? ORDER BY seq", (self.run_id,)
            )))  # fmt: skip
            keys = node_keys(ids)
            return _bare_document(
                self.graph_id, ids, keys, f"the graph was not drawn from the journal ({reason})"
            ), keys
        keys = node_keys(graph.nodes)
        return graph_document(graph, keys), keys

    def read(self) -> Changes | None:
        """The run's record and its nodes' records that changed since the last call (all, the first time).

        ``None`` when no connection committed anything to the file since.

        Raises:
            JournalError: the file cannot be read.
        """
        version = self._query("PRAGMA data_version")[0][0]
        if version == self._version:
            return None
        self._version = version
        row = self._query(_RUN, (self.run_id,))
        graph_id, started, ended, state, host, pid = row[0]
        nodes: dict[str, dict[str, Any]] = {}
        unended: dict[str, int] = {}
        done = failed = cancelled = running = 0
        for _seq, stored_id, execution, status, f_started, f_ended, error, w_pid, w_host, reused in self._query(
            _FIRINGS, (self.run_id,)
        ):
            node_id = node_from_key(stored_id)
            key = self._keys.get(node_id)
            if key is None:
                key = self._keys[node_id] = node_key(node_id)
            record = nodes.get(key)
            if record is None:
                record = nodes[key] = _pending()
            record["firings"] = max(record["firings"], execution)
            if f_started is not None and (record["started"] is None or f_started < record["started"]):
                record["started"] = f_started
            if f_ended is not None and (record["ended"] is None or f_ended > record["ended"]):
                record["ended"] = f_ended
            if w_pid is not None:
                record["worker_pid"], record["worker_host"] = w_pid, w_host
            if status == "started":
                unended[key] = unended.get(key, 0) + 1
                running += 1
            else:
                # The latest firing's: finished, or failed (cancelled, for a NodeCancelledError).
                shown = "cancelled" if status == "failed" and (error or "").startswith(_CANCELLED) else status
                record["state"] = shown
                record["error"] = error if status == "failed" else None
                done += shown == "finished"
                failed += shown == "failed"
                cancelled += shown == "cancelled"
                record["reused"] += reused is not None
        over = state != "running"
        for key in unended:
            nodes[key]["state"] = "cancelled" if over else "running"
        for record in nodes.values():
            start, end = record["started"], record["ended"]
            if start is not None and end is not None and end >= start and record["state"] != "running":
                record["duration"] = end - start
        changed = {}
        for key in (*self._drawn, *nodes):
            record = nodes.get(key) or _pending()
            if key not in self._records or self._records[key] != record:
                changed[key] = self._records[key] = record
        run = {
            "graph_id": graph_id,
            "label": self.label,
            "state": state,
            "started": started,
            "ended": ended,
            "total": max(len(self._records), done + failed + cancelled + (0 if over else running)),
            "done": done,
            "failed": failed,
            "cancelled": cancelled,
            "running": 0 if over else running,
            "message": _gone(host, pid) if not over else None,
            "cancellable": False,
            "run_id": self.run_id,
            "host": host,
            "pid": pid,
        }
        return Changes(run, changed)

    def close(self) -> None:
        self._conn.close()


def _pending() -> dict[str, Any]:
    return {
        "state": "pending", "firings": 0, "attempts": None, "started": None, "ended": None, "duration": None,
        "worker_pid": None, "worker_host": None, "error": None, "traceback": None, "reused": 0,
    }  # fmt: skip


def _gone(host: str, pid: int) -> str | None:
    """Why a run the journal calls running is not: its process, on this machine, no longer exists."""
    import psutil

    if host == socket.gethostname() and not psutil.pid_exists(pid):
        return f"its process (pid {pid}) is gone: the run ended without being recorded as over"
    return None


def _bare_document(graph_id: str, ids: list[NodeId], keys: dict[NodeId, str], note: str) -> dict[str, Any]:
    """A drawing of nodes without their graph: boxes only, in the order they first fired."""
    labels = [keys[node_id] for node_id in ids]
    drawing = layout(labels, [])
    nodes = [
        {
            "key": keys[node_id], "id": jsonable(node_id), "label": keys[node_id], "task_type": None, "task": None,
            "x": box.x, "y": box.y, "width": box.width, "height": box.height, "layer": box.layer,
        }
        for node_id, box in zip(ids, drawing.boxes, strict=True)
    ]  # fmt: skip
    return {
        "id": graph_id,
        "label": graph_id,
        "layout": {"kind": drawing.kind, "width": drawing.width, "height": drawing.height, "note": note},
        "nodes": nodes,
        "links": [],
    }


class _RunView:
    """One run of the journal being served: its reader, its channel, and the task that polls it."""

    def __init__(self, reader: JournalRunReader, channel: Channel) -> None:
        self.reader = reader
        self.channel = channel
        self.lock = asyncio.Lock()  # one read at a time on the reader's connection
        self.poller: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        async with self.lock:
            changes = await asyncio.to_thread(self.reader.read)
        if changes is not None:
            self.channel.apply(changes)

    async def poll(self, interval: float) -> None:
        """Re-read the journal while the run is running and a page watches it."""
        while self.channel.run["state"] == "running":
            await asyncio.sleep(interval)
            if self.channel.subscriptions:
                await self.refresh()


class JournalSite:
    """The runs of the journal at ``path`` (see `aioflow.observe._ui._server.Site`).

    Raises:
        JournalError: there is no journal at ``path``, or it cannot be read.
    """

    mode = "journal"

    def __init__(
        self, path: str | os.PathLike[str], *, interval: float = POLL_INTERVAL, bound: int = QUEUE_BOUND
    ) -> None:
        self.path = os.fspath(path)
        list_runs(self.path)  # a file that is not a journal is refused now, not on the first request
        self._interval = interval
        self._bound = bound
        self._views: dict[str, _RunView] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    def info(self) -> dict[str, Any]:
        return {"mode": self.mode, "title": os.path.basename(self.path), "journal": self.path}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for view in self._views.values():
            if view.poller is not None:
                view.poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await view.poller
            view.channel.close()
            async with view.lock:
                view.reader.close()

    async def runs(self) -> list[dict[str, Any]]:
        try:
            runs = await asyncio.to_thread(list_runs, self.path)
        except JournalError as exc:
            raise SiteError(500, str(exc)) from None
        return [run._asdict() for run in reversed(runs)]  # newest first

    async def _view(self, run_id: str | None) -> _RunView:
        if run_id is None:
            raise SiteError(400, "which run? add ?run=RUN_ID to the address")
        view = self._views.get(run_id)
        if view is not None:
            return view
        lock = self._opening.setdefault(run_id, asyncio.Lock())
        async with lock:  # two requests for a new run open it once
            view = self._views.get(run_id)
            if view is not None:
                return view
            try:
                reader = await asyncio.to_thread(JournalRunReader, self.path, run_id)
                initial = await asyncio.to_thread(reader.read)
            except JournalError as exc:
                raise SiteError(404, str(exc)) from None
            assert initial is not None  # the first read takes everything
            view = self._views[run_id] = _RunView(reader, Channel(initial, bound=self._bound))
            if initial.run["state"] == "running":
                view.poller = asyncio.create_task(view.poll(self._interval), name=f"aioflow journal poll {run_id}")
            return view

    async def graph(self, run_id: str | None) -> dict[str, Any]:
        return (await self._view(run_id)).reader.document

    async def channel(self, run_id: str | None) -> Channel:
        return (await self._view(run_id)).channel

    async def state(self, run_id: str | None) -> dict[str, Any]:
        view = await self._view(run_id)
        if view.channel.run["state"] == "running":
            await view.refresh()
        return view.channel.snapshot()

    async def cancel(self, run_id: str | None) -> dict[str, Any]:
        view = await self._view(run_id)
        run = view.channel.run
        raise SiteError(
            409,
            f"run {run_id!r} of a journal cannot be cancelled from here: only its own process can "
            f"(pid {run['pid']} on {run['host']})",
        )
