"""One event stream: the same events on every pool, read by a callback, an async iterator and a sync iterator.

Every firing reads ``node.queued`` -> ``node.started`` -> (``node.retried``)* -> an end
(``node.finished``, ``node.failed`` or ``node.cancelled``); ``graph.finished`` is the last
event whatever ended the run, with its ``state``. A reader of ``run.events()`` never
holds the run up: past its buffer it loses the oldest events and reads how many.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from graphs import COUNTING_LOOP, method_node, return_value_link

import aioflow
from aioflow.events import SUMMARY_CHARS, Event

if TYPE_CHECKING:
    from pool_capabilities import LocalPool

CONTROL = Path(__file__).resolve().parent / "control_tasks.py"
ENDS = ("node.finished", "node.failed", "node.cancelled")

pytestmark = pytest.mark.usefixtures("billiard_singletons")


def diamond() -> dict[str, Any]:
    """``a`` -> (``b``, ``c``) -> ``d``; ``d`` adds the two."""
    return {
        "graph": {"id": "diamond"},
        "nodes": [
            method_node("a", "tasks.inc", x=0),
            method_node("b", "tasks.inc"),
            method_node("c", "tasks.inc"),
            method_node("d", "tasks.add"),
        ],
        "links": [
            return_value_link("a", "b", "x"),
            return_value_link("a", "c", "x"),
            return_value_link("b", "d", "a"),
            return_value_link("c", "d", "b"),
        ],
    }


async def appeared(path: Path) -> None:
    """Wait (at most 60 s) until ``path`` exists: the task has started."""
    end = time.monotonic() + 60
    while not os.path.exists(path):  # noqa: ASYNC240 - a stat, as the test polls anyway
        assert time.monotonic() < end, f"{path} did not appear"
        await asyncio.sleep(0.01)


def check_stream(events: list[Event], *, firings: int) -> dict[int, list[Event]]:
    """The rules every run's events keep; its firings' events by sequence number."""
    assert events[0].kind == "graph.started"
    assert events[-1].kind == "graph.finished"
    assert [e.kind for e in events].count("graph.finished") == 1
    by_seq: dict[int, list[Event]] = {}
    for event in events[1:-1]:
        assert event.kind.startswith("node."), event
        by_seq.setdefault(event.seq, []).append(event)
    assert sorted(by_seq) == list(range(firings))
    for seq, mine in by_seq.items():
        kinds = [e.kind for e in mine]
        assert kinds[:2] == ["node.queued", "node.started"], (seq, kinds)
        assert kinds[-1] in ENDS, (seq, kinds)
        assert all(k == "node.retried" for k in kinds[2:-1]), (seq, kinds)
        assert len({(e.node_id, e.number) for e in mine}) == 1
        times = [e.time for e in mine]
        assert times == sorted(times)
        assert all(e.wall > 0 for e in mine)
    monotonic = [e.time for e in events]
    assert monotonic == sorted(monotonic)
    return by_seq


def test_every_local_pool_reports_the_same_events(local_pool: LocalPool) -> None:
    seen: list[Event] = []
    results = aioflow.execute_graph(diamond(), on_event=seen.append, **local_pool.options(max_workers=2))
    assert results == {"return_value": 4}
    by_seq = check_stream(seen, firings=4)
    assert seen[0].total == 4
    assert seen[-1].state == "finished"
    ends = [mine[-1] for mine in by_seq.values()]
    assert [e.kind for e in ends] == ["node.finished"] * 4
    assert {e.node_id for e in ends} == {"a", "b", "c", "d"}
    for end in ends:
        # The worker that ran it, on this machine: a local pool always says.
        assert end.worker_pid is not None
        assert end.worker_host == socket.gethostname()
        if local_pool.pool_type in ("thread", "gevent"):
            assert end.worker_pid == os.getpid()
        else:
            assert end.worker_pid != os.getpid()


def test_the_last_event_says_how_the_run_ended(tmp_path: Path) -> None:
    failed: list[Event] = []
    with pytest.raises(aioflow.NodeError):
        aioflow.execute_graph({"nodes": [method_node("x", "tasks.fail")]}, on_event=failed.append)
    assert failed[-1].kind == "graph.finished"
    assert failed[-1].state == "failed"
    assert failed[-2].kind == "node.failed"
    assert failed[-2].error_summary is not None
    assert failed[-2].error_summary == "ValueError: failed on purpose with []"

    handled: list[Event] = []
    graph = {
        "nodes": [method_node("x", "tasks.fail"), method_node("h", "tasks.inc", x=1)],
        "links": [{"source": "x", "target": "h", "on_error": True}],
    }
    aioflow.execute_graph(graph, on_event=handled.append)
    assert handled[-1].state == "finished"  # the failure had a handler

    timed: list[Event] = []
    slow = {"nodes": [method_node("s", f"{CONTROL}::spin", directory=str(tmp_path), seconds=30)]}
    with pytest.raises(aioflow.ExecutionTimeoutError):
        aioflow.execute_graph(slow, timeout=0.3, on_event=timed.append)
    assert timed[-1].kind == "graph.finished"
    assert timed[-1].state == "timeout"


async def test_a_cancelled_run_ends_its_stream_with_a_cancelled_run(tmp_path: Path) -> None:
    slow = {"nodes": [method_node("s", f"{CONTROL}::spin", directory=str(tmp_path), seconds=30)]}
    read: list[Event] = []
    async with aioflow.start(slow) as run:
        async for event in run.events():
            read.append(event)
            if event.kind == "node.started":
                await appeared(tmp_path / "spin")
                assert run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert [e.kind for e in read] == ["graph.started", "node.queued", "node.started", "graph.finished"]
    assert read[-1].state == "cancelled"


async def test_a_node_cancelled_from_outside_ends_as_node_cancelled(tmp_path: Path) -> None:
    graph = {
        "nodes": [
            method_node("long", f"{CONTROL}::spin", directory=str(tmp_path), seconds=30),
            method_node("handler", "tasks.inc", x=1),
        ],
        "links": [{"source": "long", "target": "handler", "on_error": True}],
    }
    async with aioflow.start(graph, pool_type="process", max_workers=1) as run:
        events: list[Event] = []
        async for event in run.events():
            events.append(event)
            if event.kind == "node.started" and event.node_id == "long":
                await appeared(tmp_path / "spin")
                assert run.cancel("long")
        await run
    by_seq = check_stream(events, firings=2)
    long = by_seq[0]
    assert long[-1].kind == "node.cancelled"
    assert isinstance(long[-1].error, aioflow.NodeCancelledError)
    assert by_seq[1][-1].kind == "node.finished"
    assert events[-1].state == "finished"


def test_retried_attempts_are_events_of_their_firing(tmp_path: Path) -> None:
    graph = {
        "nodes": [
            {
                **method_node("flaky", f"{CONTROL}::fails_until", directory=str(tmp_path), succeed_on=3),
                "aioflow": {"retries": 3, "retry_delay": 0.01},
            }
        ]
    }
    seen: list[Event] = []
    assert aioflow.execute_graph(graph, on_event=seen.append) == {"return_value": 3}
    (mine,) = check_stream(seen, firings=1).values()
    assert [(e.kind, e.attempt) for e in mine] == [
        ("node.queued", 1),
        ("node.started", 1),
        ("node.retried", 1),
        ("node.retried", 2),
        ("node.finished", 3),
    ]
    assert mine[2].error_summary == "OSError: attempt 1"


def test_a_loop_s_firings_each_have_their_own_sequence_number() -> None:
    seen: list[Event] = []
    aioflow.execute_graph(COUNTING_LOOP, on_event=seen.append)
    by_seq = check_stream(seen, firings=5)  # start, again x3, end
    again = [mine[0].number for mine in by_seq.values() if mine[0].node_id == "again"]
    assert again == [1, 2, 3]


# --------------------------------------------------------------------------- the readers


async def test_the_async_iterator_reads_what_the_callback_sees() -> None:
    called: list[Event] = []
    async with aioflow.start(diamond(), on_event=called.append) as run:
        first = [e async for e in run.events()]
        second = [e async for e in run.events()]  # a reader that starts after the end
    assert first == called
    assert second == called
    check_stream(first, firings=4)


def test_the_sync_iterator_reads_the_run_from_another_thread() -> None:
    called: list[Event] = []
    with aioflow.start(diamond(), pool_type="process", max_workers=2, on_event=called.append) as run:
        read = list(run.events())
    assert read == called
    check_stream(read, firings=4)


def test_several_readers_each_read_every_event() -> None:
    with aioflow.start(diamond()) as run:
        streams = [run.events() for _ in range(3)]
        results: list[list[Event]] = [[] for _ in streams]
        threads = [threading.Thread(target=lambda s=s, r=r: r.extend(s)) for s, r in zip(streams, results, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert results[0] == results[1] == results[2]
    check_stream(results[0], firings=4)


def test_a_reader_that_falls_behind_loses_the_oldest_events_and_reads_how_many() -> None:
    """The run never waits for a reader: one that reads nothing until the end keeps only its buffer."""
    fan = {
        "graph": {"id": "fan"},
        "nodes": [method_node("s", "tasks.inc", x=0)] + [method_node(i, "tasks.inc") for i in range(50)],
        "links": [return_value_link("s", i, "x") for i in range(50)],
    }
    called: list[Event] = []
    with aioflow.start(fan, on_event=called.append) as run:
        stream = run.events(buffer=5)
        run.result()  # the run ends while nobody reads
    read = list(stream)
    assert read[0].kind == "events.lost"
    assert read[0].total == len(called) - 5
    assert stream.lost == len(called) - 5
    assert read[1:] == called[-5:]


async def test_a_slow_async_reader_does_not_hold_the_run_up() -> None:
    fan = {
        "nodes": [method_node("s", "tasks.inc", x=0)] + [method_node(i, "tasks.inc") for i in range(30)],
        "links": [return_value_link("s", i, "x") for i in range(30)],
    }
    async with aioflow.start(fan) as run:
        stream = run.events(buffer=3)
        first = await anext(stream)
        assert first.kind == "graph.started"
        await run  # the run goes to its end while the reader sleeps
        rest = [e async for e in stream]
    assert rest[0].kind == "events.lost"
    assert rest[0].total > 0
    assert [e.kind for e in rest[1:]][-1] == "graph.finished"
    assert len(rest) == 4


def test_the_handle_keeps_the_last_events_for_late_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    from aioflow import _handle

    monkeypatch.setattr(_handle, "BACKLOG", 4)
    called: list[Event] = []
    with aioflow.start(diamond(), on_event=called.append) as run:
        run.result()
        late = list(run.events(buffer=100))
    assert late[0].kind == "events.lost"
    assert late[0].total == len(called) - 4
    assert late[1:] == called[-4:]


async def test_a_sync_reader_in_the_loop_s_thread_is_refused() -> None:
    async with aioflow.start(diamond()) as run:
        with pytest.raises(RuntimeError, match="async for"):
            next(run.events())


def test_a_reader_of_a_run_that_could_not_start_ends_at_once() -> None:
    run = aioflow.start({"nodes": [{"id": "x"}]})
    with pytest.raises(aioflow.GraphError), run:
        pass
    start = time.monotonic()
    assert list(run.events()) == []
    assert time.monotonic() - start < 5


def test_a_bad_buffer_is_refused() -> None:
    with aioflow.start(diamond()) as run:
        with pytest.raises(aioflow.OptionError, match="buffer"):
            run.events(buffer=0)
        run.result()


def test_an_error_summary_is_one_bounded_line() -> None:
    event = Event("node.failed", "g", 0.0, node_id="x", error=ValueError("first line\nsecond " + "x" * 2000))
    summary = event.error_summary
    assert summary is not None
    assert "\n" not in summary
    assert summary.startswith("ValueError: first line second x")
    assert len(summary) == SUMMARY_CHARS
    assert Event("node.finished", "g", 0.0).error_summary is None
