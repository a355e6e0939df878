"""`aioflow.start`: a run steered while it goes on. Cancel one node, read the results so far, await the end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from graphs import method_node

import aioflow

if TYPE_CHECKING:
    from pool_capabilities import LocalPool

TASKS = Path(__file__).resolve().parent / "control_tasks.py"
DEADLINE = 60.0

pytestmark = pytest.mark.usefixtures("billiard_singletons")


def node(node_id: str, fn: str, control: dict[str, Any] | None = None, /, **inputs: Any) -> dict[str, Any]:
    raw = method_node(node_id, f"{TASKS}::{fn}", **inputs)
    if control is not None:
        raw["aioflow"] = control
    return raw


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def until(condition: Any) -> None:
    """Wait (at most `DEADLINE`) until ``condition()`` holds."""
    end = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        await asyncio.sleep(0.01)


def graph_with_a_long_node(directory: Path) -> dict[str, Any]:
    """``long`` spins 30 s (an error handler catches its failure); ``other`` spins 0.3 s, then ``after`` runs."""
    d = str(directory)
    return {
        "graph": {"id": "steered"},
        "nodes": [
            node("long", "spin", directory=d, seconds=30, name="long"),
            node("handler", "count", directory=d, name="handler"),
            node("other", "spin", directory=d, seconds=0.3, name="other"),
            node("after", "count", directory=d, name="after"),
        ],
        "links": [
            {"source": "long", "target": "handler", "on_error": True},
            {"source": "other", "target": "after"},
        ],
    }


@pytest.mark.needs("event loop")
async def test_cancelling_a_running_node_fails_it_and_the_run_goes_on(local_pool: LocalPool, tmp_path: Path) -> None:
    """The node fails with NodeCancelledError, its error handler runs, the other branch finishes; its task is stopped."""
    events: list[Any] = []
    async with aioflow.start(
        graph_with_a_long_node(tmp_path),
        on_event=events.append,
        merge_outputs=False,
        timeout=DEADLINE,
        **local_pool.options(max_workers=2),
    ) as run:
        await until(lambda: lines(tmp_path / "long"))
        worker = int(lines(tmp_path / "long")[0].split()[1])
        assert run.cancel("long") is True
        results = await run
    assert {"handler", "after"} <= set(results)
    assert sorted(lines(tmp_path / "executions")) == ["after", "handler"]
    assert lines(tmp_path / "other")[-1] == "end"
    assert "end" not in lines(tmp_path / "long")
    (failed,) = [e for e in events if e.kind == "node.cancelled"]
    assert failed.node_id == "long"
    assert isinstance(failed.error, aioflow.NodeCancelledError)
    assert "was cancelled" in str(failed.error)
    if local_pool.can("processes"):  # the worker that ran it was killed
        end = time.monotonic() + DEADLINE
        while psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < end
            await asyncio.sleep(0.05)
    assert run.cancel("long") is False  # over


async def test_cancel_says_whether_there_was_something_to_cancel(tmp_path: Path) -> None:
    graph = graph_with_a_long_node(tmp_path)
    # Without the error handler: outcomes need not wait for the long node's (the order of outcomes
    # is kept where an error link can change what fires), so ``after`` runs while it spins.
    graph["links"] = [link for link in graph["links"] if not link.get("on_error")]
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "handler"]
    async with aioflow.start(graph, pool_type="thread", max_workers=2, raise_on_error=False) as run:
        await until(lambda: "after" in lines(tmp_path / "executions"))
        await asyncio.sleep(0.1)  # its outcome reaches the driver
        assert run.cancel("other") is False  # finished
        assert run.cancel("no such node") is False
        assert dict(run.results) == {"return_value": 1}  # the finished end node's, so far
        assert run.cancel("long") is True
        await run


async def test_a_node_waiting_to_run_again_is_cancelled_at_once(tmp_path: Path) -> None:
    control = {"retries": 3, "retry_delay": 30}
    graph = {"nodes": [node("flaky", "fails_until", control, directory=str(tmp_path), succeed_on=10)]}
    events: list[Any] = []
    async with aioflow.start(graph, pool_type="thread", on_event=events.append, raise_on_error=False) as run:
        await until(lambda: any(e.kind == "node.retried" for e in events))
        t0 = time.monotonic()
        assert run.cancel("flaky")
        results = await run
    assert time.monotonic() - t0 < 10
    assert isinstance(results.errors["flaky"], aioflow.NodeCancelledError)
    assert "waiting to run again" in str(results.errors["flaky"])
    assert len(lines(tmp_path / "attempts")) == 1


async def test_a_node_not_started_yet_is_cancelled_before_it_runs(tmp_path: Path) -> None:
    """One worker, busy: the queued node's call is taken back; it never runs."""
    d = str(tmp_path)
    graph = {
        "nodes": [
            node("busy", "spin", directory=d, seconds=1.0, name="busy"),
            node("queued", "count", directory=d, name="queued"),
        ]
    }
    async with aioflow.start(graph, pool_type="thread", max_workers=1, raise_on_error=False) as run:
        await until(lambda: lines(tmp_path / "busy"))
        assert run.cancel("queued")
        results = await run
    assert isinstance(results.errors["queued"], aioflow.NodeCancelledError)
    assert not (tmp_path / "executions").exists()


