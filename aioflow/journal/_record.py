"""Recording a run in a journal, and resuming one: the execution hooks that write its firings, and the digests they keep.

`JournalRun` is one run's hooks (`aioflow.scheduler.ExecutionHooks`): entering
the run adds its row to ``runs`` (state ``running``); each firing gets a row
in ``firings``, and leaving the run sets the run's end and state. A firing's
row is held back from its ``node.started`` until the next hand-over to the
writer (every `Writer.PERIOD`): a firing that has ended by then is written
once, whole; one still running is written as ``started``, and updated when
it ends.

Resuming (``resume=RUN_ID``): a firing is the same as one of the resumed
run when it is the same node's same execution (its number: 1, then 2... as
a loop runs it again), which does not depend on timing, where a firing's
sequence number may (two independent branches finish in either order); and
it is answered from that run only if its inputs' digest is the same too,
and the outputs were kept. So what a resumed run computes equals what an
uninterrupted run computes, and a firing recorded as finished never runs
again; a firing that finished in its worker but whose record was not yet
committed when the driving process died runs again.
The hooks run in the event loop's thread: they digest and pickle there
(the values are the run's, and a task may change them later), and gather
the statements, which `_hand_over` gives the journal's writer thread
(`_store.Writer`) in one list per period.

The cache (``cache=True``, `TaskCache`): a firing is answered from any
earlier finished firing in the journal with the same task identity
(`aioflow.journal._code`) and the same inputs' digest; the run then keeps,
for each firing, its task identity, its inputs as shown (`inputs_shown`, to
explain a plan) and where an answer came from (``reused_from``).

What is kept of a firing's outputs: their pickle (protocol 5) when it is at
most `MAX_OUTPUTS` bytes; otherwise, or when they cannot be pickled, no
outputs and a note saying why (``outputs_note``). Such a firing is recorded
as finished all the same.

Digests (SHA-256, hex): a graph's is over its shape (node ids, task types
and identifiers, links; not the default inputs); a firing's inputs digest
is over the pickle of its inputs, every dict and set in them sorted
(``None`` when they cannot be pickled).

Imports: `aioflow.scheduler` (the hooks' base class), `_store`, `_code`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import pickle
import socket
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import OptionError
from ..graph._values import _SCALARS
from ..scheduler import ExecutionHooks
from ._store import JournalError, Writer, connect, connect_to_read

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import AsyncIterator, Sequence

    from ..graph import Graph, Node, NodeId
    from ..scheduler import Step
    from ..scheduler._state import Firing

__all__ = [
    "MAX_OUTPUTS",
    "JournalRun",
    "TaskCache",
    "graph_digest",
    "inputs_digest",
    "inputs_shown",
    "journal_hooks",
    "node_from_key",
    "node_key",
]

#: The largest pickle of a firing's outputs kept in the journal, in bytes.
MAX_OUTPUTS = 64 * 1024 * 1024

_INSERT_RUN = (
    "INSERT INTO runs (run_id, graph_id, graph_digest, started, state, host, pid, options, resumed_from, graph) "
    "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)"
)
_RESUMED_RUN = "SELECT graph_id, graph_digest FROM runs WHERE run_id = ?"
# The last finished firing of each (node, execution number) of a run.
_REUSABLE = (
    "SELECT node_id, execution, inputs_digest, outputs, seq FROM firings "
    "WHERE run_id = ? AND status = 'finished' AND outputs IS NOT NULL ORDER BY seq"
)
# The latest run of a graph (``resume=True``).
_LATEST = "SELECT run_id, state FROM runs WHERE graph_digest = ? ORDER BY started DESC, rowid DESC LIMIT 1"
# The cache: finished firings with outputs, of the given task identities.
_CACHED = (
    "SELECT task_digest, inputs_digest, run_id, seq FROM firings "
    "WHERE status = 'finished' AND outputs IS NOT NULL AND task_digest IN ({}) ORDER BY ended"
)
_CACHED_OUTPUTS = "SELECT outputs FROM firings WHERE run_id = ? AND seq = ?"
_END_RUN = "UPDATE runs SET ended = ?, state = ? WHERE run_id = ?"
# A firing's row: written once when it ends within `Writer.PERIOD` of its
# start (most do), else when it starts (status 'started'), then updated.
_INSERT_FIRING = (
    "INSERT INTO firings (run_id, seq, node_id, execution, inputs_digest, started, task_digest, inputs_shown, "
    "status, ended, outputs, outputs_note, reused_from, error, worker_pid, worker_host) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_STARTED = ("started", None, None, None, None, None, None, None)
_FINISH_FIRING = (
    "UPDATE firings SET status = 'finished', ended = ?, outputs = ?, outputs_note = ?, reused_from = ?, "
    "worker_pid = ?, worker_host = ? WHERE run_id = ? AND seq = ?"
)
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (run_id, seq, attempt, ended, error, worker_pid, worker_host) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_FAIL_FIRING = (
    "UPDATE firings SET status = 'failed', ended = ?, error = ?, worker_pid = ?, worker_host = ? "
    "WHERE run_id = ? AND seq = ?"
)


def node_key(node_id: NodeId) -> str:
    """A node id as the journal stores it: JSON, a tuple id (a node of a subgraph) as a list."""
    if (
        isinstance(node_id, str)
        and node_id.isascii()
        and node_id.isprintable()
        and '"' not in node_id
        and "\\" not in node_id
    ):
        return f'"{node_id}"'  # what json.dumps gives, without its call (once per node of a run)
    return json.dumps(node_id, separators=(",", ":"))


def node_from_key(key: str) -> NodeId:
    """The node id `node_key` stored."""
    node_id: NodeId = _tuples(json.loads(key))
    return node_id


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def graph_digest(graph: Graph) -> str:
    """A digest of a graph's shape: its nodes (ids, task types and identifiers) and links.

    Not of the nodes' default inputs: a run may resume with other inputs,
    and each firing's own inputs digest decides whether it runs again.
    """
    sha = hashlib.sha256()
    for node in graph.nodes.values():
        sha.update(repr((node.id, node.task_type, node.task_identifier, node.task_generator)).encode())
    links = graph.links
    sha.update(repr((links.sources, links.targets, links.data_mappings, links.map_all_data)).encode())
    sha.update(repr((links.conditions, links.on_error, links.required, links.cache_if_optional)).encode())
    return sha.hexdigest()


def inputs_digest(inputs: Mapping[Any, Any]) -> str | None:
    """A digest of a firing's inputs; ``None`` when they cannot be pickled.

    Equal inputs give equal digests whatever order their dicts (at any depth)
    were filled in (dicts and sets are digested sorted), whichever equal
    values are one object, and however exceptions happen to pickle in this
    process. An error handler's inputs (the failed firing's error data) are
    digested without the traceback's text, which depends on the process
    (where files are, which libraries make tracebacks travel with
    exceptions), not on what failed.
    """
    error = inputs.get(_ERROR)
    if type(error) is dict and "traceBack" in error:
        inputs = {**inputs, _ERROR: {**error, "traceBack": None}}
    names = set(map(type, inputs))
    if names <= _KEYS and set(map(type, inputs.values())) <= _SCALARS:
        # Names and scalars only, the most common inputs: their repr, sorted, says all.
        items = sorted(inputs.items()) if len(names) < 2 else sorted(inputs.items(), key=_mixed_names)
        return hashlib.sha256(b"s" + repr(items).encode()).hexdigest()
    buffer = io.BytesIO(b"p")
    buffer.seek(1)
    pickler = pickle.Pickler(buffer, protocol=5)
    # No memo: a value met twice is pickled twice, so that the digest does not
    # depend on which equal values happen to be one object.
    pickler.fast = True
    try:
        pickler.dump(_canonical(inputs, 0))
    except Exception:  # any value may refuse pickling, any way (a value that contains itself, too)
        return None
    return hashlib.sha256(buffer.getbuffer()).hexdigest()


class _Sorted(tuple):  # type: ignore[type-arg]
    """A dict's or a set's items, sorted: never equal to a tuple or list of the same items."""

    __slots__ = ()


class _Exception(tuple):  # type: ignore[type-arg]
    """An exception as its class's name, its args and its attributes: how other libraries pickle it does not matter."""

    __slots__ = ()


