"""A run as a timeline in the Chrome trace-event format, which Perfetto (ui.perfetto.dev) and chrome://tracing open.

Two sources, one shape:

- the events of a run as it goes (`TraceRecorder`, an ``on_event``
  callback; ``execute_graph(..., trace="run.json")`` records with
  `TraceHooks` and writes the file when the run ends, whatever its outcome);
- a run of a journal, after the fact (`trace_from_journal`; ``aioflow trace
  JOURNAL RUN_ID``).

What the file holds (the "JSON Object Format": ``{"traceEvents": [...],
"displayTimeUnit": "ms", "otherData": {...}}``):

- one complete event (``"ph": "X"``) per firing, or per attempt of a firing
  its node's ``retries`` ran again: from its ``node.started`` (or the
  ``node.retried`` of the attempt before) to its end; ``ts`` and ``dur`` in
  whole microseconds from the run's first time (events carry
  ``time.monotonic()``, a journal ``time.time()``: only differences count);
- one process (``pid``) per worker process, its real pid when the pool
  reported it; the driver's process holds the run's own slice, on a thread
  named ``run``, and the firings of the pools that run tasks in it
  (``thread``, ``gevent``); firings no worker was reported for (cluster
  pools, firings taken from a journal, calls a pool refused, firings that
  never ended: a worker is reported with its firing's end) go to the process
  `NO_WORKER_PID`, named ``no worker reported``;
- within one process, firings that overlap in time go to separate threads
  (``tid``), named ``lane 1``, ``lane 2``...: each firing takes the lowest
  lane free at its start (interval partitioning: a heap of the busy lanes by
  end, a heap of the free ones; O(n log n)). So the slices of one thread
  never overlap, which the format requires of complete events on one
  thread (they may only nest). A firing's slice spans the time from when the
  engine handed it to the pool, so a worker's lanes also show the calls
  that waited for it. ``tid`` values are unique in the whole file, never
  reused in another process: Perfetto keys threads by ``tid`` alone, as
  Linux's are.

Recording costs one list append per event; the trace is built when it is
written, in one pass over the events plus the sort of the lanes.
"""

from __future__ import annotations

import contextlib
import datetime
import heapq
import json
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .._errors import JournalError, OptionError
from .._version import __version__
from ..graph._build import _flatten_id
from ..pools._futures import this_host
from ..scheduler import ExecutionHooks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from ..events import Event
    from ..graph import Graph
    from ..scheduler import Step

__all__ = [
    "NO_WORKER_PID",
    "TraceHooks",
    "TraceRecorder",
    "check_trace_path",
    "trace_from_events",
    "trace_from_journal",
    "trace_json",
    "write_trace",
]

logger = logging.getLogger("aioflow")

#: The ``pid`` of the track of the firings no worker process was reported for.
#: Not 0, which Perfetto may take for the kernel's idle process; above Linux's
#: largest pid (2**22), odd (Windows' pids are multiples of 4), and above
#: macOS's and the BSDs' (99,999): no real process has it.
NO_WORKER_PID = 4_194_305

# How much of an error's text a slice's args keep: a line or two, enough to tell errors apart.
ERROR_CHARS = 300

# What ends an attempt, and the status its slice gets. Kinds not listed are ignored.
_ENDINGS = {
    "node.finished": "finished",
    "node.failed": "failed",
    "node.retried": "retried",
    "node.cancelled": "cancelled",
}


class _Slice(NamedTuple):
    """One attempt of a firing, from either source; times in the source's own clock (seconds)."""

    node_id: Any
    number: int
    attempt: int | None  # None: not known (a journal of schema version 2 kept no attempts)
    start: float
    end: float
    status: str
    error: str | None
    worker: tuple[int, str] | None  # (pid, host)
    reused_from: str | None = None


class _Run(NamedTuple):
    """The run itself: its slice on the driver's ``run`` thread."""

    graph_id: str
    start: float
    end: float
    state: str
    run_id: str | None = None


