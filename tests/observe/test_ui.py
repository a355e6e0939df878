"""The live web view: its state feed, layout, server and access rules, and its page in a real headless Chromium.

The browser tests drive real runs: ``aioflow run GRAPH --ui`` and ``aioflow
ui JOURNAL`` in subprocesses, whose tasks (tests/ui_tasks.py) wait until the
test creates a file, so that the test decides when each node ends. They need
Debian's ``chromium`` and ``chromium-driver`` packages, and fail without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from graphs import method_node, return_value_link

import aioflow
from aioflow.events import Event
from aioflow.graph import load_graph
from aioflow.journal import list_runs
from aioflow.observe._ui._drawing import node_keys
from aioflow.observe._ui._feed import Channel, Feed, pump
from aioflow.observe._ui._journal import JournalRunReader, JournalSite
from aioflow.observe._ui._layout import MAX_LAYERED_NODES, layout
from aioflow.observe._ui._live import LiveView
from aioflow.observe._ui._server import ViewServer, is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from selenium.webdriver.remote.webdriver import WebDriver

TESTS_DIR = Path(__file__).resolve().parent.parent
# Generous: only a hang reaches them.
DEADLINE = 30.0
# What the page may take to show a change: a batch every 0.1 s, a journal read every 0.5 s.
PAGE_DEADLINE = 15.0
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def step(directory: Path, name: str, **attrs: Any) -> dict[str, Any]:
    """A node running ``ui_tasks.step``: it waits for ``directory/NAME.go``."""
    return {**method_node(name, "ui_tasks.step", directory=str(directory), name=name), **attrs}


def write_graph(directory: Path, doc: dict[str, Any]) -> Path:
    path = directory / "graph.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def release(directory: Path, name: str) -> None:
    (directory / f"{name}.go").touch()


def wait_until(predicate: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < end, f"no {what} after {deadline} s"
        time.sleep(0.02)


def event(kind: str, node_id: Any = None, **fields: Any) -> Event:
    return Event(kind=kind, graph_id="g", time=time.monotonic(), node_id=node_id, **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the feed


def feed_of(*ids: Any) -> Feed:
    return Feed("g", "G", node_keys(ids))


def test_feed_follows_a_node_through_its_states() -> None:
    """started, retried, finished, failed, queued and cancelled each set the node's state, counts and times."""
    feed = feed_of("a", "b", "c", "d")
    first = feed.take_changes()
    assert first is not None
    assert set(first.nodes) == {"a", "b", "c", "d"}
    assert {r["state"] for r in first.nodes.values()} == {"pending"}

    feed.on_event(event("graph.started", total=4))
    feed.on_event(event("node.started", "a", number=1))
    feed.on_event(event("node.retried", "a", number=1, attempt=1, error=ValueError("first try")))
    changes = feed.take_changes()
    assert changes is not None
    assert changes.nodes["a"]["state"] == "retried"
    assert changes.nodes["a"]["attempts"] == 2
    assert changes.nodes["a"]["error"] == "ValueError: first try"
    assert changes.run["running"] == 1

    feed.on_event(event("node.finished", "a", number=1, attempt=2, worker_pid=4242, worker_host="h"))
    try:
        raise RuntimeError("out of luck")
    except RuntimeError as exc:
        error = exc
    feed.on_event(event("node.started", "b", number=1))
    feed.on_event(event("node.failed", "b", number=1, error=error))
    feed.on_event(event("node.queued", "c", number=1))
    feed.on_event(event("node.started", "d", number=1))
    feed.on_event(event("node.cancelled", "d", number=1, error=aioflow.NodeCancelledError("g", "d", "it was running")))
    changes = feed.take_changes()
    assert changes is not None
    a, b, c, d = (changes.nodes[k] for k in "abcd")
    assert (a["state"], a["firings"], a["attempts"], a["worker_pid"], a["worker_host"]) == ("finished", 1, 2, 4242, "h")
    assert a["duration"] is not None
    assert a["duration"] >= 0
    assert a["error"] is None
    assert b["state"] == "failed"
    assert b["error"] == "RuntimeError: out of luck"
    assert b["traceback"].startswith("Traceback (most recent call last)")
    assert 'raise RuntimeError("out of luck")' in (b["traceback"])
    assert c["state"] == "queued"
    assert d["state"] == "cancelled"
    assert d["error"].startswith("NodeCancelledError: ")
    assert {k: changes.run[k] for k in ("done", "failed", "cancelled", "running", "total")} == {
        "done": 1,
        "failed": 1,
        "cancelled": 1,
        "running": 0,
        "total": 4,
    }
    # The run's last event says how it ended.
    feed.on_event(event("graph.finished", state="failed"))
    changes = feed.take_changes()
    assert changes is not None
    assert (changes.run["state"], changes.run["cancellable"]) == ("failed", False)
    assert changes.run["ended"] is not None


def test_feed_ignores_unknown_event_kinds_and_counts_loops() -> None:
    """An event kind it does not know changes nothing; a node fired again counts its firings and grows the total."""
    feed = feed_of("a")
    feed.take_changes()
    feed.on_event(event("node.teleported", "a"))
    assert feed.take_changes() is None
    for number in (1, 2, 3):
        feed.on_event(event("node.started", "a", number=number))
        feed.on_event(event("node.finished", "a", number=number))
    changes = feed.take_changes()
    assert changes is not None
    assert changes.nodes["a"]["firings"] == 3
    assert (changes.run["done"], changes.run["total"]) == (3, 3)