@pytest.mark.needs("event loop")
async def test_leaving_the_block_with_an_error_cancels_the_run(local_pool: LocalPool, tmp_path: Path) -> None:
    """The block's exception goes on; the run is stopped with its workers first (the leak check sees none)."""

    async def block() -> None:
        async with aioflow.start(graph_with_a_long_node(tmp_path), **local_pool.options(max_workers=2)):
            await until(lambda: lines(tmp_path / "long"))
            raise KeyError("from the block")

    with pytest.raises(KeyError, match="from the block"):
        await block()
    assert "end" not in lines(tmp_path / "long")


async def test_leaving_the_block_waits_for_the_run_and_raises_its_error(tmp_path: Path) -> None:
    graph = {"nodes": [node("f", "fails_until", directory=str(tmp_path), succeed_on=2)]}
    with pytest.raises(aioflow.NodeError, match="attempt 1"):
        async with aioflow.start(graph, pool_type="thread"):
            pass
    async with aioflow.start(graph, pool_type="thread") as run:  # awaited: raised there, not again
        with pytest.raises(aioflow.NodeError):
            await run
    assert isinstance(run.results, aioflow.Results)


async def test_cancelling_the_whole_run(tmp_path: Path) -> None:
    async with aioflow.start(graph_with_a_long_node(tmp_path), pool_type="thread", max_workers=2) as run:
        await until(lambda: lines(tmp_path / "long"))
        assert run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert run.done


async def test_what_start_refuses_it_refuses_early(tmp_path: Path) -> None:
    with pytest.raises(aioflow.OptionError, match="no_such_option"):
        aioflow.start({"nodes": []}, no_such_option=1)
    with pytest.raises(aioflow.GraphError, match="'aioflow': 'timeout'"):
        async with aioflow.start({"nodes": [node("a", "count", {"timeout": -1}, directory=str(tmp_path), name="a")]}):
            pass
    run = aioflow.start({"nodes": []})
    async with run:
        pass
    with pytest.raises(RuntimeError, match="used once"):
        async with run:
            pass


def test_the_synchronous_form(local_pool: LocalPool, tmp_path: Path) -> None:
    """``with``: the run goes on in a helper thread; cancel and results work from this one."""
    t0 = time.monotonic()
    with aioflow.start(
        graph_with_a_long_node(tmp_path), merge_outputs=False, **local_pool.options(max_workers=2)
    ) as run:
        end = time.monotonic() + DEADLINE
        while not lines(tmp_path / "long"):
            assert time.monotonic() < end
            time.sleep(0.01)
        assert run.cancel("long") is True
        results = run.result(timeout=DEADLINE)
    assert time.monotonic() - t0 < 25
    assert {"handler", "after"} <= set(results)
    assert run.done
    assert run.cancel("long") is False