class _Timeline(NamedTuple):
    """What a trace is built from: the runs, the attempts of their firings, the driver, and the wall-clock start."""

    runs: list[_Run]
    slices: list[_Slice]
    driver: tuple[int, str]
    wall_start: float | None
    other: dict[str, Any]


# --------------------------------------------------------------------------- live: events


class TraceRecorder:
    """Record a run's events as they come, and write them as a timeline (an ``on_event`` callback).

    ::

        recorder = TraceRecorder()
        aioflow.execute_graph(graph, on_event=recorder)
        recorder.write("run.json")

    Calling it appends the event, nothing more: it never holds the run up.
    Unknown event kinds are kept and ignored when the trace is built. One
    recorder may see several executions one after the other: each is one
    slice of the ``run`` thread.

    Attributes:
        events: the events seen, in order.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._ended: tuple[float, str] | None = None
        self._driver_pid = os.getpid()

    def __call__(self, event: Event) -> None:
        """Keep ``event``."""
        self.events.append(event)

    def end(self, state: str, at: float | None = None) -> None:
        """Note that the (last) run ended, and how: ``finished``, ``failed``, ``cancelled`` or ``timeout``.

        The run's slice then shows that state (its ``graph.finished`` event
        does not tell a failed run from one that finished). A cancelled run
        ends without ``graph.finished``: its slice, and the firings still
        open, then end at ``at`` (``time.monotonic()``, default now), the
        firings as ``cancelled``. A run that has neither ends at its latest
        event, as ``unended``, and so do its open firings.
        """
        self._ended = (time.monotonic() if at is None else at, state)

    def trace(self) -> dict[str, Any]:
        """The trace of what was recorded so far (the JSON Object Format, as a dict)."""
        return _build(self._timeline())

    def write(self, path: str | os.PathLike[str]) -> str:
        """Write `trace` to ``path`` (atomically: a temporary file, then a rename); return the path written.

        Raises:
            OSError: the file cannot be written.
        """
        return write_trace(self.trace(), path)

    def _timeline(self) -> _Timeline:
        runs: list[_Run] = []
        slices: list[_Slice] = []
        opened: dict[tuple[Any, int], tuple[float, int]] = {}  # (node, number) -> (start, attempt)
        current: tuple[str, float] | None = None  # the run under way: (graph id, start)
        first: float | None = None
        last: float | None = None
        for event in self.events:
            kind = event.kind
            at = event.time
            if first is None or at < first:
                first = at
            if last is None or at > last:
                last = at
            status = _ENDINGS.get(kind)
            if kind == "node.started":
                opened[event.node_id, event.number] = (at, event.attempt)
            elif status is not None:
                key = (event.node_id, event.number)
                start = opened.pop(key, (at, 0))[0]
                worker = None if event.worker_pid is None else (event.worker_pid, event.worker_host or "")
                error = _error_text(event.error)
                slices.append(_Slice(event.node_id, event.number, event.attempt, start, at, status, error, worker))
                if status == "retried":
                    opened[key] = (at, event.attempt + 1)
            elif kind == "graph.started":
                current = (event.graph_id, at)
            elif kind == "graph.finished" and current is not None:
                runs.append(_Run(current[0], current[1], at, "finished"))
                current = None
        ended = self._ended
        if current is not None:  # no graph.finished: cancelled, or still running
            stop, state = ended if ended is not None else (last if last is not None else current[1], "unended")
            runs.append(_Run(current[0], current[1], max(stop, current[1]), state))
        elif ended is not None and runs:
            runs[-1] = runs[-1]._replace(state=ended[1])  # how it ended: a NodeError, a timeout...
        if opened:
            over = bool(runs) and runs[-1].state != "unended"
            stop = runs[-1].end if runs else (last if last is not None else 0.0)
            status = "cancelled" if over else "unended"
            for (node_id, number), (start, attempt) in opened.items():
                slices.append(_Slice(node_id, number, attempt, start, max(start, stop), status, None, None))
        wall_start = None if first is None else time.time() - (time.monotonic() - first)
        return _Timeline(runs, slices, (self._driver_pid, this_host()), wall_start, {"source": "events"})


def trace_from_events(events: Iterable[Event]) -> dict[str, Any]:
    """The timeline of a run's ``events`` (`aioflow.events.Event`, in order; the JSON Object Format, as a dict).

    Unknown event kinds are ignored. Firings still open at the last event
    end there, as ``unended``.
    """
    recorder = TraceRecorder()
    recorder.events.extend(events)
    return recorder.trace()


class TraceHooks(ExecutionHooks):
    """The ``trace=`` option of a run: record its events, and write its timeline when it ends, whatever the outcome.

    The file is written once the run is over and its pool closed, also when
    a node failed, the run timed out, or it was cancelled (with what was
    seen until then). When the run succeeded, a file that cannot be written
    is an error of the run; otherwise the run's own error goes on, and the
    failed write is logged as a warning on the ``aioflow`` logger.
    """

    wants_queued = False  # ``node.queued`` says nothing it records

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = check_trace_path(path)
        self.recorder = TraceRecorder()

    def observe(self, step: Step) -> None:
        self.recorder(step.event)

    @contextlib.asynccontextmanager
    async def running(self, graph: Graph) -> AsyncIterator[None]:
        state = "finished"
        try:
            yield
        except TimeoutError:
            state = "timeout"
            raise
        except BaseException as exc:
            state = "failed" if isinstance(exc, Exception) else "cancelled"
            raise
        finally:
            self.recorder.end(state)
            if state == "finished":
                self.recorder.write(self.path)
            else:
                try:
                    self.recorder.write(self.path)
                except OSError as exc:
                    logger.warning("graph %r: the trace %r could not be written: %s", graph.id, self.path, exc)


def check_trace_path(path: Any, option: str = "trace") -> str:
    """``path`` as a trace file can be written to, checked before a run starts (not once it is over).

    Raises:
        OptionError: not a path, a directory, or its directory does not exist.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise OptionError(option, "a file path (str or os.PathLike), or None", path)
    text = os.fspath(path)
    if not isinstance(text, str):
        raise OptionError(option, "a file path (str or os.PathLike), or None", path)
    if os.path.isdir(text):
        raise OptionError(option, "a file path", path, f"{option!r}: {text!r} is a directory: give a file name in it")
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise OptionError(
            option, "a file path", path, f"{option!r}: cannot write {text!r}: there is no directory {directory!r}"
        )
    return text


