"""The raw floor of ``aioflow run``: a script that runs an Ewoks-format graph file with asyncio and concurrent.futures.

    python benchmarks/raw_cli.py GRAPH.json thread|process

What a user would write instead of the command, for the graphs of the
benchmarks (``method`` nodes, ``default_inputs``, links with a
``data_mapping``): read the file, import each node's function, run one
asyncio task per node that awaits its predecessors and then
``loop.run_in_executor`` on a ``ThreadPoolExecutor(2)`` or a forking
``ProcessPoolExecutor(2)``, and print the end nodes' results as JSON
(``{node: {"return_value": value}}``), as ``aioflow run --no-merge-outputs``
does. ``bench.py`` times the whole process.
"""

# ruff: noqa: T201 - a command-line script: printing the results is its output

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import json
import sys
from typing import Any


def main() -> None:
    path, pool = sys.argv[1:3]
    with open(path) as f:
        graph = json.load(f)
    functions: dict[Any, Any] = {}
    kwargs: dict[Any, dict[str, Any]] = {}
    for node in graph["nodes"]:
        module, _, name = node["task_identifier"].rpartition(".")
        functions[node["id"]] = getattr(importlib.import_module(module), name)
        kwargs[node["id"]] = {d["name"]: d["value"] for d in node.get("default_inputs", [])}
    preds: dict[Any, list[tuple[Any, str]]] = {nid: [] for nid in functions}
    ends = set(functions)
    for link in graph.get("links", []):
        ends.discard(link["source"])
        for mapping in link.get("data_mapping", []):
            preds[link["target"]].append((link["source"], mapping["target_input"]))

    async def run() -> dict[Any, Any]:
        loop = asyncio.get_running_loop()
        executor: concurrent.futures.Executor
        if pool == "thread":
            executor = concurrent.futures.ThreadPoolExecutor(2)
        else:
            import multiprocessing

            executor = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
        tasks: dict[Any, asyncio.Future[Any]] = {}

        async def one(nid: Any) -> Any:
            inputs = dict(kwargs[nid])
            for source, name in preds[nid]:
                inputs[name] = await tasks[source]
            return await loop.run_in_executor(executor, functools.partial(functions[nid], **inputs))

        with executor:
            for nid in functions:
                tasks[nid] = asyncio.ensure_future(one(nid))
            await asyncio.gather(*tasks.values())
        return {nid: {"return_value": tasks[nid].result()} for nid in functions if nid in ends}

    print(json.dumps(asyncio.run(run()), indent=2))


if __name__ == "__main__":
    main()
