"""Per-node control (the ``"aioflow"`` node attribute): timeouts that stop the task, retries, priorities.

The behaviour tests run on every local pool (the ``local_pool`` fixture,
tests/conftest.py); the checks of the attribute need no pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from graphs import method_node

import aioflow
from aioflow.graph._control import NO_CONTROL, NodeControl, RetryDelay, node_controls

if TYPE_CHECKING:
    from pool_capabilities import LocalPool

TASKS = Path(__file__).resolve().parent / "control_tasks.py"

# Generous: only a hang reaches it.
DEADLINE = 60.0

pytestmark = pytest.mark.usefixtures("billiard_singletons")


def task(name: str) -> str:
    return f"{TASKS}::{name}"


def node(node_id: str, fn: str, control: dict[str, Any] | None = None, /, **inputs: Any) -> dict[str, Any]:
    raw = method_node(node_id, task(fn), **inputs)
    if control is not None:
        raw["aioflow"] = control
    return raw


def value_link(source: str, target: str) -> dict[str, Any]:
    """A link giving ``source``'s return value to ``target``'s input ``value``."""
    return {
        "source": source,
        "target": target,
        "data_mapping": [{"source_output": "return_value", "target_input": "value"}],
    }


def aioflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m aioflow ARGS``, with the tests' task modules importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TASKS.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "aioflow", *args], capture_output=True, text=True, timeout=DEADLINE, check=False, env=env
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


# --------------------------------------------------------------------------- the attribute


def test_a_node_s_settings_are_read_over_the_run_s_defaults() -> None:
    graph = aioflow.load_graph(
        {
            "graph": {"id": "g"},
            "nodes": [
                method_node("plain", "operator.add"),
                {**method_node("fit", "operator.add"), "aioflow": {"timeout": 30, "retries": 2, "priority": -1}},
                {**method_node("io", "operator.add"), "aioflow": {"retry_delay": [1, 5], "retry_on": "OSError"}},
            ],
        }
    )
    assert node_controls(graph) == {
        "fit": NodeControl(timeout=30.0, retries=2, priority=-1),
        "io": NodeControl(retry_delay=RetryDelay(delays=(1.0, 5.0)), retry_on=("OSError",)),
    }
    with_defaults = node_controls(graph, {"timeout": 5, "retries": 1})
    assert with_defaults["plain"] == NodeControl(timeout=5.0, retries=1)
    assert with_defaults["fit"] == NodeControl(timeout=30.0, retries=2, priority=-1)
    assert with_defaults["io"].timeout == 5.0
    assert node_controls(graph, {}).get("plain", NO_CONTROL) is NO_CONTROL


def test_every_problem_of_the_attribute_is_reported_with_its_node() -> None:
    bad = {
        "timeout": 0,
        "retries": -1,
        "retry_delay": {"factor": 0.5, "steps": 3},
        "retry_on": ["not-a-path", 3],
        "priority": 1.5,
        "pool": "",
        "timeot": 3,
    }
    document = {
        "graph": {"id": "g"},
        "nodes": [
            {**method_node("a", "operator.add"), "aioflow": bad},
            {**method_node("b", "operator.add"), "aioflow": ["timeout", 3]},
            {"id": "sub", "task_type": "graph", "task_identifier": {"nodes": [], "links": []}, "aioflow": {}},
        ],
    }
    with pytest.raises(aioflow.GraphError) as info:
        aioflow.load_graph(document)
    problems = "\n".join(info.value.problems)
    for expected in (
        "node 'a': 'aioflow': has an unknown key 'timeot'",
        "node 'a': 'aioflow': 'timeout' must be a number of seconds > 0 (got 0)",
        "node 'a': 'aioflow': 'retries' must be an int from 0",
        "node 'a': 'aioflow': 'retry_delay' has an unknown key 'steps'",
        "node 'a': 'aioflow': 'retry_delay': 'factor' must be a number from 1 to 1000 (got 0.5)",
        "node 'a': 'aioflow': 'retry_on' must be an exception's import path or a list of them",
        "node 'a': 'aioflow': 'priority' must be an int (got 1.5)",
        "node 'a': 'aioflow': 'pool' must be the name of one of the execution's pools",
        "node 'b': 'aioflow': must be an object",
        "node 'sub': 'aioflow' settings go on task nodes",
    ):
        assert expected in problems


def test_aioflow_check_reports_the_attribute_s_problems(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(
        json.dumps({"graph": {"id": "g"}, "nodes": [{**method_node("a", "m.f"), "aioflow": {"retries": "2"}}]})
    )
    done = aioflow_cli("check", str(path))
    assert done.returncode == 2
    assert "node 'a': 'aioflow': 'retries' must be an int" in done.stderr


def test_delays_fixed_listed_and_exponential() -> None:
    listed = RetryDelay(delays=(1.0, 5.0))
    assert [listed.before(n) for n in (1, 2, 3, 10)] == [1.0, 5.0, 5.0, 5.0]
    exponential = RetryDelay(initial=0.5, factor=2.0, max=3.0)
    assert [exponential.before(n) for n in (1, 2, 3, 4, 1000)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = RetryDelay(initial=1.0, factor=1.0, jitter=0.25)
    assert all(1.0 <= jittered.before(n) <= 1.25 for n in range(1, 200))
    assert len({jittered.before(1) for _ in range(50)}) > 1


def test_bad_node_defaults_are_refused_before_anything_runs(tmp_path: Path) -> None:
    graph = {"nodes": [node("a", "count", directory=str(tmp_path), name="a")]}
    with pytest.raises(aioflow.OptionError, match=r"node_defaults.*'retries' must be an int"):
        aioflow.execute_graph(graph, pool_type="thread", node_defaults={"retries": True})
    assert not (tmp_path / "executions").exists()


def test_a_retry_on_class_that_does_not_import_is_named_with_its_node(tmp_path: Path) -> None:
    graph = {
        "nodes": [
            node("a", "count", {"retries": 1, "retry_on": ["no_such_module.Error"]}, directory=str(tmp_path), name="a")
        ]
    }
    with pytest.raises(aioflow.GraphError, match=r"node 'a': 'aioflow': 'retry_on': 'no_such_module.Error'"):
        aioflow.execute_graph(graph, pool_type="thread")
    graph["nodes"][0]["aioflow"]["retry_on"] = ["json.dumps"]
    with pytest.raises(aioflow.GraphError, match="is not an exception class"):
        aioflow.execute_graph(graph, pool_type="thread")
    assert not (tmp_path / "executions").exists()


def test_a_node_naming_a_pool_the_execution_does_not_have_is_refused(tmp_path: Path) -> None:
    graph = {"nodes": [node("a", "count", {"pool": "cpu"}, directory=str(tmp_path), name="a")]}
    with pytest.raises(aioflow.GraphError, match=r"'pool' names the pool 'cpu'.*it was given no pools="):
        aioflow.execute_graph(graph, pool_type="thread")
    with pytest.raises(aioflow.GraphError, match=r"'pool' names the pool 'cpu'.*its pools are 'io'"):
        aioflow.execute_graph(graph, pool_type="thread", pools={"io": {"pool_type": "thread"}})
    assert not (tmp_path / "executions").exists()


def test_the_cli_takes_node_defaults(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    graph = {"graph": {"id": "g"}, "nodes": [node("f", "fails_until", directory=str(tmp_path), succeed_on=2)]}
    path.write_text(json.dumps(graph))
    run = ["run", str(path), "--pool", "thread"]
    failed = aioflow_cli(*run)
    assert failed.returncode == 1
    (tmp_path / "attempts").unlink()
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("retries: 1\n")
    done = aioflow_cli(*run, "--node-defaults", str(defaults))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"return_value": 2}
    bad = aioflow_cli(*run, "--node-defaults", '{"timeout": "1"}')
    assert bad.returncode == 2
    assert "'timeout' must be a number of seconds > 0" in bad.stderr


# --------------------------------------------------------------------------- retries


def test_a_failed_attempt_runs_again_until_it_succeeds(local_pool: LocalPool, tmp_path: Path) -> None:
    """Each attempt knows its number; each failed one is an event; the results keep every attempt's error."""
    control = {"retries": 3, "retry_delay": [0.01, 0.02]}
    graph = {
        "nodes": [
            node("flaky", "fails_until", control, directory=str(tmp_path), succeed_on=3),
            node("after", "count", directory=str(tmp_path), name="after"),
        ],
        "links": [
            {
                "source": "flaky",
                "target": "after",
                "data_mapping": [{"source_output": "return_value", "target_input": "value"}],
            }
        ],
    }
    events: list[tuple[str, Any, int, str]] = []
    results = aioflow.execute_graph(
        graph,
        on_event=lambda e: events.append((e.kind, e.node_id, e.attempt, repr(e.error))),
        timeout=DEADLINE,
        **local_pool.options(max_workers=2),
    )
    assert results == {"return_value": 4}
    assert [line.split()[0] for line in lines(tmp_path / "attempts")] == ["1", "2", "3"]
    assert [(type(e), str(e)) for e in results.attempts["flaky"]] == [(OSError, "attempt 1"), (OSError, "attempt 2")]
    flaky = [(kind, attempt, error) for kind, nid, attempt, error in events if nid == "flaky"]
    assert flaky == [
        ("node.queued", 1, "None"),
        ("node.started", 1, "None"),
        ("node.retried", 1, "OSError('attempt 1')"),
        ("node.retried", 2, "OSError('attempt 2')"),
        ("node.finished", 3, "None"),
    ]
    assert lines(tmp_path / "executions") == ["after"]