# --------------------------------------------------------------------------- after the fact: a journal


def trace_from_journal(journal: str | os.PathLike[str], run_id: str) -> dict[str, Any]:
    """The timeline of run ``run_id`` of ``journal`` (the JSON Object Format, as a dict).

    A firing its node's ``retries`` ran again is a slice per attempt, as
    live (a journal of schema version 2 kept no attempts: one slice). A node cancelled from outside is ``cancelled``. A firing
    started and never ended is ``cancelled`` when the run ended, else
    ``unended`` (its process died, or it still runs), up to the run's end or
    its latest time.

    Raises:
        JournalError: no journal at ``journal``, it cannot be read, or it has no run ``run_id``.
    """
    from ..journal import list_runs, run_firings

    path = os.fspath(journal)
    summary = next((run for run in list_runs(path) if run.run_id == run_id), None)
    if summary is None:
        raise JournalError(path, f"has no run {run_id!r} ('aioflow runs {path}' lists its runs)")
    firings = run_firings(path, run_id)
    times = [summary.started]
    times += [t for f in firings for t in (f.started, f.ended) if t is not None]
    end = summary.ended if summary.ended is not None else max(times)
    ended = summary.ended is not None
    slices = []
    for f in firings:
        start = f.started if f.started is not None else summary.started
        if f.status == "failed" and (f.error or "").startswith("NodeCancelledError"):
            status = "cancelled"
        elif f.status in ("finished", "failed"):
            status = f.status
        else:
            status = "cancelled" if ended else "unended"
        for a in f.attempts:
            tried = None if a.worker_pid is None else (a.worker_pid, a.worker_host or summary.host)
            error = _truncated(a.error) if a.error is not None else None
            slices.append(_Slice(f.node_id, f.execution, a.attempt, start, a.ended, "retried", error, tried))
            start = a.ended
        stop = f.ended if f.ended is not None else max(end, start)
        worker = None if f.worker_pid is None else (f.worker_pid, f.worker_host or summary.host)
        error = _truncated(f.error) if f.error is not None else None
        attempt = len(f.attempts) + 1
        slices.append(_Slice(f.node_id, f.execution, attempt, start, stop, status, error, worker, f.reused_from))
    run = _Run(summary.graph_id, summary.started, end, summary.state, run_id)
    other = {"source": "journal", "journal": path, "run_id": run_id}
    return _build(_Timeline([run], slices, (summary.pid, summary.host), min(times), other))


