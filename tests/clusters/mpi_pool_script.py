"""Run graphs, aioflow.Executor and aioflow.parallel on the ``mpi`` pool; print one JSON report on stdout.

``python -m mpi4py.futures mpi_pool_script.py ranks`` under ``mpiexec -n 3``:
rank 0 runs this, ranks 1 and 2 are the workers. ``python
mpi_pool_script.py spawn``: the pool spawns its two workers. ``refused``:
opening the pool must fail with PoolError (the test starts it so).
"""

# ruff: noqa: T201 - the report goes to stdout, read by the test

from __future__ import annotations

import json
import os
import sys
from typing import Any

import aioflow
import aioflow.parallel as par


def chain(n: int) -> dict[str, Any]:
    nodes = [
        {"id": 0, "task_type": "method", "task_identifier": "tasks.inc", "default_inputs": [{"name": "x", "value": 0}]}
    ]
    nodes += [{"id": i, "task_type": "method", "task_identifier": "tasks.inc"} for i in range(1, n)]
    links = [
        {"source": i, "target": i + 1, "data_mapping": [{"source_output": "return_value", "target_input": "x"}]}
        for i in range(n - 1)
    ]
    return {"graph": {"id": "chain"}, "nodes": nodes, "links": links}


def fan(n: int, identifier: str) -> dict[str, Any]:
    nodes = [{"id": i, "task_type": "method", "task_identifier": identifier} for i in range(n)]
    return {"graph": {"id": "fan"}, "nodes": nodes}


def journaled(pool: Any) -> list[Any]:
    """A chain run twice with a journal and its cache: the second run's result, and how many firings it reused."""
    import tempfile

    from aioflow.journal import JournalRun, run_firings

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "runs.sqlite")
        first = JournalRun(path, cache=True)
        aioflow.execute_graph(chain(5), pool=pool, journal=first)
        again = JournalRun(path, cache=True)
        value = aioflow.execute_graph(chain(5), pool=pool, journal=again)["return_value"]
        statuses = sorted({f.status for f in run_firings(path, first.run_id)})
        return [value, again.reused, statuses]


def run(mode: str) -> dict[str, Any]:
    import nb_tasks
    import tasks

    report: dict[str, Any] = {"pid": os.getpid(), "rank": par.get_rank(), "size": par.get_size()}
    with aioflow.open_pool("mpi", max_workers=2) as pool:
        report["chain"] = aioflow.execute_graph(chain(10), pool=pool)["return_value"]
        where = aioflow.execute_graph(
            fan(8, "nb_tasks.worker_pid" if mode == "spawn" else "aioflow.parallel.get_rank"),
            pool=pool,
            outputs=[{"all": True}],
            merge_outputs=False,
        )
        report["fan"] = sorted({where[i]["return_value"] for i in range(8)})
        report["journal"] = journaled(pool)
        try:
            aioflow.execute_graph({"graph": {"id": "g"}, "nodes": [fan(1, "tasks.fail")["nodes"][0]]}, pool=pool)
        except aioflow.NodeError as exc:
            report["failure"] = [exc.node_id, type(exc.__cause__).__name__]
        with aioflow.Executor(pool=pool) as executor:
            first = executor.submit(tasks.inc, 1)
            report["chained"] = executor.submit(tasks.add, first, 10).result(timeout=120)
            child = executor.submit(tasks.inc, executor.submit(tasks.fail))
            try:
                child.result(timeout=120)
            except aioflow.DependencyError as exc:
                report["dependency"] = [type(exc).__name__, type(exc.__cause__).__name__]
            report["map"] = list(executor.map(nb_tasks.square, range(10)))
    backend = par.PoolBackend("mpi")
    try:
        par.set_parallel_backend(backend)
        report["parallel"] = par.map(nb_tasks.square, range(20), max_workers=2, chunksize=3)
    finally:
        par.set_parallel_backend(None)
        backend.shutdown()
    from mpi4py import MPI

    report["library"] = MPI.Get_library_version().strip()  # which MPI library the job ran on
    return report


def main() -> None:
    mode = sys.argv[1]
    if mode == "refused":
        try:
            aioflow.execute_graph(chain(2), pool_type="mpi", max_workers=2)
        except aioflow.NodeError as exc:
            if par.get_rank() == 0:  # every rank is refused; one report keeps stdout to whole lines
                print(json.dumps({"refused": type(exc.error).__name__, "message": str(exc.error)}))
        return
    print(json.dumps(run(mode)))


if __name__ == "__main__":
    main()
