"""The journal file: created with its schema, refused (and left unchanged) when it is not a journal this aioflow reads."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import pytest

from aioflow.journal import JournalError, list_runs
from aioflow.journal._store import APPLICATION_ID, SCHEMA_VERSION, Writer, connect

if TYPE_CHECKING:
    from pathlib import Path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_journal_has_its_schema_and_marks(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"runs", "firings"} <= tables
    finally:
        conn.close()
    connect(path).close()  # opening it again keeps it
    assert list_runs(path) == []


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("results of monday\n" * 10)
    before = _digest(path)
    with pytest.raises(JournalError, match=r"notes.txt.*is not a journal \(not an SQLite database\)"):
        connect(path)
    assert _digest(path) == before


def test_another_sqlite_database_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE samples (name TEXT)")
    other.commit()
    other.close()
    before = _digest(path)
    with pytest.raises(JournalError, match="is an SQLite database, but not an aioflow journal"):
        connect(path)
    assert _digest(path) == before


def test_a_journal_of_another_schema_version_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    connect(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    before = _digest(path)
    with pytest.raises(JournalError, match=rf"has schema version {SCHEMA_VERSION + 1}; this aioflow reads version"):
        connect(path)
    assert _digest(path) == before


def test_a_corrupt_journal_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    conn = connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # the header stays, the pages are garbage
    path.write_bytes(bytes(data))
    before = _digest(path)
    with pytest.raises(JournalError, match="is corrupt"):
        connect(path)
    assert _digest(path) == before


def test_an_unknown_synchronous_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="synchronous must be one of normal, full"):
        connect(tmp_path / "runs.sqlite", synchronous="off")
    assert not (tmp_path / "runs.sqlite").exists()


def test_the_writer_commits_in_order_and_flush_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    conn = connect(path)
    writer = Writer(conn, str(path))
    insert = "INSERT INTO runs (run_id, graph_id, graph_digest, started, state, host, pid) VALUES (?, 'g', 'd', ?, ?, 'h', 1)"
    for i in range(2500):
        writer.write(insert, (f"r{i}", float(i), "running"))
    writer.write("UPDATE runs SET state = 'finished' WHERE run_id = 'r7'")
    writer.flush(timeout=30)
    reader = connect(path)
    try:
        assert reader.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2500
        assert reader.execute("SELECT state FROM runs WHERE run_id = 'r7'").fetchone()[0] == "finished"
    finally:
        reader.close()
    writer.close()
    writer.close()
    conn.close()


def test_a_failed_write_is_raised_by_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    conn = connect(path)
    writer = Writer(conn, str(path))
    writer.write("INSERT INTO nowhere VALUES (1)")
    with pytest.raises(JournalError, match="a write failed"):
        writer.flush(timeout=30)
    with pytest.raises(JournalError, match="a write failed"):
        writer.write("SELECT 1")
    with pytest.raises(JournalError):
        writer.close()
    conn.close()


WRITER = textwrap.dedent(
    """
    import sys
    from aioflow.journal._store import Writer, connect
    path, name = sys.argv[1], sys.argv[2]
    conn = connect(path)
    writer = Writer(conn, path)
    insert = ("INSERT INTO runs (run_id, graph_id, graph_digest, started, state, host, pid) "
              "VALUES (?, 'g', 'd', 0, 'running', 'h', 1)")
    for i in range(300):
        writer.write(insert, (f"{name}-{i}",))
        if i % 7 == 0:
            writer.flush(timeout=60)  # many small transactions, interleaved with the other process's
    writer.close()
    conn.close()
    """
)


def test_two_processes_write_one_journal_without_corrupting_it(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    connect(path).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {row[0] for row in conn.execute("SELECT run_id FROM runs")}
    finally:
        conn.close()
    assert ids == {f"{name}-{i}" for name in ("a", "b") for i in range(300)}


CREATOR = textwrap.dedent(
    """
    import sys, time
    from aioflow.journal._store import connect
    from aioflow.journal import list_runs
    path, start, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    while time.time() < start:
        pass
    if name.startswith("reader"):
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                list_runs(path)
                break
            except Exception as exc:  # the file may not exist yet, or be empty: nothing else
                assert "does not exist" in str(exc) or "is empty" in str(exc), exc
        sys.exit(0)
    conn = connect(path)
    conn.execute("INSERT INTO runs (run_id, graph_id, graph_digest, started, state, host, pid) "
                 "VALUES (?, 'g', 'd', 0, 'running', 'h', 1)", (name,))
    conn.close()
    """
)


def test_processes_that_create_one_journal_at_once_all_get_it(tmp_path: Path) -> None:
    """Turning a new file into a journal needs it to itself: the others wait, none fails (nor a reader)."""
    for attempt in range(5):
        path = tmp_path / f"runs-{attempt}.sqlite"
        start = time.time() + 0.5
        names = [f"writer{i}" for i in range(4)] + ["reader0", "reader1"]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CREATOR, str(path), str(start), name], stderr=subprocess.PIPE, text=True
            )
            for name in names
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert sorted(r.run_id for r in list_runs(path)) == [f"writer{i}" for i in range(4)]


def test_many_rows_of_one_insert_go_as_statements_of_many_rows(tmp_path: Path) -> None:
    """`Writer.write_all`: an insert's rows are sent `MAX_VARIABLES` values at a time, in order, all of them."""
    from aioflow.journal._store import MAX_VARIABLES

    conn = connect(tmp_path / "j.sqlite")
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT, c REAL)")
    steps: list[str] = []
    conn.set_trace_callback(steps.append)
    writer = Writer(conn, "j")
    count = 2 * (MAX_VARIABLES // 3) + 5  # two full statements and a short one
    writer.write_all([("INSERT INTO t (a, b, c) VALUES (?, ?, ?)", (i, str(i), i / 2)) for i in range(count)])
    writer.write_all([("UPDATE t SET b = ? WHERE a = ?", ("x", 1)), ("UPDATE t SET b = ? WHERE a = ?", ("y", 2))])
    writer.close()
    rows = conn.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall()
    expected = [(i, str(i), i / 2) for i in range(count)]
    expected[1], expected[2] = (1, "x", 0.5), (2, "y", 1.0)
    assert rows == expected
    inserts = [step for step in steps if step.startswith("INSERT")]
    assert len(inserts) == 3
    conn.close()
