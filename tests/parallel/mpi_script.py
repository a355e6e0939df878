"""Run under ``mpiexec -n 3 python -m mpi4py.futures mpi_script.py``: maps on the MPI worker ranks, prints JSON.

Rank 0 runs this script; ranks 1 and 2 are the workers mpi4py.futures serves.
"""

# ruff: noqa: T201 - the results go to stdout, read by the test

from __future__ import annotations

import json
from typing import Any

import aioflow.parallel as par


def where(x: int) -> tuple[int, int, bool, int]:
    """The rank and size of the worker, whether it thinks it is the master, and the result."""
    return par.get_rank(), par.get_size(), par.is_master_process(), x * x


def main() -> None:
    report: dict[str, Any] = {
        "master": [par.get_rank(), par.get_size(), par.is_master_process()],
        "workers": [par.SIZE, par.get_parallel_backend("mpi").get_size()],
        "imap": par.map(where, range(12), use_mpi=True, chunksize=1),
        "as_completed": sorted(par.as_completed(where, range(12), use_mpi=True)),
    }
    try:
        par.map(where, range(4))  # the default backend, still fine here
        report["default"] = "ok"
    except Exception as exc:
        report["default"] = repr(exc)
    par.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
