"""A run's timeline in the Chrome trace-event format: from events, from a journal, ``trace=``, and the CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from graphs import COUNTING_LOOP, method_node, node, rv

import aioflow
from aioflow import cli
from aioflow.events import Event
from aioflow.journal import JournalRun, run_firings
from aioflow.observe._trace import NO_WORKER_PID, TraceRecorder, _lanes, trace_from_events, trace_from_journal

TRACE_TASKS = Path(__file__).resolve().parent / "trace_tasks.py"
CONTROL_TASKS = Path(__file__).resolve().parent.parent / "control_tasks.py"
# Generous: only a hang reaches it.
DEADLINE = 60.0

# The names metadata events may have, and the key their args must hold.
METADATA = {"process_name": "name", "thread_name": "name", "process_sort_index": "sort_index", "thread_sort_index": "sort_index"}  # fmt: skip


# --------------------------------------------------------------------------- the format's rules


def check_trace(trace: Any) -> list[dict[str, Any]]:
    """Check ``trace`` against the rules of the trace-event format (JSON Object Format); return its X events.

    Every event has a phase, an int pid and tid and a str name; metadata
    events name processes and threads; complete events have a ts and dur
    >= 0; on one thread, complete events are disjoint or nest (never
    partly overlap); every thread and process with a slice is named; a tid
    belongs to one process only (Perfetto keys threads by tid).
    """
    assert isinstance(trace, dict)
    assert isinstance(trace["traceEvents"], list)
    assert trace["displayTimeUnit"] in ("ms", "ns")
    assert isinstance(trace.get("otherData", {}), dict)
    assert json.loads(json.dumps(trace)) == trace, "not plain JSON"
    process_names: dict[int, str] = {}
    thread_names: dict[tuple[int, int], str] = {}
    process_of_tid: dict[int, int] = {}
    slices = []
    for event in trace["traceEvents"]:
        assert isinstance(event["ph"], str), event
        assert type(event["pid"]) is int, event
        assert type(event["tid"]) is int, event
        assert isinstance(event["name"], str), event
        assert process_of_tid.setdefault(event["tid"], event["pid"]) == event["pid"], f"tid in two processes: {event}"
        if event["ph"] == "M":
            key = METADATA[event["name"]]
            value = event["args"][key]
            if key == "name":
                assert isinstance(value, str)
                assert value
                if event["name"] == "process_name":
                    process_names[event["pid"]] = value
                else:
                    thread_names[event["pid"], event["tid"]] = value
            else:
                assert type(value) is int
        elif event["ph"] == "X":
            for key in ("ts", "dur"):
                assert type(event[key]) in (int, float), event
                assert event[key] >= 0, event
            assert isinstance(event["cat"], str)
            assert isinstance(event["args"], dict)
            slices.append(event)
        else:
            pytest.fail(f"an event of an unexpected phase: {event}")
    by_thread: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for event in slices:
        assert event["pid"] in process_names, f"unnamed process: {event}"
        assert (event["pid"], event["tid"]) in thread_names, f"unnamed thread: {event}"
        by_thread[event["pid"], event["tid"]].append((event["ts"], event["ts"] + event["dur"]))
    for thread, spans in by_thread.items():
        spans.sort(key=lambda span: (span[0], -span[1]))
        enclosing: list[float] = []  # the ends of the slices that enclose the current one
        for start, end in spans:
            while enclosing and enclosing[-1] <= start:
                enclosing.pop()
            assert not enclosing or end <= enclosing[-1], f"slices partly overlap on {thread}: {spans}"
            enclosing.append(end)
    return slices


def firing_slices(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """The complete events of the firings (not the run's)."""
    return [e for e in check_trace(trace) if e["cat"].split(",")[0] == "node"]


def by_name(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each firing's slice by name; every name once (no retried attempts)."""
    slices = firing_slices(trace)
    named = {e["name"]: e for e in slices}
    assert len(named) == len(slices), [e["name"] for e in slices]
    return named


def the_run(trace: dict[str, Any]) -> dict[str, Any]:
    [run] = [e for e in check_trace(trace) if e["cat"] == "run"]
    return run


def names(trace: dict[str, Any], kind: str) -> dict[tuple[int, int], str]:
    """The names the metadata events give: ``{(pid, tid): name}``, of processes or threads."""
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"] if e["name"] == f"{kind}_name"}


def process_name(trace: dict[str, Any], pid: int) -> str:
    [name] = [name for (p, _), name in names(trace, "process").items() if p == pid]
    return name


def ends_before(first: dict[str, Any], then: dict[str, Any]) -> bool:
    """Whether slice ``first`` ends before slice ``then`` starts."""
    return bool(first["ts"] + first["dur"] <= then["ts"])


def within(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
    """Whether slice ``inner`` lies within slice ``outer``."""
    return bool(outer["ts"] <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"])


def fan_out(width: int, task: str, **inputs: Any) -> dict[str, Any]:
    """``a`` -> ``s0``...``s{width-1}`` (each running ``task``) -> ``z``."""
    fan = [f"s{i}" for i in range(width)]
    return {
        "graph": {"id": "fan"},
        "nodes": [node("a"), *(method_node(s, task, **inputs) for s in fan), node("z", "tasks.add_all")],
        "links": [*({"source": "a", "target": s} for s in fan), *({"source": s, "target": "z"} for s in fan)],
    }


# --------------------------------------------------------------------------- live: events


def test_a_thread_pool_fan_out_runs_in_lanes_of_the_driver_process() -> None:
    """Firings running at once on the thread pool are slices of separate lanes of the driver's process, in order."""
    recorder = TraceRecorder()
    aioflow.execute_graph(fan_out(4, "tasks.sleep", seconds=0.2), pool_type="thread", max_workers=4, on_event=recorder)
    trace = recorder.trace()
    slices = by_name(trace)
    assert set(slices) == {"a", "s0", "s1", "s2", "s3", "z"}
    assert {e["pid"] for e in slices.values()} == {os.getpid()}
    assert process_name(trace, os.getpid()).startswith(f"driver {os.getpid()} @ ")
    fan = [slices[f"s{i}"] for i in range(4)]
    # The four were handed to the pool in one step of the driver, and each sleeps 0.2 s: they overlap.
    assert len({e["tid"] for e in fan}) == 4
    threads = names(trace, "thread")
    assert sorted(threads[os.getpid(), e["tid"]] for e in fan) == ["lane 1", "lane 2", "lane 3", "lane 4"]
    for e in fan:
        assert ends_before(slices["a"], e)
        assert ends_before(e, slices["z"])
        assert e["args"] == {
            "node_id": e["name"], "firing": 1, "attempt": 1, "status": "finished",
            "worker_pid": os.getpid(), "worker_host": e["args"]["worker_host"],
        }  # fmt: skip
        assert e["dur"] >= 200_000
    run = the_run(trace)
    assert (run["name"], run["pid"], threads[run["pid"], run["tid"]]) == ("fan", os.getpid(), "run")
    assert run["args"] == {"graph_id": "fan", "state": "finished", "firings": 6, "failed": 0}
    assert all(within(e, run) for e in slices.values())


def test_a_process_pool_shows_each_firing_on_the_worker_that_ran_it(tmp_path: Path) -> None:
    """On the process pool, a slice's pid is the pid of the worker that ran it: two workers, two processes."""
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    graph = {
        "graph": {"id": "meet"},
        "nodes": [
            method_node(name, f"{TRACE_TASKS}::meet", directory=str(meeting), name=name, count=2)
            for name in ("m0", "m1")
        ],
    }
    recorder = TraceRecorder()
    results = aioflow.execute_graph(
        graph, pool_type="process", max_workers=2, on_event=recorder, outputs=[{"all": True}], merge_outputs=False
    )
    worker_pids = {name: outputs["return_value"] for name, outputs in results.items()}
    assert len(set(worker_pids.values())) == 2  # they waited for each other: two workers
    trace = recorder.trace()
    slices = by_name(trace)
    for name, pid in worker_pids.items():
        assert slices[name]["pid"] == slices[name]["args"]["worker_pid"] == pid
        assert process_name(trace, pid).startswith(f"worker {pid} @ ")
    run = the_run(trace)
    assert run["pid"] == os.getpid()
    assert process_name(trace, os.getpid()) == f"driver {os.getpid()} @ {run_host(trace)}"


def run_host(trace: dict[str, Any]) -> str:
    host: str = trace["otherData"]["driver"]["host"]
    return host


def test_a_failed_node_is_a_failed_slice_with_its_error() -> None:
    """A failed firing's slice is in the ``node,failed`` category, with the error's type and message."""
    graph = {"graph": {"id": "failing"}, "nodes": [node("a"), node("b", "tasks.fail")], "links": [rv("a", "b")]}
    recorder = TraceRecorder()
    with pytest.raises(aioflow.NodeError):
        aioflow.execute_graph(graph, pool_type="thread", on_event=recorder)
    slices = by_name(recorder.trace())
    assert (slices["a"]["cat"], slices["b"]["cat"]) == ("node", "node,failed")
    assert slices["b"]["args"]["status"] == "failed"
    assert slices["b"]["args"]["error"] == "ValueError: failed on purpose with ['x']"
    assert "error" not in slices["a"]["args"]
    assert ends_before(slices["a"], slices["b"])


def test_a_retried_attempt_is_a_slice_of_its_own(tmp_path: Path) -> None:
    """A node's retry: its first attempt ends at ``node.retried`` (``node,retried``), the second is a slice after it."""
    flaky = method_node("flaky", f"{CONTROL_TASKS}::fails_until", directory=str(tmp_path), succeed_on=2)
    graph = {"graph": {"id": "retry"}, "nodes": [{**flaky, "aioflow": {"retries": 1}}, node("after")],
             "links": [rv("flaky", "after")]}  # fmt: skip
    recorder = TraceRecorder()
    results = aioflow.execute_graph(graph, pool_type="thread", on_event=recorder)
    assert results == {"return_value": 3}
    slices = firing_slices(recorder.trace())
    assert [(e["name"], e["cat"], e["args"]["attempt"], e["args"]["status"]) for e in slices] == [
        ("flaky", "node,retried", 1, "retried"),
        ("flaky", "node", 2, "finished"),
        ("after", "node", 1, "finished"),
    ]
    first, second, after = slices
    assert first["args"]["error"] == "OSError: attempt 1"
    assert first["args"]["firing"] == second["args"]["firing"] == 1
    assert ends_before(first, second)
    assert ends_before(second, after)
    assert the_run(recorder.trace())["args"]["firings"] == 2  # attempts are not firings


def test_a_journal_keeps_the_retried_attempts_for_the_trace_after_the_fact(tmp_path: Path) -> None:
    """``trace_from_journal`` of a run with a retry: the attempts' slices, as the live trace has them."""
    flaky = method_node("flaky", f"{CONTROL_TASKS}::fails_until", directory=str(tmp_path), succeed_on=3)
    graph = {"graph": {"id": "retry"}, "nodes": [{**flaky, "aioflow": {"retries": 2}}, node("after")],
             "links": [rv("flaky", "after")]}  # fmt: skip
    recording, recorder = JournalRun(tmp_path / "runs.sqlite"), TraceRecorder()
    aioflow.execute_graph(graph, pool_type="process", max_workers=1, journal=recording, on_event=recorder)
    after = trace_from_journal(tmp_path / "runs.sqlite", recording.run_id)
    check_trace(after)

    def attempts(trace: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (e["name"], e["cat"], e["args"].get("attempt"), e["args"]["status"], e["args"].get("error"), e["pid"])
            for e in firing_slices(trace)
        ]

    assert attempts(after) == attempts(recorder.trace())
    assert [a[:4] for a in attempts(after)] == [
        ("flaky", "node,retried", 1, "retried"),
        ("flaky", "node,retried", 2, "retried"),
        ("flaky", "node", 3, "finished"),
        ("after", "node", 1, "finished"),
    ]


def test_a_loop_names_a_node_s_later_firings_with_their_number() -> None:
    """A node that fires again is named ``again #2``, ``again #3``: one slice per firing, in the loop's order."""
    recorder = TraceRecorder()
    aioflow.execute_graph(COUNTING_LOOP, pool_type="thread", on_event=recorder)
    slices = firing_slices(recorder.trace())
    assert [e["name"] for e in slices] == ["start", "again", "again #2", "again #3", "end"]
    assert [e["args"]["firing"] for e in slices] == [1, 1, 2, 3, 1]
    for first, then in itertools.pairwise(slices):
        assert ends_before(first, then)
    assert len({e["tid"] for e in slices}) == 1  # a chain never needs a second lane


def test_unknown_event_kinds_are_ignored_and_open_firings_end_as_unended() -> None:
    """Event kinds the trace does not know are skipped; a firing that never ended ends at the last event."""
    base = 1000.0
    events = [
        Event("graph.started", "g", base, total=2),
        Event("node.queued", "g", base + 0.1, node_id="a", number=1),
        Event("node.started", "g", base + 0.2, node_id="a", number=1),
        Event("node.started", "g", base + 0.3, node_id="b", number=1),
        Event("node.finished", "g", base + 0.5, node_id="a", number=1, worker_pid=4242, worker_host="far"),
        Event("node.progress", "g", base + 0.7, node_id="b", number=1),  # type: ignore[arg-type]
    ]
    trace = trace_from_events(events)
    slices = by_name(trace)
    assert set(slices) == {"a", "b"}
    assert (slices["a"]["ts"], slices["a"]["dur"], slices["a"]["pid"]) == (200_000, 300_000, 4242)
    assert process_name(trace, 4242) == "worker 4242 @ far"
    assert (slices["b"]["ts"], slices["b"]["dur"], slices["b"]["pid"]) == (300_000, 400_000, NO_WORKER_PID)
    assert (slices["b"]["cat"], slices["b"]["args"]["status"]) == ("node,unended", "unended")
    assert process_name(trace, NO_WORKER_PID) == "no worker reported"
    run = the_run(trace)
    assert (run["ts"], run["dur"], run["args"]["state"]) == (0, 700_000, "unended")


def test_lanes_are_the_fewest_and_each_span_takes_the_lowest_free() -> None:
    """Interval partitioning: as many lanes as spans overlap at most, each span in the lowest lane free at its start."""
    rng = random.Random(7)
    for _ in range(200):
        spans = [(start, start + rng.randrange(1, 30)) for start in (rng.randrange(0, 100) for _ in range(40))]
        lanes = _lanes(spans)
        assert max(lanes) + 1 == max(sum(s <= t < e for s, e in spans) for t in range(130))
        for i, (start, end) in enumerate(spans):
            same = [spans[j] for j in range(len(spans)) if j != i and lanes[j] == lanes[i]]
            assert all(e <= start or end <= s for s, e in same), (spans[i], same)
            for lower in range(lanes[i]):
                assert any(s <= start < e for (s, e), lane in zip(spans, lanes, strict=True) if lane == lower)
    # A span may start where another ended; one of no length fits in a lane that is free at its time.
    assert _lanes([(0, 10), (2, 4), (5, 20), (10, 12), (4, 4), (3, 3)]) == [0, 1, 1, 0, 1, 2]


# --------------------------------------------------------------------------- trace=


def test_the_trace_option_writes_the_file_also_when_the_run_raises(tmp_path: Path) -> None:
    """``execute_graph(trace=...)``: the file is written when the run ends with a NodeError; on_event still sees all."""
    path = tmp_path / "run.json"
    seen: list[Event] = []
    graph = {"graph": {"id": "failing"}, "nodes": [node("a"), node("b", "tasks.fail")], "links": [rv("a", "b")]}
    with pytest.raises(aioflow.NodeError):
        aioflow.execute_graph(graph, pool_type="thread", trace=path, on_event=seen.append)
    assert [e.kind for e in seen] == [
        "graph.started", "node.queued", "node.started", "node.finished",
        "node.queued", "node.started", "node.failed", "graph.finished",
    ]  # fmt: skip
    trace = json.loads(path.read_text())
    assert the_run(trace)["args"] == {"graph_id": "failing", "state": "failed", "firings": 2, "failed": 1}
    assert {name: e["args"]["status"] for name, e in by_name(trace).items()} == {"a": "finished", "b": "failed"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left


def test_a_cancelled_run_started_with_start_writes_what_was_seen(tmp_path: Path) -> None:
    """``aioflow.start(graph, trace=..., journal=...)`` cancelled: the running firing ends as cancelled, in both."""
    path, journal = tmp_path / "run.json", tmp_path / "runs.sqlite"
    spin = method_node("long", f"{CONTROL_TASKS}::spin", directory=str(tmp_path), seconds=30, name="long")
    graph = {"graph": {"id": "cancelled"}, "nodes": [node("a"), spin], "links": [{"source": "a", "target": "long"}]}
    recording = JournalRun(journal)
    with aioflow.start(graph, pool_type="thread", trace=path, journal=recording) as run:
        end = time.monotonic() + DEADLINE
        while not (tmp_path / "long").exists():
            assert time.monotonic() < end
            time.sleep(0.01)
        assert run.cancel()
        with pytest.raises(asyncio.CancelledError):
            run.result(timeout=DEADLINE)
    live = json.loads(path.read_text())
    after = trace_from_journal(journal, recording.run_id)
    for trace in (live, after):
        slices = by_name(trace)
        assert {name: e["args"]["status"] for name, e in slices.items()} == {"a": "finished", "long": "cancelled"}
        assert slices["long"]["cat"] == "node,cancelled"
        assert the_run(trace)["args"]["state"] == "cancelled"
        assert all(within(e, the_run(trace)) for e in slices.values())


def test_a_run_past_its_timeout_ends_as_timeout_and_its_running_firing_as_cancelled(tmp_path: Path) -> None:
    """``trace=`` with a run that times out: the run's state is ``timeout``, the firing it stopped ``cancelled``."""
    path = tmp_path / "run.json"
    graph = {"graph": {"id": "slow"}, "nodes": [node("a"), method_node("long", "tasks.sleep_python", seconds=30)],
             "links": [{"source": "a", "target": "long"}]}  # fmt: skip
    with pytest.raises(aioflow.ExecutionTimeoutError):
        aioflow.execute_graph(graph, pool_type="thread", timeout=0.5, trace=path)
    trace = json.loads(path.read_text())
    slices = by_name(trace)
    assert {name: e["cat"] for name, e in slices.items()} == {"a": "node", "long": "node,cancelled"}
    run = the_run(trace)
    assert run["args"]["state"] == "timeout"
    assert all(within(e, run) for e in slices.values())
    assert 400_000 <= run["dur"] < 30_000_000


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        (42, "'trace' must be a file path (str or os.PathLike), or None (got 42 of type int)"),
        ("{tmp}/missing/run.json", "'trace': cannot write '{tmp}/missing/run.json': there is no directory '{tmp}/missing'"),
        ("{tmp}", "'trace': '{tmp}' is a directory: give a file name in it"),
    ],
)  # fmt: skip
def test_a_trace_path_that_cannot_be_written_is_refused_before_anything_runs(
    tmp_path: Path, trace: Any, message: str
) -> None:
    """An invalid ``trace=`` is an OptionError before the run starts: no event is sent."""
    if isinstance(trace, str):
        trace = trace.format(tmp=tmp_path)
    seen: list[Event] = []
    with pytest.raises(aioflow.OptionError) as raised:
        aioflow.execute_graph({"nodes": [node("a")]}, pool_type="thread", trace=trace, on_event=seen.append)
    assert str(raised.value) == message.format(tmp=tmp_path)
    assert seen == []


# --------------------------------------------------------------------------- the journal and the CLI


def test_a_journal_run_gives_the_same_firings_as_the_live_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``aioflow trace JOURNAL RUN_ID`` after a journaled run: the same firings, statuses and processes as live."""
    journal = tmp_path / "runs.sqlite"
    graph = {
        **COUNTING_LOOP,
        "nodes": [*COUNTING_LOOP["nodes"], node("bad", "tasks.fail")],
        "links": [*COUNTING_LOOP["links"], {"source": "end", "target": "bad", "map_all_data": True}],
    }
    recording = JournalRun(journal)
    recorder = TraceRecorder()
    aioflow.execute_graph(graph, pool_type="thread", journal=recording, on_event=recorder, raise_on_error=False)
    output = tmp_path / "out.json"
    assert cli.main(["trace", str(journal), recording.run_id, "-o", str(output)]) == cli.EXIT_OK
    assert capsys.readouterr().err == f"aioflow: timeline of run {recording.run_id} written to {output}\n"
    after, live = json.loads(output.read_text()), recorder.trace()

    def firings(trace: dict[str, Any]) -> Counter[tuple[Any, ...]]:
        return Counter(
            (e["name"], e["args"]["node_id"], e["args"]["firing"], e["args"]["status"], e["pid"], e.get("cat"))
            for e in firing_slices(trace)
        )

    assert firings(after) == firings(live)
    recorded = run_firings(journal, recording.run_id)
    assert sorted((f.node_id, f.execution) for f in recorded) == sorted(
        (e["args"]["node_id"], e["args"]["firing"]) for e in firing_slices(after)
    )
    assert by_name(after)["bad"]["args"]["error"] == by_name(live)["bad"]["args"]["error"]
    run = the_run(after)
    assert run["args"] == {
        "graph_id": "loop", "state": "finished", "firings": 6, "failed": 1, "run_id": recording.run_id,
    }  # fmt: skip
    assert after["otherData"]["run_id"] == recording.run_id
    # Relative times: the journal's wall clock and the events' monotonic clock both start near 0.
    assert 0 <= min(e["ts"] for e in firing_slices(after)) < 5_000_000


def test_trace_of_an_unknown_run_is_a_usage_error_naming_the_journal_and_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "runs.sqlite"
    aioflow.execute_graph({"nodes": [node("a")]}, pool_type="thread", journal=journal)
    assert cli.main(["trace", str(journal), "nope"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"aioflow: error: journal '{journal}': has no run 'nope' ('aioflow runs {journal}' lists its runs)\n"
    assert cli.main(["trace", str(tmp_path / "missing.sqlite"), "nope"]) == cli.EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err


def test_trace_writes_run_id_trace_json_by_default_and_to_stdout_with_a_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "runs.sqlite"
    recording = JournalRun(journal)
    aioflow.execute_graph({"graph": {"id": "one"}, "nodes": [node("a")]}, pool_type="thread", journal=recording)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["trace", str(journal), recording.run_id]) == cli.EXIT_OK
    default = f"{recording.run_id}.trace.json"
    assert capsys.readouterr().err.endswith(f"written to {default}\n")
    assert cli.main(["trace", str(journal), recording.run_id, "--output", "-"]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == json.loads((tmp_path / default).read_text())
    assert list(by_name(json.loads(out))) == ["a"]


def test_cli_run_with_trace_writes_the_timeline_of_its_workers(tmp_path: Path) -> None:
    """``python -m aioflow run GRAPH --trace OUT`` in its own process: the driver is that process, the slice a worker's."""
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"graph": {"id": "pids"}, "nodes": [node("a"), node("p", "tasks.pid")],
                                 "links": [{"source": "a", "target": "p"}]}))  # fmt: skip
    out = tmp_path / "run.json"
    command = [sys.executable, "-m", "aioflow", "run", str(graph), "--pool", "process", "--max-workers", "1"]
    with subprocess.Popen(
        [*command, "--trace", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        stdout, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, stderr
    assert stderr == f"aioflow: the run's timeline goes to {out} when it ends\n"
    worker = json.loads(stdout)["return_value"]
    trace = json.loads(out.read_text())
    slices = by_name(trace)
    assert slices["p"]["pid"] == slices["a"]["pid"] == worker != proc.pid
    assert the_run(trace)["pid"] == proc.pid
    assert process_name(trace, proc.pid).startswith(f"driver {proc.pid} @ ")
    assert ends_before(slices["a"], slices["p"])


def test_resume_with_trace_puts_the_firings_taken_from_the_journal_on_no_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``aioflow resume --trace``: a firing taken from the journal ran on no worker; the journal's trace says reused."""
    journal = tmp_path / "runs.sqlite"
    graph = {"graph": {"id": "failing"}, "nodes": [node("a"), node("b", "tasks.fail")], "links": [rv("a", "b")]}
    first = JournalRun(journal)
    with pytest.raises(aioflow.NodeError):
        aioflow.execute_graph(graph, pool_type="thread", journal=first)
    out = tmp_path / "resumed.json"
    code = cli.main(["resume", str(journal), first.run_id, "--pool", "thread", "--trace", str(out)])
    assert code == cli.EXIT_FAILED  # b fails again
    err = capsys.readouterr().err
    assert err.startswith(f"aioflow: the run's timeline goes to {out} when it ends\naioflow: run ")
    [resumed] = [line.split()[2] for line in err.splitlines() if " recorded in " in line]
    live = by_name(json.loads(out.read_text()))
    assert (live["a"]["pid"], live["a"]["cat"], live["b"]["pid"]) == (NO_WORKER_PID, "node", os.getpid())
    assert "worker_pid" not in live["a"]["args"]
    after = by_name(trace_from_journal(journal, resumed))
    assert (after["a"]["pid"], after["a"]["cat"]) == (NO_WORKER_PID, "node,reused")
    assert after["a"]["args"]["reused_from"].startswith(f"{first.run_id}:")
    assert (after["b"]["pid"], after["b"]["cat"]) == (os.getpid(), "node,failed")


def test_cli_run_stopped_by_sigterm_still_writes_the_timeline(tmp_path: Path) -> None:
    """``aioflow run --trace`` stopped by SIGTERM: exit 143, and the file shows the run and its firing as cancelled."""
    spin = method_node("long", f"{CONTROL_TASKS}::spin", directory=str(tmp_path), seconds=30, name="long")
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"graph": {"id": "stopped"}, "nodes": [node("a"), spin],
                                 "links": [{"source": "a", "target": "long"}]}))  # fmt: skip
    out = tmp_path / "run.json"
    command = [sys.executable, "-m", "aioflow", "run", str(graph), "--pool", "thread", "--trace", str(out)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            end = time.monotonic() + DEADLINE
            while not (tmp_path / "long").exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < end
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == cli.EXIT_TERMINATED, stderr
    trace = json.loads(out.read_text())
    slices = by_name(trace)
    assert {name: e["cat"] for name, e in slices.items()} == {"a": "node", "long": "node,cancelled"}
    assert slices["long"]["pid"] == NO_WORKER_PID  # a firing's worker is reported when it ends
    run = the_run(trace)
    assert (run["pid"], run["args"]["state"]) == (proc.pid, "cancelled")
    assert all(within(e, run) for e in slices.values())
