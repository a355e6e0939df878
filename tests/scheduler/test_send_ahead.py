"""Sending nodes ahead on a pool that chains calls (`Pool.chains_calls`).

The pool here, `ChainingPool`, runs calls in threads of this process and
keeps the chaining contract the way a cluster does: a call given pool futures
as arguments waits, without occupying a worker, until their calls have
*finished on a worker*, which may be before the scheduler hears of it; a call
whose dependency failed or was cancelled fails without running. It records
every call it receives, and lets a test hold a node's run or the delivery of
its outcome to the scheduler until another call was submitted or delivered,
so that each path of the scheduler (sent ahead, parked, voided, interrupted)
is reached on purpose rather than by timing.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
import prop_tasks
import pytest
import reference
from graphs import COUNTING_LOOP, defaults, node, rv
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from test_properties import (
    BUDGET,
    LINK_ORDER_DOC,
    Doc,
    canonical_errors,
    dags,
    executable_graphs,
    load,
    load_or_refuse,
    run_reference,
    timing_independent,
)

import aioflow
from aioflow import MISSING, ExecutionTimeoutError, GraphError, NodeError
from aioflow._tasks import ChainedCall, TaskCall
from aioflow.pools import Pool, PoolOptions
from aioflow.pools._futures import settle
from aioflow.scheduler._ahead import fires_at_most_once, outputs_with_tokens, sendable_ahead

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aioflow.graph import Graph

# A guard, not a measure: an execution whose held call is never released
# fails with ExecutionTimeoutError after this long instead of hanging.
GUARD = 10.0

# Seconds the pool's shutdown waits for its calls to settle before failing the test.
SHUTDOWN_DEADLINE = 30.0

Stage = Literal["run", "delivery"]
Trigger = Literal["submitted", "delivered"]


def ahead_of(graph: Graph) -> frozenset[Any]:
    """The nodes of ``graph`` a chaining pool may run ahead when no hook gives a node a runner of its own."""
    return sendable_ahead(graph, outputs_with_tokens(graph, ()))


# --------------------------------------------------------------------------- the chaining pool


class Gate:
    """Holds continuations until it is opened; opening runs them, in the opener's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False
        self._waiting: list[Callable[[], None]] = []

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        with self._lock:
            self._open = True
            waiting, self._waiting = self._waiting, []
        for fn in waiting:
            fn()

    def then(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` now if the gate is open, else when it opens."""
        with self._lock:
            if not self._open:
                self._waiting.append(fn)
                return
        fn()


@dataclass
class CallRecord:
    """What the pool saw of one call.

    Attributes:
        node_id: the node the call runs.
        chained: submitted with pool futures as arguments (the node was sent ahead).
        deps: the nodes of the calls it waited for.
        early: submitted while one of those calls had not finished on its worker.
        ran: the task ran.
        outcome: ``pending``, ``succeeded``, ``failed``, ``skipped`` (a dependency
            failed or was cancelled: not run) or ``cancelled`` (before running).
        delivered: the rank of the delivery of its outcome to the scheduler, among all deliveries.
    """

    node_id: Any
    chained: bool
    deps: tuple[Any, ...]
    early: bool
    ran: bool = False
    outcome: str = "pending"
    delivered: int | None = None


@dataclass
class _Call:
    record: CallRecord
    outer: concurrent.futures.Future[Any]  # what the scheduler awaits
    inner: concurrent.futures.Future[Any]  # the outcome on the worker: what dependent calls wait for
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    positions: tuple[int, ...]
    waited: tuple[concurrent.futures.Future[Any], ...]


def _node_of(args: tuple[Any, ...]) -> Any:
    first = args[0] if args else None
    if isinstance(first, ChainedCall):
        return first.call.node_id
    if isinstance(first, TaskCall):
        return first.node_id
    return None


def _cancel(future: concurrent.futures.Future[Any]) -> None:
    """Cancel a future nobody runs, and mark it notified (`concurrent.futures.wait` counts only those as done)."""
    future.cancel()
    future.set_running_or_notify_cancel()


class _ChainingExecutor(concurrent.futures.Executor):
    """Threads that run calls once the calls they take as arguments have finished."""

    def __init__(self, pool: ChainingPool, max_workers: int) -> None:
        self._pool = pool
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="chaining-test")
        self._lock = threading.Lock()
        self._calls: dict[concurrent.futures.Future[Any], _Call] = {}
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        positions = tuple(i for i, arg in enumerate(args) if isinstance(arg, concurrent.futures.Future))
        with self._lock:
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            if positions and self._pool.refuse_chained:
                msg = "this pool refuses calls that wait for others"
                raise RuntimeError(msg)
            upstream = [self._calls.get(args[i]) for i in positions]
            waited = tuple(u.inner if u is not None else args[i] for u, i in zip(upstream, positions, strict=True))
            record = CallRecord(
                node_id=_node_of(args),
                chained=bool(positions),
                deps=tuple(u.record.node_id if u is not None else None for u in upstream),
                early=any(not w.done() for w in waited),
            )
            outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
            call = _Call(record, outer, concurrent.futures.Future(), fn, args, kwargs, positions, waited)
            self._calls[outer] = call
        self._pool._recorded(record)
        if not waited:
            self._ready(call)
        else:
            remaining = [len(waited)]
            count_lock = threading.Lock()

            def one_done(_: concurrent.futures.Future[Any]) -> None:
                with count_lock:
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last:
                    self._ready(call)

            for w in waited:
                w.add_done_callback(one_done)
        return outer

    def _ready(self, call: _Call) -> None:
        """Every call it waits for has finished (from any thread)."""
        record = call.record
        if call.outer.cancelled():
            record.outcome = "cancelled"
            _cancel(call.inner)
            return
        error: BaseException | None = None
        for w in call.waited:
            if w.cancelled():
                error = concurrent.futures.CancelledError("a call it waits for was cancelled")
            elif w.exception() is not None:
                error = w.exception()
            if error is not None:
                break
        if error is not None:  # fail without running
            record.outcome = "skipped"
            call.inner.set_exception(error)
            self._pool._held(record.node_id, "delivery", lambda: self._deliver(call, None, error))
            return
        values = list(call.args)
        for position, w in zip(call.positions, call.waited, strict=True):
            values[position] = w.result()
        self._pool._held(record.node_id, "run", lambda: self._queue(call, tuple(values)))

    def _queue(self, call: _Call, args: tuple[Any, ...]) -> None:
        try:
            self._threads.submit(self._run, call, args)
        except RuntimeError as exc:  # shut down
            call.record.outcome = "cancelled"
            call.inner.set_exception(exc)
            settle(call.outer, error=exc)

    def _run(self, call: _Call, args: tuple[Any, ...]) -> None:
        record = call.record
        if not call.outer.set_running_or_notify_cancel():
            record.outcome = "cancelled"
            _cancel(call.inner)
            return
        record.ran = True
        result: Any = None
        error: BaseException | None = None
        try:
            result = call.fn(*args, **call.kwargs)
        except BaseException as exc:
            error = exc
            record.outcome = "failed"
            call.inner.set_exception(exc)
        else:
            record.outcome = "succeeded"
            call.inner.set_result(result)
        self._pool._held(record.node_id, "delivery", lambda: self._deliver(call, result, error))

    def _deliver(self, call: _Call, result: Any, error: BaseException | None) -> None:
        call.record.delivered = self._pool._next_delivery()
        settle(call.outer, result=result, error=error)
        self._pool._happened("delivered", call.record.node_id)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            calls = list(self._calls.values())
        if cancel_futures:
            for call in calls:
                call.outer.cancel()  # only those not running yet
        self._pool.open_all_gates()  # nothing is held past shutdown
        if wait:
            _, stuck = concurrent.futures.wait([call.inner for call in calls], timeout=SHUTDOWN_DEADLINE)
            if stuck:  # fail loudly rather than hang the suite
                names = sorted(str(call.record.node_id) for call in calls if call.inner in stuck)
                msg = f"the chaining test pool could not settle the calls of {names} at shutdown"
                raise AssertionError(msg)
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)


class ChainingPool(Pool):
    """An in-process pool that chains calls, records them, and holds them on request."""

    name = "chaining-test"
    chains_calls = True

    def __init__(self, options: PoolOptions) -> None:
        super().__init__(options)
        self.records: list[CallRecord] = []
        #: Make ``submit`` raise for a call given futures (a node sent ahead).
        self.refuse_chained = False
        self._record_lock = threading.Lock()
        self._deliveries = 0
        self._gates: dict[tuple[Stage, Any], Gate] = {}
        self._openers: dict[tuple[Trigger, Any], list[Gate]] = {}

    def _create_executor(self) -> concurrent.futures.Executor:
        return _ChainingExecutor(self, self.capacity)

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        executor.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------ for tests

    def hold(self, node_id: Any, stage: Stage, until: tuple[Trigger, Any] | None = None) -> Gate:
        """Hold the ``run`` of every call of ``node_id``, or the ``delivery`` of its outcome to the scheduler.

        With ``until=("submitted"|"delivered", other)``, the gate opens when a
        call of ``other`` is submitted, or its outcome delivered; else it
        opens when the test opens it, or when the executor shuts down.
        """
        gate = self._gates[(stage, node_id)] = Gate()
        if until is not None:
            self._openers.setdefault(until, []).append(gate)
        return gate

    def open_all_gates(self) -> None:
        for gate in list(self._gates.values()):
            gate.open()

    def delivered(self, node_id: Any) -> int:
        """The rank of the delivery of the outcome of the one call of ``node_id``."""
        rank = self.call(node_id).delivered
        assert rank is not None, f"the outcome of {node_id!r} was not delivered"
        return rank

    def calls(self, node_id: Any) -> list[CallRecord]:
        return [r for r in self.records if r.node_id == node_id]

    def call(self, node_id: Any) -> CallRecord:
        """The one call of ``node_id``."""
        (record,) = self.calls(node_id)
        return record

    def sent_ahead(self) -> set[Any]:
        return {r.node_id for r in self.records if r.chained}

    def sent_early(self) -> set[Any]:
        return {r.node_id for r in self.records if r.early}

    # ------------------------------------------------------------ for the executor

    def _recorded(self, record: CallRecord) -> None:
        with self._record_lock:
            self.records.append(record)
        self._happened("submitted", record.node_id)

    def _happened(self, trigger: Trigger, node_id: Any) -> None:
        for gate in self._openers.get((trigger, node_id), ()):
            gate.open()

    def _held(self, node_id: Any, stage: Stage, fn: Callable[[], None]) -> None:
        gate = self._gates.get((stage, node_id))
        if gate is None:
            fn()
        else:
            gate.then(fn)

    def _next_delivery(self) -> int:
        with self._record_lock:
            self._deliveries += 1
            return self._deliveries


def chaining_pool(max_workers: int = 2) -> ChainingPool:
    return ChainingPool(PoolOptions(max_workers=max_workers))


@pytest.fixture
def pool() -> Iterator[ChainingPool]:
    opened = chaining_pool()
    try:
        yield opened
    finally:
        opened.close()


# --------------------------------------------------------------------------- graphs and helpers


def chain(n: int) -> dict[str, Any]:
    nodes = [node(f"c{i}", default_inputs=defaults(x=0) if i == 0 else []) for i in range(n)]
    links = [rv(f"c{i}", f"c{i + 1}") for i in range(n - 1)]
    return {"graph": {"id": "chain"}, "nodes": nodes, "links": links}


def fan(n: int) -> dict[str, Any]:
    """root -> n leaves (leaf i: root + i) -> join (their sum)."""
    leaves = [node(f"l{i}", "tasks.add", default_inputs=defaults(b=i)) for i in range(n)]
    links = [rv("root", f"l{i}", "a") for i in range(n)] + [rv(f"l{i}", "join", f"v{i}") for i in range(n)]
    return {"graph": {"id": "fan"}, "nodes": [node("root"), *leaves, node("join", "tasks.add_all")], "links": links}


def lattice(k: int) -> dict[str, Any]:
    """p<i><j> = p<i-1><j> + p<i><j-1>."""
    nodes = [node("p00")] + [node(f"p{i}{j}", "tasks.add") for i in range(k) for j in range(k) if (i, j) != (0, 0)]
    links = [rv(f"p{i - 1}{j}", f"p{i}{j}", "a") for i in range(1, k) for j in range(k)]
    links += [rv(f"p{i}{j - 1}", f"p{i}{j}", "b") for i in range(k) for j in range(1, k)]
    return {"graph": {"id": "lattice"}, "nodes": nodes, "links": links}


ALL = {"outputs": [{"all": True}], "merge_outputs": False}


async def on_threads(graph: Any, **options: Any) -> aioflow.Results:
    """The same execution on the thread pool: what the chaining pool must give."""
    return await aioflow.execute_graph_async(graph, pool_type="thread", max_workers=2, **options)


async def on_chaining(graph: Any, pool: ChainingPool, **options: Any) -> aioflow.Results:
    return await aioflow.execute_graph_async(graph, pool=pool, **{"timeout": GUARD, **options})


async def assert_same_as_threads(graph: Any, pool: ChainingPool, **options: Any) -> aioflow.Results:
    """Outputs of every node, errors and executions equal the thread pool's; returns the chaining pool's results."""
    options = {**ALL, "raise_on_error": False, **options}
    got = await on_chaining(graph, pool, **options)
    expected = await on_threads(graph, **{k: v for k, v in options.items() if k != "on_event"})
    assert prop_tasks.canonical(dict(got)) == prop_tasks.canonical(dict(expected))
    assert canonical_errors(got.errors) == canonical_errors(expected.errors)
    assert got.executions == expected.executions
    return got


def one_call_per_firing(pool: ChainingPool, results: aioflow.Results) -> None:
    """No node was both sent ahead and submitted when it fired: one call per execution."""
    counts = Counter(r.node_id for r in pool.records)
    for nid, executions in results.executions.items():
        assert counts[nid] == executions, nid


class EventLog:
    def __init__(self) -> None:
        self.events: list[aioflow.Event] = []

    def __call__(self, event: aioflow.Event) -> None:
        self.events.append(event)

    def kinds(self, node_id: Any) -> list[str]:
        """The node's events but ``node.queued`` (`assert_sane` checks that one precedes each start)."""
        return [e.kind for e in self.events if e.node_id == node_id and e.kind != "node.queued"]

    def index(self, kind: str, node_id: Any) -> int:
        return next(i for i, e in enumerate(self.events) if e.kind == kind and e.node_id == node_id)

    def nodes(self, kind: str) -> list[Any]:
        return [e.node_id for e in self.events if e.kind == kind]

    def assert_sane(self) -> None:
        """Every node that started ended once, after it started; graph events frame the rest."""
        assert self.events[0].kind == "graph.started"
        assert self.events[-1].kind == "graph.finished"
        started = Counter(self.nodes("node.started"))
        ended = Counter(self.nodes("node.finished") + self.nodes("node.failed"))
        assert started == ended
        for nid in started:
            kinds = [e.kind for e in self.events if e.node_id == nid]
            assert kinds[0::3] == ["node.queued"] * started[nid], nid
            assert kinds[1::3] == ["node.started"] * started[nid], nid
            assert all(k in ("node.finished", "node.failed") for k in kinds[2::3]), nid


# --------------------------------------------------------------------------- shapes


async def test_chain_of_50(pool: ChainingPool) -> None:
    """Every link of a chain is sent ahead while the first node is held: one call per node, the right result."""
    pool.hold("c0", "run", until=("submitted", "c5"))
    got = await assert_same_as_threads(chain(50), pool)
    assert got["c49"] == {"return_value": 50}
    assert got.executions == {f"c{i}": 1 for i in range(50)}
    assert {f"c{i}" for i in range(1, 6)} <= pool.sent_early()
    assert pool.call("c1").deps == ("c0",)
    assert all(r.ran for r in pool.records)
    one_call_per_firing(pool, got)


async def test_fan_of_50_and_join(pool: ChainingPool) -> None:
    """Leaves go ahead of the root; the join is sent once; the sum is right."""
    pool.hold("root", "run", until=("submitted", "l9"))
    got = await assert_same_as_threads(fan(50), pool)
    assert got["join"] == {"return_value": 50 + sum(range(50))}
    assert set(got.executions.values()) == {1}
    assert len(got.executions) == 52
    assert {f"l{i}" for i in range(10)} <= pool.sent_early()
    one_call_per_firing(pool, got)


async def test_lattice_4x4(pool: ChainingPool) -> None:
    """Every node of a lattice (two in-links each) is sent ahead before the corner runs."""
    pool.hold("p00", "run", until=("submitted", "p33"))
    got = await assert_same_as_threads(lattice(4), pool)
    assert got["p33"] == {"return_value": 20}  # C(6, 3) paths from p00
    assert got.executions == {f"p{i}{j}": 1 for i in range(4) for j in range(4)}
    assert pool.sent_early() == {f"p{i}{j}" for i in range(4) for j in range(4)} - {"p00"}
    assert set(pool.call("p11").deps) == {"p01", "p10"}
    one_call_per_firing(pool, got)


# --------------------------------------------------------------------------- link data


def ppf_node(nid: Any, func: str = "tasks.ppf_add", **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "ppfmethod", "task_identifier": func, **attrs}


def mapping(*pairs: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"source_output": s, "target_input": t} for s, t in pairs]


# (graph, the node sent ahead whose inputs are checked, the start node held until it is submitted)
DATA_CASES = {
    "map_all_data": (
        {
            "nodes": [
                node("s", default_inputs=defaults(x=1)),
                ppf_node("p", default_inputs=defaults(b=10)),
                node("t", "tasks.echo"),
                node("u", "tasks.echo"),
            ],
            "links": [
                {"source": "s", "target": "p", "data_mapping": mapping(("return_value", "a"))},
                {"source": "p", "target": "t", "map_all_data": True},
                {"source": "s", "target": "u", "map_all_data": True},
            ],
        },
        "t",
        "s",
    ),
    "data_mapping": (
        {
            "nodes": [node("s"), node("t", "tasks.echo")],
            "links": [
                {"source": "s", "target": "t", "data_mapping": mapping(("return_value", "y"), ("return_value", 0))},
            ],
        },
        "t",
        "s",
    ),
    "missing_output": (
        {
            "nodes": [node("s"), node("t", "tasks.echo")],
            "links": [
                {
                    "source": "s",
                    "target": "t",
                    "data_mapping": mapping(("nope", "m"), ("nope", 1), ("return_value", 0)),
                },
            ],
        },
        "t",
        "s",
    ),
    "default_inputs": (
        {
            "nodes": [node("s"), node("t", "tasks.echo", default_inputs=defaults(x=100, y=7))],
            "links": [rv("s", "t", "x")],
        },
        "t",
        "s",
    ),
    "ppf_target": (
        {
            "nodes": [
                ppf_node("s", default_inputs=defaults(a=1, b=2)),
                ppf_node("t", default_inputs=defaults(b=5, c=9)),
            ],
            "links": [{"source": "s", "target": "t", "map_all_data": True}],
        },
        "t",
        "s",
    ),
    "ppfport": (
        {
            "nodes": [ppf_node("s", default_inputs=defaults(a=1, b=2)), {"id": "t", "task_type": "ppfport"}],
            "links": [{"source": "s", "target": "t", "map_all_data": True}],
        },
        "t",
        "s",
    ),
}


@pytest.mark.parametrize(("graph", "target", "start"), DATA_CASES.values(), ids=DATA_CASES.keys())
async def test_link_data_is_built_as_the_state_machine_builds_it(
    pool: ChainingPool, graph: dict[str, Any], target: Any, start: Any
) -> None:
    """A node sent ahead gets exactly the inputs it gets on the thread pool."""
    pool.hold(start, "run", until=("submitted", target))
    got = await assert_same_as_threads(graph, pool, inputs=[{"id": target, "name": "z", "value": 3}])
    assert pool.call(target).chained
    assert pool.call(target).early
    one_call_per_firing(pool, got)


async def test_missing_output_arrives_as_missing(pool: ChainingPool) -> None:
    """An output the source lacks is MISSING: dropped as a named input, kept as a positional gap."""
    graph, target, start = DATA_CASES["missing_output"]
    pool.hold(start, "run", until=("submitted", target))
    got = await on_chaining(graph, pool)
    assert got == {"return_value": {"args": [1, MISSING], "kwargs": {}}}
    assert pool.call(target).chained


async def test_default_inputs_lie_under_link_data(pool: ChainingPool) -> None:
    graph, target, start = DATA_CASES["default_inputs"]
    pool.hold(start, "run", until=("submitted", target))
    got = await on_chaining(graph, pool)
    assert got == {"return_value": {"args": [], "kwargs": {"x": 1, "y": 7}}}
    assert pool.call(target).chained


def in_link_order(first: str) -> dict[str, Any]:
    """a and b both deliver return_value to t; the link from ``first`` comes first.

    a is held until b's outcome was delivered: the data of the later link
    must win whatever the order the two finish in.
    """
    links = {"a": {"source": "a", "target": "t", "map_all_data": True}}
    links["b"] = {"source": "b", "target": "t", "map_all_data": True}
    second = "b" if first == "a" else "a"
    return {
        "graph": {"id": "order"},
        "nodes": [
            node("s"),
            node("a", "tasks.add", default_inputs=defaults(a=10)),
            node("b", "tasks.add", default_inputs=defaults(a=20)),
            node("t", "tasks.echo"),
        ],
        "links": [rv("s", "a", "b"), rv("s", "b", "b"), links[first], links[second]],
    }


@pytest.mark.parametrize("first", ["a", "b"])
async def test_in_links_merge_in_link_order(pool: ChainingPool, first: str) -> None:
    """With several in-links writing one input, the later link in the document wins (spec §6.3)."""
    graph = in_link_order(first)
    pool.hold("s", "run", until=("submitted", "t"))
    pool.hold("a", "run", until=("delivered", "b"))
    got = await assert_same_as_threads(graph, pool)
    winner = 21 if first == "a" else 11
    assert got["t"] == {"return_value": {"args": [], "kwargs": {"return_value": winner}}}
    assert set(pool.call("t").deps) == {"a", "b"}
    assert pool.delivered("b") < pool.delivered("a")


def known_and_pending(known_first: bool) -> dict[str, Any]:
    """t has two in-links: one from q, finished before t is sent; one from p, still running.

    p is fired after a conditional link (``required: true`` keeps it firing
    at most once), so it is not sent ahead itself: t is sent when p is
    submitted, with q's data already known and p's future.
    """
    to_t = {
        "q": {"source": "q", "target": "t", "map_all_data": True},
        "p": {"source": "p", "target": "t", "map_all_data": True},
    }
    order = ["q", "p"] if known_first else ["p", "q"]
    return {
        "graph": {"id": "known_and_pending"},
        "nodes": [
            node("q", default_inputs=defaults(x=10)),
            node("c", default_inputs=defaults(x=0)),
            node("p", default_inputs=defaults(x=20)),
            node("t", "tasks.echo", default_inputs=defaults(return_value=-1, d=0)),
        ],
        "links": [
            {
                "source": "c",
                "target": "p",
                "conditions": [{"source_output": "return_value", "value": 1}],
                "required": True,
            },
            *(to_t[k] for k in order),
        ],
    }


@pytest.mark.parametrize("known_first", [True, False], ids=["known_first", "pending_first"])
async def test_known_and_pending_link_data_merge_in_link_order(pool: ChainingPool, known_first: bool) -> None:
    """Link data the scheduler already has and data built on the worker merge in link order."""
    graph = known_and_pending(known_first)
    assert "p" not in ahead_of(aioflow.load_graph(graph))
    pool.hold("c", "delivery", until=("delivered", "q"))  # q is processed before p fires
    pool.hold("p", "run", until=("submitted", "t"))
    got = await assert_same_as_threads(graph, pool)
    winner = 21 if known_first else 11  # the return_value of p's link, or of q's: the later link wins
    assert got["t"]["return_value"]["kwargs"] == {"d": 0, "return_value": winner}
    assert pool.call("t").chained
    assert pool.call("t").deps == ("p",)  # q's data travelled with the call
    assert not pool.call("p").chained


# --------------------------------------------------------------------------- never sent ahead


# (graph, the nodes that must not be sent ahead); each graph also has a node
# "u" that is sent ahead, next to them, from the same source.
NEVER_AHEAD = {
    "conditional": (
        {
            "nodes": [node("s"), node("t"), node("u")],
            "links": [
                rv("s", "t", conditions=[{"source_output": "return_value", "value": 1}], required=True),
                rv("s", "u"),
            ],
        },
        {"t"},
    ),
    "optional": (
        {"nodes": [node("s"), node("t"), node("u")], "links": [rv("s", "t", required=False), rv("s", "u")]},
        {"t"},
    ),
    "on_error": (
        {
            "nodes": [node("s", "tasks.fail"), node("t", "tasks.echo"), node("u")],
            "links": [{"source": "s", "target": "t", "on_error": True, "required": True}, rv("s", "u")],
        },
        {"t"},
    ),
    "cycle": (
        {
            **COUNTING_LOOP,
            "nodes": [*COUNTING_LOOP["nodes"], {"id": "u", "task_type": "ppfport"}],
            "links": [*COUNTING_LOOP["links"], {"source": "start", "target": "u", "map_all_data": True}],
        },
        {"again", "end"},
    ),
    "forced_start_node": (
        {"nodes": [node("s"), node("t", force_start_node=True), node("u")], "links": [rv("s", "t"), rv("s", "u")]},
        {"t"},
    ),
    "downstream_of_optional": (
        {
            "nodes": [node("s"), node("o"), node("t"), node("u")],
            "links": [rv("s", "o", required=False), rv("o", "t"), rv("s", "u")],
        },
        {"o", "t"},
    ),
}


@pytest.mark.parametrize(("graph", "excluded"), NEVER_AHEAD.values(), ids=NEVER_AHEAD.keys())
async def test_nodes_that_may_fire_otherwise_are_never_sent_ahead(
    pool: ChainingPool, graph: dict[str, Any], excluded: set[Any]
) -> None:
    """Conditions, optional and error links, cycles, forced start nodes: sent only when they fire."""
    assert not excluded & ahead_of(aioflow.load_graph(graph))
    got = await assert_same_as_threads(graph, pool)
    assert not excluded & pool.sent_ahead()
    assert pool.sent_ahead() == {"u"}
    assert all(r.deps == () for nid in excluded for r in pool.calls(nid))
    one_call_per_firing(pool, got)


# --------------------------------------------------------------------------- failures


def failing(handler: bool) -> dict[str, Any]:
    """a -> f (fails) -> g -> h, f and k -> j, a -> k; with ``handler``, f -> e on error."""
    nodes = [node("a"), node("f", "tasks.fail"), node("g"), node("h"), node("k"), node("j", "tasks.add")]
    links = [rv("a", "f"), rv("f", "g"), rv("g", "h"), rv("a", "k"), rv("f", "j", "a"), rv("k", "j", "b")]
    if handler:
        nodes.append(node("e", "tasks.echo"))
        links.append({"source": "f", "target": "e", "on_error": True, "map_all_data": True})
    return {"graph": {"id": "failing"}, "nodes": nodes, "links": links}


def hold_failure(pool: ChainingPool) -> None:
    """The calls waiting for f fail (without running) and reach the scheduler before f's failure does.

    k runs only once f's failure was delivered: j, waiting for both, is
    voided while k is still in the pool.
    """
    pool.hold("f", "delivery", until=("delivered", "h"))
    pool.hold("k", "run", until=("delivered", "f"))


async def test_failed_predecessor_voids_the_calls_sent_ahead(pool: ChainingPool) -> None:
    """Successors sent ahead of a failing node never count as executions, events or errors; its handler runs."""
    hold_failure(pool)
    log = EventLog()
    graph = failing(handler=True)
    got = await assert_same_as_threads(graph, pool, on_event=log)
    assert got.executions == {"a": 1, "f": 1, "k": 1, "e": 1}
    assert got.errors == {}  # f's failure went to its handler
    assert "failed on purpose" in got["e"]["return_value"]["kwargs"]["WorkflowException"]["errorMessage"]
    assert {"g", "h", "j"} <= pool.sent_ahead()
    for nid in ("g", "h", "j"):
        assert not pool.call(nid).ran
        assert log.kinds(nid) == []
        assert nid not in got
    assert log.nodes("node.failed") == ["f"]
    assert pool.delivered("h") < pool.delivered("f")  # g and h were parked when f failed
    log.assert_sane()


async def test_failed_predecessor_without_handler(pool: ChainingPool) -> None:
    """raise_on_error=False: the failure is reported for the failing node only."""
    hold_failure(pool)
    log = EventLog()
    got = await assert_same_as_threads(failing(handler=False), pool, on_event=log)
    assert list(got.errors) == ["f"]
    assert got.executions == {"a": 1, "f": 1, "k": 1}
    assert set(log.nodes("node.started")) == {"a", "f", "k"}
    assert log.nodes("node.failed") == ["f"]
    log.assert_sane()


async def test_raise_on_error_names_the_failing_node(pool: ChainingPool) -> None:
    """NodeError names the failing node, not a successor sent ahead; finished outputs are kept."""
    hold_failure(pool)
    log = EventLog()
    with pytest.raises(NodeError) as info:
        await on_chaining(failing(handler=False), pool, on_event=log, **ALL)
    err = info.value
    assert err.node_id == "f"
    assert isinstance(err.__cause__, ValueError)
    assert err.results["a"] == {"return_value": 1}
    assert err.results["f"] == {}
    assert not {"g", "h", "j"} & set(err.results)
    assert not {"g", "h", "j"} & set(err.results.executions)
    assert not {"g", "h", "j"} & set(log.nodes("node.started"))
    assert {"g", "h", "j"} <= pool.sent_ahead()


async def test_failure_deep_in_a_chain_sent_ahead(pool: ChainingPool) -> None:
    """A node sent ahead that fails itself is reported as a failure of that node, once."""
    graph = {
        "graph": {"id": "deep"},
        "nodes": [node("a"), node("b"), node("c", "tasks.fail"), node("d"), node("e")],
        "links": [rv("a", "b"), rv("b", "c"), rv("c", "d"), rv("d", "e")],
    }
    pool.hold("a", "run", until=("submitted", "e"))
    log = EventLog()
    got = await assert_same_as_threads(graph, pool, on_event=log)
    assert list(got.errors) == ["c"]
    assert got.executions == {"a": 1, "b": 1, "c": 1}
    assert pool.sent_early() == {"b", "c", "d", "e"}
    assert pool.call("c").ran
    assert not pool.call("d").ran
    assert log.nodes("node.failed") == ["c"]
    log.assert_sane()


async def test_failure_of_a_node_sent_ahead_reaches_its_error_handler(pool: ChainingPool) -> None:
    """A node sent ahead that fails hands its inputs, as the state machine merged them, to its handler."""
    graph = {
        "graph": {"id": "handled"},
        "nodes": [
            node("a", default_inputs=defaults(x=4)),
            node("b", "tasks.fail", default_inputs=defaults(unused=0)),
            node("c"),
            node("h", "tasks.echo"),
        ],
        "links": [
            rv("a", "b"),
            rv("b", "c"),
            {"source": "b", "target": "h", "on_error": True, "map_all_data": True},
        ],
    }
    pool.hold("a", "run", until=("submitted", "c"))
    got = await assert_same_as_threads(graph, pool)
    assert pool.sent_early() == {"b", "c"}
    kwargs = got["h"]["return_value"]["kwargs"]
    assert kwargs["x"] == 5
    assert "unused" not in kwargs  # default inputs of the failed task are not passed on
    assert isinstance(kwargs["WorkflowExceptionInstance"], ValueError)
    assert got.executions == {"a": 1, "b": 1, "h": 1}
    assert got.errors == {}


async def test_refused_chained_call_is_sent_when_its_node_fires(pool: ChainingPool) -> None:
    """A pool that refuses a call sent ahead gets it again, without futures, when the node fires."""
    pool.refuse_chained = True
    got = await assert_same_as_threads(lattice(3), pool)
    assert got["p22"] == {"return_value": 6}
    assert pool.sent_ahead() == set()
    one_call_per_firing(pool, got)


async def test_executions_sharing_the_pool(pool: ChainingPool) -> None:
    """Two executions send nodes ahead on one pool at once; each gets its own results."""
    results: dict[str, aioflow.Results] = {}

    async def run(name: str, graph: dict[str, Any]) -> None:
        results[name] = await on_chaining(graph, pool)

    pool.hold("root", "run", until=("submitted", "join"))
    pool.hold("c0", "run", until=("submitted", "c19"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "chain", chain(20))
        tg.start_soon(run, "fan", fan(10))
    assert results == {"chain": {"return_value": 20}, "fan": {"return_value": 10 + sum(range(10))}}
    assert {"c19", "join"} <= pool.sent_early()


# --------------------------------------------------------------------------- parking


async def test_calls_finished_before_their_node_fired_are_parked(pool: ChainingPool) -> None:
    """a's outcome reaches the scheduler after those of its successors: they wait for their firing."""
    graph = {
        "graph": {"id": "parked"},
        "nodes": [node("a"), node("b"), node("c"), node("d", "tasks.add"), node("e")],
        "links": [rv("a", "b"), rv("b", "c"), rv("a", "d", "a"), rv("c", "d", "b"), rv("d", "e")],
    }
    pool.hold("a", "delivery", until=("delivered", "e"))
    log = EventLog()
    got = await assert_same_as_threads(graph, pool, on_event=log)
    assert got["e"] == {"return_value": 5}
    assert got.executions == dict.fromkeys("abcde", 1)
    assert max(pool.delivered(nid) for nid in "bcde") < pool.delivered("a")
    log.assert_sane()
    for before, after in [("a", "b"), ("b", "c"), ("a", "d"), ("c", "d"), ("d", "e")]:
        assert log.index("node.finished", before) < log.index("node.started", after)
    one_call_per_firing(pool, got)


async def test_parked_calls_of_a_fan(pool: ChainingPool) -> None:
    """Every leaf and the join finish before the root is heard of; the results are right."""
    pool.hold("root", "delivery", until=("delivered", "join"))
    log = EventLog()
    got = await assert_same_as_threads(fan(8), pool, on_event=log)
    assert got["join"] == {"return_value": 8 + sum(range(8))}
    assert max(pool.delivered(r.node_id) for r in pool.records if r.node_id != "root") < pool.delivered("root")
    log.assert_sane()
    one_call_per_firing(pool, got)


# --------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("stage", ["run", "delivery"])
async def test_timeout_lists_only_nodes_that_fired(pool: ChainingPool, stage: Stage) -> None:
    """Calls sent ahead (pending or parked) are not named as running when the execution times out."""
    graph = {
        "graph": {"id": "slow"},
        "nodes": [node("a"), node("b"), node("c"), node("d")],
        "links": [rv("a", "b"), rv("b", "c"), rv("a", "d")],
    }
    pool.hold("a", stage)  # opened only by the abort
    log = EventLog()
    with pytest.raises(ExecutionTimeoutError) as info:
        await on_chaining(graph, pool, timeout=0.5, on_event=log, **ALL)
    err = info.value
    assert err.running == ("a",)
    assert err.results == {}
    assert err.results.executions == {"a": 1}
    assert pool.sent_ahead() == {"b", "c", "d"}
    assert log.nodes("node.started") == ["a"]
    assert log.nodes("node.finished") == []
    # The pool is usable again after the abort.
    assert await on_chaining(chain(3), pool) == {"return_value": 3}


# --------------------------------------------------------------------------- generated graphs

PROPERTIES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same_as_reference(doc: Doc, workers: int, compare_executions: bool) -> None:
    """`test_properties.assert_same_execution`, on the chaining pool; plus what the pool saw."""
    graph = load_or_refuse(doc)
    if graph is None:
        return
    ref = run_reference(graph, doc)
    body = {k: v for k, v in doc.items() if k != "startargs"}
    options: dict[str, Any] = {
        "uvloop": False,
        "startargs": doc.get("startargs"),
        "raise_on_error": False,
        "max_iterations": BUDGET + 1,
        "timeout": GUARD,
    }
    pool = chaining_pool(workers)
    try:
        if ref is None:
            event("refused: cannot run")
            with pytest.raises(GraphError):
                aioflow.execute_graph(body, pool=pool, **options)
            return
        got = aioflow.execute_graph(body, pool=pool, outputs=[{"all": True}], merge_outputs=False, **options)
        ahead = pool.sent_ahead()
        expected = reference.select_outputs(graph, ref, [{"all": True}], merge_outputs=False)
        assert prop_tasks.canonical(dict(got)) == prop_tasks.canonical(expected)
        assert canonical_errors(got.errors) == canonical_errors(ref.errors)
        if compare_executions:
            assert got.executions == ref.executions
        # Only nodes the analysis allows are sent ahead; each runs at most once,
        # and a call sent ahead that ran is an execution of its node.
        assert ahead <= ahead_of(graph)
        assert all(got.executions.get(nid, 0) <= 1 for nid in ahead)
        assert {r.node_id for r in pool.records if r.chained and r.ran} <= set(got.executions)
        event(f"sent ahead: {bool(ahead)}")
        merged = aioflow.execute_graph(body, pool=pool, **options)
        assert prop_tasks.canonical(dict(merged)) == prop_tasks.canonical(reference.select_outputs(graph, ref))
    finally:
        pool.close()


@PROPERTIES
@given(dags(max_nodes=25), st.sampled_from([None, {"s": 3}]))
@example({k: v for k, v in LINK_ORDER_DOC.items() if k != "startargs"}, None)
def test_dag_execution_matches_reference(doc: Doc, startargs: dict[str, Any] | None) -> None:
    """On a DAG of required links, the chaining pool gives the reference's results and executions."""
    assert_same_as_reference({**doc, "startargs": startargs}, workers=2, compare_executions=True)


@PROPERTIES
@given(executable_graphs(max_nodes=16, loops=False, parallel_safe=True))
@example(LINK_ORDER_DOC)
def test_conditional_dag_execution_matches_reference(doc: Doc) -> None:
    """With conditions, error links and failures whose outcome cannot depend on timing: the reference's results."""
    try:
        doc = timing_independent(doc)
    except GraphError:
        event("refused: input conflict")
        return
    assert_same_as_reference(doc, workers=2, compare_executions=True)


@PROPERTIES
@given(executable_graphs(max_nodes=16, loops=True))
def test_loops_and_conditions_keep_the_invariants(doc: Doc) -> None:
    """With loops, optional links and forced start nodes, what sending ahead must never change.

    Such graphs may give other results in another order of completions (a
    call sent ahead finishes earlier than a call submitted when its node
    fires), so they are not compared with the reference: only nodes the
    analysis allows are sent ahead, each at most once and never beside a
    call submitted when it fires; every failure is a task's own.
    """
    try:
        graph = load(doc)
    except GraphError:
        event("refused: input conflict")
        return
    if run_reference(graph, doc) is None:
        event("refused: cannot run")
        return
    body = {k: v for k, v in doc.items() if k != "startargs"}
    pool = chaining_pool(1)
    try:
        got = aioflow.execute_graph(
            body,
            pool=pool,
            uvloop=False,
            startargs=doc.get("startargs"),
            raise_on_error=False,
            max_iterations=BUDGET + 1,
            timeout=GUARD,
            outputs=[{"all": True}],
            merge_outputs=False,
        )
    finally:
        pool.close()
    ahead = pool.sent_ahead()
    event(f"sent ahead: {bool(ahead)}")
    assert ahead <= ahead_of(graph)
    for nid in ahead:
        assert len(pool.calls(nid)) == 1, nid
        assert got.executions.get(nid, 0) <= 1, nid
    assert {r.node_id for r in pool.records if r.chained and r.ran} <= set(got.executions)
    one_call_per_firing(pool, got)
    assert all(isinstance(e, prop_tasks.NodeFailure) for e in got.errors.values()), got.errors


# --------------------------------------------------------------------------- the analysis


def analysed(nodes: list[dict[str, Any]], links: list[dict[str, Any]]) -> tuple[frozenset[Any], frozenset[Any]]:
    graph = aioflow.load_graph({"nodes": nodes, "links": links})
    return fires_at_most_once(graph), ahead_of(graph)


def test_analysis_of_a_chain() -> None:
    once, ahead = analysed([node("a"), node("b"), node("c")], [rv("a", "b"), rv("b", "c")])
    assert once == {"a", "b", "c"}
    assert ahead == {"b", "c"}


def test_analysis_of_a_cycle() -> None:
    """Nodes in a cycle, and after it, may fire several times."""
    cond = [{"source_output": "return_value", "value": 3}]
    once, ahead = analysed(
        [node("a"), node("b"), node("c"), node("d")],
        [rv("a", "b"), rv("b", "c"), rv("c", "b", conditions=cond), rv("c", "d", required=True)],
    )
    assert once == {"a"}
    assert ahead == frozenset()


def test_analysis_of_a_self_loop() -> None:
    cond = [{"source_output": "return_value", "value": 3}]
    once, ahead = analysed([node("a"), node("b")], [rv("a", "b"), rv("b", "b", conditions=cond)])
    assert once == {"a"}
    assert ahead == frozenset()


def test_analysis_of_forced_start_nodes() -> None:
    """A forced start node fires on its trigger and on its links; one without in-links fires once."""
    once, ahead = analysed(
        [node("a", force_start_node=True), node("b", force_start_node=True), node("c")],
        [rv("a", "b"), rv("b", "c")],
    )
    assert once == {"a"}
    assert ahead == frozenset()


def test_analysis_of_optional_links() -> None:
    """An optional link fires its target on every delivery, and what follows with it."""
    once, ahead = analysed(
        [node("a"), node("b"), node("c"), node("d", "tasks.add")],
        [rv("a", "b", required=False), rv("b", "c", required=True), rv("a", "d", "a"), rv("b", "d", "b")],
    )
    assert once == {"a"}
    assert ahead == frozenset()


def test_analysis_of_conditional_and_error_links() -> None:
    """Required conditional and error links fire at most once, but their targets are not sent ahead.

    Whether they fire is decided by the source's outcome, in this process;
    their successors, fed by plain links, are.
    """
    cond = [{"source_output": "return_value", "value": 1}]
    once, ahead = analysed(
        [node("a"), node("b"), node("c"), node("d"), node("e")],
        [
            rv("a", "b", conditions=cond, required=True),
            {"source": "a", "target": "c", "on_error": True, "required": True},
            rv("b", "d"),
            rv("c", "e"),
        ],
    )
    assert once == {"a", "b", "c", "d", "e"}
    assert ahead == {"d", "e"}


def test_analysis_of_unmarked_conditional_links() -> None:
    """A conditional link is optional unless marked required: its target and what follows fire any number of times."""
    cond = [{"source_output": "return_value", "value": 1}]
    once, ahead = analysed([node("a"), node("b"), node("c")], [rv("a", "b", conditions=cond), rv("b", "c")])
    assert once == {"a"}
    assert ahead == frozenset()


def test_analysis_excludes_ewoks_task_types() -> None:
    """A class node, and a node fed by one, are not sent ahead (their outputs carry identities)."""
    klass = {"id": "k", "task_type": "class", "task_identifier": "some.module.Task"}
    once, ahead = analysed(
        [node("a"), klass, node("b"), node("c")],
        [{"source": "a", "target": "k"}, {"source": "k", "target": "b"}, rv("b", "c")],
    )
    assert once == {"a", "k", "b", "c"}
    assert ahead == {"c"}


def test_analysis_excludes_nodes_a_hook_runs_with_a_runner_of_its_own() -> None:
    """A node whose calls a hook gives their own runner, and a node fed by it, are not sent ahead."""
    graph = aioflow.load_graph({"nodes": [node("a"), node("b"), node("c")], "links": [rv("a", "b"), rv("b", "c")]})
    opaque = outputs_with_tokens(graph, {"b"})
    assert opaque == {"b"}
    assert sendable_ahead(graph, opaque) == frozenset()
    assert sendable_ahead(graph, outputs_with_tokens(graph, {"c"})) == {"b"}


def test_analysis_of_joins_and_ppf_nodes() -> None:
    """Plain joins and ppf nodes are sent ahead."""
    ppf = {"id": "p", "task_type": "ppfmethod", "task_identifier": "tasks.ppf_add"}
    port = {"id": "q", "task_type": "ppfport"}
    once, ahead = analysed(
        [node("a"), node("b"), ppf, port],
        [rv("a", "p", "a"), rv("b", "p", "b"), {"source": "p", "target": "q", "map_all_data": True}],
    )
    assert once == {"a", "b", "p", "q"}
    assert ahead == {"p", "q"}


async def test_parking_with_one_worker() -> None:
    """A held delivery occupies no worker: with one, every call of a fan finishes before the root is heard of."""
    one = chaining_pool(1)
    try:
        one.hold("root", "delivery", until=("delivered", "join"))
        got = await assert_same_as_threads(fan(4), one)
        assert got["join"] == {"return_value": 4 + sum(range(4))}
        assert one.sent_ahead() == {"join"} | {f"l{i}" for i in range(4)}
        assert max(one.delivered(r.node_id) for r in one.records if r.node_id != "root") < one.delivered("root")
    finally:
        await one.aclose()