def test_the_last_attempt_s_failure_fails_the_node_with_every_attempt_s_error(
    local_pool: LocalPool, tmp_path: Path
) -> None:
    graph = {"nodes": [node("flaky", "fails_until", {"retries": 2}, directory=str(tmp_path), succeed_on=10)]}
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(graph, timeout=DEADLINE, **local_pool.options(max_workers=2))
    assert [str(e) for e in info.value.attempts] == ["attempt 1", "attempt 2", "attempt 3"]
    assert info.value.error is info.value.attempts[-1]
    assert "failed (attempt 3 of 3)" in str(info.value)
    assert len(lines(tmp_path / "attempts")) == 3


def test_only_the_failures_retry_on_names_run_again(local_pool: LocalPool, tmp_path: Path) -> None:
    control = {"retries": 5, "retry_on": ["OSError", "json.JSONDecodeError"]}
    graph = {"nodes": [node("f", "fails_until", control, directory=str(tmp_path), succeed_on=3, error="ValueError")]}
    results = aioflow.execute_graph(graph, raise_on_error=False, timeout=DEADLINE, **local_pool.options(max_workers=2))
    assert isinstance(results.errors["f"], ValueError)
    assert len(lines(tmp_path / "attempts")) == 1
    (tmp_path / "attempts").unlink()
    graph["nodes"][0]["default_inputs"] = [
        *graph["nodes"][0]["default_inputs"][:2],
        {"name": "error", "value": "ConnectionError"},
    ]
    results = aioflow.execute_graph(graph, timeout=DEADLINE, **local_pool.options(max_workers=2))
    assert results == {"return_value": 3}  # a ConnectionError is an OSError