def _canonical(value: Any, depth: int) -> Any:
    """``value`` with its dicts and sets (inside dicts, lists and tuples) as sorted items, exceptions as `_Exception`.

    An exception is digested by what it holds, not by its pickle: one whose
    ``__dict__`` was once looked at pickles with it, even empty.
    """
    if depth > _MAX_DEPTH:
        return value
    kind = type(value)
    if isinstance(value, BaseException):
        attributes = _canonical(dict(getattr(value, "__dict__", {})), depth + 1)
        return _Exception((kind.__module__, kind.__qualname__, _canonical(value.args, depth + 1), attributes))
    if kind is dict or isinstance(value, Mapping):
        items = [(_canonical(k, depth + 1), _canonical(v, depth + 1)) for k, v in value.items()]
        return _Sorted(sorted(items, key=repr))
    if kind is list or kind is tuple:
        return kind(_canonical(v, depth + 1) for v in value)
    if kind is set or kind is frozenset:
        return _Sorted(sorted((_canonical(v, depth + 1) for v in value), key=repr))
    return value


def _mixed_names(item: tuple[Any, Any]) -> tuple[str, Any]:
    """Sort int and str input names apart (they do not compare)."""
    return type(item[0]).__name__, item[0]


# How deep `_canonical` goes: deeper values are digested as they are.
_MAX_DEPTH = 32

