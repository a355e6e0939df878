"""Run as a script (its functions live in __main__): maps them on spawn-based backends, prints the results as JSON.

python main_script.py multiprocess-spawn|process-spawn|loky
"""

# ruff: noqa: T201 - the results go to stdout, read by the test

from __future__ import annotations

import json
import math
import sys

import aioflow.parallel as par


def cube(x: int) -> int:
    return x**3


def main() -> None:
    which = sys.argv[1]
    if which == "multiprocess-spawn":
        par.set_parallel_backend(par.MultiprocessBackend(context="spawn"))
    elif which == "process-spawn":
        par.set_parallel_backend(par.PoolBackend("process", context="spawn"))
    else:
        par.set_parallel_backend(which)
    first = par.map(cube, range(6), max_workers=2)

    # Defined after the workers started: it must travel by value too.
    def hypot(x: int) -> float:
        return math.hypot(x, 1)

    second = par.map(hypot, [0, 1], max_workers=2)
    third = par.map(lambda x: -x, range(3), max_workers=2)
    par.shutdown()
    print(json.dumps([first, second, third]))


if __name__ == "__main__":
    main()