def test_feed_end_marks_unfinished_nodes_cancelled() -> None:
    """At the end of a cancelled run, the nodes still running are shown cancelled, the run too."""
    feed = feed_of("a", "b")
    feed.take_changes()
    feed.on_event(event("node.started", "a", number=1))
    feed.end("cancelled", "cancelled from the live view")
    changes = feed.take_changes()
    assert changes is not None
    assert changes.nodes == {"a": {**changes.nodes["a"], "state": "cancelled"}}
    assert (changes.run["state"], changes.run["message"], changes.run["running"]) == (
        "cancelled",
        "cancelled from the live view",
        0,
    )
    with pytest.raises(ValueError, match="'state' must be one of"):
        feed.end("exploded")


def test_feed_wakes_the_server_once_per_batch() -> None:
    """A thousand events between two batches call ``notify`` once, and the batch carries each changed node once."""
    ids = [f"n{i}" for i in range(100)]
    feed = feed_of(*ids)
    calls: list[int] = []
    feed.set_notify(lambda: calls.append(1))  # the first batch (every node) is waiting: one call now
    assert len(calls) == 1
    feed.take_changes()
    for _ in range(5):
        for nid in ids:
            feed.on_event(event("node.started", nid, number=1))
            feed.on_event(event("node.finished", nid, number=1))
    assert len(calls) == 2
    changes = feed.take_changes()
    assert changes is not None
    assert set(changes.nodes) == set(ids)
    assert feed.take_changes() is None
    feed.on_event(event("node.started", "n0", number=2))
    assert len(calls) == 3


def test_pump_publishes_at_most_one_batch_per_interval() -> None:
    """Events sent from another thread for 0.6 s reach a subscriber as a handful of batches, 0.1 s apart or more."""
    ids = [f"n{i}" for i in range(20)]
    feed = feed_of(*ids)

    async def main() -> list[float]:
        initial = feed.take_changes()
        assert initial is not None
        channel = Channel(initial)
        subscription = channel.subscribe()
        task = asyncio.create_task(pump(feed, channel, 0.1))
        stop = threading.Event()

        def emit() -> None:  # the run's thread
            number = 0
            while not stop.is_set():
                number += 1
                for nid in ids:
                    feed.on_event(event("node.started", nid, number=number))
                time.sleep(0.001)

        producer = threading.Thread(target=emit)
        producer.start()
        times = []
        loop = asyncio.get_running_loop()
        try:
            assert (await subscription.next(5)).kind == "snapshot"  # type: ignore[union-attr]
            end = loop.time() + 0.6
            while loop.time() < end:
                message = await subscription.next(1)
                assert message is not None
                assert message.kind == "batch"
                times.append(json.loads(message.data)["now"])  # when the server published it
        finally:
            stop.set()
            await asyncio.to_thread(producer.join)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return times

    times = asyncio.run(main())
    assert 2 <= len(times) <= 8, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.09, gaps


def test_a_subscriber_that_never_reads_keeps_a_bounded_queue_then_gets_a_snapshot() -> None:
    """Past its bound, a subscriber's queue is dropped for a snapshot, newer than every batch dropped."""
    feed = feed_of("a")
    initial = feed.take_changes()
    assert initial is not None

    async def main() -> None:
        channel = Channel(initial, bound=8)
        reader = channel.subscribe()
        idle = channel.subscribe()
        assert (await idle.next(1)).kind == "snapshot"  # type: ignore[union-attr]
        sizes = []
        for number in range(1, 1001):
            feed.on_event(event("node.started", "a", number=number))
            feed.on_event(event("node.finished", "a", number=number))
            changes = feed.take_changes()
            assert changes is not None
            channel.apply(changes)
            sizes.append(len(idle))
        assert max(sizes) <= 8
        assert idle.dropped == 1  # once dropped, nothing is queued until it takes its snapshot
        assert len(idle) == 0
        message = await idle.next(1)
        assert message is not None
        assert message.kind == "snapshot"
        data = json.loads(message.data)
        assert (data["version"], data["nodes"]["a"]["firings"]) == (channel.version, 1000)
        assert await idle.next(0.01) is None  # nothing older follows the snapshot
        feed.on_event(event("node.started", "a", number=1001))
        changes = feed.take_changes()
        assert changes is not None
        channel.apply(changes)
        message = await idle.next(1)
        assert message is not None
        assert message.kind == "batch"
        assert json.loads(message.data)["nodes"]["a"]["state"] == "running"
        # The other subscriber had not even taken its first snapshot: it gets one, with the latest state.
        first = await reader.next(1)
        assert first is not None
        assert first.kind == "snapshot"
        assert json.loads(first.data)["nodes"]["a"]["firings"] == 1001

    asyncio.run(main())


# --------------------------------------------------------------------------- the layout