# The input in which an error handler gets the error's message and traceback (`aioflow.scheduler._state`).
_ERROR = "WorkflowException"

# Input names whose repr is the name (`inputs_digest`'s quick path, with `_SCALARS` values).
_KEYS = frozenset((str, int))


def _pickled_outputs(outputs: Mapping[Any, Any] | None) -> tuple[bytes | None, str | None]:
    """The outputs' pickle, or ``None`` and why they are not kept."""
    if outputs is None:
        return None, "not stored: the outputs stayed on the pool's workers"
    try:
        data = pickle.dumps(dict(outputs), protocol=5)
    except Exception as exc:  # as above
        return None, f"not stored: they cannot be pickled ({type(exc).__name__}: {exc})"
    if len(data) > MAX_OUTPUTS:
        return None, f"not stored: {len(data):,} bytes pickled, over the limit of {MAX_OUTPUTS:,}"
    return data, None


def inputs_shown(inputs: Mapping[Any, Any]) -> str:
    """A firing's inputs as a cached run keeps them to explain a plan: JSON, name -> [digest, short repr]."""
    shown = {}
    for name, value in inputs.items():
        text = _short_repr(value)
        digest = inputs_digest({name: value})
        shown[str(name)] = [digest[:16] if digest is not None else None, text]
    return json.dumps(shown, sort_keys=True)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a value's repr may fail like any code
        return f"<{type(value).__name__}: repr failed ({type(exc).__name__})>"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


# The longest repr of an input a cached run keeps.
_SHOWN = 80


class TaskCache:
    """The cache of one run: each node's task identity, and the journal's finished firings of those identities.

    Built when the run starts: the identities of the graph's tasks
    (`aioflow.journal._code.task_identity`), and an index (task digest,
    inputs digest) -> row of the journal's firings that finished with their
    outputs kept, the latest one for each pair. A lookup is then a dict hit;
    only a hit reads a row (its outputs) from the file.
    """

    def __init__(self, conn: sqlite3.Connection, graph: Graph) -> None:
        from ._code import task_identities

        self._conn = conn
        self.identities = task_identities(graph.nodes.values())
        digests = sorted({i.digest for i in self.identities.values() if i.digest is not None})
        self._index: dict[tuple[str, str], tuple[str, int]] = {}
        for chunk in range(0, len(digests), 500):  # SQLite's limit on parameters
            part = digests[chunk : chunk + 500]
            sql = _CACHED.format(", ".join("?" * len(part)))
            for task, inputs, run_id, seq in conn.execute(sql, part):
                if inputs is not None:
                    self._index[task, inputs] = (run_id, seq)  # ordered by end: the latest wins

    def lookup(self, nid: NodeId, digest: str | None) -> tuple[bytes, str] | None:
        """The pickled outputs of a finished firing of ``nid``'s task with inputs ``digest``, and where (``RUN:SEQ``)."""
        task = self.identities[nid].digest
        if task is None or digest is None:
            return None
        found = self._index.get((task, digest))
        if found is None:
            return None
        row = self._conn.execute(_CACHED_OUTPUTS, found).fetchone()
        if row is None or row[0] is None:
            return None
        return row[0], f"{found[0]}:{found[1]}"


