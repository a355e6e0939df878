"""The task kinds of the pool compatibility matrix: what a task may do inside a worker.

Each returns a known value, so a cell of the matrix either gives that value or
fails. They run inside pool workers: keep them importable and side-effect free.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import subprocess
import sys


def simple() -> int:
    """Pure Python."""
    return 1


def subprocess_run() -> int:
    """Start a program with the subprocess module."""
    done = subprocess.run([sys.executable, "-c", "print(2)"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def cfpool() -> int:
    """A concurrent.futures process pool inside the task."""
    with concurrent.futures.ProcessPoolExecutor(1) as executor:
        return executor.submit(abs, -3).result()


def mppool() -> int:
    """A multiprocessing.Pool inside the task."""
    with multiprocessing.Pool(1) as pool:
        return int(pool.apply(abs, (-4,)))


def mpprocess() -> int:
    """A multiprocessing.Process inside the task."""
    proc = multiprocessing.Process(target=abs, args=(-5,))
    proc.start()
    proc.join()
    return 5 if proc.exitcode == 0 else -1


def bpool() -> int:
    """A billiard pool inside the task."""
    import billiard

    with billiard.Pool(1) as pool:
        return int(pool.apply(abs, (-6,)))


def bprocess() -> int:
    """A billiard Process inside the task."""
    import billiard

    proc = billiard.Process(target=abs, args=(-7,))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        msg = f"the billiard child process {proc.pid} ended with exit code {proc.exitcode}"
        raise RuntimeError(msg)
    return 7


#: kind -> (function name, expected result)
KINDS = {
    "simple": ("simple", 1),
    "subprocess": ("subprocess_run", 2),
    "cfpool": ("cfpool", 3),
    "mppool": ("mppool", 4),
    "mpprocess": ("mpprocess", 5),
    "bpool": ("bpool", 6),
    "bprocess": ("bprocess", 7),
}


def block_hub() -> int:
    """Start a long-lived program, then block in a C-level read that never returns.

    Not a task kind of the matrix: it shows that a cell which really hangs (in
    a gevent-patched process it blocks the hub, so no timeout fires) is
    killed from outside with every process it started.
    """
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    sys.stdout.write(f"grandchild {child.pid}\n")
    sys.stdout.flush()
    read_end, _ = os.pipe()
    os.read(read_end, 1)
    return 0


#: Task kinds the matrix's own tests use, beside `KINDS`.
TEST_ONLY = {"blockhub": ("block_hub", 0)}
