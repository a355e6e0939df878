"""The ``billiard`` pool makes no shared counter per worker: no shared memory, no ``ctypes`` for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    import aioflow

    nodes = [{"id": f"n{i}", "task_type": "method", "task_identifier": "operator.add",
              "default_inputs": [{"name": 0, "value": i}, {"name": 1, "value": 1}]} for i in range(6)]
    graph = {"graph": {"id": "counters"}, "nodes": nodes, "links": []}
    for _ in range(2):  # the second run starts workers again: the first ones retired at close
        results = aioflow.execute_graph(graph, pool_type="billiard", max_workers=2, outputs=[{"all": True}],
                                        merge_outputs=False)
        print(sorted(r["return_value"] for r in results.values()))
    print("billiard.sharedctypes" in sys.modules)
    """
)


def test_a_billiard_pool_runs_without_shared_counters() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[1, 2, 3, 4, 5, 6]", "[1, 2, 3, 4, 5, 6]", "False"]
