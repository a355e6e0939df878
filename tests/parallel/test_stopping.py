"""No worker outlives its interpreter: not at exit without shutdown(), not after Ctrl-C during a map."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SCRIPT = Path(__file__).with_name("stop_script.py")

# Generous: only a leak (or a hang) reaches it.
DEADLINE = 30.0


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _start(mode: str, folder: Path) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pids: list[int] = json.loads(proc.stdout.readline())
    assert pids
    return proc, pids


def test_workers_stop_at_interpreter_exit_without_shutdown(tmp_path: Path) -> None:
    """A script that maps and returns leaves no worker behind (the exit hook stops the warm workers)."""
    proc, pids = _start("exit", tmp_path)
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    assert _wait_gone(pids) == []


def test_ctrl_c_during_a_map_leaves_no_worker(tmp_path: Path) -> None:
    """SIGINT while workers run tasks: KeyboardInterrupt in the caller, every worker killed, the script ends."""
    proc, pids = _start("interrupt", tmp_path)
    deadline = time.monotonic() + DEADLINE
    while len(list(tmp_path.glob("started-*"))) < 2:  # both workers are in a task
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"the tasks did not start: {proc.communicate()[1]}")
        time.sleep(0.01)
    workers = [child.pid for child in psutil.Process(proc.pid).children()]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=DEADLINE)
    assert "KeyboardInterrupt" in err
    assert _wait_gone(sorted(set(pids + workers))) == []