# --------------------------------------------------------------------------- building and writing


def _build(timeline: _Timeline) -> dict[str, Any]:
    """The trace of ``timeline``: metadata events, the runs' slices, then the firings' slices by start."""
    runs, slices, driver, wall_start, other = timeline
    base = min([r.start for r in runs] + [s.start for s in slices], default=0.0)

    def us(t: float) -> int:
        return max(0, round((t - base) * 1_000_000))

    driver_pid, driver_host = driver
    driver_key = (driver_pid, driver_host)
    # The processes: the driver first, the workers by host (the driver's first) and pid, no worker last.
    keyed: dict[tuple[int, str] | None, list[int]] = {}
    for i, s in enumerate(slices):
        keyed.setdefault(_key(s.worker, driver_host), []).append(i)
    pids: dict[tuple[int, str] | None, int] = {driver_key: driver_pid}
    taken = {driver_pid, NO_WORKER_PID}
    workers = sorted((k for k in keyed if k is not None and k != driver_key), key=lambda k: (k[1] != driver_host, k))
    for key in workers:
        pid = key[0]
        if pid in taken:  # the same pid on another host, or the pseudo pid: a number of its own
            pid = max(taken) + 1
        pids[key] = pid
        taken.add(pid)
    if None in keyed:
        pids[None] = NO_WORKER_PID

    events: list[dict[str, Any]] = []
    spans = [(us(s.start), us(s.end)) for s in slices]
    tids = [0] * len(slices)
    run_tid = 1  # the driver's "run" thread; every other tid is a lane, unique in the whole file
    next_tid = run_tid + 1
    for order, (process, pid) in enumerate(pids.items()):
        members = keyed.get(process, [])
        threads: list[tuple[int, str]] = []
        if process is None:
            name = "no worker reported"
        elif process == driver_key:
            name = f"driver {driver_pid} @ {driver_host}" + (" (threads)" if members else "")
            threads.append((run_tid, "run"))
        else:
            name = f"worker {process[0]} @ {process[1]}"
        lanes = _lanes([spans[i] for i in members])
        for i, lane in zip(members, lanes, strict=True):
            tids[i] = next_tid + lane
        count = max(lanes, default=-1) + 1
        threads += [(next_tid + lane, f"lane {lane + 1}") for lane in range(count)]
        next_tid += count
        events.append(_metadata("process_name", pid, threads[0][0], {"name": name}))
        events.append(_metadata("process_sort_index", pid, threads[0][0], {"sort_index": order}))
        for index, (tid, thread) in enumerate(threads):
            events.append(_metadata("thread_name", pid, tid, {"name": thread}))
            events.append(_metadata("thread_sort_index", pid, tid, {"sort_index": index}))

    for run in runs:
        start = us(run.start)
        counts = {"firings": 0, "failed": 0}
        for s in slices:
            if run.start <= s.start <= run.end and s.status != "retried":
                counts["firings"] += 1
                counts["failed"] += s.status == "failed"
        args: dict[str, Any] = {"graph_id": run.graph_id, "state": run.state, **counts}
        if run.run_id is not None:
            args["run_id"] = run.run_id
        events.append({
            "name": str(run.graph_id), "cat": "run", "ph": "X", "ts": start, "dur": max(0, us(run.end) - start),
            "pid": driver_pid, "tid": run_tid, "args": args,
        })  # fmt: skip
    nodes = []
    for i in sorted(range(len(slices)), key=lambda i: (spans[i], i)):
        s = slices[i]
        start, stop = spans[i]
        node_args: dict[str, Any] = {"node_id": _json_id(s.node_id), "firing": s.number}
        if s.attempt is not None:
            node_args["attempt"] = s.attempt
        node_args["status"] = s.status
        if s.error is not None:
            node_args["error"] = s.error
        if s.worker is not None:
            node_args["worker_pid"], node_args["worker_host"] = s.worker[0], s.worker[1] or driver_host
        if s.reused_from is not None:
            node_args["reused_from"] = s.reused_from
        name = ":".join(_flatten_id(s.node_id))
        nodes.append({
            "name": f"{name} #{s.number}" if s.number > 1 else name,
            "cat": _category(s),
            "ph": "X", "ts": start, "dur": stop - start,
            "pid": pids[_key(s.worker, driver_host)], "tid": tids[i], "args": node_args,
        })  # fmt: skip
    events += nodes
    info: dict[str, Any] = {"generator": f"aioflow {__version__}", **other}
    if runs:
        info["graph_id"] = runs[0].graph_id
    if wall_start is not None:
        info["started"] = datetime.datetime.fromtimestamp(wall_start).astimezone().isoformat(timespec="milliseconds")
    info["driver"] = {"pid": driver_pid, "host": driver_host}
    info["no_worker_pid"] = NO_WORKER_PID
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": info}