def random_graph(rng: random.Random, count: int, links: int, acyclic: bool) -> list[tuple[int, int]]:
    pairs = []
    for _ in range(links):
        a, b = rng.randrange(count), rng.randrange(count)
        if acyclic:
            if a == b:
                continue
            a, b = min(a, b), max(a, b)
        pairs.append((a, b))
    return pairs


def overlapping(boxes: Any) -> list[tuple[int, int]]:
    found = []
    rows: dict[float, list[int]] = {}
    for index, box in enumerate(boxes):
        rows.setdefault(box.y, []).append(index)
    for row in rows.values():
        row.sort(key=lambda i: boxes[i].x)
        found += [(a, b) for a, b in itertools.pairwise(row) if boxes[a].x + boxes[a].width > boxes[b].x]
    return found


@pytest.mark.parametrize("seed", range(20))
def test_layout_of_an_acyclic_graph_puts_every_link_downwards_without_overlaps(seed: int) -> None:
    """Each link of a DAG goes from a higher layer to a lower one, and no two boxes overlap."""
    rng = random.Random(seed)
    count = rng.randrange(1, 80)
    pairs = random_graph(rng, count, rng.randrange(0, 3 * count), acyclic=True)
    drawing = layout([f"node {i}" * rng.randrange(1, 4) for i in range(count)], pairs)
    assert drawing.kind == "layered"
    assert not drawing.back_links
    boxes = drawing.boxes
    assert len(boxes) == count
    assert not overlapping(boxes)
    for source, target in pairs:
        assert boxes[source].layer < boxes[target].layer
        assert boxes[source].y + boxes[source].height < boxes[target].y
    assert all(0 <= b.x and b.x + b.width <= drawing.width and b.y + b.height <= drawing.height for b in boxes)


def test_layout_of_a_cyclic_graph_leaves_out_the_links_that_close_loops() -> None:
    """A loop's closing link (and a self-link) is a back link; every other link goes down."""
    # load -> fit -> check -> fit (the loop), check -> report, report -> report
    pairs = [(0, 1), (1, 2), (2, 1), (2, 3), (3, 3)]
    drawing = layout(["load", "fit", "check", "report"], pairs)
    assert drawing.back_links == {2, 4}
    assert [b.layer for b in drawing.boxes] == [0, 1, 2, 3]
    rng = random.Random(7)
    pairs = random_graph(rng, 300, 900, acyclic=False)
    drawing = layout([str(i) for i in range(300)], pairs)
    assert drawing.back_links
    assert not overlapping(drawing.boxes)
    for index, (source, target) in enumerate(pairs):
        if index not in drawing.back_links:
            assert drawing.boxes[source].layer < drawing.boxes[target].layer


def test_layout_of_a_chain_is_straight_and_a_fan_is_centred() -> None:
    """A chain's boxes line up in one column; a fan's children sit around their parent."""
    chain = layout(["a", "b", "c", "d"], [(0, 1), (1, 2), (2, 3)])
    assert len({b.x + b.width / 2 for b in chain.boxes}) == 1
    fan = layout(["top", "l", "m", "r"], [(0, 1), (0, 2), (0, 3)])
    top, *children = fan.boxes
    centres = [b.x + b.width / 2 for b in children]
    assert abs(sum(centres) / 3 - (top.x + top.width / 2)) < 1e-6


def test_large_graphs_are_laid_out_fast_or_on_a_grid() -> None:
    """A 2,000-node graph is layered well under a second; a 5,000-node chain goes on a grid, with a note."""
    rng = random.Random(3)
    pairs = random_graph(rng, MAX_LAYERED_NODES, 3 * MAX_LAYERED_NODES, acyclic=False)
    start = time.perf_counter()
    drawing = layout([f"n{i}" for i in range(MAX_LAYERED_NODES)], pairs)
    assert drawing.kind == "layered"
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    drawing = layout([f"n{i}" for i in range(5000)], [(i, i + 1) for i in range(4999)])
    assert time.perf_counter() - start < 1.0
    assert drawing.kind == "grid"
    assert drawing.note is not None
    assert "5,000 nodes" in drawing.note
    assert not overlapping(drawing.boxes)


# --------------------------------------------------------------------------- the server