def test_a_node_that_succeeded_is_never_run_again(local_pool: LocalPool, tmp_path: Path) -> None:
    """Retries of one node leave the others alone: each runs once, a loop's iterations once each."""
    every = {"retries": 3}
    graph = {
        "nodes": [
            node("a", "count", every, directory=str(tmp_path), name="a"),
            node("flaky", "fails_until", every, directory=str(tmp_path), succeed_on=2),
            node("b", "count", every, directory=str(tmp_path), name="b"),
        ],
        "links": [{"source": "a", "target": "flaky"}, {"source": "flaky", "target": "b"}],
    }
    aioflow.execute_graph(
        graph, node_defaults={"retry_delay": 0}, timeout=DEADLINE, **local_pool.options(max_workers=2)
    )
    assert sorted(lines(tmp_path / "executions")) == ["a", "b"]
    assert len(lines(tmp_path / "attempts")) == 2


# --------------------------------------------------------------------------- timeouts


def test_a_node_past_its_timeout_fails_and_the_others_run_on(local_pool: LocalPool, tmp_path: Path) -> None:
    """The slow node fails with NodeTimeoutError long before its task would end; every other node runs."""
    graph = {
        "nodes": [
            node("slow", "spin", {"timeout": 0.5}, directory=str(tmp_path), seconds=30, name="slow"),
            node("other", "spin", directory=str(tmp_path), seconds=1.0, name="other"),
            node("next", "count", directory=str(tmp_path), name="next"),
        ],
        "links": [{"source": "other", "target": "next"}],
    }
    t0 = time.monotonic()
    results = aioflow.execute_graph(graph, raise_on_error=False, timeout=DEADLINE, **local_pool.options(max_workers=2))
    assert time.monotonic() - t0 < 20
    error = results.errors["slow"]
    assert isinstance(error, aioflow.NodeTimeoutError)
    assert isinstance(error, TimeoutError)
    assert (error.node_id, error.timeout) == ("slow", 0.5)
    assert "ran past its timeout of 0.5 s" in str(error)
    assert lines(tmp_path / "other") == [lines(tmp_path / "other")[0], "end"]
    assert lines(tmp_path / "executions") == ["next"]
    assert "end" not in lines(tmp_path / "slow")


