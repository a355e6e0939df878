"""Ctrl-C and SIGTERM to ``aioflow run``: it exits at once, and no process it started remains, daemons included.

Each test starts the command as a real program in a session of its own, on
a graph whose task starts a daemon (``sh -c "sleep 600 &"``: the ``sleep``
ignores SIGINT, and is re-parented away from the task's process) and then
sleeps in ``time.sleep`` (on the ``thread`` pool, a C call no thread can be
interrupted in). Once the daemon runs, the test sends the signal as a
terminal does (SIGINT to the process group) or as ``kill`` does (SIGTERM to
the command's pid), then checks the exit code, the message, and that nothing
of the session, nor the daemon, remains.

The tests only bound the exit with a generous hang deadline. How fast it is
(within `aioflow.cli.STOP_DEADLINE` plus the stop, under 1 s), is measured by
running this file: ``python tests/test_cli_sigint.py --repeat 5`` prints the
median time from the signal to the exit for each case.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from test_cli import TESTS_DIR, sigint_not_ignored, wait_for

# Generous: only a hang reaches them.
EXIT_DEADLINE = 10.0
GONE_DEADLINE = 30.0

# (name, pool, start method, run under gevent.monkey): every pool the command can run a graph on.
CASES: list[tuple[str, str, str | None, bool]] = [
    ("thread", "thread", None, False),
    ("process-fork", "process", "fork", False),
    ("process-spawn", "process", "spawn", False),
    ("process-forkserver", "process", "forkserver", False),
    ("ndprocess-spawn", "ndprocess", "spawn", False),
    ("multiprocessing-fork", "multiprocessing", "fork", False),
    ("ndmultiprocessing-forkserver", "ndmultiprocessing", "forkserver", False),
    ("billiard-fork", "billiard", "fork", False),
    ("gevent-patched", "gevent", None, True),
    ("thread-patched", "thread", None, True),
]
# SIGTERM to the command alone (``kill PID``), on a pool whose task runs in
# the command's process and on one whose task runs in a worker; and to the
# whole group (a batch system signals every process of the job), where the
# workers, forked with the command's handlers, get it too.
TERM_CASES = [(CASES[0], False), (CASES[1], False), (CASES[5], True)]


def _params(cases: list[tuple[str, str, str | None, bool]]) -> list[object]:
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


def _term_params() -> list[object]:
    return [
        pytest.param(*case[1:], to_group, id=f"{case[0]}-{'group' if to_group else 'pid'}")
        for case, to_group in TERM_CASES
    ]


@dataclass
class Stopped:
    """How the command ended after the signal."""

    code: int
    seconds: float  # from the signal to the command's exit
    stdout: str
    stderr: str
    survivors: list[str]  # processes of its session, or its daemon, still running at the deadline


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _session(sid: int) -> list[psutil.Process]:
    """The running processes of session ``sid``."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and _running(proc):
                members.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid}: {' '.join(proc.cmdline())}"
    except psutil.Error:
        return str(proc.pid)