def http(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


TUPLE_GRAPH = {
    "graph": {"id": "shapes", "label": "Shapes"},
    "nodes": [
        method_node("load", "ui_tasks.add"),
        {**method_node(["sub", "fit"], "ui_tasks.add"), "label": "fit"},
        method_node(3, "ui_tasks.add"),
        method_node("3", "ui_tasks.add"),
        method_node("handler", "ui_tasks.add"),
    ],
    "links": [
        return_value_link("load", ["sub", "fit"], "x"),
        {"source": ["sub", "fit"], "target": 3, "conditions": [{"source_output": "return_value", "value": 2}]},
        {"source": ["sub", "fit"], "target": "handler", "on_error": True},
        {"source": 3, "target": "3"},
    ],
}


@pytest.fixture
def shapes_view() -> Iterator[LiveView]:
    with LiveView(load_graph(TUPLE_GRAPH), keepalive=0.2) as view:
        yield view


def test_api_graph_lists_nodes_with_boxes_and_links_with_their_kinds(shapes_view: LiveView) -> None:
    """/api/graph: every node with a text key, its label and box; links with condition labels and error flags."""
    status, body, headers = http(shapes_view.url + "api/graph")
    assert status == 200
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert (doc["id"], doc["label"], doc["layout"]["kind"]) == ("shapes", "Shapes", "layered")
    keys = [n["key"] for n in doc["nodes"]]
    assert keys == ["load", '["sub", "fit"]', "3", "3#2", "handler"]
    assert [n["id"] for n in doc["nodes"]] == ["load", ["sub", "fit"], 3, "3", "handler"]
    assert doc["nodes"][1]["label"] == "fit"
    assert all(n["width"] > 0 and n["height"] > 0 for n in doc["nodes"])
    links = {(link["source"], link["target"]): link for link in doc["links"]}
    assert links[("load", '["sub", "fit"]')]["label"] is None
    assert links[('["sub", "fit"]', "3")]["label"] == "return_value == 2"
    assert links[('["sub", "fit"]', "3")]["conditional"] is True
    assert links[('["sub", "fit"]', "handler")]["on_error"] is True
    assert links[('["sub", "fit"]', "handler")]["label"] == "on error"
    assert links[("3", "3#2")]["on_error"] is False


def test_api_state_and_events_start_with_a_snapshot_and_keep_alive(shapes_view: LiveView) -> None:
    """/api/state is a snapshot of every node; /api/events sends one first, then keep-alive comments."""
    status, body, _ = http(shapes_view.url + "api/state")
    state = json.loads(body)
    assert status == 200
    assert len(state["nodes"]) == 5
    assert state["run"]["state"] == "running"
    with urllib.request.urlopen(shapes_view.url + "api/events", timeout=DEADLINE) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = [stream.readline() for _ in range(6)]
        assert lines[2] == b"event: snapshot\n"
        assert json.loads(lines[3][len(b"data: ") :])["nodes"]
        assert b": keep-alive\n" in lines[5:]
        shapes_view.feed.on_event(event("node.started", "load", number=1))
        while (line := stream.readline()) != b"event: batch\n":
            assert line in (b"\n", b": keep-alive\n"), line
        batch = json.loads(stream.readline()[len(b"data: ") :])
        assert batch["nodes"]["load"]["state"] == "running"


def test_cancel_needs_the_page_header_and_a_run(shapes_view: LiveView) -> None:
    """POST /api/cancel without the page's header is refused; with nothing to cancel it answers 409."""
    status, body, _ = http(shapes_view.url + "api/cancel", method="POST")
    assert status == 403
    assert b"x-aioflow-request" in body
    status, body, _ = http(shapes_view.url + "api/cancel", method="POST", headers={"X-Aioflow-Request": "1"})
    assert status == 409
    assert "no running run to cancel" in json.loads(body)["error"]


def test_loopback_needs_no_token_but_the_right_host_header(shapes_view: LiveView) -> None:
    """On 127.0.0.1 without a token the page loads; a request naming another host (DNS rebinding) gets 403."""
    assert shapes_view.server.token is None
    assert shapes_view.url.endswith(f":{shapes_view.server.port}/")
    assert http(shapes_view.url)[0] == 200
    assert http(shapes_view.url + "static/app.js")[0] == 200
    assert http(shapes_view.url + "api/state", headers={"Host": f"localhost:{shapes_view.server.port}"})[0] == 200
    assert http(shapes_view.url + "api/state", headers={"Host": f"evil.example:{shapes_view.server.port}"})[0] == 403


def test_a_token_is_needed_in_the_query_or_the_cookie_it_sets() -> None:
    """With a token, requests without it get 403; with it, 200 and a cookie, which then suffices alone."""
    graph = load_graph(TUPLE_GRAPH)
    with LiveView(graph, token="s3cret-token") as view:
        base = f"http://127.0.0.1:{view.server.port}/"
        assert view.url == base + "?token=s3cret-token"
        for path in ("", "api/graph", "api/state", "static/app.js", "api/events"):
            status, body, _ = http(base + path)
            assert (status, b"needs its token" in body) == (403, True), path
        assert http(base + "api/graph?token=wrong")[0] == 403
        status, _, headers = http(view.url)
        assert status == 200
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"aioflow_token_{view.server.port}=s3cret-token;")
        assert "HttpOnly" in cookie
        pair = cookie.split(";")[0]
        assert http(base + "api/graph", headers={"Cookie": pair})[0] == 200
        assert http(base + "api/graph", headers={"Cookie": pair.replace("s3cret", "wrong")})[0] == 403


def test_any_other_address_gets_a_generated_token() -> None:
    """Listening on every address, the server makes a token and prints it in its URL; none: 403."""
    assert is_loopback("127.0.0.1")
    assert is_loopback("localhost")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.org")
    with LiveView(load_graph(TUPLE_GRAPH), host="0.0.0.0") as view:
        token = view.server.token
        assert token is not None
        assert len(token) >= 20
        assert view.url == f"http://{socket.gethostname()}:{view.server.port}/?token={token}"
        base = f"http://127.0.0.1:{view.server.port}/"
        assert http(base + "api/state")[0] == 403
        assert http(base + f"api/state?token={token}")[0] == 200


