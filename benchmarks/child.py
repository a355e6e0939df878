"""Run ONE measurement in this fresh process and print it as one ``BENCHRESULT {json}`` line.

``bench.py`` starts this module once per measurement, with the measurement
as a JSON argument::

    python benchmarks/child.py '{"kind": "exec", "engine": "raw", "workload": "chain:1000", "pool": "thread"}'

Kinds:

- ``load``: time ``aioflow.load_graph(graph_dict)`` (which validates the graph
  and runs its analysis) on workload ``workload``;
- ``toposort``: time a plain-Python topological sort of the same dict
  (`workloads.plan`), a reference for what linear code costs at each size;
- ``exec``: run workload ``workload`` once with ``engine``:

  - ``aioflow``: ``aioflow.load_graph`` then ``aioflow.execute_graph`` on
    ``pool`` (``thread`` or ``process``) with ``workers`` workers, start
    method ``context``, on the default asyncio loop or uvloop (``loop``);
  - ``raw``: the floor: one asyncio task per node, awaiting its predecessors'
    tasks, then ``loop.run_in_executor`` on a ``ThreadPoolExecutor`` or
    ``ProcessPoolExecutor`` created (and shut down) inside the timed call;
  - ``seq``: plain function calls in topological order.

  With ``"warm": true``, the engine first runs a one-node graph the same
  way, before the clock starts, so that one-time costs (lazy imports, the
  first pool start) are left out.

  With ``"again": true``, the same run is made a second time, after the
  timed one, and timed as ``again_seconds``: the cost without the one-time
  ones (a new pool is still created and closed by each run).

  ``pool`` may be any name of ``aioflow.available_pools()`` for aioflow
  (``process`` or ``thread`` for the floor); ``scaling`` (default true) is
  aioflow's ``scaling_workers``. With ``"patch": "gevent"``, this process
  calls ``gevent.monkey.patch_all()`` before importing anything else, as a
  gevent program does (the ``gevent`` pool needs it).

- ``executor``: ``n`` calls of `benchtasks.inc` through an executor
  (``pattern`` ``chain``: each call takes the previous one's result;
  ``fan``: ``n`` independent calls, then every result), on ``pool``
  (``thread`` or ``process``) with ``workers`` workers and start method
  ``context``, with ``engine``:

  - ``aioflow``: an `aioflow.Executor`; the chain passes each future to the
    next ``submit`` (``f = ex.submit(inc, f)``), the fan submits ``n`` calls
    and then reads every ``result()``; with ``"api": "asubmit"``, the same
    calls are awaited inside ``asyncio.run`` as on the raw side (``await
    ex.asubmit(inc, x)`` in a loop, or ``asyncio.gather`` of them);
  - ``raw``: inside ``asyncio.run``, ``await loop.run_in_executor(pool, inc,
    x)`` in a loop (chain), or ``asyncio.gather`` of ``n`` such calls (fan),
    on a `~concurrent.futures.ThreadPoolExecutor` or
    `~concurrent.futures.ProcessPoolExecutor`.

  On both sides the executor is created and ``workers`` warm-up calls have
  returned before the clock starts (``setup_seconds``), and it is shut down
  after the clock stops (``teardown_seconds``): only the calls are timed.

The graph dict is built before the clock starts, in every engine, so that
each process holds the same input; only the engine's own work is timed. The
printed record has ``seconds`` (the timed call), ``checksum_ok``, and
``maxrss_mb`` (``ru_maxrss`` of this process at the end: the thread pool
runs in this process, so it is the peak of the whole run).
"""

from __future__ import annotations

import json
import sys

# gevent must patch the standard library before anything else imports it.
if __name__ == "__main__" and len(sys.argv) > 1 and json.loads(sys.argv[1]).get("patch") == "gevent":
    # What a gevent program does first: every later import (threading, time,
    # socket, aioflow) sees the patched modules.
    from gevent import monkey

    monkey.patch_all()

import os
import resource
import time
import traceback
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if TYPE_CHECKING:
    from collections.abc import Callable

import workloads  # needs the path above when run as a script