class JournalRun(ExecutionHooks):
    """The hooks that record one run in the journal at ``path``, and resume an earlier one.

    Args:
        path: the journal file (created if it does not exist).
        run_id: the run's id (default: a new random one).
        resume: the id of an earlier run of the same graph in this journal:
            each firing it finished (same node, same execution number, same
            inputs' digest, outputs kept) is answered from it, and its task
            does not run again; every other firing runs. ``True``: the
            latest run of this graph in the journal, if it did not finish
            (else the run starts afresh).
        cache: answer a firing from any earlier firing in the journal of the
            same task identity (its code included: `aioflow.journal._code`)
            and the same inputs' digest, recorded by a run with ``cache`` on.
        synchronous: ``normal`` or ``full`` (`aioflow.journal._store`).
        options: what to record of the run's options (JSON-serialisable).

    Attributes:
        run_id: the run's id.
        reused: how many firings were answered from the journal so far.
        resumed: the run resumed (``resume=True`` finds it when the run
            starts), or ``None``.

    A run that resumes is recorded as a run of its own (``resumed_from``),
    complete by itself: the firings it reused are recorded with their
    outputs, so that it can be resumed in turn.
    """

    wants_queued = False  # ``node.queued`` says nothing it records

    def __new__(cls, *args: Any, resume: str | bool | None = None, cache: bool = False, **kwargs: Any) -> JournalRun:
        # Only a run that resumes or caches answers firings: a hook that
        # answers keeps a chaining pool from running nodes ahead
        # (`ExecutionHooks.answer`).
        answers = (resume is not None and resume is not False) or cache
        kind = _AnsweringRun if answers and cls is JournalRun else cls
        return super().__new__(kind)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        run_id: str | None = None,
        resume: str | bool | None = None,
        cache: bool = False,
        synchronous: str = "normal",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if resume is not None and not isinstance(resume, (str, bool)):
            raise OptionError("resume", "a run id, True or False", resume)
        if not isinstance(cache, bool):
            raise OptionError("cache", "True or False", cache)
        self.path = os.fspath(path)
        self.run_id = run_id or uuid.uuid4().hex
        self.resume: str | bool | None = resume if resume is not False else None
        self.resumed: str | None = resume if isinstance(resume, str) else None
        self.cache = cache
        self.synchronous = synchronous
        self.options = dict(options or {})
        self.reused = 0
        self._writer: Writer | None = None
        self._keys: dict[Any, str] = {}  # node id -> node_key(id)
        # The last firing started: its order, node key and inputs' digest (its answer, if any, comes next).
        self._started: tuple[int, str, str | None] = (-1, "", None)
        # (node key, execution number) -> (inputs digest, pickled outputs, seq), from the resumed run.
        self._reusable: dict[tuple[str, int], tuple[str | None, bytes, int]] = {}
        self._cache: TaskCache | None = None
        self._reader: sqlite3.Connection | None = None
        # Firing order -> where its answer came from (RUN:SEQ), until its node.finished.
        self._answered: dict[int, str] = {}
        # Firing order -> its row, started and not yet handed to the writer (`_hand_over`).
        self._pending: dict[int, tuple[Any, ...]] = {}
        # Statements not yet handed to the writer, in the order of the events.
        self._batch: list[tuple[str, Sequence[Any]]] = []
        self._hand_over_at: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def running(self, graph: Graph) -> AsyncIterator[None]:
        conn = connect(self.path, synchronous=self.synchronous)
        try:
            if self.resume is True:
                row = conn.execute(_LATEST, (graph_digest(graph),)).fetchone()
                self.resumed = row[0] if row is not None and row[1] != "finished" else None
            if self.resumed is not None:
                self._reusable = _reusable_firings(conn, self.path, self.resumed, graph)
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (self.run_id,)).fetchone() is not None:
                raise JournalError(self.path, f"has a run {self.run_id!r} already: give the new run another id")
            if self.cache:
                self._reader = connect_to_read(self.path)
                self._cache = TaskCache(self._reader, graph)
        except BaseException:
            conn.close()
            if self._reader is not None:
                self._reader.close()
            raise
        writer = self._writer = Writer(conn, self.path)
        self._loop = asyncio.get_running_loop()
        try:
            options = json.dumps(self.options, default=repr, sort_keys=True)
            row = (
                self.run_id, graph.id, graph_digest(graph), time.time(), socket.gethostname(), os.getpid(), options,
                self.resumed, _pickled_graph(graph),
            )  # fmt: skip
            writer.write(_INSERT_RUN, row)
            state = "failed"
            try:
                yield
            except TimeoutError:
                state = "timeout"
                raise
            except BaseException as exc:
                state = "cancelled" if not isinstance(exc, Exception) else "failed"
                raise
            else:
                state = "finished"
            finally:
                self._hand_over()  # the firings in flight as the run ends
                writer.write(_END_RUN, (time.time(), state, self.run_id))
        finally:
            self._writer = None
            try:
                writer.close()
            finally:
                conn.close()
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None

    def observe(self, step: Step) -> None:
        writer = self._writer
        event = step.event
        firing = step.firing
        if writer is None or firing is None:
            return
        kind = event.kind
        if kind == "node.started":
            key = self._keys.get(firing.node_id)
            if key is None:
                key = self._keys[firing.node_id] = node_key(firing.node_id)
            digest = inputs_digest(firing.inputs)
            self._started = (firing.order, key, digest)
            cache = self._cache
            if cache is None:
                row: tuple[Any, ...] = (self.run_id, firing.order, key, event.number, digest, time.time(), None, None)
            else:
                task = cache.identities[firing.node_id].digest
                shown = inputs_shown(firing.inputs)
                row = (self.run_id, firing.order, key, event.number, digest, time.time(), task, shown)
            # Held back: a firing that ends before the next hand-over is
            # written once, as it ends (`_hand_over` writes the others).
            self._pending[firing.order] = row
        elif kind == "node.retried":  # a failed attempt that runs again: the firing goes on
            error = f"{type(event.error).__name__}: {event.error}" if event.error is not None else None
            row = (self.run_id, firing.order, event.attempt, time.time(), error, event.worker_pid, event.worker_host)
            self._batch.append((_INSERT_ATTEMPT, row))
        elif kind != "node.queued":
            self._ended(step)
        if self._hand_over_at is None and self._loop is not None:
            self._hand_over_at = self._loop.call_later(Writer.PERIOD, self._hand_over)

    def _ended(self, step: Step) -> None:
        """Write a firing's end: its whole row if it is still held back, else an update of its row."""
        event = step.event
        firing = step.firing
        assert firing is not None
        kind = event.kind
        held = self._pending.pop(firing.order, None)
        write = self._batch.append
        if kind == "node.finished":
            data, note = _pickled_outputs(step.outputs)
            source = self._answered.pop(firing.order, None) if self._answered else None
            worker = (event.worker_pid, event.worker_host)
            if held is None:
                write((_FINISH_FIRING, (time.time(), data, note, source, *worker, self.run_id, firing.order)))
            else:
                write((_INSERT_FIRING, (*held, "finished", time.time(), data, note, source, None, *worker)))
        elif kind == "node.failed" or kind == "node.cancelled":  # cancelled: NodeCancelledError
            error = f"{type(event.error).__name__}: {event.error}" if event.error is not None else None
            worker = (event.worker_pid, event.worker_host)
            if held is None:
                write((_FAIL_FIRING, (time.time(), error, *worker, self.run_id, firing.order)))
            else:
                write((_INSERT_FIRING, (*held, "failed", time.time(), None, None, None, error, *worker)))

    def _hand_over(self) -> None:
        """Give the writer, every `Writer.PERIOD` while the run goes on, what the events since the last time wrote.

        Then the rows of the firings started and still running (status
        ``started``), to be updated when they end.
        """
        if self._hand_over_at is not None:
            self._hand_over_at.cancel()  # called before it is due: the run ends
            self._hand_over_at = None
        writer = self._writer
        if writer is None:
            return
        batch = self._batch
        batch += [(_INSERT_FIRING, (*row, *_STARTED)) for row in self._pending.values()]
        self._pending.clear()
        if batch:
            self._batch = []
            writer.write_all(batch)