def test_live_view_run_shows_how_the_run_ended() -> None:
    """A failure an error handler caught ends "finished"; one that stops the run "failed", with its message."""
    handled = {
        "graph": {"id": "handled"},
        "nodes": [method_node("bad", "ui_tasks.fail"), method_node("handler", "ui_tasks.add")],
        "links": [{"source": "bad", "target": "handler", "on_error": True}],
    }
    graph = load_graph(handled)
    with LiveView(graph) as view:
        results = view.run(aioflow.start, graph, pool_type="thread")
        assert not results.errors
        state = json.loads(http(view.url + "api/state")[1])
        assert (state["run"]["state"], state["run"]["cancellable"]) == ("finished", False)
        assert (state["nodes"]["bad"]["state"], state["nodes"]["handler"]["state"]) == ("failed", "finished")
    graph = load_graph({"graph": {"id": "stops"}, "nodes": [method_node("bad", "ui_tasks.fail")]})
    with LiveView(graph) as view:
        with pytest.raises(aioflow.NodeError):
            view.run(aioflow.start, graph, pool_type="thread")
        run = json.loads(http(view.url + "api/state")[1])["run"]
        assert run["state"] == "failed"
        assert (
            run["message"]
            == "NodeError: graph 'stops': node 'bad' failed: ValueError: fail cannot take 0 (failed on purpose)"
        )


def test_a_port_in_use_is_an_option_error() -> None:
    """Listening on a port already taken fails at once, naming the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(aioflow.OptionError, match=rf"the live view cannot listen on 127.0.0.1:{port}: "):
            LiveView(load_graph(TUPLE_GRAPH), port=port)


def read_until(sock: socket.socket, received: bytearray, marker: bytes, start: int) -> int:
    """Read from ``sock`` into ``received`` until ``marker`` is there at or after ``start``; where it is."""
    while (found := received.find(marker, start)) < 0:
        start = max(start, len(received) - len(marker))
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed the stream"
        received += chunk
    return found


def test_a_browser_that_never_reads_costs_the_run_nothing_and_gets_a_snapshot() -> None:
    """A real connection whose reader stalls: its queue stays within the bound, then it gets a fresh snapshot."""
    count, bound = 1500, 4
    graph = load_graph({"graph": {"id": "wide"}, "nodes": [method_node(f"n{i}", "ui_tasks.add") for i in range(count)]})
    ids = list(graph.nodes)
    with LiveView(graph, interval=0.005, bound=bound) as view:

        async def queues() -> list[tuple[int, int]]:
            channel = view.site.channel_
            assert channel is not None
            return [(len(s), s.dropped) for s in channel.subscriptions]

        with socket.create_connection(("127.0.0.1", view.server.port), timeout=DEADLINE) as stalled:
            stalled.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{view.server.port}\r\n\r\n".encode())
            wait_until(lambda: view.server.call(queues), "subscription")
            sizes = []
            number = 0
            deadline = time.monotonic() + DEADLINE
            while not any(dropped for _, dropped in view.server.call(queues)):
                assert time.monotonic() < deadline, "the stalled connection's queue was never dropped"
                number += 1
                for nid in ids:  # every node changes: each batch is about 300 kB
                    view.on_event(event("node.started", nid, number=number))
                time.sleep(0.01)
                sizes += [size for size, _ in view.server.call(queues)]
            assert max(sizes) <= bound
            # It now reads: the backlog the sockets held, then a snapshot (the dropped batches are not sent).
            received = bytearray()
            batch = read_until(stalled, received, b"event: batch\n", 0)
            header = b"event: snapshot\ndata: "
            found = read_until(stalled, received, header, batch)
            end = read_until(stalled, received, b"\n\n", found)
            snapshot = json.loads(received[found + len(header) : end])
            assert len(snapshot["nodes"]) == count
            assert snapshot["nodes"]["n0"]["firings"] >= number - 1


def test_without_the_ui_extra_the_cli_names_it() -> None:
    """``aioflow run --ui`` and ``aioflow ui`` without Starlette fail at once, naming aioflow[ui]."""
    code = "import sys; sys.modules['starlette'] = None\nfrom aioflow.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    for argv in (["run", "graph.json", "--ui"], ["ui", "runs.sqlite"]):
        with tempfile.TemporaryDirectory() as directory:
            write_graph(Path(directory), {"graph": {"id": "g"}, "nodes": [method_node("a", "ui_tasks.add")]})
            done = subprocess.run(
                [sys.executable, "-c", code, *argv],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=DEADLINE,
                check=False,
            )
        assert done.returncode == 2, done.stderr
        assert "needs the 'starlette' package: pip install 'aioflow[ui]'" in done.stderr


# --------------------------------------------------------------------------- the journal


def test_journal_reader_gives_each_node_the_state_of_its_firings(tmp_path: Path) -> None:
    """A past run's nodes show finished and failed (with the journal's error text); an unchanged file reads nothing."""
    doc = {
        "graph": {"id": "half"},
        "nodes": [method_node("ok", "ui_tasks.add"), method_node("bad", "ui_tasks.fail"), method_node("after", "ui_tasks.add")],
        "links": [return_value_link("ok", "bad", "x"), return_value_link("bad", "after", "x")],
    }  # fmt: skip
    journal = tmp_path / "runs.sqlite"
    aioflow.execute_graph(doc, pool_type="thread", journal=str(journal), raise_on_error=False)
    (summary,) = list_runs(journal)
    reader = JournalRunReader(journal, summary.run_id)
    try:
        assert [n["key"] for n in reader.document["nodes"]] == ["ok", "bad", "after"]
        changes = reader.read()
        assert changes is not None
        assert {k: r["state"] for k, r in changes.nodes.items()} == {
            "ok": "finished",
            "bad": "failed",
            "after": "pending",
        }
        assert changes.nodes["bad"]["error"] == "ValueError: fail cannot take 1 (failed on purpose)"
        assert (changes.run["state"], changes.run["done"], changes.run["failed"]) == (summary.state, 1, 1)
        assert reader.read() is None
    finally:
        reader.close()
    with pytest.raises(aioflow.JournalError, match="has no run 'nope'"):
        JournalRunReader(journal, "nope")
    with pytest.raises(aioflow.JournalError, match="does not exist"):
        JournalSite(tmp_path / "missing.sqlite")


def test_journal_site_serves_runs_and_refuses_to_cancel(tmp_path: Path) -> None:
    """/api/runs lists the journal's runs; a run's graph and state are served; cancel answers 409; no run: 404."""
    journal = tmp_path / "runs.sqlite"
    aioflow.execute_graph(
        {"graph": {"id": "one"}, "nodes": [method_node("a", "ui_tasks.add")]}, pool_type="thread", journal=str(journal)
    )
    (summary,) = list_runs(journal)
    with ViewServer(JournalSite(journal)) as server:
        base = server.url
        status, body, _ = http(base + "api/runs")
        assert status == 200
        (run,) = json.loads(body)
        assert (run["run_id"], run["graph_id"], run["state"], run["finished"]) == (summary.run_id, "one", "finished", 1)
        status, body, _ = http(base + f"api/state?run={summary.run_id}")
        assert json.loads(body)["nodes"]["a"]["state"] == "finished"
        status, body, _ = http(base + f"api/graph?run={summary.run_id}")
        assert [n["key"] for n in json.loads(body)["nodes"]] == ["a"]
        status, body, _ = http(
            base + f"api/cancel?run={summary.run_id}", method="POST", headers={"X-Aioflow-Request": "1"}
        )
        assert status == 409
        assert "cannot be cancelled from here" in json.loads(body)["error"]
        status, body, _ = http(base + "api/graph?run=nope")
        assert status == 404
        assert "has no run 'nope'" in json.loads(body)["error"]
        assert http(base + "api/graph")[0] == 400


def test_after_the_run_a_terminal_keeps_the_view_until_ctrl_c(tmp_path: Path) -> None:
    """With stderr a terminal, the view outlives the run until Ctrl-C; the exit code is then the run's."""
    import pty

    write_graph(tmp_path, {"graph": {"id": "quick"}, "nodes": [method_node("a", "ui_tasks.add")]})
    master, slave = pty.openpty()
    # --ui-port alone implies --ui.
    argv = [sys.executable, "-m", "aioflow", "run", "graph.json", "--pool", "thread", "--ui-port", "0"]
    try:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    try:
        said = b""
        while b"until Ctrl-C" not in said:
            said += os.read(master, 4096)
        url = re.search(rb"live view at (\S+)", said)
        assert url is not None
        state = json.loads(http(url.group(1).decode() + "api/state")[1])
        assert (state["run"]["state"], state["nodes"]["a"]["state"]) == ("finished", "finished")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0
        assert json.loads(out) == {"return_value": 1}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
        os.close(master)