@pytest.mark.needs("processes")
def test_a_timeout_kills_the_worker_and_what_its_task_started(local_pool: LocalPool, tmp_path: Path) -> None:
    """On a process pool the worker is killed with its children, and replaced: the next nodes run."""
    nested = local_pool.can("nested processes")
    nd_tasks = Path(__file__).resolve().parent / "pools" / "nd_tasks.py"
    sleeper = method_node("slow", f"{nd_tasks}::sleep_with_children", directory=str(tmp_path), with_process=nested)
    sleeper["aioflow"] = {"timeout": 3.0}
    graph = {
        "nodes": [sleeper, node("after", "count", directory=str(tmp_path), name="after")],
        "links": [{"source": "slow", "target": "after", "on_error": True}],
    }
    with aioflow.open_pool(**local_pool.options(max_workers=1)) as pool:
        results = aioflow.execute_graph(graph, pool=pool, timeout=DEADLINE)
        assert lines(tmp_path / "executions") == ["after"]
        assert results == {"return_value": 1}
        (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
        pids = [record["worker"], *record["children"]]
        assert len(pids) == (3 if nested else 2)
        end = time.monotonic() + DEADLINE
        while not all(map(_gone, pids)) and time.monotonic() < end:
            time.sleep(0.05)
        assert [pid for pid in pids if not _gone(pid)] == []
        # The pool replaced the worker: the next execution runs.
        again = {"nodes": [node("x", "count", directory=str(tmp_path), name="x", value=2)]}
        assert aioflow.execute_graph(again, pool=pool, timeout=DEADLINE) == {"return_value": 3}


def test_a_timed_out_attempt_runs_again_only_when_retry_on_names_timeouts(
    local_pool: LocalPool, tmp_path: Path
) -> None:
    slow = {"timeout": 0.5, "retries": 2}
    graph = {"nodes": [node("s", "slow_first", slow, directory=str(tmp_path), seconds=30)]}
    results = aioflow.execute_graph(graph, raise_on_error=False, timeout=DEADLINE, **local_pool.options(max_workers=2))
    assert isinstance(results.errors["s"], aioflow.NodeTimeoutError)
    assert lines(tmp_path / "attempts") == ["1"]
    (tmp_path / "attempts").unlink()
    graph["nodes"][0]["aioflow"] = {**slow, "retry_on": "TimeoutError"}
    results = aioflow.execute_graph(graph, timeout=DEADLINE, **local_pool.options(max_workers=2))
    assert results == {"return_value": 2}
    assert lines(tmp_path / "attempts") == ["1", "2"]
    assert [type(e) for e in results.attempts["s"]] == [aioflow.NodeTimeoutError]


def test_the_clock_starts_when_a_worker_takes_the_call(local_pool: LocalPool, tmp_path: Path) -> None:
    """Calls queued behind others on one worker do not time out while they wait."""
    graph = {
        "nodes": [
            node(f"n{i}", "spin", {"timeout": 1.5}, directory=str(tmp_path), seconds=0.3, name=f"n{i}")
            for i in range(6)
        ]
    }
    results = aioflow.execute_graph(graph, merge_outputs=False, timeout=DEADLINE, **local_pool.options(max_workers=1))
    assert sorted(r["return_value"] for r in results.values()) == [f"n{i}" for i in range(6)]


def test_a_thread_blocked_in_a_c_call_fails_its_node_at_the_deadline(tmp_path: Path) -> None:
    """The thread cannot be stopped: the node fails all the same, the error says so, and the run does not wait."""
    graph = {"nodes": [node("c", "blocked_in_c", {"timeout": 0.3}, seconds=3.0)]}
    t0 = time.monotonic()
    with pytest.raises(aioflow.NodeError) as info:
        aioflow.execute_graph(graph, pool_type="thread", max_workers=1)
    assert time.monotonic() - t0 < 2.5
    error = info.value.error
    assert isinstance(error, aioflow.NodeTimeoutError)
    assert "one blocked in a C call runs on until it returns" in str(error)
    time.sleep(3.0)  # the thread ends with its C call (the leak check waits for it)


# --------------------------------------------------------------------------- priorities


def test_higher_priorities_are_sent_first(local_pool: LocalPool, tmp_path: Path) -> None:
    """More firings are ready than the pool takes (8 calls per worker): they are sent by priority, then in order."""
    priorities = [(i * 7) % 11 - 5 for i in range(40)]  # -5..5, each about four times, shuffled
    children = [
        node(f"c{i}", "record", {"priority": p}, directory=str(tmp_path), name=f"c{i}")
        for i, p in enumerate(priorities)
    ]
    graph = {
        "nodes": [node("src", "count", directory=str(tmp_path), name="src"), *children],
        "links": [{"source": "src", "target": c["id"]} for c in children],
    }
    started: list[Any] = []
    aioflow.execute_graph(
        graph,
        on_event=lambda e: started.append(e.node_id) if e.kind == "node.started" else None,
        timeout=DEADLINE,
        **local_pool.options(max_workers=1),
    )
    expected = [f"c{i}" for i in sorted(range(40), key=lambda i: (-priorities[i], i))]
    assert started == ["src", *expected]
    ran = [json.loads(line)[0] for line in lines(tmp_path / "order")]
    assert ran == expected  # one worker runs them in the order they were sent


# --------------------------------------------------------------------------- several pools


def _where(node_id: str, pool: str | None, upstream: str | None = None) -> dict[str, Any]:
    raw = method_node(node_id, "clusters.dask_tasks.worker_pid")
    if pool is not None:
        raw["aioflow"] = {"pool": pool}
    return raw


def test_each_node_runs_on_the_pool_it_names(tmp_path: Path) -> None:
    """A process pool and a thread pool in one execution; data goes between them through the driver."""
    graph = {
        "graph": {"id": "two-pools"},
        "nodes": [
            node("cpu", "count", {"pool": "cpu"}, directory=str(tmp_path), name="cpu", value=1),
            node("io", "count", {"pool": "io"}, directory=str(tmp_path), name="io"),
            node("own", "count", directory=str(tmp_path), name="own"),
            _where("cpu_pid", "cpu"),
            _where("io_pid", "io"),
            _where("own_pid", None),
        ],
        "links": [
            value_link("cpu", "io"),
            value_link("io", "own"),
        ],
    }
    with aioflow.open_pool("process", max_workers=1, context="fork") as cpu:
        results = aioflow.execute_graph(
            graph,
            pools={"cpu": cpu, "io": {"pool_type": "thread", "max_workers": 4}},
            pool_type="thread",
            outputs=[{"all": True}],
            merge_outputs=False,
            timeout=DEADLINE,
        )
        cpu_workers = set(cpu.executor.worker_pids())  # type: ignore[attr-defined]
        assert not cpu.closed  # an open pool given by name stays open
    assert results["own"] == {"return_value": 4}  # 1 -> cpu 2 -> io 3 -> own 4
    assert results["cpu_pid"]["return_value"] in cpu_workers
    assert results["io_pid"]["return_value"] == results["own_pid"]["return_value"] == os.getpid()


def test_default_pool_is_the_pool_of_the_nodes_that_name_none(tmp_path: Path) -> None:
    graph = {"nodes": [_where("a", None), _where("b", "io")]}
    results = aioflow.execute_graph(
        graph,
        pools={"cpu": {"pool_type": "process", "max_workers": 1, "context": "fork"}, "io": {"pool_type": "thread"}},
        default_pool="cpu",
        merge_outputs=False,
        timeout=DEADLINE,
    )
    assert results["a"]["return_value"] != os.getpid()
    assert results["b"]["return_value"] == os.getpid()


def test_what_pools_refuses(tmp_path: Path) -> None:
    graph = {"nodes": [_where("a", None)]}
    with pytest.raises(aioflow.OptionError, match="'pools' must be a dict"):
        aioflow.execute_graph(graph, pools=[("cpu", {})])
    with pytest.raises(aioflow.OptionError, match=r"pools\['cpu'\]. must be a dict of pool keywords"):
        aioflow.execute_graph(graph, pools={"cpu": {"pool_type": "process", "workers": 2}})
    with pytest.raises(aioflow.OptionError, match="'default_pool' must be the name of one of pools="):
        aioflow.execute_graph(graph, pools={"cpu": {"pool_type": "thread"}}, default_pool="gpu")
    with pytest.raises(aioflow.OptionError, match="'default_pool' must be given without pool"):
        aioflow.execute_graph(graph, pools={"cpu": {"pool_type": "thread"}}, default_pool="cpu", pool_type="thread")
    closed = aioflow.open_pool("thread")
    closed.close()
    with pytest.raises(aioflow.PoolClosedError, match=r"pools\['old'\] is closed"):
        aioflow.execute_graph(graph, pools={"old": closed})


def test_a_timeout_on_one_pool_leaves_the_other_pool_s_nodes_running(tmp_path: Path) -> None:
    d = str(tmp_path)
    graph = {
        "nodes": [
            node("slow", "spin", {"pool": "cpu", "timeout": 0.5}, directory=d, seconds=30, name="slow"),
            node("other", "spin", {"pool": "io"}, directory=d, seconds=1.0, name="other"),
        ]
    }
    results = aioflow.execute_graph(
        graph,
        pools={"cpu": {"pool_type": "process", "max_workers": 1, "context": "fork"}, "io": {"pool_type": "thread"}},
        default_pool="io",
        raise_on_error=False,
        timeout=DEADLINE,
    )
    assert isinstance(results.errors["slow"], aioflow.NodeTimeoutError)
    assert "worker process was killed" in str(results.errors["slow"])
    assert lines(tmp_path / "other")[-1] == "end"


def test_the_gevent_pool_does_not_share_an_execution() -> None:
    graph = {"nodes": [_where("a", "green")]}
    with pytest.raises(aioflow.OptionError, match=r"pools\['green'\] runs its tasks in the gevent hub"):
        aioflow.execute_graph(graph, pools={"green": {"pool_type": "gevent"}}, pool_type="thread")


def test_the_cli_takes_a_pool_config(tmp_path: Path) -> None:
    graph = {
        "graph": {"id": "g"},
        "nodes": [_where("a", "cpu"), _where("b", None)],
    }
    (tmp_path / "g.json").write_text(json.dumps(graph))
    config = tmp_path / "pools.yaml"
    config.write_text(
        "pools:\n  cpu: {pool_type: process, max_workers: 1, context: fork}\n  io: {pool_type: thread}\ndefault_pool: io\n"
    )
    command = ["run", str(tmp_path / "g.json"), "--outputs", "all", "--no-merge-outputs"]
    done = aioflow_cli(*command, "--pool-config", str(config))
    assert done.returncode == 0, done.stderr
    pids = {nid: r["return_value"] for nid, r in json.loads(done.stdout).items()}
    assert pids["a"] != pids["b"]  # a worker process; the CLI's own process
    bad = aioflow_cli(*command, "--pool-config", '{"cpu": {}}')
    assert bad.returncode == 2
    assert "--pool-config: must be an object" in bad.stderr


@pytest.mark.needs("event loop")  # the gevent pool's tasks run in the gevent hub: it runs alone (see below)
def test_a_node_runs_on_the_named_pool_of_every_kind(local_pool: LocalPool, tmp_path: Path) -> None:
    """Each local pool serves as a named pool beside the execution's own (``thread``); data crosses both ways."""
    d = str(tmp_path)
    graph = {
        "nodes": [
            node("first", "count", directory=d, name="first", value=1),
            node("named", "count", {"pool": "named"}, directory=d, name="named"),
            node("last", "count", directory=d, name="last"),
        ],
        "links": [
            value_link("first", "named"),
            value_link("named", "last"),
        ],
    }
    results = aioflow.execute_graph(
        graph, pools={"named": local_pool.options(max_workers=2)}, pool_type="thread", timeout=DEADLINE
    )
    assert results == {"return_value": 4}
    assert lines(tmp_path / "executions") == ["first", "named", "last"]