def stop_command(
    directory: Path, pool: str, context: str | None, patched: bool, signum: int, to_group: bool
) -> Stopped:
    """Run ``aioflow run`` in ``directory``, signal it once its task's daemon runs, and see what remains."""
    markers = directory / "markers"
    markers.mkdir()
    node = {
        "id": "d",
        "task_type": "method",
        "task_identifier": "lifetime_tasks.daemon_then_sleep",
        "default_inputs": [{"name": "marker_dir", "value": str(markers)}, {"name": "name", "value": "d"}],
    }
    (directory / "graph.json").write_text(json.dumps({"graph": {"id": "sleeper"}, "nodes": [node]}), encoding="utf-8")
    prefix = ["-m", "gevent.monkey", "--module"] if patched else ["-m"]
    argv = [sys.executable, *prefix, "aioflow", "run", "graph.json", "--pool", pool]
    argv += ["--context", context] if context else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    # Files, not pipes: a surviving process would hold a pipe open and hide the exit.
    with (directory / "out").open("wb") as out, (directory / "err").open("wb") as err, sigint_not_ignored():
        command = subprocess.Popen(argv, cwd=directory, env=env, stdout=out, stderr=err, start_new_session=True)
    daemon: psutil.Process | None = None
    try:
        wait_for(lambda: (markers / "d").exists(), "a running task", command)
        daemon = psutil.Process(int((markers / "d").read_text().split()[1]))
        assert _running(daemon), "the task's daemon runs"
        assert os.getsid(daemon.pid) == command.pid, "the daemon belongs to the command's session"

        started = time.monotonic()
        if to_group:
            os.killpg(command.pid, signum)
        else:
            os.kill(command.pid, signum)
        try:
            code = command.wait(timeout=EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the command did not exit within {EXIT_DEADLINE} s of the signal")
        seconds = time.monotonic() - started

        end = time.monotonic() + GONE_DEADLINE
        while (left := [*_session(command.pid), *([daemon] if _running(daemon) else [])]) and time.monotonic() < end:
            time.sleep(0.02)  # the resource tracker ends by itself, just after the command
        return Stopped(
            code,
            seconds,
            (directory / "out").read_text(),
            (directory / "err").read_text(),
            [_describe(proc) for proc in left],
        )
    finally:
        # Whatever the outcome, stop what this test started (psutil checks pid reuse).
        if command.poll() is None:
            command.kill()
        for proc in [*_session(command.pid), *([daemon] if daemon is not None else [])]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        command.wait(timeout=EXIT_DEADLINE)


@pytest.mark.parametrize(("pool", "context", "patched"), _params(CASES))
def test_ctrl_c_exits_130_at_once_leaving_no_process(
    tmp_path: Path, pool: str, context: str | None, patched: bool
) -> None:
    """SIGINT to the process group: exit code 130, one message, and no process of the session nor the daemon left."""
    stopped = stop_command(tmp_path, pool, context, patched, signal.SIGINT, to_group=True)
    print(f"SIGINT to exit: {stopped.seconds:.3f} s")  # noqa: T201 - the measurement, shown with -s
    assert stopped.code == 130, stopped.stderr
    if patched:  # gevent's hub reports the KeyboardInterrupt it passed on, before the message
        assert stopped.stderr.endswith("aioflow: interrupted\n"), stopped.stderr
    else:
        assert stopped.stderr == "aioflow: interrupted\n"
    assert stopped.stdout == ""
    assert not stopped.survivors, "processes outlived the command:\n" + "\n".join(stopped.survivors)


@pytest.mark.parametrize(("pool", "context", "patched", "to_group"), _term_params())
def test_sigterm_exits_143_at_once_leaving_no_process(
    tmp_path: Path, pool: str, context: str | None, patched: bool, to_group: bool
) -> None:
    """SIGTERM (``kill PID``, a batch system): exit code 143, one message, and nothing left."""
    stopped = stop_command(tmp_path, pool, context, patched, signal.SIGTERM, to_group)
    print(f"SIGTERM to exit: {stopped.seconds:.3f} s")  # noqa: T201 - the measurement, shown with -s
    assert stopped.code == 143, stopped.stderr
    assert stopped.stderr == "aioflow: terminated\n"
    assert stopped.stdout == ""
    assert not stopped.survivors, "processes outlived the command:\n" + "\n".join(stopped.survivors)


def _measure() -> None:
    """Print the median time from the signal to the command's exit, per case (SIGINT, then SIGTERM)."""
    import tempfile

    parser = argparse.ArgumentParser(description=_measure.__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (default: 5)")
    repeat = parser.parse_args().repeat
    runs = [(name, pool, context, patched, signal.SIGINT, True) for name, pool, context, patched in CASES]
    runs += [
        (f"{name} SIGTERM to the {'group' if to_group else 'pid'}", pool, context, patched, signal.SIGTERM, to_group)
        for (name, pool, context, patched), to_group in TERM_CASES
    ]
    for name, pool, context, patched, signum, to_group in runs:
        times = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as directory:
                stopped = stop_command(Path(directory), pool, context, patched, signum, to_group)
            assert stopped.code == 128 + signum, stopped
            assert not stopped.survivors, stopped
            times.append(stopped.seconds)
        print(f"{name:44} median {statistics.median(times):.3f} s  max {max(times):.3f} s")  # noqa: T201


if __name__ == "__main__":
    _measure()
