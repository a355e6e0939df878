"""Functions defined in __main__ (a script, a notebook) run on spawn-based backends: they travel by value."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("main_script.py")


@pytest.mark.parametrize("backend", ["multiprocess-spawn", "process-spawn", "loky"])
def test_main_functions_run_on_spawn_workers(backend: str) -> None:
    """A script's own functions, one defined after the workers started and a lambda, map correctly."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), backend], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    first, second, third = json.loads(done.stdout)
    assert first == [x**3 for x in range(6)]
    assert second == [math.hypot(0, 1), math.hypot(1, 1)]
    assert third == [0, -1, -2]
