"""Time ONE first call in this fresh interpreter, the engine's imports included; print ``COLDRESULT s again_s ok``.

    python benchmarks/cold_child.py ENGINE POOL CONTEXT WORKLOAD

``ENGINE`` is ``aioflow`` (``import aioflow``, then ``aioflow.execute_graph``
of the graph dict with ``pool_type=POOL``, two workers) or ``raw`` (``import
asyncio, concurrent.futures``, then one asyncio task per node awaiting its
predecessors and ``loop.run_in_executor`` on a ``ThreadPoolExecutor(2)``, or
for any other ``POOL`` a ``ProcessPoolExecutor(2)``, created and shut down in
the call). ``CONTEXT`` is the start method (``-``: the pool's default; the
raw process pool then forks). ``WORKLOAD`` is ``chain:N`` or ``lattice:WxD``.

The clock starts before the engine's first import: what a user pays from a
fresh interpreter to the first result, on both sides. Nothing but ``sys``,
``time`` and the task module (which both sides need, and worker processes
import by name) is imported before it, and the graph is built with plain
code, so that no module the engine needs is loaded for it ahead of the
clock. A second, identical call is timed as ``again_s``.
"""

# ruff: noqa: T201 - a measurement process: printing its result is its output

from __future__ import annotations

import sys
import time

import benchtasks  # the task module, on both sides before the clock

TYPE_CHECKING = False  # not typing's: importing typing here would load it ahead of the clock
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Step = tuple[str, Callable[..., int], list[tuple[str, str]]]


def build(workload: str) -> tuple[dict[str, Any], list[Step], str]:
    """The graph dict, the raw floor's steps ``(node, func, preds)`` in order, and the sink."""
    shape, _, size = workload.partition(":")
    nodes: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    steps: list[Step] = []

    def link(source: str, target: str, name: str) -> None:
        mapping = [{"source_output": "return_value", "target_input": name}]
        links.append({"source": source, "target": target, "data_mapping": mapping})

    if shape == "chain":
        n = int(size)
        for i in range(n):
            nodes.append({"id": f"n{i}", "task_type": "method", "task_identifier": "benchtasks.inc"})
            preds = [(f"n{i - 1}", "x")] if i else []
            for source, name in preds:
                link(source, f"n{i}", name)
            steps.append((f"n{i}", benchtasks.inc, preds))
        sink = f"n{n - 1}"
    elif shape == "lattice":
        width, depth = (int(x) for x in size.split("x"))
        for layer in range(depth):
            for col in range(width):
                nid = f"l{layer}_{col}"
                nodes.append({"id": nid, "task_type": "method", "task_identifier": "benchtasks.add"})
                preds = [(f"l{layer - 1}_{j}", f"v{j}") for j in range(width)] if layer else []
                for source, name in preds:
                    link(source, nid, name)
                steps.append((nid, benchtasks.add, preds))
        nodes.append({"id": "sink", "task_type": "method", "task_identifier": "benchtasks.add"})
        preds = [(f"l{depth - 1}_{j}", f"v{j}") for j in range(width)]
        for source, name in preds:
            link(source, "sink", name)
        steps.append(("sink", benchtasks.add, preds))
        sink = "sink"
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    return {"graph": {"id": workload}, "nodes": nodes, "links": links}, steps, sink


def aioflow_call(graph: dict[str, Any], pool: str, context: str | None, sink: str) -> int:
    import aioflow

    results = aioflow.execute_graph(
        graph, pool_type=pool, max_workers=2, context=context, outputs=[{"id": sink}], merge_outputs=False
    )
    value: int = results[sink]["return_value"]
    return value


def raw_call(steps: list[Step], pool: str, context: str | None, sink: str) -> int:
    import asyncio
    import concurrent.futures
    import functools

    async def run() -> int:
        loop = asyncio.get_running_loop()
        executor: concurrent.futures.Executor
        if pool == "thread":
            executor = concurrent.futures.ThreadPoolExecutor(2)
        else:
            import multiprocessing

            mp_context = multiprocessing.get_context(context or "fork")
            executor = concurrent.futures.ProcessPoolExecutor(2, mp_context=mp_context)
        with executor:
            tasks: dict[str, asyncio.Future[int]] = {}

            async def one(fn: Callable[..., int], preds: list[tuple[str, str]], upstream: list[Any]) -> int:
                if upstream:
                    await asyncio.gather(*upstream)
                kwargs = {name: task.result() for (_, name), task in zip(preds, upstream, strict=True)}
                return await loop.run_in_executor(executor, functools.partial(fn, **kwargs))

            for nid, fn, preds in steps:
                tasks[nid] = asyncio.ensure_future(  # noqa: RUF006 - kept in tasks
                    one(fn, preds, [tasks[s] for s, _ in preds])
                )
            await asyncio.gather(*tasks.values())
            return tasks[sink].result()

    return asyncio.run(run())


def sequential(steps: list[Step], sink: str) -> int:
    """The sink's value, by plain calls in order: what both engines must return."""
    values: dict[str, int] = {}
    for nid, fn, preds in steps:
        values[nid] = fn(**{name: values[source] for source, name in preds})
    return values[sink]


def main() -> None:
    engine, pool, context, workload = sys.argv[1:5]
    ctx = None if context == "-" else context
    graph, steps, sink = build(workload)
    expected = sequential(steps, sink)
    timings: list[float] = []
    values: list[int] = []
    for _ in range(2):
        t0 = time.perf_counter()
        if engine == "aioflow":
            values.append(aioflow_call(graph, pool, ctx, sink))
        else:
            values.append(raw_call(steps, pool, ctx, sink))
        timings.append(time.perf_counter() - t0)
    print("COLDRESULT", timings[0], timings[1], int(values == [expected, expected]), flush=True)


if __name__ == "__main__":
    main()
