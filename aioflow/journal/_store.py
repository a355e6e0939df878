"""The journal file: an SQLite database of runs and their firings, its schema, and the thread that writes it.

One file holds many runs. Tables (schema version `SCHEMA_VERSION`, kept in
SQLite's ``user_version``; the file is marked as a journal by its
``application_id``, `APPLICATION_ID`):

- ``runs``: one row per run: its id, the graph's id and digest, when it
  started and ended, its state (``running``, then ``finished``, ``failed``,
  ``cancelled`` or ``timeout``), the driving process (host, pid), the
  options it was given (JSON), the run it resumed, and the loaded graph
  (pickled; ``NULL`` when it cannot be), from which a run is resumed;
- ``firings``: one row per firing of a run, keyed by ``(run_id, seq)``,
  ``seq`` being the firing's sequence number in the run (`Firing.order`, the
  order the state machine made firings in, which does not depend on timing):
  the node (its id as JSON), the node's execution number, the digests of the
  firing's inputs and of its task, its status (``started``, then
  ``finished`` or ``failed``), start and end time, the worker (pid, host)
  when the pool tells it, the error, and the outputs: pickled in the row, or
  why they are not (``outputs_note``). A run with the cache on also keeps
  each firing's inputs as shown to explain a plan (``inputs_shown``: JSON,
  name -> [digest, short repr]), and where a firing's outputs were taken
  from instead of running it (``reused_from``: ``RUN_ID:SEQ``);
- ``attempts``: one row per failed attempt of a firing that its node's
  ``retries`` ran again (a ``node.retried`` event), keyed by ``(run_id, seq,
  attempt)``: when it ended, its error, and its worker. The firing's row
  holds its last attempt.

A journal of schema version 2 (without ``attempts``) is read as it is, and
gains the table, becoming version 3, when a run is written to it.

Writes go through `Writer`: a thread of its own takes them from a queue and
commits them in batches, one transaction per batch, so that the event loop
never waits for the disk. The file is in WAL mode: readers (``aioflow runs``,
a resume) never block the writer, and several processes may write runs to
one file (SQLite's locking; each waits up to `BUSY_TIMEOUT` s for another's
transaction).

What "durable" means is the ``synchronous`` setting of the connection
(`SYNCHRONOUS`): with ``normal`` (the default), a committed batch survives
the death of the process that wrote it (it is in the operating system's
hands), but the last batches may be lost if the machine itself stops (power
loss, kernel crash); ``full`` syncs each commit to the disk, and survives
that too, at the cost of one disk flush per batch.

Opening a file that is not a journal, a journal of another schema version,
or a corrupt one raises `JournalError` and changes nothing: the file is
first read without write access.

Imports: `aioflow._errors` (`JournalError`, which this module re-exports).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sqlite3
import threading
import time
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import JournalError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT",
    "SCHEMA_VERSION",
    "SYNCHRONOUS",
    "JournalError",
    "Writer",
    "connect",
    "connect_to_read",
]

#: Marks an SQLite file as an aioflow journal (``PRAGMA application_id``): "aiof".
APPLICATION_ID = 0x61696F66

#: The version of the tables below (``PRAGMA user_version``).
SCHEMA_VERSION = 3

#: The statements that bring a journal of an older version to the next one, by version.
_MIGRATIONS = {
    2: """
CREATE TABLE attempts (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    ended REAL NOT NULL,
    error TEXT,
    worker_pid INTEGER,
    worker_host TEXT,
    PRIMARY KEY (run_id, seq, attempt)
) WITHOUT ROWID;
""",
}

#: Seconds a connection waits for another process's transaction on the file.
BUSY_TIMEOUT = 30.0

#: The most values one statement binds (SQLite's limit before version 3.32).
MAX_VARIABLES = 999

#: The ``synchronous`` settings a journal may be opened with.
SYNCHRONOUS = ("normal", "full")

_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    graph_id TEXT NOT NULL,
    graph_digest TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    state TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    resumed_from TEXT,
    graph BLOB
);
CREATE TABLE firings (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    seq INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    execution INTEGER NOT NULL,
    inputs_digest TEXT,
    task_digest TEXT,
    status TEXT NOT NULL,
    started REAL,
    ended REAL,
    worker_pid INTEGER,
    worker_host TEXT,
    error TEXT,
    outputs BLOB,
    outputs_note TEXT,
    inputs_shown TEXT,
    reused_from TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE INDEX firings_by_identity ON firings (task_digest, inputs_digest) WHERE task_digest IS NOT NULL;
""" + _MIGRATIONS[2]

