"""Outputs a pool keeps on its workers (`Pool.keeps_results_remote`), on an in-process pool: fetched or lost at the end.

`KeepingPool` is the chaining test pool of `test_send_ahead` that also keeps
results: the future of a call bound with `bind_remote` resolves to a
`Handle`, dependent calls get the value itself (as on a cluster, from worker
to worker), and `afetch` turns handles into values, or fails for the nodes
the test says are lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from graphs import node, rv
from test_send_ahead import ChainingPool, EventLog, _Call, _ChainingExecutor, assert_same_as_threads, chain

import aioflow
from aioflow import NodeError, PoolError
from aioflow.pools import PoolOptions

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Iterator


# Every node's outputs, by node.
ALL_OUTPUTS = [{"all": True}]


@dataclass(frozen=True)
class Handle:
    """A result left on the worker that computed it."""

    node_id: Any


class _Kept:
    """A call whose result stays on the worker (`KeepingPool.bind_remote`)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class _KeepingExecutor(_ChainingExecutor):
    def _deliver(self, call: _Call, result: Any, error: BaseException | None) -> None:
        if error is None and isinstance(call.fn, _Kept):
            pool = self._pool
            assert isinstance(pool, KeepingPool)
            result = pool.keep(call.record.node_id, result)
        super()._deliver(call, result, error)


class KeepingPool(ChainingPool):
    """A chaining test pool that keeps results on its workers."""

    name = "keeping-test"
    keeps_results_remote = True

    def __init__(self, options: PoolOptions) -> None:
        super().__init__(options)
        self.kept: dict[Handle, Any] = {}
        #: Nodes whose kept outputs cannot be fetched (their worker is gone).
        self.lost: set[Any] = set()
        #: The nodes whose outputs `afetch` returned.
        self.fetched: list[Any] = []

    def _create_executor(self) -> concurrent.futures.Executor:
        return _KeepingExecutor(self, self.capacity)

    def bind_remote(
        self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., Any]
    ) -> Callable[..., Any]:
        return _Kept(fn)

    def keep(self, node_id: Any, value: Any) -> Handle:
        handle = Handle(node_id)
        self.kept[handle] = value
        return handle

    async def afetch(self, handles: list[Any]) -> list[Any]:
        for handle in handles:
            if handle.node_id in self.lost:
                msg = f"the worker that held the outputs of {handle.node_id!r} is gone"
                raise PoolError(msg)
        self.fetched.extend(handle.node_id for handle in handles)
        return [self.kept[handle] for handle in handles]


@pytest.fixture
def pool() -> Iterator[KeepingPool]:
    opened = KeepingPool(PoolOptions(max_workers=2))
    try:
        yield opened
    finally:
        opened.close()


async def test_kept_outputs_are_fetched_at_the_end(pool: KeepingPool) -> None:
    """Every node of a chain keeps its outputs on the workers; the results, fetched in one request, are the usual ones."""
    log = EventLog()
    got = await assert_same_as_threads(chain(4), pool, on_event=log)
    assert got["c3"] == {"return_value": 4}
    assert set(pool.kept) == {Handle(f"c{i}") for i in range(4)}
    assert pool.fetched == ["c0", "c1", "c2", "c3"]
    assert [e.kind for e in log.events if e.node_id == "c1"] == ["node.queued", "node.started", "node.finished"]


async def test_only_the_selected_kept_outputs_are_fetched(pool: KeepingPool) -> None:
    results = await aioflow.execute_graph_async(chain(4), pool=pool, timeout=10)
    assert results == {"return_value": 4}
    assert pool.fetched == ["c3"]


async def test_kept_outputs_that_cannot_be_fetched_fail_their_node(pool: KeepingPool) -> None:
    """c2's outputs are lost: c2 fails with the pool's reason; the others are fetched; nothing runs again."""
    pool.lost.add("c2")
    got = await aioflow.execute_graph_async(
        chain(4), pool=pool, timeout=10, raise_on_error=False, outputs=ALL_OUTPUTS, merge_outputs=False
    )
    assert set(got.errors) == {"c2"}
    assert "the worker that held the outputs of 'c2' is gone" in str(got.errors["c2"])
    assert got["c3"] == {"return_value": 4}
    assert got["c2"] == {}
    assert got.executions == {f"c{i}": 1 for i in range(4)}

    pool.fetched.clear()
    with pytest.raises(NodeError) as caught:
        await aioflow.execute_graph_async(chain(4), pool=pool, timeout=10, outputs=ALL_OUTPUTS, merge_outputs=False)
    assert caught.value.node_id == "c2"
    assert caught.value.results["c3"] == {"return_value": 4}


async def test_a_kept_output_whose_success_was_never_handed_over_is_not_fetched(pool: KeepingPool) -> None:
    """r (kept) finished before f failed, but its outcome waited for f's turn; f's failure stopped the run.

    The optional link to o makes the order of outcomes matter: r's success,
    made after f's firing, is handed to the state machine only after f's
    outcome, which stops the run. r never finished as far as the run goes:
    it is not in the results, as on a pool that keeps nothing.
    """
    graph = {
        "nodes": [node("s"), node("f", "tasks.fail"), node("r"), node("o")],
        "links": [rv("s", "f"), rv("s", "r"), rv("s", "o", required=False)],
    }
    # r's outcome reaches the driver once its firing exists (o, which is
    # never sent ahead, goes to the pool after s's outcome has unlocked f, r
    # and o), f's right after r's.
    pool.hold("r", "delivery", until=("submitted", "o"))
    pool.hold("f", "delivery", until=("delivered", "r"))
    with pytest.raises(NodeError) as caught:
        await aioflow.execute_graph_async(graph, pool=pool, timeout=10, outputs=ALL_OUTPUTS, merge_outputs=False)
    assert caught.value.node_id == "f"
    assert pool.call("r").outcome == "succeeded"
    assert pool.delivered("r") < pool.delivered("f")
    assert "r" not in caught.value.results
    assert pool.fetched == []