# --------------------------------------------------------------------------- in a real browser


def chromium_options(user_data_dir: str, width: int = 1400, height: int = 900) -> Any:
    """Options for Debian's Chromium, headless, with nothing that reaches the network."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}", "--force-device-scale-factor=1",
    ):  # fmt: skip
        options.add_argument(argument)
    return options


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[WebDriver]:
    """A headless Chromium driven by Debian's chromedriver; always quit."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(
            f"the browser tests need Chromium and its driver ({', '.join(missing)} missing): "
            "install Debian's packages with 'apt-get install chromium chromium-driver'"
        )
    os.environ["SE_OFFLINE"] = "true"  # no Selenium Manager download: the network is closed
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser tests need Selenium: pip install -e '.[test]'")

    with tempfile.TemporaryDirectory(prefix="aioflow-chromium-") as profile:
        driver = webdriver.Chrome(
            service=Service(executable_path=CHROMEDRIVER), options=chromium_options(profile, width, height)
        )
        try:
            driver.set_page_load_timeout(DEADLINE)
            driver.set_script_timeout(DEADLINE)
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")
    with chromium() as driver:
        yield driver


def node_state(driver: WebDriver, key: str) -> str | None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f'[data-node-id="{key}"]')
    return found[0].get_attribute("data-state") if found else None


def wait_for_state(driver: WebDriver, key: str, state: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, PAGE_DEADLINE, poll_frequency=0.05).until(lambda d: node_state(d, key) == state)
    except Exception:
        pytest.fail(f"node {key!r} is {node_state(driver, key)!r} on the page, not {state!r}, after {PAGE_DEADLINE} s")


