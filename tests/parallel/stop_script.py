"""Maps, then stops in one of two ways; prints the worker pids first, so the test can check they are gone.

python stop_script.py exit DIR        # returns without calling shutdown(): the exit hook stops the workers
python stop_script.py interrupt DIR   # blocks in a map until SIGINT (the test sends it)
"""

# ruff: noqa: T201 - the pids go to stdout, read by the test

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import aioflow.parallel as par

DEADLINE = 60.0


def pid(x: int) -> int:
    return os.getpid()


def started_then_block(arg: tuple[int, str]) -> int:
    x, folder = arg
    Path(folder, f"started-{x}").touch()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def main() -> None:
    mode, folder = sys.argv[1], sys.argv[2]
    pids = sorted(set(par.map(pid, range(64), max_workers=2, chunksize=1)))
    print(json.dumps(pids), flush=True)
    if mode == "interrupt":
        par.map(started_then_block, [(x, folder) for x in range(4)], max_workers=2, chunksize=1)


if __name__ == "__main__":
    main()