# The first bytes of every SQLite database file.
_SQLITE_HEADER = b"SQLite format 3\x00"


def connect(path: str | os.PathLike[str], *, synchronous: str = "normal") -> sqlite3.Connection:
    """A connection to the journal at ``path``, which is created if it does not exist.

    Args:
        path: the journal file.
        synchronous: ``normal`` or ``full`` (see the module's docstring).

    Raises:
        JournalError: the file is not a journal, is a journal of another
            schema version, or is corrupt; nothing was changed. Also when
            ``synchronous`` is not one of `SYNCHRONOUS`.
    """
    name = os.fspath(path)
    if synchronous not in SYNCHRONOUS:
        raise JournalError(name, f"synchronous must be one of {', '.join(SYNCHRONOUS)} (got {synchronous!r})")
    if _has_content(name):
        _check_existing(name)
    try:
        conn = sqlite3.connect(name, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise JournalError(name, f"cannot be opened ({exc})") from exc
    try:
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            # Switching to WAL needs the file to itself, and SQLite does not
            # wait for that (another process may be creating the same journal).
            _retry_while_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"), name)
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = ON")
        _retry_while_busy(lambda: _create_if_new(conn, name), name)
    except sqlite3.Error as exc:
        conn.close()
        raise JournalError(name, f"cannot be opened ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def connect_to_read(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to the existing journal at ``path``: it changes nothing, and does not wait on writers.

    Raises:
        JournalError: no file at ``path``, or not a journal this aioflow reads.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise JournalError(name, "does not exist")
    if not _has_content(name):
        raise JournalError(name, "is empty: not a journal yet")
    _check_existing(name, reading=True)
    uri = Path(name).resolve().as_uri() + "?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False)
    except sqlite3.Error as exc:
        raise JournalError(name, f"cannot be opened ({exc})") from exc


def _retry_while_busy(step: Callable[[], object], name: str) -> None:
    """Run ``step``, again while SQLite says the file is locked by another connection, for `BUSY_TIMEOUT` s."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    pause = 0.001
    while True:
        try:
            step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise JournalError(name, f"is locked by another process for over {BUSY_TIMEOUT:.0f} s") from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            return


def _has_content(name: str) -> bool:
    try:
        return os.path.getsize(name) > 0
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise JournalError(name, f"cannot be read ({exc})") from exc


def _check_existing(name: str, *, reading: bool = False) -> None:
    """Refuse, changing nothing, a file that is not a journal this version of aioflow reads.

    An empty database becomes a journal when it is opened to write; to read
    (``reading``), it is not one yet.
    """
    try:
        with open(name, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise JournalError(name, f"cannot be read ({exc})") from exc
    if header != _SQLITE_HEADER:
        raise JournalError(name, "is not a journal (not an SQLite database)")
    uri = Path(name).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        raise JournalError(name, f"cannot be opened ({exc})") from exc
    try:
        conn.execute("BEGIN")  # one snapshot: another process may be making the file a journal
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise JournalError(name, f"is corrupt ({exc})") from exc
    finally:
        conn.close()
    if application_id != APPLICATION_ID:
        if not tables:
            if reading:
                raise JournalError(name, "is empty: not a journal yet")
            return  # an empty database: it becomes a journal
        raise JournalError(name, "is an SQLite database, but not an aioflow journal")
    if version != SCHEMA_VERSION and version not in _MIGRATIONS:
        raise JournalError(
            name,
            f"has schema version {version}; this aioflow reads version {SCHEMA_VERSION} "
            "(use the aioflow that wrote it, or another journal file)",
        )
    if not {"runs", "firings"} <= tables:
        raise JournalError(name, "is corrupt (its tables are missing)")


def _execute_all(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _create_if_new(conn: sqlite3.Connection, name: str) -> None:
    """Create the tables in a new file (or an empty database), or bring an older journal's up to date.

    Another process may be doing the same: the first one's transaction does it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            _execute_all(conn, _SCHEMA)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            while version < SCHEMA_VERSION:
                _execute_all(conn, _MIGRATIONS[version])
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.execute("ROLLBACK")
        raise JournalError(name, f"cannot be written ({exc})") from exc


class Writer:
    """The thread that writes to one journal: statements queued, committed in batches.

    `write` and `write_all` never block (they queue); `flush` waits until everything queued
    so far is committed; `close` flushes and ends the thread. An error of
    the thread (a full disk, a file removed) is raised by the next `write`,
    `flush` or `close` as a `JournalError`, and what was queued after it is
    dropped.
    """

    #: Statements committed in one transaction at most.
    BATCH = 1000

    #: Seconds a batch gathers statements before it is committed, at most.
    PERIOD = 0.01

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self._conn = conn
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._closed = False
        self._many: dict[tuple[str, int], str] = {}  # (insert, rows) -> its statement of that many rows
        self._thread = threading.Thread(target=self._run, name=f"aioflow journal {name}", daemon=True)
        self._thread.start()

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue one statement."""
        self._raise_if_failed()
        self._queue.put((sql, params))

    def write_all(self, statements: list[tuple[str, Sequence[Any]]]) -> None:
        """Queue statements ``(sql, params)``, in order: one hand-over for many (the list is the writer's now)."""
        self._raise_if_failed()
        self._queue.put(statements)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every statement queued so far is committed.

        Raises:
            JournalError: a write failed, or ``timeout`` seconds passed.
        """
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            raise JournalError(self._name, f"writes not committed after {timeout} s")
        self._raise_if_failed()

    def close(self) -> None:
        """Commit what is queued, and end the thread (idempotent)."""
        if self._closed:
            self._raise_if_failed()
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _insert_rows(self, sql: str, rows: list[Sequence[Any]]) -> None:
        """Run ``INSERT ... VALUES (?, ...)`` for many rows, as statements of up to `MAX_VARIABLES` values each.

        One step of SQLite per statement, not per row: Python's ``sqlite3``
        lets go of the GIL around each step, and taking it back is what
        costs most while the event loop and the workers run.
        """
        values = sql[sql.rindex("VALUES") + len("VALUES") :]
        per = max(1, MAX_VARIABLES // len(rows[0]))
        conn = self._conn
        start = 0
        while start < len(rows):
            chunk = rows[start : start + per]
            start += per
            many = self._many.get((sql, len(chunk)))
            if many is None:
                many = self._many[sql, len(chunk)] = sql + ("," + values) * (len(chunk) - 1)
            conn.execute(many, list(itertools.chain.from_iterable(chunk)))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise JournalError(self._name, f"a write failed ({self._error})") from self._error

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[tuple[str, Sequence[Any]]] = []
            waiters: list[threading.Event] = []
            # A batch gathers for at most PERIOD seconds: one transaction (and
            # its writes to the file) for everything a busy run queues meanwhile.
            deadline = time.monotonic() + self.PERIOD
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                elif isinstance(item, list):
                    batch += item
                else:
                    batch.append(item)
                if stop or waiters or len(batch) >= self.BATCH:
                    break  # a flush or a close does not wait for the period
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if batch and self._error is None:
                self._commit(batch)
            for waiter in waiters:
                waiter.set()

    def _commit(self, batch: list[tuple[str, Sequence[Any]]]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Runs of one statement go to SQLite together: an insert as
            # statements of many rows each, anything else through executemany.
            for sql, group in itertools.groupby(batch, key=itemgetter(0)):
                rows = [params for _, params in group]
                if len(rows) > 1 and sql.startswith("INSERT") and sql.endswith(")"):
                    self._insert_rows(sql, rows)
                else:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException as exc:  # kept and raised in the caller's thread
            self._error = exc
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
