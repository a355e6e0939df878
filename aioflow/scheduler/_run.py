"""`execute_graph_async`: drive one execution inside an anyio task group.

Actors:

- the *driver* (`_Execution._drive`), one task in the execution's task
  group: it offloads every ready firing with ``loop.run_in_executor`` onto the
  pool (at most a window of them at once), then awaits completions;
- the executor's *done-callbacks* (`_Execution._on_done`), run by the event
  loop when a call finishes: they queue the finished future and wake the
  driver, which hands the outcomes to the state machine and submits the
  firings they unlock.

Every decision (what is ready, with which inputs) is made by the synchronous
`ExecutionState`; this module only awaits. All state is touched from the
event loop's thread only.

Stopping: a failed node (with ``raise_on_error``), an exceeded loop limit, a
timeout, or a cancellation from outside (Ctrl-C included) cancels the task
group. Calls still in the pool are then cancelled (queued ones) or stopped by
`Pool.aabort` (running ones: workers killed, threads interrupted), shielded
from cancellation, before the error is raised. A pool opened here is closed
here, in every outcome; a pool bound to an event loop (``dask``) lives on this
execution's loop (`Pool.scope_to_running_loop`), since nothing else uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import (
    ExecutionTimeoutError,
    GraphError,
    IterationLimitError,
    MissingExtraError,
    NodeError,
    OptionError,
    PoolError,
)
from .._results import Results
from .._tasks import EWOKS_TASK_TYPES, TaskCall, TaskOutcome, run_task
from ..events import Event, EventKind
from ..graph import Graph, Node, NodeId, load_graph
from ..pools import DEFAULT_IDLE_TIMEOUT, Pool, open_pool
from ._outputs import select_results, validate_outputs
from ._state import ExecutionState, Firing, IterationLimitReached

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["execute_graph_async", "preflight"]

logger = logging.getLogger("aioflow")

# The driver keeps at most Pool.calls_in_flight_per_worker calls per worker in
# the pool at once (and at least _MIN_WINDOW): enough to keep workers fed
# between two wake-ups of the loop, few enough to bound memory on wide fans.
_MIN_WINDOW = 32


async def execute_graph_async(
    graph: Any,
    *,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    outputs: Sequence[Mapping[str, Any]] | None = None,
    merge_outputs: bool = True,
    raise_on_error: bool = True,
    timeout: float | None = None,
    pool_type: str | None = None,
    max_workers: int | None = None,
    scaling_workers: bool = True,
    context: str | None = None,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    pool_options: dict[str, Any] | None = None,
    pool: Pool | None = None,
    max_iterations: int | None = None,
    on_event: Callable[[Event], None] | None = None,
    startargs: Mapping[str, Any] | None = None,
    load_options: Mapping[str, Any] | None = None,
    varinfo: Mapping[str, Any] | None = None,
    execinfo: Any = None,
    task_options: Mapping[str, Any] | None = None,
) -> Results:
    """Execute a graph and return its results.

    Args:
        graph: a `Graph`, or anything `aioflow.load_graph` accepts (dict, JSON
            or YAML file path, JSON string).
        inputs: ``[{"id"|"label"|"all": ..., "name": ..., "value": ...}]``,
            written into the selected nodes' default inputs (start nodes when
            no selector is given).
        outputs: which outputs to return (default: every output of the end
            nodes); see the graph format docs.
        merge_outputs: one merged dict (``True``), or ``{node_id: outputs}``.
        raise_on_error: raise `NodeError` on the first node that fails without
            an ``on_error`` link (``True``), or run every branch that can run
            and report failures in ``Results.errors``.
        timeout: seconds; past it, running tasks are stopped and
            `ExecutionTimeoutError` is raised.
        pool_type: a name from `aioflow.available_pools()`: ``thread``, ``process``
            (the default; ``gevent`` when gevent has monkey-patched the process),
            ``ndprocess``, ``multiprocessing``, ``ndmultiprocessing``, ``billiard``.
        max_workers: the most tasks that run at once.
        scaling_workers: start workers as tasks need them, reusing idle ones.
        context: start method of process pools: ``spawn``, ``fork``, ``forkserver``.
        idle_timeout: with ``scaling_workers``, retire a worker idle for this
            many seconds (``None``: never).
        pool_options: extra keyword arguments for the pool's executor.
        pool: an open pool (`aioflow.open_pool`) to run on instead of opening
            one; it stays open, with its warm workers, for later executions.
        max_iterations: the most times any node may run (a guard against
            runaway loops); ``None`` for no limit.
        on_event: called with an `aioflow.events.Event` for every step.
        startargs: inputs given to every start node (under its links' data).
        load_options: keyword arguments for `aioflow.load_graph` (``root_dir``...).
        varinfo: ewokscore persistence, e.g. ``{"root_uri": dir, "scheme": "json"}``:
            every task's outputs are saved under ``root_uri``, and a task whose
            outputs are already saved there is not run again (``ewoks`` extra).
        execinfo: ewokscore events (``{"job_id", "handlers", ...}``, a job id,
            ``True`` or ``False``): job and workflow events are sent by this
            process, node events by the workers (``ewoks`` extra).
        task_options: extra keyword arguments for every ewokscore task's
            constructor (``ewoks`` extra).

    Returns:
        The selected outputs, as `aioflow.Results` (a dict).

    Raises:
        GraphError: the graph is invalid, or cannot run (no start node, a
            cycle that can never fire).
        OptionError: an option is invalid (checked before any worker starts).
        MissingExtraError: the graph needs an optional package.
        NodeError: a node failed (``raise_on_error=True``); ``.results`` holds
            the outputs of the nodes that finished.
        ExecutionTimeoutError: ``timeout`` expired.
        IterationLimitError: a node would run more than ``max_iterations`` times.
    """
    loaded = load_graph(graph, inputs=inputs, **dict(load_options or {}))
    _check_options(timeout, max_iterations, merge_outputs, raise_on_error)
    validate_outputs(loaded, outputs)
    if loaded.nodes and not loaded.start_nodes and any(n.task_type == "class" for n in loaded.nodes.values()):
        # ewokscore's fallback start nodes depend on the task classes' required inputs.
        _import_ewoks_extra(loaded)
        from ..ewoks._start import with_class_start_nodes

        loaded = with_class_start_nodes(loaded)
    preflight(loaded)
    if pool is not None and (pool_type, max_workers, context, pool_options) != (None, None, None, None):
        expected = (
            "given without pool_type, max_workers, context and pool_options (they configure the pool it replaces)"
        )
        raise OptionError("pool", expected, pool)
    ewoks_run = None
    if (varinfo, execinfo, task_options) != (None, None, None):
        from ..ewoks._driver import EwoksRun

        ewoks_run = EwoksRun(loaded, varinfo=varinfo, execinfo=execinfo, task_options=task_options)
    with ewoks_run.running() if ewoks_run is not None else contextlib.nullcontext() as ewoks_payload:
        execution = _Execution(
            loaded,
            outputs=outputs,
            merge_outputs=merge_outputs,
            raise_on_error=raise_on_error,
            timeout=timeout,
            max_iterations=max_iterations,
            on_event=on_event,
            startargs=startargs,
            ewoks_all=ewoks_payload,
            ewoks_some=ewoks_run.node_context(ewoks_payload) if ewoks_run is not None else None,
        )
        if not loaded.nodes:
            return Results({})
        if pool is not None:
            return await execution.run(pool)
        owned = open_pool(
            pool_type,
            max_workers=max_workers,
            scaling_workers=scaling_workers,
            context=context,
            idle_timeout=idle_timeout,
            pool_options=pool_options,
        )
        try:
            # Only this execution uses the pool, and it is closed below on
            # this loop: a pool bound to a loop may live on this one.
            owned.scope_to_running_loop()
            return await execution.run(owned)
        finally:
            with anyio.CancelScope(shield=True):
                await owned.aclose()


def _check_options(timeout: Any, max_iterations: Any, merge_outputs: Any, raise_on_error: Any) -> None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or math.isnan(timeout)
    ):
        raise OptionError("timeout", "a number of seconds > 0, or None", timeout)
    if max_iterations is not None and (
        isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1
    ):
        raise OptionError("max_iterations", "an int >= 1, or None", max_iterations)
    for name, value in (("merge_outputs", merge_outputs), ("raise_on_error", raise_on_error)):
        if not isinstance(value, bool):
            raise OptionError(name, "True or False", value)


def _import_ewoks_extra(graph: Graph) -> None:
    if importlib.util.find_spec("ewokscore") is None:
        raise MissingExtraError(f"graph {graph.id!r}: 'class' nodes", "ewokscore", "ewoks")


def preflight(graph: Graph) -> None:
    """Refuse, before anything runs, a graph that cannot be executed as written.

    Raises:
        GraphError: no start node, or a cycle none of whose nodes can ever fire.
        MissingExtraError: a node's task type (``class``, ``generated``,
            ``notebook``) needs the ``ewoks`` extra, which is not installed.
    """
    problems = []
    if graph.nodes and not graph.start_nodes:
        problems.append(
            "has no start node: every node has a predecessor; "
            'mark the node where execution begins with "force_start_node": true'
        )
    for cycle in graph.analysis.blocked_cycles:
        names = " -> ".join(repr(n) for n in cycle)
        problems.append(
            f"the cycle {names} can never run: each of its nodes waits for a required link "
            'from inside the cycle; make the link that closes the loop conditional or "required": false'
        )
    if problems:
        raise GraphError(graph.id, problems)
    for node in graph.nodes.values():
        if node.task_type in EWOKS_TASK_TYPES:
            if importlib.util.find_spec("ewokscore") is None:
                what = f"graph {graph.id!r}: node {node.id!r} (task_type {node.task_type!r})"
                raise MissingExtraError(what, "ewokscore", "ewoks")
            break


class _NodeFailed:
    """Why an execution stopped: this node failed and no ``on_error`` link handles it."""

    __slots__ = ("error", "node_id")

    def __init__(self, node_id: NodeId, error: BaseException) -> None:
        self.node_id = node_id
        self.error = error


class _Execution:
    """One run of one graph on one pool. Used once.

    The driver keeps a bounded window of firings in the pool (`_window`); the
    firings the state machine unlocked beyond it wait in `_ready`. A finished
    call's done-callback queues its future in `_completed` and wakes the
    driver, which hands every completed call to the state machine in one go
    and tops the window up. No task per firing, no polling.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        outputs: Sequence[Mapping[str, Any]] | None,
        merge_outputs: bool,
        raise_on_error: bool,
        timeout: float | None,
        max_iterations: int | None,
        on_event: Callable[[Event], None] | None,
        startargs: Mapping[str, Any] | None,
        ewoks_all: Mapping[str, Any] | None = None,
        ewoks_some: Mapping[str, Any] | None = None,
    ) -> None:
        self.graph = graph
        self.outputs = outputs
        self.merge_outputs = merge_outputs
        self.raise_on_error = raise_on_error
        self.timeout = timeout
        self.on_event = on_event
        self.state = ExecutionState(graph, max_iterations=max_iterations, start_inputs=startargs)
        # The Ewoks context of every call (persistence, events, task options:
        # every node runs through ewokscore), or of ewokscore's own task types only.
        self._ewoks_all = ewoks_all
        self._ewoks_some = ewoks_some
        self._node_attrs: dict[NodeId, Mapping[str, Any] | None] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._pool: Pool | None = None
        self._ready: deque[Firing] = deque()
        self._inflight: dict[asyncio.Future[Any], tuple[Firing, concurrent.futures.Executor]] = {}
        self._completed: deque[asyncio.Future[Any]] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._window = 0
        self._interrupted: list[NodeId] = []
        # The first reason the execution stops early (it is raised at the end).
        self._stop_reason: BaseException | _NodeFailed | None = None

    def results(self) -> Results:
        return select_results(self.graph, self.state, self.outputs, self.merge_outputs)

    def _emit(self, kind: EventKind, node_id: Any = None, number: int = 0, **extra: Any) -> None:
        if self.on_event is None:
            return
        event = Event(kind=kind, graph_id=self.graph.id, time=time.monotonic(), node_id=node_id, number=number, **extra)
        try:
            self.on_event(event)
        except Exception as exc:
            self._stop(exc)

    def _stop(self, reason: BaseException | _NodeFailed) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def run(self, pool: Pool) -> Results:
        self._pool = pool
        # Enough calls in the pool to keep every worker busy while the loop
        # hands out the next ones; few enough that a 10,000-wide fan does not
        # hold 10,000 queued calls.
        self._window = max(_MIN_WINDOW, pool.calls_in_flight_per_worker * pool.capacity)
        self._emit("graph.started", total=len(self.graph.nodes))
        timed_out = False
        try:
            with anyio.move_on_after(self.timeout) as deadline:
                async with anyio.create_task_group() as tg:
                    self._task_group = tg
                    if self._stop_reason is None:  # on_event may already have failed
                        tg.start_soon(self._drive)
            timed_out = deadline.cancelled_caught
        finally:
            if self._inflight:
                # Calls we stopped waiting for: cancel the queued ones, stop the running ones.
                self._interrupted = [firing.node_id for firing, _ in self._inflight.values()]
                for future in self._inflight:
                    future.cancel()
                    pool.leave(self)
                self._inflight.clear()
                with anyio.CancelScope(shield=True):
                    try:
                        await pool.aabort(self)
                    except KeyboardInterrupt:
                        # A second Ctrl-C must not skip the stop: finish it here.
                        pool.abort(self)
                        raise
        self._emit("graph.finished")
        return self._outcome(timed_out)

    def _outcome(self, timed_out: bool) -> Results:
        results = self.results()
        reason = self._stop_reason
        graph_id = self.graph.id
        if isinstance(reason, _NodeFailed):
            raise NodeError(graph_id, reason.node_id, reason.error, results) from reason.error
        if isinstance(reason, IterationLimitReached):
            raise IterationLimitError(graph_id, reason.node_id, reason.max_iterations, results)
        if reason is not None:
            raise reason
        if timed_out:
            assert self.timeout is not None
            raise ExecutionTimeoutError(graph_id, self.timeout, self._interrupted, results)
        for nid, error in self.state.errors.items():
            logger.warning("graph %r: node %r failed: %s: %s", graph_id, nid, type(error).__name__, error)
        return results

    # ------------------------------------------------------------------ the driver

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._ready.extend(self.state.start())
        except IterationLimitReached as exc:
            self._stop(exc)
            return
        while True:
            self._submit_ready(loop)
            if not self._inflight:
                return  # nothing runs and nothing is ready: the execution is over
            if not self._completed:
                self._wakeup = loop.create_future()
                await self._wakeup
            while self._completed:
                self._finish(self._completed.popleft())
                if self._stop_reason is not None:
                    return

    def _on_done(self, future: asyncio.Future[Any]) -> None:
        self._completed.append(future)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _submit_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        pool = self._pool
        assert pool is not None
        while self._ready and len(self._inflight) < self._window and self._stop_reason is None:
            firing = self._ready.popleft()
            node = self.graph.nodes[firing.node_id]
            call = self._call(node, firing)
            self._emit("node.started", firing.node_id, firing.number)
            executor = None
            try:
                executor = pool.executor
                future = loop.run_in_executor(executor, pool.bind(executor, self, run_task), call)
            except Exception as exc:  # the pool refused the call (closed, broken)
                self._fail(firing, self._translate(exc, firing, executor) if executor is not None else exc)
                continue
            pool.enter(self)
            self._inflight[future] = (firing, executor)
            future.add_done_callback(self._on_done)

    def _call(self, node: Node, firing: Firing) -> TaskCall:
        """The picklable call a worker runs for this firing."""
        if self._ewoks_all is None and node.task_type not in EWOKS_TASK_TYPES:
            return TaskCall(firing.node_id, node.label, node.task_type, node.task_identifier, firing.inputs)
        try:
            node_attrs = self._node_attrs[node.id]
        except KeyError:
            attrs = dict(node.attributes)
            if node.task_generator is not None:
                attrs["task_generator"] = node.task_generator
            node_attrs = self._node_attrs[node.id] = attrs
        ewoks = self._ewoks_all if self._ewoks_all is not None else self._ewoks_some
        return TaskCall(
            firing.node_id,
            node.label,
            node.task_type,
            node.task_identifier,
            firing.inputs,
            node_attrs,
            ewoks,
            firing.input_tags,
        )

    def _finish(self, future: asyncio.Future[Any]) -> None:
        entry = self._inflight.pop(future, None)
        if entry is None:
            return  # cancelled by run()'s cleanup
        firing, executor = entry
        assert self._pool is not None
        self._pool.leave(self)
        if future.cancelled():  # the pool gave up on the call (not this execution)
            lost = PoolError(f"graph {self.graph.id!r}: node {firing.node_id!r}: the pool cancelled the call")
            self._fail(firing, lost)
            return
        error = future.exception()
        if error is not None:
            self._fail(firing, self._translate(error, firing, executor))
            return
        self._emit("node.finished", firing.node_id, firing.number)
        result = future.result()
        try:
            if type(result) is TaskOutcome:  # outputs with their tokens (tasks run by ewokscore)
                self._ready.extend(self.state.succeeded(firing, result.outputs, result.tags))
            else:
                self._ready.extend(self.state.succeeded(firing, result))
        except IterationLimitReached as exc:
            self._stop(exc)

    def _fail(self, firing: Firing, error: BaseException) -> None:
        self._emit("node.failed", firing.node_id, firing.number, error=error)
        try:
            nxt = self.state.failed(firing, error)
        except IterationLimitReached as exc:
            self._stop(exc)
            return
        if firing.node_id in self.state.errors and self.raise_on_error:
            self._stop(_NodeFailed(firing.node_id, error))
            return
        self._ready.extend(nxt)

    def _translate(self, exc: BaseException, firing: Firing, executor: concurrent.futures.Executor) -> BaseException:
        """Turn a pool's low-level failure into an error that says what happened and what to do."""
        assert self._pool is not None
        where = f"graph {self.graph.id!r}: node {firing.node_id!r}"
        return self._pool.translate(exc, executor, where, node_id=firing.node_id)