def _key(worker: tuple[int, str] | None, driver_host: str) -> tuple[int, str] | None:
    if worker is not None and not worker[1]:
        return (worker[0], driver_host)
    return worker


def _category(s: _Slice) -> str:
    """``node``; ``node,failed``, ``node,retried``, ``node,cancelled``, ``node,unended``; ``node,reused`` (not run)."""
    if s.reused_from is not None:
        return "node,reused"
    return "node" if s.status == "finished" else f"node,{s.status}"


def _metadata(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


def _lanes(spans: list[tuple[int, int]]) -> list[int]:
    """The lane (0, 1...) of each ``(start, end)`` span: the lowest lane free at its start.

    A lane is free from its last span's end on (a span may start where the
    one before it ended). The fewest lanes that keep overlapping spans apart.
    """
    lanes = [0] * len(spans)
    busy: list[tuple[int, int]] = []  # (end, lane): a heap
    free: list[int] = []  # a heap
    count = 0
    for i in sorted(range(len(spans)), key=spans.__getitem__):
        start, end = spans[i]
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane = count
            count += 1
        lanes[i] = lane
        heapq.heappush(busy, (end, lane))
    return lanes


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return _truncated(f"{type(error).__name__}: {error}")


def _truncated(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _json_id(node_id: Any) -> Any:
    """A node id as JSON holds it: a subgraph's tuple id as a list, as graph files write it."""
    if isinstance(node_id, tuple):
        return [_json_id(part) for part in node_id]
    if node_id is None or isinstance(node_id, (str, int, float, bool)):
        return node_id
    return repr(node_id)


def trace_json(trace: dict[str, Any]) -> str:
    """A trace as JSON text: one event per line, so that it reads and diffs well."""
    events = ",\n".join(json.dumps(event, default=repr) for event in trace.get("traceEvents", ()))
    rest = {key: value for key, value in trace.items() if key != "traceEvents"}
    head = '{"traceEvents": [\n' + events + "\n]"
    tail = "".join(f", {json.dumps(key)}: {json.dumps(value, default=repr)}" for key, value in rest.items())
    return head + tail + "}\n"


def write_trace(trace: dict[str, Any], path: str | os.PathLike[str]) -> str:
    """Write ``trace`` (`TraceRecorder.trace`, `trace_from_journal`) to ``path``; return the path written.

    Atomic: the JSON goes to a temporary file in the same directory, which
    then replaces ``path``; a reader never sees half a file.

    Raises:
        OSError: the file cannot be written.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(trace_json(trace))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target