_T_START = time.perf_counter()


def _maxrss_mb() -> float:
    # Linux reports kilobytes (macOS bytes; the benchmark targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _profiled(spec: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """Call ``fn``, under cProfile when ``spec["profile"]`` names an output file."""
    path = spec.get("profile")
    if not path:
        return fn()
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(fn)
    finally:
        profiler.dump_stats(path)


def measure_load(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """Time ``aioflow.load_graph`` on a graph dict, analysis included."""
    import aioflow

    # `import aioflow` loads its modules on first use: load them before the clock.
    aioflow.load_graph  # noqa: B018
    work = workloads.make(spec["workload"])
    out.update(n_nodes=work.n_nodes, n_links=work.n_links)

    def load() -> Any:
        graph = aioflow.load_graph(work.graph)
        # The analysis runs when the Graph is built; touch it anyway, so that
        # a lazier implementation would still be timed in full.
        return len(graph.analysis.order), len(graph.start_nodes), len(graph.end_nodes)

    t0 = time.perf_counter()
    n_order, _, n_end = _profiled(spec, load)
    out["seconds"] = time.perf_counter() - t0
    out["checksum_ok"] = n_order == work.n_nodes and n_end == len(work.sinks)


def measure_toposort(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """Time `workloads.plan` (Kahn's algorithm over the same dict): linear Python code, for reference."""
    work = workloads.make(spec["workload"])
    out.update(n_nodes=work.n_nodes, n_links=work.n_links)
    t0 = time.perf_counter()
    steps = _profiled(spec, lambda: workloads.plan(work.graph))
    out["seconds"] = time.perf_counter() - t0
    out["checksum_ok"] = len(steps) == work.n_nodes


def _raw_floor(steps: list[workloads.PlanStep], sinks: list[str], spec: dict[str, Any]) -> int:
    import asyncio
    import functools
    import multiprocessing
    from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

    import benchtasks

    workers = spec.get("workers", 2)

    async def run_graph() -> int:
        loop = asyncio.get_running_loop()
        executor: Executor
        if spec["pool"] == "thread":
            executor = ThreadPoolExecutor(max_workers=workers)
        else:
            context = multiprocessing.get_context(spec.get("context") or "fork")
            executor = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        with executor:
            tasks: dict[str, asyncio.Future[Any]] = {}

            async def one(step: workloads.PlanStep, upstream: list[asyncio.Future[Any]]) -> Any:
                if upstream:
                    await asyncio.gather(*upstream)
                kwargs = dict(step.static)
                for (_, name), task in zip(step.preds, upstream, strict=True):
                    kwargs[name] = task.result()
                fn = functools.partial(getattr(benchtasks, step.func), **kwargs)
                return await loop.run_in_executor(executor, fn)

            for step in steps:
                tasks[step.node_id] = asyncio.ensure_future(  # noqa: RUF006 - kept in tasks
                    one(step, [tasks[s] for s, _ in step.preds])
                )
            await asyncio.gather(*tasks.values())
            return sum(tasks[s].result() for s in sinks)

    if spec.get("loop") == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run_graph())
    return asyncio.run(run_graph())


def _sequential(steps: list[workloads.PlanStep], sinks: list[str]) -> int:
    import benchtasks

    results: dict[str, Any] = {}
    for step in steps:
        kwargs = dict(step.static)
        for source, name in step.preds:
            kwargs[name] = results[source]
        results[step.node_id] = getattr(benchtasks, step.func)(**kwargs)
    return sum(results[s] for s in sinks)


def measure_exec(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """Run one workload once with one engine."""
    work = workloads.make(spec["workload"], cpu_iters=spec.get("cpu_iters", 0))
    out.update(n_nodes=work.n_nodes, n_links=work.n_links)
    engine = spec["engine"]
    again_ok = True  # the second run of "again" computed the same
    if engine == "aioflow":
        # The task module is imported before the clock starts, as for the floor.
        import benchtasks

        import aioflow

        # `import aioflow` loads its modules on first use: what it used to load
        # at import time is loaded here, before the clock, as before.
        aioflow.load_graph, aioflow.execute_graph  # noqa: B018

        if spec.get("loop") == "uvloop":
            import uvloop  # imported before the clock starts, as for the floor

        options = {
            "pool_type": spec["pool"],
            "max_workers": spec.get("workers", 2),
            "scaling_workers": spec.get("scaling", True),
            "context": spec.get("context"),
            "uvloop": spec.get("loop") == "uvloop",
            "merge_outputs": False,
        }
        if spec.get("patch") == "gevent":
            from gevent import monkey

            if not monkey.is_module_patched("threading"):
                msg = "gevent.monkey.patch_all() did not run before the measurement"
                raise RuntimeError(msg)
        timings: dict[str, float] = {}
        if spec.get("warm"):
            # One-time costs (lazy imports, first pool start) paid before the clock.
            aioflow.execute_graph(workloads.make("chain:1").graph, **options)

        preloaded = aioflow.load_graph(work.graph) if spec.get("preload") else None

        def run() -> Any:
            graph = preloaded
            if graph is None:
                t0 = time.perf_counter()
                graph = aioflow.load_graph(work.graph)
                timings["load_seconds"] = time.perf_counter() - t0
            return aioflow.execute_graph(graph, **options)

        t0 = time.perf_counter()
        results = _profiled(spec, run)
        out["seconds"] = time.perf_counter() - t0
        out.update(timings)
        checksum = sum(results[s]["return_value"] for s in work.sinks)
        if spec.get("again"):
            t0 = time.perf_counter()
            again = run()
            out["again_seconds"] = time.perf_counter() - t0
            again_ok = sum(again[s]["return_value"] for s in work.sinks) == checksum
    else:
        steps = workloads.plan(work.graph)
        # Every module the engine needs is imported before the clock starts
        # (aioflow's by "import aioflow"; what aioflow itself imports only on
        # its first execution is timed, as a user pays it): only the run is timed.
        import benchtasks  # noqa: F401

        if engine == "raw":
            import asyncio  # noqa: F401
            import concurrent.futures  # noqa: F401
            import multiprocessing  # noqa: F401

            if spec.get("loop") == "uvloop":
                import uvloop  # noqa: F401
            if spec.get("warm"):
                one = workloads.make("chain:1")
                _raw_floor(workloads.plan(one.graph), one.sinks, spec)
            t0 = time.perf_counter()
            checksum = _profiled(spec, lambda: _raw_floor(steps, work.sinks, spec))
        elif engine == "seq":
            t0 = time.perf_counter()
            checksum = _profiled(spec, lambda: _sequential(steps, work.sinks))
        else:
            msg = f"unknown engine {engine!r} (expected aioflow, raw or seq)"
            raise ValueError(msg)
        out["seconds"] = time.perf_counter() - t0
        if engine == "raw" and spec.get("again"):
            t0 = time.perf_counter()
            again_ok = _raw_floor(steps, work.sinks, spec) == checksum
            out["again_seconds"] = time.perf_counter() - t0
    out["checksum_ok"] = checksum == work.checksum and again_ok
    if not out["checksum_ok"]:
        out["error"] = f"checksum {checksum} != expected {work.checksum}" + ("" if again_ok else " (second run)")


def _executor_checksum(pattern: str, n: int) -> int:
    # chain: inc applied n times to 0; fan: inc(i) for i in range(n), summed.
    return n if pattern == "chain" else n * (n + 1) // 2


def _aioflow_executor_calls(spec: dict[str, Any], out: dict[str, Any]) -> int:
    import asyncio

    import benchtasks

    import aioflow

    inc = benchtasks.inc
    n, workers = spec["n"], spec.get("workers", 2)
    t0 = time.perf_counter()
    ex = aioflow.Executor(spec["pool"], max_workers=workers, context=spec.get("context"))
    # Start-up left out: the pool's first workers and aioflow's lazy imports.
    warm = [ex.submit(inc, i) for i in range(workers)]
    for f in warm:
        f.result()
    out["setup_seconds"] = time.perf_counter() - t0

    async def acalls() -> int:
        if spec["pattern"] == "chain":
            value = 0
            for _ in range(n):
                value = await ex.asubmit(inc, value)
            return value
        return sum(await asyncio.gather(*(ex.asubmit(inc, i) for i in range(n))))

    def calls() -> int:
        if spec.get("api") == "asubmit":
            return asyncio.run(acalls())
        if spec["pattern"] == "chain":
            future = ex.submit(inc, 0)
            for _ in range(n - 1):
                future = ex.submit(inc, future)
            return future.result()
        futures = [ex.submit(inc, i) for i in range(n)]
        return sum(f.result() for f in futures)

    try:
        t0 = time.perf_counter()
        checksum: int = _profiled(spec, calls)
        out["seconds"] = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        ex.shutdown(wait=True)
        out["teardown_seconds"] = time.perf_counter() - t0
    return checksum


def _raw_executor_calls(spec: dict[str, Any], out: dict[str, Any]) -> int:
    import asyncio
    import multiprocessing
    from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

    import benchtasks

    inc = benchtasks.inc
    n, workers = spec["n"], spec.get("workers", 2)
    t0 = time.perf_counter()
    ex: Executor
    if spec["pool"] == "thread":
        ex = ThreadPoolExecutor(max_workers=workers)
    else:
        context = multiprocessing.get_context(spec.get("context") or "fork")
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    list(ex.map(inc, range(workers)))  # start-up left out, as on aioflow's side
    out["setup_seconds"] = time.perf_counter() - t0

    async def chain() -> int:
        loop = asyncio.get_running_loop()
        value = 0
        for _ in range(n):
            value = await loop.run_in_executor(ex, inc, value)
        return value

    async def fan() -> int:
        loop = asyncio.get_running_loop()
        return sum(await asyncio.gather(*(loop.run_in_executor(ex, inc, i) for i in range(n))))

    try:
        t0 = time.perf_counter()
        checksum: int = _profiled(spec, lambda: asyncio.run(chain() if spec["pattern"] == "chain" else fan()))
        out["seconds"] = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        ex.shutdown(wait=True)
        out["teardown_seconds"] = time.perf_counter() - t0
    return checksum


def measure_executor(spec: dict[str, Any], out: dict[str, Any]) -> None:
    """Time ``n`` chained or independent calls through an `aioflow.Executor` or raw ``run_in_executor``."""
    expected = _executor_checksum(spec["pattern"], spec["n"])
    out.update(n_nodes=spec["n"])
    if spec["engine"] == "aioflow":
        checksum = _aioflow_executor_calls(spec, out)
    elif spec["engine"] == "raw":
        checksum = _raw_executor_calls(spec, out)
    else:
        msg = f"unknown executor engine {spec['engine']!r} (expected aioflow or raw)"
        raise ValueError(msg)
    out["checksum_ok"] = checksum == expected
    if not out["checksum_ok"]:
        out["error"] = f"checksum {checksum} != expected {expected}"


def main(argv: list[str]) -> int:
    """Run the measurement given as JSON in ``argv[0]``; print its record.

    Returns:
        The exit code: 0 when the measurement ran and its checksum held.
    """
    spec = json.loads(argv[0])
    out: dict[str, Any] = {"status": "error"}
    try:
        if spec["kind"] == "load":
            measure_load(spec, out)
        elif spec["kind"] == "exec":
            measure_exec(spec, out)
        elif spec["kind"] == "toposort":
            measure_toposort(spec, out)
        elif spec["kind"] == "executor":
            measure_executor(spec, out)
        else:
            msg = f"unknown kind {spec['kind']!r}"
            raise ValueError(msg)
        out["status"] = "ok" if out.get("checksum_ok") else "error"
    except BaseException as exc:  # report every failure as a record; the driver decides
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()[-3000:]
    out["maxrss_mb"] = _maxrss_mb()
    out["process_seconds"] = time.perf_counter() - _T_START
    sys.stdout.flush()
    print("BENCHRESULT " + json.dumps(out), flush=True)  # noqa: T201 - the protocol with bench.py
    return 0 if out["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
