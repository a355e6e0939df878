"""`execute_graph_async`: drive one execution on the running asyncio loop.

Actors:

- the *driver* (`_Execution._drive`), the coroutine the calling task
  awaits (inside the execution's deadline, ``asyncio.timeout``): it offloads every ready firing with ``loop.run_in_executor`` onto the
  pool (at most a window of them at once), then awaits completions;
- the executor's *done-callbacks* (`_Execution._on_done`), run by the event
  loop when a call finishes: they queue the finished future and wake the
  driver, which hands the outcomes to the state machine and submits the
  firings they unlock. Where the order of outcomes can change what fires
  (loops, optional links), the driver hands them over in the order their
  firings were made, whatever order they finished in (`_Execution._settle`),
  so an execution gives the same results on every run. On a pool that chains calls, whose calls the driver
  submits itself (``executor.submit``, to keep the pool's futures), the
  callback (`_Execution._arrived`) runs in the pool's thread: it queues the
  future there and wakes the loop once per burst of completions, not once
  per call.

Every decision is made by a synchronous object with no loop: what is
ready, with which inputs, by the `ExecutionState`; on a pool that chains
calls, what to send ahead and with which predecessors, which call sent
ahead a firing adopts, which to void, by the `AheadPlanner`
(`aioflow.scheduler._plan`). This module only submits what they say,
awaits, and hands the outcomes back; it writes no field of the state
machine. All state is touched from the event loop's thread only.

Plug-ins take part through the run's execution hooks (`aioflow.scheduler._hooks`):
they prepare the graph before the preflight checks, wrap the run, give each
node's calls a context (and a runner) for the worker, may answer a firing
instead of running it, observe every event, and may build the results. The
hooks a task kind needs come from the task-kind registry (`aioflow._kinds`),
which is all this module knows of kinds: it names none.

Stopping: a failed node (with ``raise_on_error``) or an exceeded loop limit
makes the driver return; the timeout, or a cancellation from outside (Ctrl-C,
an enclosing ``asyncio.timeout`` or anyio cancel scope), cancels it where it
waits. Calls still in the pool are then cancelled (queued ones) or stopped by
`Pool.aabort` (running ones: workers killed, threads interrupted), shielded
from cancellation (`aioflow.scheduler._shield`), before the error is raised. A pool opened here is closed
here, in every outcome; a pool bound to an event loop (``dask``) lives on this
execution's loop (`Pool.scope_to_running_loop`), since nothing else uses it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from .._errors import (
    AioflowError,
    ExecutionError,
    ExecutionTimeoutError,
    GraphError,
    IterationLimitError,
    MissingExtraError,
    NodeCancelledError,
    NodeError,
    NodeTimeoutError,
    OptionError,
    PoolClosedError,
    PoolError,
)
from .._kinds import KINDS, Extra, TaskKind, resolve
from .._results import Results
from .._tasks import ChainedCall, TaskCall, TaskOutcome, run_chained, run_task
from ..graph import Graph, Node, NodeId, load_graph
from ..graph._control import check_control, node_controls
from ..pools import Pool
from ..pools._futures import OneCall
from ..pools._options import PoolSpec, takes_pool_keywords
from ..pools._threads import run_in_own_thread
from ._control import ReadyQueue, RunControl
from ._hooks import EventCallback, ExecutionHooks, HookSet, Step
from ._outputs import select_results, selected_nodes, validate_outputs
from ._shield import shielded
from ._state import ExecutionState, Firing, IterationLimitReached

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TypeAlias, Unpack

    from ..events import Event, EventKind, RunState
    from ..pools._options import PoolKeywords
    from ._plan import AheadPlanner, Send

    # A call in the pool, as the driver awaits it: the event loop's future of
    # a ``run_in_executor`` call, or a chaining pool's own future.
    _Call: TypeAlias = asyncio.Future[Any] | concurrent.futures.Future[Any]
    # The planner of the calls sent ahead on a chaining pool (whose calls are the pool's futures).
    _Planner: TypeAlias = AheadPlanner[_Call, concurrent.futures.Executor]

__all__ = ["Steering", "execute_graph_async", "preflight"]

logger = logging.getLogger("aioflow")

# The driver keeps at most Pool.calls_in_flight_per_worker calls per worker in
# the pool at once (and at least _MIN_WINDOW): enough to keep workers fed
# between two wake-ups of the loop, few enough to bound memory on wide fans.
_MIN_WINDOW = 32

# How often the driver checks the calls of nodes with a timeout (`_Execution._sweep`): a
# twentieth of the shortest timeout, within these bounds (seconds). A node fails at most
# two periods after its deadline.
_SWEEP_MIN, _SWEEP_MAX = 0.005, 0.025

# Seconds the end of an execution waits for the tasks it stopped alone (a node's timeout,
# a cancelled node) to be gone, before it stops them as a timeout of the run would.
_STOP_GRACE = 1.0

# Seconds to fetch, at the end, the results a pool kept on its workers. Only
# a cluster that went away reaches it; the results are then reported lost.
_FETCH_TIMEOUT = 60.0


@takes_pool_keywords
async def execute_graph_async(
    graph: Any,
    *,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    outputs: Sequence[Mapping[str, Any]] | None = None,
    merge_outputs: bool = True,
    raise_on_error: bool = True,
    timeout: float | None = None,
    pool_type: str | None = None,
    pool: Pool | None = None,
    max_iterations: int | None = None,
    on_event: Callable[[Event], None] | None = None,
    startargs: Mapping[str, Any] | None = None,
    load_options: Mapping[str, Any] | None = None,
    hooks: Sequence[ExecutionHooks] = (),
    node_defaults: Mapping[str, Any] | None = None,
    pools: Mapping[str, Mapping[str, Any] | Pool] | None = None,
    default_pool: str | None = None,
    steering: Steering | None = None,
    **pool_keywords: Unpack[PoolKeywords],
) -> Results:
    """The engine's entry point: execute a graph and return its results.

    It takes the options of `aioflow.execute_graph_async`, but for the
    Ewoks ones (``varinfo``, ``execinfo``, ``task_options``: that face
    turns them into the Ewoks plug-in's hooks), and:

    Args:
        steering: how an execution handle (`aioflow.start`) reaches the run
            while it goes on (`Steering`).
        hooks: the `ExecutionHooks` that take part in the run, in order
            (`aioflow.scheduler._hooks`). The hooks of the kinds the graph
            uses (`aioflow._kinds.TaskKind.hooks`) come after them, unless
            one of them is already of that class, and the ``on_event``
            callback observes last.

    Returns and raises: as `aioflow.execute_graph_async`; an exception of a
    hook is raised as it is (see each method of `ExecutionHooks`).
    """
    loaded = load_graph(graph, inputs=inputs, **_load_options(load_options))
    _check_options(timeout, max_iterations, merge_outputs, raise_on_error, startargs, on_event, pool, hooks)
    _check_node_defaults(node_defaults)
    spec = PoolSpec.from_keywords("execute_graph_async", pool_type, pool_keywords)
    validate_outputs(loaded, outputs)
    run_hooks = [*hooks, *_kind_hooks(loaded, hooks)]
    if on_event is not None:
        run_hooks.append(EventCallback(on_event))
    hook_set = HookSet(run_hooks)
    loaded = hook_set.prepare(loaded)
    preflight(loaded)
    configured = (spec.pool_type, spec.max_workers, spec.context, spec.pool_options) != (None,) * 4
    if pool is not None and configured:
        expected = (
            "given without pool_type, max_workers, context and pool_options (they configure the pool it replaces)"
        )
        raise OptionError("pool", expected, pool)
    named_specs = _named_pools(pools, default_pool)
    if default_pool is not None and (pool is not None or configured):
        expected = (
            "given without pool, pool_type, max_workers, context and pool_options (the run's pool is one of pools=)"
        )
        raise OptionError("default_pool", expected, default_pool)
    async with hook_set.running(loaded), contextlib.AsyncExitStack() as opened:
        execution = _Execution(
            loaded,
            outputs=outputs,
            merge_outputs=merge_outputs,
            raise_on_error=raise_on_error,
            timeout=timeout,
            max_iterations=max_iterations,
            hooks=hook_set,
            startargs=startargs,
            node_defaults=node_defaults,
            steering=steering,
        )
        if not loaded.nodes:
            return Results({})
        named = {name: _opened(given, opened) for name, given in named_specs.items()}
        if default_pool is not None:
            return await execution.run(named[default_pool], named)
        if pool is not None:
            return await execution.run(pool, named)
        return await execution.run(_opened(spec, opened), named)


def _opened(given: PoolSpec | Pool, opened: contextlib.AsyncExitStack) -> Pool:
    """``given`` itself if it is an open pool; else a pool opened from its spec, closed when ``opened`` closes."""
    if isinstance(given, Pool):
        return given
    owned = given.open()
    # Only this execution uses the pool, and it is closed on this loop: a pool
    # bound to a loop may live on this one.
    owned.scope_to_running_loop()
    opened.push_async_callback(_close, owned)
    return owned


async def _close(pool: Pool) -> None:
    await shielded(pool.aclose())


def _named_pools(pools: Any, default_pool: Any) -> dict[str, PoolSpec | Pool]:
    """``pools=`` checked: name -> the spec of a pool to open for the run, or an open pool.

    Raises:
        OptionError: not a mapping of names to pool keywords or open pools;
            ``default_pool`` not one of its names.
    """
    if pools is None:
        if default_pool is not None:
            raise OptionError("default_pool", "given with pools= (the name of one of them)", default_pool)
        return {}
    if not isinstance(pools, Mapping) or not pools:
        raise OptionError("pools", "a dict of pool names to pool keywords or open pools", pools)
    named: dict[str, PoolSpec | Pool] = {}
    for name, given in pools.items():
        if not isinstance(name, str) or not name:
            raise OptionError("pools", "a dict whose keys are pool names (non-empty strings)", pools)
        if isinstance(given, Pool):
            if given.closed:
                raise PoolClosedError(given.name, f"pools[{name!r}] is closed; open a new one with aioflow.open_pool()")
            named[name] = given
            continue
        if not isinstance(given, Mapping):
            expected = "a dict of pool keywords (pool_type, max_workers, ...) or an open pool"
            raise OptionError(f"pools[{name!r}]", expected, given)
        keywords = dict(given)
        pool_type = keywords.pop("pool_type", None)
        try:
            named[name] = PoolSpec.from_keywords(f"pools[{name!r}]", pool_type, keywords)
        except TypeError:
            expected = (
                "a dict of pool keywords: pool_type, max_workers, scaling_workers, context, idle_timeout, pool_options"
            )
            raise OptionError(f"pools[{name!r}]", expected, given) from None
    if default_pool is not None and default_pool not in named:
        raise OptionError("default_pool", f"the name of one of pools= ({', '.join(map(repr, named))})", default_pool)
    for name, given in named.items():
        in_hub = given.runs_in_gevent_hub if isinstance(given, Pool) else _in_gevent_hub(given)
        if in_hub:
            raise OptionError(
                f"pools[{name!r}]",
                "",
                given,
                f"pools[{name!r}] runs its tasks in the gevent hub: it cannot share an execution with other "
                "pools (run the graph on it alone, with pool_type='gevent')",
            )
    return named


def _in_gevent_hub(spec: PoolSpec) -> bool:
    """Whether a pool of this spec would run its tasks in the gevent hub (an unknown type: the run says so later)."""
    try:
        return spec.pool_class().runs_in_gevent_hub
    except OptionError:
        return False


# What load_options may hold: load_graph's keywords, but inputs (an argument of its own).
_LOAD_OPTIONS = frozenset(("representation", "root_dir", "root_module"))


def _load_options(load_options: Any) -> dict[str, Any]:
    if load_options is None:
        return {}
    if not isinstance(load_options, Mapping) or not set(load_options) <= _LOAD_OPTIONS:
        raise OptionError("load_options", f"a dict with keys among {', '.join(sorted(_LOAD_OPTIONS))}", load_options)
    return dict(load_options)


def _check_options(
    timeout: Any,
    max_iterations: Any,
    merge_outputs: Any,
    raise_on_error: Any,
    startargs: Any,
    on_event: Any,
    pool: Any,
    hooks: Any,
) -> None:
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
    if startargs is not None and not isinstance(startargs, Mapping):
        raise OptionError("startargs", "a dict of input names and values, or None", startargs)
    if on_event is not None and not callable(on_event):
        raise OptionError("on_event", "a callable taking an aioflow.events.Event, or None", on_event)
    if pool is not None and not isinstance(pool, Pool):
        raise OptionError("pool", "a pool from aioflow.open_pool(), or None", pool)
    if pool is not None and pool.closed:
        raise PoolClosedError(pool.name)
    if not isinstance(hooks, (list, tuple)) or not all(isinstance(hook, ExecutionHooks) for hook in hooks):
        raise OptionError("hooks", "a list or tuple of aioflow.scheduler.ExecutionHooks", hooks)


def _check_node_defaults(node_defaults: Any) -> None:
    if node_defaults is None:
        return
    problems = check_control(node_defaults)
    if problems:
        expected = "an object like a node's 'aioflow' attribute: " + "; ".join(problems)
        raise OptionError("node_defaults", expected, node_defaults)


def _kind_hooks(graph: Graph, given: Sequence[ExecutionHooks]) -> list[ExecutionHooks]:
    """The hooks the kinds of the graph's nodes need (`TaskKind.hooks`), but those ``given`` already has.

    Raises:
        MissingExtraError: such a kind needs an extra that is not installed.
    """
    added: list[ExecutionHooks] = []
    seen: set[str] = set()
    for node in graph.nodes.values():
        kind = KINDS.get(node.task_type)
        if kind is None or kind.hooks is None or kind.hooks in seen:
            continue
        seen.add(kind.hooks)
        _check_extra(graph, node, kind)  # the hooks may need it
        hooks_class = resolve(kind.hooks)
        if not any(isinstance(hook, hooks_class) for hook in given):
            added.append(hooks_class())
    return added


def preflight(graph: Graph) -> None:
    """Refuse, before anything runs, a graph that cannot be executed as written.

    Raises:
        GraphError: no start node, or a cycle none of whose nodes can ever fire.
        MissingExtraError: a node's kind needs an extra that is not installed
            (`aioflow._kinds.TaskKind.extra`).
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
    _check_extras(graph)


def _check_extras(graph: Graph) -> None:
    """Raise `MissingExtraError` for the first node whose kind needs an extra that is not installed."""
    checked: set[Extra] = set()
    for node in graph.nodes.values():
        kind = KINDS.get(node.task_type)
        if kind is not None and kind.extra is not None and kind.extra not in checked:
            _check_extra(graph, node, kind)
            checked.add(kind.extra)


def _check_extra(graph: Graph, node: Node, kind: TaskKind) -> None:
    """Raise `MissingExtraError` if the extra of ``node``'s kind is not installed."""
    extra = kind.extra
    if extra is not None and importlib.util.find_spec(extra.package) is None:
        what = f"graph {graph.id!r}: node {node.id!r} (task_type {node.task_type!r})"
        raise MissingExtraError(what, extra.package, extra.name)


class Steering:
    """An execution handle's way into a running execution (`aioflow.start`): cancel a node, read the results so far.

    Given to the engine's `execute_graph_async` (``steering=``), which
    attaches the execution to it when the run starts. Its methods are called
    in the event loop's thread of the run. Every call of a steered run can be
    stopped alone, as a call of a node with a timeout can.
    """

    def __init__(self) -> None:
        self._execution: _Execution | None = None
        self._when_started: list[Callable[[], None]] = []

    @property
    def started(self) -> bool:
        """Whether the run has started (it may be over)."""
        return self._execution is not None

    def when_started(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the run's thread) once the run has started: at once if it has."""
        if self._execution is not None:
            callback()
        else:
            self._when_started.append(callback)

    def _attach(self, execution: _Execution) -> None:
        self._execution = execution
        callbacks, self._when_started = self._when_started, []
        for callback in callbacks:
            callback()

    def cancel(self, node_id: NodeId) -> bool:
        """Cancel the firings of ``node_id`` that run, wait for a retry or are ready to be sent.

        Each fails with `NodeCancelledError` (its ``on_error`` links fire); a
        running task is stopped as at a timeout. Returns whether there was
        such a firing (``False``: the node is not running, or the run is over).
        """
        execution = self._execution
        return execution is not None and execution.cancel_node(node_id)

    def results(self) -> Results:
        """The results of the nodes finished so far (as the run will select them)."""
        execution = self._execution
        return Results({}) if execution is None else execution.results()


# The outcome of a call whose result stayed on the pool's workers
# (`ExecutionState.succeeded_on_workers`; the hooks see None for its outputs).
_ON_WORKERS = object()


class _NodeFailed:
    """Why an execution stopped: this node failed and no ``on_error`` link handles it."""

    __slots__ = ("attempts", "error", "node_id")

    def __init__(self, node_id: NodeId, error: BaseException, attempts: tuple[BaseException, ...] = ()) -> None:
        self.node_id = node_id
        self.error = error
        self.attempts = attempts


class _Failure:
    """The outcome of a firing that failed, until it is handed to the state machine."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _InFlight:
    """A call in the pool: for which node, and which firing (``None`` while sent ahead and not adopted)."""

    __slots__ = (
        "call", "cancelled", "executor", "firing", "lane", "node_id", "owner", "parked", "pool", "remote", "started",
        "timed_out",
    )  # fmt: skip

    def __init__(
        self,
        node_id: NodeId,
        firing: Firing | None,
        executor: concurrent.futures.Executor,
        remote: bool = False,
        call: concurrent.futures.Future[Any] | None = None,
    ) -> None:
        self.node_id = node_id
        # The executor's own future, when the engine kept it (to ask the pool which worker ran it).
        self.call = call
        # Its result stays on the pool's workers: the call resolves to a handle.
        self.remote = remote
        self.firing = firing
        self.executor = executor
        # Finished before the state machine fired its node: its outcome waits for the firing.
        self.parked = False
        # For a call that may be stopped alone: its own owner (`OneCall`). For a node
        # with a timeout: when a worker took it (on a pool that does not say, when it
        # was sent), and whether it timed out.
        self.owner: object = None
        self.started: float | None = None
        self.timed_out = False
        # On a run with several pools (``pools=``): the pool of a call not on the run's
        # own pool, and its lane (`_Lane`); ``None`` on the run's own pool.
        self.pool: Pool | None = None
        self.lane: _Lane | None = None
        self.cancelled = False  # from outside (`_Execution.cancel_node`)


class _Lane:
    """The calls of one of a run's named pools (``pools=``) other than its own: the firings ready for it, its window."""

    __slots__ = ("inflight", "pool", "ready", "window")

    def __init__(self, pool: Pool, ready: deque[Firing] | ReadyQueue) -> None:
        self.pool = pool
        self.ready = ready
        self.window = max(_MIN_WINDOW, pool.calls_in_flight)
        self.inflight = 0  # its calls in `_Execution._inflight`


class _Submitted:
    """The executor `loop.run_in_executor` is given when the engine wants the executor's future too.

    It passes the call to the real executor's ``submit`` and keeps the
    `concurrent.futures.Future` it returns (the loop's future wraps it), so
    that the pool can say, once the call is done, which worker ran it
    (`aioflow.pools.Pool.worker_of`).
    """

    __slots__ = ("executor", "future")

    def __init__(self) -> None:
        self.executor: concurrent.futures.Executor | None = None
        self.future: concurrent.futures.Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        assert self.executor is not None
        future = self.future = self.executor.submit(fn, *args, **kwargs)
        return future


class _Execution:
    """One run of one graph on one pool. Used once.

    The driver keeps a bounded window of calls in the pool (`_window`); the
    firings the state machine unlocked beyond it wait in `_ready`. A finished
    call's done-callback queues its future in `_completed` and wakes the
    driver, which hands every completed call to the state machine in one go
    and tops the window up. No task per firing, no polling.

    On a pool that chains calls, the driver also sends nodes *ahead*, as
    its `AheadPlanner` (``_plan``) says: with the pool's futures of their
    predecessors as arguments, before those finish. Such a call belongs to
    no firing until the state machine fires its node (`_queue`: the firing
    adopts it); if one of the predecessors fails, the planner names it and
    the driver cancels it (`_failed`). On a pool that also keeps results on
    its workers, the outputs nobody reads during the run stay there
    (`ExecutionState.succeeded_on_workers`): the successors take them from
    the workers, and the selected ones are fetched at the end
    (`_fetch_kept`).
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
        hooks: HookSet,
        startargs: Mapping[str, Any] | None,
        node_defaults: Mapping[str, Any] | None = None,
        steering: Steering | None = None,
    ) -> None:
        self.graph = graph
        self.outputs = outputs
        self.merge_outputs = merge_outputs
        self.raise_on_error = raise_on_error
        self.timeout = timeout
        self.state = ExecutionState(graph, max_iterations=max_iterations, start_inputs=startargs)
        self._hooks = hooks
        self._observing = bool(hooks.observing)
        self._queued_observed = hooks.queued
        if self._observing:
            from ..events import Event, node_event  # here: a run that nobody observes makes no event

            self._event_class: type[Event] = Event
            self._node_event = node_event
        # For the events of a run that is observed: the executor's future of each call
        # (`_Submitted`), and the worker of each firing that ended, until its event.
        self._submitted = _Submitted()
        # The loop only calls its ``submit``: it passes for an executor.
        self._stand_in = cast("concurrent.futures.Executor", self._submitted)
        self._workers: dict[int, tuple[int, str]] = {}
        self._answering = bool(hooks.answering)
        # What the hooks give each node's calls (`ExecutionHooks.call_context`).
        self._contexts = hooks.call_contexts(graph)
        self._pool: Pool | None = None
        # A run with several pools: a lane per named pool its nodes run on, other than the
        # run's own pool (`run`), the lane of each such node, and their calls in flight.
        self._lanes: list[_Lane] = []
        self._lane_of: dict[NodeId, _Lane] = {}
        self._lane_inflight = 0
        # Per-node timeouts, retries, priorities: None when no node has any.
        controls = node_controls(graph, node_defaults)
        self._control = RunControl(graph, controls) if controls else None
        self._ready: deque[Firing] | ReadyQueue = deque()
        if self._control is not None and self._control.priorities:
            self._ready = ReadyQueue(self._control)
        # Firings whose failed attempt runs again once its delay is over (`_retry_later`), and
        # how many wait for it; the timers of those delays and of the calls' deadlines.
        self._retrying: deque[Firing] = deque()
        self._retries_due = 0
        self._retry_timers: dict[int, tuple[asyncio.TimerHandle, Firing]] = {}  # by `Firing.order`
        # The calls in flight of nodes with a timeout, and their timeouts; the timer that checks
        # them, every `_sweep_period` seconds while there are any (`_sweep`).
        self._timed: dict[_Call, float] = {}
        self._sweep_at: asyncio.TimerHandle | None = None
        self._sweep_period = _SWEEP_MAX
        self._timeout_of: dict[NodeId, float] = {}
        if self._control is not None and self._control.timeouts:
            self._timeout_of = self._control.timeout_of
            shortest = min(self._timeout_of.values())
            self._sweep_period = min(_SWEEP_MAX, max(_SWEEP_MIN, shortest / 20))
        # Every call of a steered run can be stopped alone (`cancel_node`).
        self._steered = steering is not None
        if steering is not None:
            steering._attach(self)
        # The calls past their deadline being stopped (`_timed_out`), and their executors' futures.
        self._stopping: set[asyncio.Task[None]] = set()
        self._stopped: list[concurrent.futures.Future[Any]] = []
        self._inflight: dict[_Call, _InFlight] = {}
        # Finished calls, appended by the loop (`_on_done`) or, on a chaining
        # pool, by the pool's threads (`_arrived`): deque appends are atomic.
        self._completed: deque[_Call] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False  # a `_wake` is queued on the loop
        self._over = False  # calls that finish from now on are no longer awaited
        self._window = 0
        # On a chaining pool with nodes to send ahead or results to keep on
        # the workers: the calls it submits with ``executor.submit``, to keep
        # the pool's futures, are planned here.
        self._plan: _Planner | None = None
        self._interrupted: list[NodeId] = []
        # Outcomes are handed to the state machine in the order of their
        # firings when that order can matter (`_settle`): those that finished
        # before their turn wait here, by `Firing.order`.
        self._in_order = self.state.order_matters
        self._held: dict[int, tuple[Firing, Any]] = {}
        self._next_order = 0
        # There too, a node's calls run one at a time, in the order of their
        # firings (`_submit_ready`): its side effects then happen in the same
        # order on every run. A firing whose node has a call in the pool waits
        # here, by node, until that call finishes (`_release`).
        self._running_nodes: set[NodeId] = set()
        self._waiting: dict[NodeId, deque[Firing]] = {}
        # The node whose call the driver is handling, named by an internal error.
        self._handling: NodeId | None = None
        # The first reason the execution stops early (it is raised at the end).
        self._stop_reason: BaseException | _NodeFailed | None = None

    def results(self) -> Results:
        """The hooks' results (`ExecutionHooks.results`), else those ``outputs=`` and ``merge_outputs=`` select."""
        try:
            results = self._hooks.results(self.state)
        except Exception as exc:
            self._stop_reason = exc  # raised as it is, not as an internal error
            raise
        if results is None:
            results = select_results(self.graph, self.state, self.outputs, self.merge_outputs)
        if self._control is not None and self._control.failed_attempts:
            results.attempts = {nid: tuple(errors) for nid, errors in self._control.failed_attempts.items()}
        return results

    def _emit(
        self,
        kind: EventKind,
        firing: Firing | None = None,
        outputs: Mapping[Any, Any] | None = None,
        error: BaseException | None = None,
        total: int = 0,
        attempt: int = 1,
        state: RunState | None = None,
    ) -> None:
        """Hand an event to the hooks that observe (``on_event`` among them); one that raises stops the run."""
        if not self._observing:
            return
        if firing is None:
            event = self._event_class(
                kind=kind, graph_id=self.graph.id, time=time.monotonic(), total=total, wall=time.time(), state=state
            )
        else:
            ends = kind != "node.started" and kind != "node.queued"
            worker = self._workers.pop(firing.order, None) if ends and self._workers else None
            pid, host = worker if worker is not None else (None, None)
            event = self._node_event(
                kind,
                self.graph.id,
                time.monotonic(),
                firing.node_id,
                firing.number,
                error,
                pid,
                host,
                attempt,
                firing.order,
                time.time(),
            )
        try:
            self._hooks.observe(Step(event, firing, outputs))
        except Exception as exc:
            self._stop(exc)

    def _stop(self, reason: BaseException | _NodeFailed) -> None:
        """Stop the execution early: the driver returns once the call it handles is handled."""
        if self._stop_reason is None:
            self._stop_reason = reason

    async def run(self, pool: Pool, named: Mapping[str, Pool] | None = None) -> Results:
        """Run the graph on ``pool`` (and the nodes that name one on the ``named`` pools); see `execute_graph_async`.

        The safety net: an exception of aioflow's own making (a bug: not an
        aioflow error, not the ``on_event`` callback's, not a cancellation or
        Ctrl-C, which pass as they are) stops the execution like a failed
        node, and is raised as an `ExecutionError` whose ``__cause__`` it is,
        with the results of the nodes that finished.
        """
        self._route(pool, named or {})
        try:
            return await self._run(pool)
        except Exception as exc:
            if isinstance(exc, AioflowError) or exc is self._stop_reason:
                raise
            cause = exc.exceptions[0] if isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1 else exc
            raise self._internal_error(cause) from cause

    def _route(self, pool: Pool, named: Mapping[str, Pool]) -> None:
        """Give each node that names a pool other than ``pool`` its lane.

        Raises:
            GraphError: a node names a pool the run does not have.
        """
        control = self._control
        if control is None:
            return
        lanes: dict[int, _Lane] = {}
        problems = []
        for nid, settings in control.controls.items():
            name = settings.pool
            if name is None:
                continue
            target = named.get(name)
            if target is None:
                known = f"its pools are {', '.join(map(repr, named))}" if named else "it was given no pools="
                problems.append(
                    f"node {nid!r}: 'aioflow': 'pool' names the pool {name!r}, which this execution does not have "
                    f"({known})"
                )
                continue
            if target is pool:
                continue
            lane = lanes.get(id(target))
            if lane is None:
                ready: deque[Firing] | ReadyQueue = ReadyQueue(control) if control.priorities else deque()
                lane = lanes[id(target)] = _Lane(target, ready)
            self._lane_of[nid] = lane
        if problems:
            raise GraphError(self.graph.id, problems)
        self._lanes = list(lanes.values())

    def _internal_error(self, cause: BaseException) -> ExecutionError:
        try:
            results = self.results()
        except Exception:  # what broke may be the state the results come from
            results = Results({})
        node = self._handling
        where = f" while handling node {node!r}" if node is not None else ""
        msg = (
            f"graph {self.graph.id!r}: internal error{where}: {type(cause).__name__}: {cause}; this is a bug "
            "in aioflow, please report it with its traceback (.results holds the outputs of the nodes that finished)"
        )
        return ExecutionError(msg, graph_id=self.graph.id, results=results, node_id=node)

    async def _run(self, pool: Pool) -> Results:
        self._pool = pool
        # Enough calls in the pool to keep every worker busy while the loop
        # hands out the next ones; few enough that a 10,000-wide fan does not
        # hold 10,000 queued calls.
        self._window = max(_MIN_WINDOW, pool.calls_in_flight)
        # A call sent ahead runs before its firing exists: no hook could answer that
        # firing, no deadline or retry could apply to it.
        control = self._control
        plain = control is None or not (control.timeouts or control.retries)
        if pool.chains_calls and not self._answering and plain:
            from ._plan import AheadPlanner  # only a chaining pool (dask, parsl) has a planner

            # The nodes of other pools (``pools=``) are never sent ahead, nor chained to:
            # their data go through the driver, as a node's with a runner of its own.
            own_runner = {nid for nid, c in self._contexts.items() if c.runner} | self._lane_of.keys()
            self._plan = AheadPlanner.for_run(self.state, own_runner, pool.keeps_results_remote)
        self._emit("graph.started", total=len(self.graph.nodes))
        timed_out = False
        ended = False  # else the run was cancelled (or interrupted): its last event says so
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                if self._stop_reason is None:  # on_event may already have failed
                    await self._drive()
        except TimeoutError:
            if not deadline.expired():
                raise  # not the deadline's: a bug, raised as an internal error by `run`
            timed_out = True
        else:
            ended = True
        finally:
            self._over = True
            if self._sweep_at is not None:
                self._sweep_at.cancel()
            for timer, _ in self._retry_timers.values():
                timer.cancel()
            if self._inflight:
                # Calls we stopped waiting for: cancel the queued ones, stop the running ones.
                # (Calls sent ahead whose node never fired did not start, as far as the graph goes.)
                self._interrupted = [slot.node_id for slot in self._inflight.values() if slot.firing is not None]
                lanes = {slot.lane for slot in self._inflight.values() if slot.lane is not None}
                for future, slot in self._inflight.items():
                    future.cancel()
                    (pool if slot.pool is None else slot.pool).leave(self)
                self._inflight.clear()
                await self._abort(pool)
                for lane in lanes:
                    await self._abort(lane.pool)
            if self._stopping:  # calls past their deadline: their workers are gone before the run returns
                await shielded(self._all_stopped())
            stopping = [call for call in self._stopped if not call.done()]
            if stopping:
                # Tasks stopped a moment ago may still be on their way out; one that
                # is not gone after `_STOP_GRACE` could not be stopped (a thread blocked
                # in a C call): as at a timeout of the run, the pool leaves it to finish
                # in the background, with a warning.
                await shielded(run_in_own_thread(concurrent.futures.wait, stopping, _STOP_GRACE))
                if any(not call.done() for call in stopping):
                    await self._abort(pool)
                    for lane in self._lanes:
                        await self._abort(lane.pool)
            if not (ended or timed_out):
                escaping = sys.exc_info()[1]
                cancelled = escaping is None or isinstance(escaping, (asyncio.CancelledError, KeyboardInterrupt))
                self._emit("graph.finished", state="cancelled" if cancelled else "failed")
        if self._plan is not None and self.state.on_workers:
            try:
                await self._fetch_kept(self._plan)
            except BaseException:
                self._emit("graph.finished", state="cancelled" if self._stop_reason is None else "failed")
                raise
        self._emit(
            "graph.finished", state="timeout" if timed_out else "finished" if self._stop_reason is None else "failed"
        )
        return self._outcome(timed_out)

    async def _abort(self, pool: Pool) -> None:
        """Stop this execution's calls on ``pool`` (`Pool.aabort`), shielded; a second Ctrl-C does not skip it."""
        try:
            await shielded(pool.aabort(self))
        except KeyboardInterrupt:
            pool.abort(self)  # finish the stop here
            raise

    async def _all_stopped(self) -> None:
        await asyncio.gather(*self._stopping, return_exceptions=True)

    async def _fetch_kept(self, plan: _Planner) -> None:
        """Fetch the selected outputs the pool kept on its workers: in one request, or node by node if that fails.

        A node whose outputs cannot be fetched (they do not unpickle here, the
        worker that held them is gone) counts as failed, with the pool's
        translation of the reason (`TransferError`, `WorkerLostError`).
        """
        assert self._pool is not None
        selected = selected_nodes(self.graph, self.outputs)
        kept = self.state.on_workers
        wanted = [nid for nid in self.graph.analysis.order if nid in kept and nid in selected]
        if not wanted:
            return
        where_kept = plan.on_workers
        pool = self._pool
        failures: dict[NodeId, BaseException] = {}

        async def fetch() -> list[Any]:
            try:
                return await pool.afetch([where_kept[nid].call.result() for nid in wanted])
            except Exception:
                values = []
                for nid in wanted:  # which one is it?
                    placed = where_kept[nid]
                    try:
                        values.extend(await pool.afetch([placed.call.result()]))
                    except Exception as exc:
                        values.append(None)
                        where = f"graph {self.graph.id!r}: node {nid!r}"
                        failures[nid] = pool.translate(exc, placed.executor, where, node_id=nid)
                return values

        try:
            values = await shielded(asyncio.wait_for(fetch(), _FETCH_TIMEOUT))
        except TimeoutError:
            lost = PoolError(
                f"graph {self.graph.id!r}: the {pool.name!r} pool did not return the outputs "
                f"it kept on its workers within {_FETCH_TIMEOUT:g} s"
            )
            failures = dict.fromkeys(wanted, lost)
            values = [None] * len(wanted)
        for nid, value in zip(wanted, values, strict=True):
            error = failures.get(nid)
            if error is None:
                self.state.output_fetched(nid, value)
                continue
            logger.warning("graph %r: node %r: its outputs could not be fetched: %s", self.graph.id, nid, error)
            self.state.output_lost(nid, error)
            if self.raise_on_error and self._stop_reason is None:
                self._stop_reason = _NodeFailed(nid, error)

    def _outcome(self, timed_out: bool) -> Results:
        results = self.results()
        reason = self._stop_reason
        graph_id = self.graph.id
        if isinstance(reason, _NodeFailed):
            raise NodeError(graph_id, reason.node_id, reason.error, results, reason.attempts) from reason.error
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
        loop = self._loop = asyncio.get_running_loop()
        try:
            self._queue(self.state.start())
        except IterationLimitReached as exc:
            self._stop(exc)
            return
        plan = self._plan
        while True:
            self._submit_ready(loop)
            if plan is not None:
                self._send_ahead(plan)
            if self._stop_reason is not None:
                return
            if not self._inflight and not self._retries_due:
                return  # nothing runs, nothing is ready, nothing waits to run again: the execution is over
            if not self._completed:
                self._handling = None
                self._wakeup = loop.create_future()
                await self._wakeup
            while self._completed:
                self._finish(self._completed.popleft())
                if self._stop_reason is not None:
                    return

    def _on_done(self, future: asyncio.Future[Any]) -> None:
        self._completed.append(future)
        self._rouse()

    def _rouse(self) -> None:
        """Wake the driver if it waits (in the loop's thread)."""
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _arrived(self, future: concurrent.futures.Future[Any]) -> None:
        """A chaining pool's call finished (in any thread): queue it; wake the loop unless a wake-up is on its way.

        A `_wake` queued and not run yet sees this future when it runs (or
        the driver does, before it waits): one wake-up per burst of results.
        """
        if self._over:
            return
        self._completed.append(future)
        if self._wake_pending:
            return
        self._wake_pending = True
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _wake(self) -> None:
        self._wake_pending = False
        self._rouse()

    def _submit_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        pool = self._pool
        assert pool is not None
        while self._retrying and self._stop_reason is None:
            # Attempts that run again (a node with retries): outside the window, which
            # held outcomes may fill while they wait for this firing's.
            firing = self._retrying.popleft()
            self._retries_due -= 1
            self._handling = firing.node_id
            self._send(loop, self.graph.nodes[firing.node_id], firing)
        self._drain(loop, pool, self._ready, None)
        for lane in self._lanes:
            self._drain(loop, lane.pool, lane.ready, lane)

    def _drain(
        self, loop: asyncio.AbstractEventLoop, pool: Pool, ready: deque[Firing] | ReadyQueue, lane: _Lane | None
    ) -> None:
        """Send the ready firings of one pool while its window has room (the run's own pool: ``lane`` None)."""
        plan = self._plan if lane is None else None  # the planner sends only to the run's own pool
        while ready and self._stop_reason is None:
            # The window bounds the calls in the pool, except for the firing
            # whose outcome the held ones wait for: calls sent ahead may fill
            # the window while their firings wait for it.
            if lane is None:
                full = len(self._inflight) - self._lane_inflight >= self._window
            else:
                full = lane.inflight >= lane.window
            if full and not (self._in_order and ready[0].order == self._next_order):
                break
            firing = ready.popleft()
            nid = self._handling = firing.node_id
            if self._in_order and nid in self._running_nodes:
                self._waiting.setdefault(nid, deque()).append(firing)
                continue
            node = self.graph.nodes[nid]
            self._emit("node.started", firing)
            if self._answering:
                try:
                    answered = self._hooks.answer(node, firing)
                except Exception as exc:
                    self._stop(exc)
                    return
                if answered is not None:
                    self._settle(firing, dict(answered))
                    continue
            if plan is None:
                self._send(loop, node, firing)
                continue
            executor = None
            try:
                executor = pool.executor
                self._submit_fired(plan, executor, firing)
            except Exception as exc:  # the pool refused the call (closed, broken)
                self._refused(firing, exc, executor)
                continue
            if self._in_order:
                self._running_nodes.add(nid)

    def _send(self, loop: asyncio.AbstractEventLoop, node: Node, firing: Firing) -> None:
        """Send one attempt of a firing to its pool with ``loop.run_in_executor``; the pool refusing it fails the firing."""
        nid = firing.node_id
        lane = self._lane_of.get(nid) if self._lane_of else None
        pool = self._pool if lane is None else lane.pool
        assert pool is not None
        timeout = self._timeout_of.get(nid) if self._timeout_of else None
        stoppable = timeout is not None or self._steered
        owner: object = OneCall(self) if stoppable else self
        executor = None
        call = None
        try:
            executor = pool.executor
            fn = pool.bind(executor, owner, run_task)
            task_call = self._call(node, firing)
            control = self._control
            if control is not None and control.failing:
                attempt = control.attempt(firing)
                if attempt > 1:
                    task_call = task_call._replace(attempt=attempt)
            if stoppable or (self._observing and not pool.runs_in_this_process):
                submitted = self._submitted
                submitted.executor = executor
                future = loop.run_in_executor(self._stand_in, fn, task_call)
                call, submitted.future = submitted.future, None
            else:
                future = loop.run_in_executor(executor, fn, task_call)
        except Exception as exc:  # the pool refused the call (closed, broken)
            self._refused(firing, exc, executor, pool)
            return
        if self._in_order:
            self._running_nodes.add(nid)
        pool.enter(self)
        slot = self._inflight[future] = _InFlight(nid, firing, executor, call=call)
        if lane is not None:
            slot.pool, slot.lane = pool, lane
            lane.inflight += 1
            self._lane_inflight += 1
        future.add_done_callback(self._on_done)
        if stoppable:
            slot.owner = owner
        if timeout is not None:
            if pool.workers_elsewhere or call is None:
                slot.started = time.monotonic()  # a cluster pool does not say when a worker takes it
            self._timed[future] = timeout
            if self._sweep_at is None:
                self._sweep_at = loop.call_later(self._sweep_period, self._sweep)

    def _refused(
        self,
        firing: Firing,
        exc: BaseException,
        executor: concurrent.futures.Executor | None = None,
        pool: Pool | None = None,
    ) -> None:
        """The pool refused a firing's call (closed, broken): the firing fails."""
        self._failed(firing, self._translate(exc, firing, executor, pool) if executor is not None else exc)

    def _sweep(self) -> None:
        """Fail the calls past their node's timeout (`_finish` stops them); check again in `_sweep_period` if any run.

        A call's clock starts when a worker takes it: the first check that
        finds its future running (every local pool's executor marks it so as
        a worker takes the call) starts it. So one timer watches every timed
        call in flight, with nothing to do per call in the pool's threads,
        and a node fails at most two periods after its deadline.
        """
        self._sweep_at = None
        now = time.monotonic()
        expired = False
        for future, timeout in list(self._timed.items()):
            slot = self._inflight.get(future)
            if slot is None:
                del self._timed[future]
                continue
            started = slot.started
            if started is None:
                call = slot.call
                if call is not None and (call.running() or call.done()):
                    slot.started = now  # taken by a worker since the last check
                continue
            if now - started >= timeout:
                del self._timed[future]
                slot.timed_out = True
                self._completed.append(future)
                expired = True
        if expired:
            self._rouse()
        if self._timed and self._loop is not None:
            self._sweep_at = self._loop.call_later(self._sweep_period, self._sweep)

    def _submit_fired(self, plan: _Planner, executor: concurrent.futures.Executor, firing: Firing) -> None:
        """Submit a firing to a chaining pool: chained to the calls holding its inputs on the workers, if any.

        Raises what the pool's ``submit`` raises when it refuses the call.
        """
        nid = firing.node_id
        send = plan.chain_fired(nid, executor)
        if send is not None:
            future = self._submit_chaining(executor, firing, send)
        else:
            args = (self._call(self.graph.nodes[nid], firing),)
            future = self._submit_to(executor, nid, firing, run_task, args, plan.stays_on_workers(nid))
        plan.submitted(nid, future, executor)

    def _send_ahead(self, plan: _Planner) -> None:
        """Send ahead what the planner says, while the window has room."""
        pool = self._pool
        assert pool is not None
        if len(self._inflight) - self._lane_inflight >= self._window:
            return
        try:
            executor = pool.executor
        except Exception:
            return  # the pool is closing or broken: nodes are sent, and fail, when they fire
        while len(self._inflight) - self._lane_inflight < self._window and self._stop_reason is None:
            send = plan.next_ahead(executor)
            if send is None:
                return
            try:
                future = self._submit_chaining(executor, None, send)
            except Exception:  # refused: the node is sent the usual way when it fires, and fails there
                future = None
            if future is not None:
                plan.sent(send, future, executor)

    def _submit_chaining(
        self, executor: concurrent.futures.Executor, firing: Firing | None, send: Send[_Call]
    ) -> concurrent.futures.Future[Any]:
        """Submit ``send`` for ``firing`` (``None``: ahead of it), chained to the calls it waits for."""
        nid = send.node_id
        node = self.graph.nodes[nid]
        context = self._contexts.get(nid)
        call = TaskCall(
            nid,
            node.label,
            node.task_type,
            node.task_identifier,
            dict(node.default_inputs),
            context.data if context is not None else None,
        )
        args = (ChainedCall(call, send.parts), *send.upstream)
        return self._submit_to(executor, nid, firing, run_chained, args, send.on_workers)

    def _submit_to(
        self,
        executor: concurrent.futures.Executor,
        nid: NodeId,
        firing: Firing | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        remote: bool,
    ) -> concurrent.futures.Future[Any]:
        """Submit a call to a chaining pool with ``executor.submit``, keeping the pool's future.

        Later calls may take that future as an argument. Its done-callback
        (`_arrived`) runs in the pool's thread. Raises what ``submit``
        raises when the pool refuses the call.
        """
        pool = self._pool
        assert pool is not None
        bind = pool.bind_remote if remote else pool.bind
        future = executor.submit(bind(executor, self, fn), *args)
        pool.enter(self)
        self._inflight[future] = _InFlight(nid, firing, executor, remote)
        future.add_done_callback(self._arrived)
        return future

    def _queue(self, firings: list[Firing]) -> None:
        """Queue the firings the state machine unlocked; a firing of a node sent ahead adopts its call."""
        if not firings:
            return
        if self._queued_observed:
            for firing in firings:
                self._emit("node.queued", firing)
        plan = self._plan
        if plan is None:
            if not self._lane_of:
                self._ready.extend(firings)
                return
            for firing in firings:
                lane = self._lane_of.get(firing.node_id)
                (self._ready if lane is None else lane.ready).append(firing)
            return
        for firing in firings:
            lane = self._lane_of.get(firing.node_id) if self._lane_of else None
            if lane is not None:
                lane.ready.append(firing)
                continue
            future = plan.adopt(firing.node_id)
            if future is None:
                self._ready.append(firing)
                continue
            slot = self._inflight[future]
            slot.firing = firing
            self._emit("node.started", firing)
            if slot.parked:  # it finished before its node fired: its outcome is due now
                self._completed.append(future)

    def _call(self, node: Node, firing: Firing) -> TaskCall:
        """The picklable call a worker runs for this firing."""
        context = self._contexts.get(firing.node_id) if self._contexts else None
        if context is None:
            return TaskCall(firing.node_id, node.label, node.task_type, node.task_identifier, firing.inputs)
        return TaskCall(
            firing.node_id,
            node.label,
            node.task_type,
            node.task_identifier,
            firing.inputs,
            context.data,
            context.runner,
            firing.input_tags,
        )

    def _finish(self, future: _Call) -> None:
        slot = self._inflight.get(future)
        if slot is None:
            return  # cancelled by run()'s cleanup, or voided
        self._handling = slot.node_id
        firing = slot.firing
        if firing is None:  # sent ahead, and its node has not fired (yet)
            slot.parked = True
            return
        del self._inflight[future]
        executor = slot.executor
        pool = slot.pool or self._pool
        assert pool is not None
        pool.leave(self)
        if slot.lane is not None:
            slot.lane.inflight -= 1
            self._lane_inflight -= 1
        if self._timed:
            self._timed.pop(future, None)
        if self._observing:
            call = slot.call
            if call is None and isinstance(future, concurrent.futures.Future):
                call = future  # a chaining pool's own future (`_submit_to`)
            worker = pool.worker_of(call)
            if worker is not None:
                self._workers[firing.order] = worker
        error: BaseException | None
        if slot.timed_out or slot.cancelled:
            error = self._stop_call(future, slot)
        elif future.cancelled():  # the pool gave up on the call (not this execution)
            error = PoolError(f"graph {self.graph.id!r}: node {firing.node_id!r}: the pool cancelled the call")
        else:
            error = future.exception()
            if error is not None:
                error = self._translate(error, firing, executor, pool)
        if error is not None:
            if self._control is not None:
                delay = self._control.failed(firing, error)
                if delay is not None:
                    self._retry_later(firing, error, delay)
                    return  # the node stays running (`_release`) until its last attempt
            if self._in_order:
                self._release(firing.node_id)
            self._failed(firing, error, future)
            return
        if self._in_order:
            self._release(firing.node_id)
        plan = self._plan
        if plan is None:
            self._settle(firing, future.result())
            return
        plan.succeeded(firing.node_id, future, executor, slot.remote)
        # Kept on the workers, the result is a handle the state machine never reads.
        self._settle(firing, _ON_WORKERS if slot.remote else future.result())

    def _stop_call(self, future: _Call, slot: _InFlight) -> NodeTimeoutError | NodeCancelledError:
        """Stop a call that ran past its node's timeout, or was cancelled (in the background); its firing's error."""
        pool = slot.pool or self._pool
        assert pool is not None
        assert slot.firing is not None
        future.cancel()  # its outcome, if it ever comes, is nobody's
        stop = asyncio.ensure_future(pool.astop_call(slot.executor, slot.owner, slot.call))
        if slot.call is not None:
            self._stopped.append(slot.call)
        self._stopping.add(stop)
        stop.add_done_callback(self._stopping.discard)
        nid = slot.firing.node_id
        if slot.cancelled:
            return NodeCancelledError(self.graph.id, nid, pool.stops_one_call)
        timeout = self._timeout_of[nid]
        return NodeTimeoutError(self.graph.id, nid, timeout, pool.stops_one_call)

    def cancel_node(self, nid: NodeId) -> bool:
        """`Steering.cancel`: fail the firings of ``nid`` that run, wait to run again, or are ready."""
        if self._over:
            return False
        found = False
        for future, slot in self._inflight.items():
            firing = slot.firing
            if firing is not None and firing.node_id == nid and not (future.done() or slot.cancelled or slot.timed_out):
                slot.cancelled = True
                self._completed.append(future)  # `_finish` fails it and stops its call
                found = True
        # Failed attempts waiting to run again: the node counts as running meanwhile.
        waiting = [f for f in self._retrying if f.node_id == nid]
        for firing in waiting:
            self._retrying.remove(firing)
        for order, (timer, firing) in list(self._retry_timers.items()):
            if firing.node_id == nid:
                timer.cancel()
                del self._retry_timers[order]
                waiting.append(firing)
        for firing in waiting:
            self._retries_due -= 1
            if self._in_order:
                self._release(nid)
            self._failed(firing, NodeCancelledError(self.graph.id, nid, "it was waiting to run again"))
        # Ready, not sent yet (in the driver's queue, or behind a firing of the same node): they start and fail.
        lane = self._lane_of.get(nid) if self._lane_of else None
        queue = self._ready if lane is None else lane.ready
        ready = [f for f in queue if f.node_id == nid]
        ready += list(self._waiting.pop(nid, ()))
        if ready:
            kept = queue.without(nid) if isinstance(queue, ReadyQueue) else deque(f for f in queue if f.node_id != nid)
            if lane is None:
                self._ready = kept
            else:
                lane.ready = kept
            for firing in ready:
                self._emit("node.started", firing)
                self._failed(firing, NodeCancelledError(self.graph.id, nid, "it had not started"))
        found = found or bool(waiting) or bool(ready)
        if found:
            self._rouse()
        return found

    def _retry_later(self, firing: Firing, error: BaseException, delay: float) -> None:
        """An attempt of ``firing`` failed and its node retries it: once ``delay`` seconds have passed."""
        assert self._control is not None
        assert self._loop is not None
        self._emit("node.retried", firing, error=error, attempt=self._control.attempt(firing) - 1)
        self._retries_due += 1
        if delay <= 0:
            self._retrying.append(firing)
            return
        self._retry_timers[firing.order] = (self._loop.call_later(delay, self._retry_due, firing), firing)

    def _retry_due(self, firing: Firing) -> None:
        del self._retry_timers[firing.order]
        self._retrying.append(firing)
        self._rouse()

    def _release(self, nid: NodeId) -> None:
        """``nid``'s call is over: its next waiting firing, if any, is the next to run."""
        self._running_nodes.discard(nid)
        waiting = self._waiting.get(nid)
        if waiting:
            lane = self._lane_of.get(nid) if self._lane_of else None
            (self._ready if lane is None else lane.ready).appendleft(waiting.popleft())
            if not waiting:
                del self._waiting[nid]

    def _failed(self, firing: Firing, error: BaseException, future: _Call | None = None) -> None:
        """A firing failed: void the calls sent ahead that waited for it, then settle it.

        ``future``: its call; ``None`` if the pool refused it.
        """
        plan = self._plan
        if plan is not None:
            assert self._pool is not None
            for voided in plan.failed(firing.node_id, future):
                del self._inflight[voided]
                voided.cancel()
                self._pool.leave(self)
        self._settle(firing, _Failure(error))

    def _settle(self, firing: Firing, outcome: Any) -> None:
        """Hand a finished firing's outcome (its result, or a `_Failure`) to the state machine.

        When the order can change what fires (`ExecutionState.order_matters`),
        outcomes are handed over in the order the state machine made their
        firings, whatever order they finished in: one that finished early
        waits in `_held` for those made before it. The execution then gives
        the same firings and results on every run.
        """
        if not self._in_order:
            self._hand_over(firing, outcome)
            return
        held = self._held
        held[firing.order] = (firing, outcome)
        while self._next_order in held and self._stop_reason is None:
            firing, outcome = held.pop(self._next_order)
            self._next_order += 1
            self._hand_over(firing, outcome)

    def _hand_over(self, firing: Firing, outcome: Any) -> None:
        self._handling = firing.node_id
        if isinstance(outcome, _Failure):
            self._fail(firing, outcome.error)
            return
        if outcome is _ON_WORKERS:
            self._emit("node.finished", firing)
            try:
                self._queue(self.state.succeeded_on_workers(firing))
            except IterationLimitReached as exc:
                self._stop(exc)
            return
        if type(outcome) is TaskOutcome:  # outputs with their tokens (tasks run by ewokscore)
            outputs, tags = outcome.outputs, outcome.tags
        else:
            outputs, tags = outcome, None
        control = self._control
        if control is None or not control.failing:
            self._emit("node.finished", firing, outputs)
        else:
            self._emit("node.finished", firing, outputs, attempt=control.attempt(firing))
            control.done(firing)
        try:
            self._queue(self.state.succeeded(firing, outputs, tags))
        except IterationLimitReached as exc:
            self._stop(exc)

    def _fail(self, firing: Firing, error: BaseException) -> None:
        attempts = self._control.errors(firing) if self._control is not None else ()
        kind: EventKind = "node.cancelled" if isinstance(error, NodeCancelledError) else "node.failed"
        self._emit(kind, firing, error=error, attempt=max(1, len(attempts)))
        try:
            nxt = self.state.failed(firing, error)
        except IterationLimitReached as exc:
            self._stop(exc)
            return
        if firing.node_id in self.state.errors and self.raise_on_error:
            self._stop(_NodeFailed(firing.node_id, error, attempts))
            return
        self._queue(nxt)

    def _translate(
        self, exc: BaseException, firing: Firing, executor: concurrent.futures.Executor, pool: Pool | None = None
    ) -> BaseException:
        """Turn a pool's low-level failure into an error that says what happened and what to do."""
        pool = pool or self._pool
        assert pool is not None
        where = f"graph {self.graph.id!r}: node {firing.node_id!r}"
        return pool.translate(exc, executor, where, node_id=firing.node_id)