def wait_for_text(driver: WebDriver, element_id: str, predicate: Callable[[str], bool], what: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    found: list[str] = []

    def check(d: WebDriver) -> bool:
        text = d.find_element(By.ID, element_id).text
        found[:] = [text]
        return predicate(text)

    try:
        WebDriverWait(driver, PAGE_DEADLINE, poll_frequency=0.05).until(check)
    except Exception:
        pytest.fail(f"#{element_id} never showed {what} (it shows {found[0] if found else None!r})")
    return found[0]


def wait_for_element(driver: WebDriver, selector: str) -> Any:
    """The element ``selector`` finds, once the page has made it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, PAGE_DEADLINE, poll_frequency=0.05).until(
            lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, selector)), None)
        )
    except Exception:
        pytest.fail(f"the page never showed {selector!r}")


def run_state(driver: WebDriver) -> str | None:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "run-state").get_attribute("data-state")


@contextlib.contextmanager
def cli(
    directory: Path, *args: str, name: str = "cli", url_pattern: str = r"live view at (\S+)"
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m aioflow ARGS`` in ``directory``, stdout and stderr in files; its URL read from stderr.

    Whatever happens, the process is stopped at the end (by its pid).
    """
    out, err = directory / f"{name}.out", directory / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aioflow", *args],
            cwd=directory,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:

        def url() -> str | None:
            match = re.search(url_pattern, err.read_text())
            assert match or proc.poll() is None, f"exited ({proc.returncode}) before serving:\n{err.read_text()}"
            return match.group(1) if match else None

        yield proc, wait_until(url, "URL on stderr")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(DEADLINE)


def test_the_page_follows_a_real_run_live(tmp_path: Path, browser: WebDriver) -> None:
    """Every node is drawn; a node turns running, then finished when released, and its successor starts."""
    from selenium.webdriver.common.by import By

    doc = {
        "graph": {"id": "chain", "label": "A chain"},
        "nodes": [step(tmp_path, "a"), step(tmp_path, "b"), method_node("c", "ui_tasks.add")],
        "links": [return_value_link("a", "b", "x"), return_value_link("b", "c", "x")],
    }
    write_graph(tmp_path, doc)
    with cli(tmp_path, "run", "graph.json", "--pool", "thread", "--ui", "--ui-port", "0") as (proc, url):
        browser.get(url)
        wait_for_element(browser, ".node")
        assert {e.get_attribute("data-node-id") for e in browser.find_elements(By.CSS_SELECTOR, ".node")} == {
            "a",
            "b",
            "c",
        }
        assert browser.find_element(By.ID, "title").text == "A chain"
        wait_for_state(browser, "a", "running")
        assert (node_state(browser, "b"), node_state(browser, "c")) == ("pending", "pending")
        assert run_state(browser) == "running"
        assert browser.find_element(By.ID, "cancel").is_displayed()
        release(tmp_path, "a")
        wait_for_state(browser, "a", "finished")
        wait_for_state(browser, "b", "running")
        wait_for_text(browser, "progress-text", lambda t: t == "1/3", "1/3")
        release(tmp_path, "b")
        wait_for_state(browser, "c", "finished")
        wait_for_state(browser, "b", "finished")
        assert proc.wait(DEADLINE) == 0
        assert json.loads((tmp_path / "cli.out").read_text()) == {"return_value": 3}
        assert run_state(browser) == "finished"
        assert browser.find_element(By.ID, "progress-text").text == "3/3"
        assert not browser.find_element(By.ID, "cancel").is_displayed()


def test_a_failed_node_turns_red_and_its_panel_shows_the_traceback(tmp_path: Path, browser: WebDriver) -> None:
    """A node that raises is shown failed; clicking it opens a panel with its error and traceback."""
    from selenium.webdriver.common.by import By

    doc = {
        "graph": {"id": "failing"},
        "nodes": [
            step(tmp_path, "ok"),
            method_node("bad", "ui_tasks.fail_when_released", directory=str(tmp_path), name="bad"),
        ],
        "links": [return_value_link("ok", "bad", "x")],
    }
    write_graph(tmp_path, doc)
    with cli(tmp_path, "run", "graph.json", "--pool", "thread", "--ui") as (proc, url):
        browser.get(url)
        release(tmp_path, "ok")
        wait_for_state(browser, "bad", "running")
        release(tmp_path, "bad")
        wait_for_state(browser, "bad", "failed")
        assert proc.wait(DEADLINE) == 1
        assert run_state(browser) == "failed"
        assert node_state(browser, "ok") == "finished"
        browser.find_element(By.CSS_SELECTOR, '[data-node-id="bad"]').click()
        panel = browser.find_element(By.ID, "panel")
        assert panel.is_displayed()
        assert browser.find_element(By.ID, "panel-title").text == "bad"
        assert browser.find_element(By.ID, "panel-state").get_attribute("data-state") == "failed"
        assert browser.find_element(By.ID, "panel-error").text == "ValueError: bad cannot take 1 (failed on purpose)"
        trace = browser.find_element(By.ID, "panel-traceback").text
        assert trace.startswith("Traceback (most recent call last):")
        assert "in _explode" in trace
        assert trace.rstrip().endswith("ValueError: bad cannot take 1 (failed on purpose)")


def test_the_cancel_button_stops_the_run_and_its_workers(tmp_path: Path, browser: WebDriver) -> None:
    """Cancel on the page cancels the run: the command exits 130, the page says cancelled, no worker is left."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    doc = {"graph": {"id": "stuck"}, "nodes": [step(tmp_path, "left"), step(tmp_path, "right")]}
    write_graph(tmp_path, doc)
    argv = ["run", "graph.json", "--pool", "process", "--max-workers", "2", "--ui"]
    with cli(tmp_path, *argv) as (proc, url):
        browser.get(url)
        wait_for_state(browser, "left", "running")
        wait_for_state(browser, "right", "running")
        wait_until(lambda: (tmp_path / "left.started").exists() and (tmp_path / "right.started").exists(), "tasks")
        workers = {int((tmp_path / f"{name}.started").read_text()) for name in ("left", "right")}
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert workers <= {p.pid for p in tree}, "the tasks run in worker processes of the command"
        browser.find_element(By.ID, "cancel").click()
        WebDriverWait(browser, PAGE_DEADLINE).until(expected_conditions.alert_is_present())
        browser.switch_to.alert.accept()
        assert proc.wait(DEADLINE) == 130
        assert "cancelled from the live view" in (tmp_path / "cli.err").read_text()
        _, alive = psutil.wait_procs(tree, timeout=DEADLINE)
        assert not alive, f"left behind: {alive}"
        assert run_state(browser) == "cancelled"
        assert (node_state(browser, "left"), node_state(browser, "right")) == ("cancelled", "cancelled")
        assert not browser.find_element(By.ID, "cancel").is_displayed()


def test_aioflow_ui_shows_a_past_run_of_a_journal(tmp_path: Path, browser: WebDriver) -> None:
    """``aioflow ui JOURNAL``: the list shows the run; its page shows each node's final state, without Cancel."""
    from selenium.webdriver.common.by import By

    doc = {
        "graph": {"id": "past"},
        "nodes": [method_node("ok", "ui_tasks.add"), method_node("bad", "ui_tasks.fail"), method_node("next", "ui_tasks.add")],
        "links": [return_value_link("ok", "bad", "x"), return_value_link("bad", "next", "x")],
    }  # fmt: skip
    write_graph(tmp_path, doc)
    argv = [sys.executable, "-m", "aioflow", "run", "graph.json", "--pool", "thread", "--journal", "runs.sqlite"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert done.returncode == 1, done.stderr
    (summary,) = list_runs(tmp_path / "runs.sqlite")
    with cli(tmp_path, "ui", "runs.sqlite", "--port", "0", name="ui", url_pattern=r" at (\S+) \(Ctrl-C") as (ui, url):
        browser.get(url)
        row = wait_for_element(browser, f'tr[data-run-id="{summary.run_id}"]')
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        assert cells[1] == "past"
        assert cells[3] == "failed"
        assert cells[4:] == ["1", "1", "0"]
        row.find_element(By.CSS_SELECTOR, "a.run-link").click()
        wait_for_state(browser, "bad", "failed")
        assert (node_state(browser, "ok"), node_state(browser, "next")) == ("finished", "pending")
        assert run_state(browser) == "failed"
        assert not browser.find_element(By.ID, "cancel").is_displayed()
        browser.find_element(By.CSS_SELECTOR, '[data-node-id="bad"]').click()
        assert browser.find_element(By.ID, "panel-error").text == "ValueError: fail cannot take 1 (failed on purpose)"
        ui.send_signal(signal.SIGINT)
        assert ui.wait(DEADLINE) == 0


def test_aioflow_ui_follows_a_run_of_another_process(tmp_path: Path, browser: WebDriver) -> None:
    """A run still running in another process: its page follows the journal as the run goes on."""
    doc = {
        "graph": {"id": "elsewhere"},
        "nodes": [step(tmp_path, "a"), step(tmp_path, "b")],
        "links": [return_value_link("a", "b", "x")],
    }
    write_graph(tmp_path, doc)
    argv = ["run", "graph.json", "--pool", "thread", "--journal", "runs.sqlite"]
    with cli(tmp_path, *argv, name="run", url_pattern=r"run (\S+) recorded in") as (run, run_id):
        wait_until(lambda: (tmp_path / "a.started").exists(), "a running task")
        with cli(tmp_path, "ui", "runs.sqlite", name="ui", url_pattern=r" at (\S+) \(Ctrl-C") as (ui, url):
            browser.get(f"{url}?run={run_id}")
            wait_for_state(browser, "a", "running")
            assert node_state(browser, "b") == "pending"
            assert run_state(browser) == "running"
            release(tmp_path, "a")
            wait_for_state(browser, "a", "finished")
            wait_for_state(browser, "b", "running")
            release(tmp_path, "b")
            wait_for_state(browser, "b", "finished")
            assert run.wait(DEADLINE) == 0
            wait_until(lambda: run_state(browser) == "finished", "the run's end on the page", PAGE_DEADLINE)
            ui.send_signal(signal.SIGINT)
            assert ui.wait(DEADLINE) == 0
