"""A task given by file path (``"/path/file.py::func"``) imports once, whatever the number of threads asking.

The module is in ``sys.modules`` before its code has run; a second thread
that took it from there meanwhile found it without its functions and failed
its node with ``ImportError: ... has no attribute``. A task file whose code
takes a while to run (here 0.3 s) makes that window wide.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import aioflow
from aioflow._tasks import import_callable

if TYPE_CHECKING:
    from pathlib import Path

SLOW_MODULE = """
import time

time.sleep(0.3)
IMPORTS = IMPORTS + 1 if "IMPORTS" in globals() else 1


def triple(x):
    return 3 * x
"""

THREADS = 8


def test_threads_importing_one_task_file_all_get_its_function(tmp_path: Path) -> None:
    task_file = tmp_path / "slow_module.py"
    task_file.write_text(SLOW_MODULE)
    identifier = f"{task_file}::triple"
    barrier = threading.Barrier(THREADS)
    got: list[object] = []

    def import_it() -> None:
        barrier.wait()
        try:
            got.append(import_callable(identifier)(2))
        except Exception as exc:  # the failure under test: kept to be asserted on
            got.append(exc)

    threads = [threading.Thread(target=import_it) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert got == [6] * THREADS
    assert import_callable(identifier).__globals__["IMPORTS"] == 1


def test_a_fan_of_nodes_from_one_task_file_on_the_thread_pool(tmp_path: Path) -> None:
    task_file = tmp_path / "slow_fan.py"
    task_file.write_text(SLOW_MODULE)
    identifier = f"{task_file}::triple"
    graph = {
        "graph": {"id": "fan_from_a_file"},
        "nodes": [
            {
                "id": f"n{i}",
                "task_type": "method",
                "task_identifier": identifier,
                "default_inputs": [{"name": "x", "value": i}],
            }
            for i in range(THREADS)
        ],
        "links": [],
    }
    results = aioflow.execute_graph(graph, pool_type="thread", max_workers=THREADS, merge_outputs=False, timeout=60)
    assert {nid: out["return_value"] for nid, out in results.items()} == {f"n{i}": 3 * i for i in range(THREADS)}