class _AnsweringRun(JournalRun):
    """A `JournalRun` that resumes or caches: it answers the firings the journal finished."""

    def answer(self, node: Node, firing: Firing) -> Mapping[Any, Any] | None:
        # Asked right after the firing's node.started, which `observe` digested.
        order, key, digest = self._started
        if order != firing.order:
            key, digest = node_key(firing.node_id), inputs_digest(firing.inputs)
        found: tuple[bytes, str] | None = None
        kept = self._reusable.get((key, firing.number))
        if kept is not None and kept[0] is not None and kept[0] == digest:
            found = kept[1], f"{self.resumed}:{kept[2]}"
        elif self._cache is not None:
            found = self._cache.lookup(firing.node_id, digest)
        if found is None:
            return None  # other inputs (or ones that cannot be compared), or never finished: it runs
        data, source = found
        outputs: Mapping[Any, Any] = pickle.loads(data)  # the journal's own pickle
        self._answered[firing.order] = source
        self.reused += 1
        return outputs


def journal_hooks(
    journal: str | os.PathLike[str] | JournalRun, *, resume: str | bool | None = None, cache: bool = False
) -> list[ExecutionHooks]:
    """The hooks of a run's ``journal`` option (with ``resume`` and ``cache``): a `JournalRun`, or one for a file path.

    Raises:
        OptionError: ``journal`` is neither; ``resume`` or ``cache`` given
            with a `JournalRun` (whose own options they are), or invalid.
    """
    if isinstance(journal, JournalRun):
        if resume is not None and resume is not False:
            raise OptionError("resume", "given to the JournalRun itself, not beside it", resume)
        if cache is not False:
            raise OptionError("cache", "given to the JournalRun itself, not beside it", cache)
        return [journal]
    if not isinstance(journal, (str, os.PathLike)):
        raise OptionError("journal", "a file path or an aioflow.journal.JournalRun", journal)
    return [JournalRun(journal, resume=resume, cache=cache)]


def _reusable_firings(
    conn: sqlite3.Connection, path: str, run_id: str, graph: Graph
) -> dict[tuple[str, int], tuple[str | None, bytes, int]]:
    """The finished firings of run ``run_id`` that a run of ``graph`` may reuse; refused when the graph changed."""
    row = conn.execute(_RESUMED_RUN, (run_id,)).fetchone()
    if row is None:
        raise JournalError(path, f"has no run {run_id!r} to resume")
    graph_id, digest = row
    if digest != graph_digest(graph):
        raise JournalError(
            path,
            f"run {run_id!r} ran another graph ({graph_id!r}, whose nodes or links differ from those of "
            f"{graph.id!r}): it cannot be resumed with this one",
        )
    return {
        (node, execution): (inputs, outputs, seq)
        for node, execution, inputs, outputs, seq in conn.execute(_REUSABLE, (run_id,))
    }


def _pickled_graph(graph: Graph) -> bytes | None:
    try:
        return pickle.dumps(graph, protocol=5)
    except Exception:  # a default input that cannot be pickled: the run cannot be resumed from the journal alone
        return None
