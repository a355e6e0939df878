"""The gevent pool and the bridge thread that runs the engine in a gevent-patched process.

gevent patches the whole process, so every test runs a small script in a
fresh interpreter whose first line is ``monkey.patch_all()``, and checks
what it prints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
POOLS = Path(__file__).resolve().parent

# Generous: only a hang reaches it.
DEADLINE = 120

PATCHED = "from gevent import monkey; monkey.patch_all()\n"

COMMON = '''
import time
import gevent
import aioflow
import gevent_tasks
from aioflow._gevent_bridge import run_in_bridge_thread
from graphs import method_node, return_value_link


def run(graph, **options):
    """execute_graph_async on the gevent pool, through the bridge thread."""
    if "pool" not in options:
        options.setdefault("pool_type", "gevent")
    return run_in_bridge_thread(lambda: aioflow.execute_graph_async(graph, **options))


def fan(count, task="gevent_tasks.nap", named=False, **inputs):
    """``count`` independent nodes ``n0``, ``n1``... running ``task`` (given ``name=<node id>`` if named)."""
    nodes = [method_node(f"n{i}", task, **inputs, **({"name": f"n{i}"} if named else {})) for i in range(count)]
    return {"graph": {"id": "fan"}, "nodes": nodes}
'''


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(POOLS)])}


def _write(tmp_path: Path, body: str, *, patched: bool = True) -> Path:
    script = tmp_path / "script.py"
    prelude = (PATCHED + COMMON) if patched else ""
    script.write_text(prelude + textwrap.dedent(body))
    return script


def run_script(tmp_path: Path, body: str, *, patched: bool = True) -> list[str]:
    """Run ``body`` in a fresh (by default gevent-patched) interpreter; return its stdout lines."""
    script = _write(tmp_path, body, patched=patched)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# ------------------------------------------------------------------ results


def test_tasks_are_greenlets_of_the_main_thread(tmp_path: Path) -> None:
    """Tasks run in the main thread's hub, not in the bridge thread."""
    lines = run_script(
        tmp_path,
        """
        import threading
        from gevent import monkey
        get_ident = monkey.get_original("_thread", "get_ident")
        main = get_ident()
        graph = {"nodes": [method_node("a", "gevent_tasks.os_thread")]}
        print(run(graph)["return_value"] == main)
        """,
    )
    assert lines == ["True"]


def test_uvloop_in_the_bridge_thread(tmp_path: Path) -> None:
    """The bridge thread may run uvloop instead of the selector loop."""
    lines = run_script(
        tmp_path,
        """
        import uvloop
        graph = fan(20, value=1)
        results = run_in_bridge_thread(
            lambda: aioflow.execute_graph_async(graph, pool_type="gevent", merge_outputs=False),
            loop_factory=uvloop.new_event_loop,
        )
        print(sorted(r["return_value"] for r in results.values()) == [1] * 20)
        """,
    )
    assert lines == ["True"]


# ------------------------------------------------------------------ concurrency


def test_sleep_fan_runs_concurrently(tmp_path: Path) -> None:
    """100 tasks of 50 ms with max_workers=100 overlap: far less than the 5 s of a serial run."""
    lines = run_script(
        tmp_path,
        """
        start = time.monotonic()
        results = run(fan(100, "gevent_tasks.nap_counting", seconds=0.05), max_workers=100, merge_outputs=False)
        elapsed = time.monotonic() - start
        print(len(results), gevent_tasks.PEAK[0] > 2, elapsed < 2.5, round(elapsed, 3))
        """,
    )
    count, overlapped, fast, elapsed = lines[0].split()
    assert (count, overlapped) == ("100", "True")
    assert fast == "True", f"100 x 50 ms took {elapsed} s"


def test_max_workers_caps_the_running_greenlets(tmp_path: Path) -> None:
    """With max_workers=2 at most 2 tasks run at once, so 100 x 50 ms takes at least 50 x 50 ms."""
    lines = run_script(
        tmp_path,
        """
        start = time.monotonic()
        results = run(fan(100, "gevent_tasks.nap_counting", seconds=0.05), max_workers=2, merge_outputs=False)
        elapsed = time.monotonic() - start
        print(len(results), gevent_tasks.PEAK[0], elapsed >= 2.0, round(elapsed, 3))
        """,
    )
    count, peak, slow, elapsed = lines[0].split()
    assert (count, peak) == ("100", "2")
    assert slow == "True", f"100 x 50 ms on 2 workers took only {elapsed} s"


def test_default_max_workers(tmp_path: Path) -> None:
    """Without max_workers the pool runs up to DEFAULT_MAX_WORKERS greenlets at once."""
    lines = run_script(
        tmp_path,
        """
        from aioflow.pools._gevent import DEFAULT_MAX_WORKERS
        pool = aioflow.open_pool("gevent")
        print(pool.capacity == DEFAULT_MAX_WORKERS)
        results = run(fan(150, "gevent_tasks.nap_counting", seconds=0.2), merge_outputs=False)
        print(len(results), gevent_tasks.PEAK[0] == DEFAULT_MAX_WORKERS)
        """,
    )
    assert lines == ["True", "150 True"]


def test_caller_keeps_running_other_greenlets(tmp_path: Path) -> None:
    """While the main greenlet waits for an execution, other greenlets of its hub keep running."""
    lines = run_script(
        tmp_path,
        """
        ticks = []

        def tick():
            while True:
                ticks.append(time.monotonic())
                gevent.sleep(0.01)

        ticker = gevent.spawn(tick)
        gevent.sleep(0)
        start = time.monotonic()
        run(fan(3, seconds=0.5))
        end = time.monotonic()
        ticker.kill()
        print(sum(1 for t in ticks if start < t < end) >= 5)
        """,
    )
    assert lines == ["True"]


# ------------------------------------------------------------------ failures and stopping


def test_failing_task_gives_node_error(tmp_path: Path) -> None:
    """A task raising in its greenlet fails the execution with NodeError, the task's exception as cause."""
    lines = run_script(
        tmp_path,
        """
        graph = {"graph": {"id": "g"}, "nodes": [method_node("bad", "gevent_tasks.broken")]}
        try:
            run(graph)
        except aioflow.NodeError as exc:
            print(exc.node_id, repr(exc.__cause__))
        results = run(graph, raise_on_error=False)
        print(list(results.errors))
        """,
    )
    assert lines == ["bad ValueError('broken on purpose')", "['bad']"]


def test_timeout_kills_running_greenlets(tmp_path: Path) -> None:
    """A timeout raises ExecutionTimeoutError after killing the running greenlets."""
    lines = run_script(
        tmp_path,
        """
        graph = fan(3, "gevent_tasks.nap_recording_kill", named=True, seconds=3600)
        try:
            run(graph, timeout=0.5)
        except aioflow.ExecutionTimeoutError as exc:
            print(sorted(exc.running), sorted(gevent_tasks.KILLED))
        """,
    )
    assert lines[0] == "['n0', 'n1', 'n2'] ['n0', 'n1', 'n2']"


def test_killing_the_caller_cancels_the_execution(tmp_path: Path) -> None:
    """Killing the greenlet that waits for an execution cancels it and kills its tasks."""
    lines = run_script(
        tmp_path,
        """
        import threading
        graph = fan(2, "gevent_tasks.announce_and_nap", named=True, seconds=3600)
        caller = gevent.spawn(run, graph)
        while len(gevent_tasks.STARTED) < 2:
            gevent.sleep(0.01)
        caller.kill(block=True, timeout=60)
        print(caller.dead, sorted(gevent_tasks.KILLED), len(threading.enumerate()))
        """,
    )
    assert lines[-1] == "True ['n0', 'n1'] 1"


def test_ctrl_c_interrupts_the_execution(tmp_path: Path) -> None:
    """Ctrl-C while the main greenlet waits raises KeyboardInterrupt there, after the tasks have ended."""
    script = _write(
        tmp_path,
        """
        graph = fan(1, "gevent_tasks.announce_and_nap", named=True, seconds=3600)
        try:
            run(graph)
        except KeyboardInterrupt:
            # Ctrl-C lands in the main greenlet, or in the task if it was
            # running Python code at that instant: it ends either way.
            print("interrupted", gevent_tasks.ENDED, flush=True)
        """,
    )
    with subprocess.Popen(
        [sys.executable, str(script)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "started n0"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["interrupted ['n0']"]


def test_shared_pool_opened_in_the_main_greenlet(tmp_path: Path) -> None:
    """A pool opened in the main greenlet serves several executions and closes from there."""
    lines = run_script(
        tmp_path,
        """
        with aioflow.open_pool("gevent", max_workers=4) as pool:
            for value in (1, 2):
                print(run(fan(1, value=value), pool=pool)["return_value"])
        print(pool.closed)
        """,
    )
    assert lines == ["1", "2", "True"]


def test_abort_on_a_shared_pool_kills_only_the_owner_tasks(tmp_path: Path) -> None:
    """Two executions share a pool: one times out, only its greenlets are killed, the other finishes."""
    lines = run_script(
        tmp_path,
        """
        doomed = fan(2, "gevent_tasks.nap_recording_kill", named=True, seconds=3600)
        with aioflow.open_pool("gevent") as pool:
            survivor = gevent.spawn(run, fan(2, seconds=1.5, value=5), pool=pool, merge_outputs=False)
            gevent.sleep(0.2)
            try:
                run(doomed, pool=pool, timeout=0.3)
            except aioflow.ExecutionTimeoutError:
                print("timed out", sorted(gevent_tasks.KILLED))
            results = survivor.get(timeout=60)
        print(sorted(r["return_value"] for r in results.values()))
        """,
    )
    assert lines == ["timed out ['n0', 'n1']", "[5, 5]"]


# ------------------------------------------------------------------ hub callbacks never wait

# A future's lock held by another OS thread, as the bridge thread holds it
# whenever asyncio adds a callback to the future or reads its state. A hub
# callback that waits for it raises BlockingSwitchOutError instead, and gevent
# drops the callback: the call it concerned must still start, or end.
LOCKED = """
from concurrent.futures import wait
from gevent_tasks import hold_in_os_thread

hub = gevent.get_hub()
# A greenlet waits for a lock another thread holds as long as the hub's loop
# runs: an active watcher keeps it up, as the bridge's does during an execution.
keepalive = hub.loop.async_()
keepalive.start(lambda: None)


def outcome(future):
    \"\"\"What became of a call: its result, its exception's type, cancelled, or the state it was left in.\"\"\"
    wait([future], timeout=30)  # generous: only a lost call takes that long
    if not future.done():
        return future._state.lower()
    if future.cancelled():
        return "cancelled"
    error = future.exception()
    return type(error).__name__ if error is not None else repr(future.result())
"""


def run_locked(tmp_path: Path, body: str) -> list[str]:
    """`run_script` with the `LOCKED` helpers."""
    return run_script(tmp_path, LOCKED + textwrap.dedent(body))


def test_a_call_starts_while_another_thread_holds_its_future_lock(tmp_path: Path) -> None:
    """The hub starts a call while another thread holds its future's lock: the call runs once it is let go.

    The hub callback that started it used to mark the future running there:
    it raised, the call never started, and an execution hung (about one run
    in twelve of a 1,000-node fan).
    """
    lines = run_locked(
        tmp_path,
        """
        with aioflow.open_pool("gevent") as pool:
            future = pool.executor.submit(gevent_tasks.square, 3)  # started in a hub callback
            hub.loop.run_callback(hold_in_os_thread(future._condition))  # let go after that callback
            print(outcome(future))
        """,
    )
    assert lines == ["9"]


def test_a_call_killed_before_it_starts_fails_while_another_thread_holds_its_future_lock(tmp_path: Path) -> None:
    """A greenlet killed before it ran fails its call with GreenletExit, though its future's lock was held then."""
    lines = run_locked(
        tmp_path,
        """
        with aioflow.open_pool("gevent") as pool:
            executor = pool.executor
            future = executor.submit(gevent_tasks.nap, 3600)

            def kill_before_start():  # a hub callback after the one that made the call's greenlet
                for greenlet in list(executor._running):
                    greenlet.kill(block=False)
                hub.loop.run_callback(hold_in_os_thread(future._condition))  # let go after the greenlet's links

            hub.loop.run_callback(kill_before_start)
            print(outcome(future))
        """,
    )
    assert lines == ["GreenletExit"]


def test_a_call_killed_while_it_waits_for_its_future_lock_fails(tmp_path: Path) -> None:
    """A greenlet killed while it waits for its future's lock to settle it fails its call with GreenletExit."""
    lines = run_locked(
        tmp_path,
        """
        box = []

        def settle_while_locked():
            box.append(hold_in_os_thread(box[0]._condition))
            return "result"  # its greenlet now waits for the future's lock

        with aioflow.open_pool("gevent") as pool:
            executor = pool.executor
            box.append(executor.submit(settle_while_locked))
            while len(box) < 2:
                gevent.sleep(0.01)
            executor.kill()  # in the hub's thread: a plain call
            box[1]()
            print(outcome(box[0]))
        """,
    )
    assert lines == ["GreenletExit"]


def test_shutdown_without_waiting_cancels_a_queued_call_whose_future_lock_is_held(tmp_path: Path) -> None:
    """shutdown(wait=False, cancel_futures=True) cancels a queued call while another thread holds its future's lock."""
    lines = run_locked(
        tmp_path,
        """
        with aioflow.open_pool("gevent", max_workers=1) as pool:
            executor = pool.executor
            first = executor.submit(gevent_tasks.nap, 0.2, "first")
            queued = executor.submit(gevent_tasks.nap, 0, "queued")
            executor.shutdown(wait=False, cancel_futures=True)
            hub.loop.run_callback(hold_in_os_thread(queued._condition))
            print(outcome(first), outcome(queued))
        """,
    )
    assert lines == ["'first' cancelled"]


def test_lattice_with_frequent_thread_switches_neither_hangs_nor_loses_a_result(tmp_path: Path) -> None:
    """A 32x32 lattice (each node joins the whole layer before it) with threads switching every 10 microseconds.

    Frequent switches make the bridge thread hold a call's future lock at
    the instant the hub starts that call: before no hub callback touched a
    future, such a run hung nearly every time. The timeout is a hang guard;
    a run takes a few seconds.
    """
    lines = run_script(
        tmp_path,
        """
        import sys
        sys.setswitchinterval(1e-5)
        width = 32
        layers = [[f"L{k}_{j}" for j in range(width)] for k in range(width)]
        nodes = [method_node(nid, "tasks.inc", x=0) for nid in layers[0]]
        links = []
        for above, layer in zip(layers, layers[1:]):
            for nid in layer:
                nodes.append(method_node(nid, "tasks.add_all"))
                links.extend(return_value_link(source, nid, f"a{j}") for j, source in enumerate(above))
        graph = {"graph": {"id": "lattice"}, "nodes": nodes, "links": links}
        results = aioflow.execute_graph(graph, pool_type="gevent", merge_outputs=False, timeout=60)
        executions = results.executions
        print(len(executions), set(executions.values()), {results[nid]["return_value"] for nid in layers[-1]})
        """,
    )
    assert lines == [f"1024 {{1}} {{{32**31}}}"]


# ------------------------------------------------------------------ options and environment


def test_context_and_pool_options_are_refused(tmp_path: Path) -> None:
    """A start method or pool_options make no sense for greenlets: OptionError before anything runs."""
    lines = run_script(
        tmp_path,
        """
        for options in ({"context": "spawn"}, {"pool_options": {"initializer": print}}):
            try:
                aioflow.open_pool("gevent", **options)
            except aioflow.OptionError as exc:
                print(exc.option)
        """,
    )
    assert lines == ["context", "pool_options"]


def test_unpatched_process_is_refused(tmp_path: Path) -> None:
    """Without monkey.patch_all() the gevent pool refuses to open, saying why."""
    lines = run_script(
        tmp_path,
        """
        import aioflow
        try:
            aioflow.open_pool("gevent")
        except aioflow.AioflowError as exc:
            print("patch_all" in str(exc))
        """,
        patched=False,
    )
    assert lines == ["True"]


def test_missing_gevent_is_a_missing_extra(tmp_path: Path) -> None:
    """Without gevent installed, the gevent pool raises MissingExtraError naming the extra."""
    lines = run_script(
        tmp_path,
        """
        import sys
        sys.modules["gevent"] = None  # as if not installed
        import aioflow
        try:
            aioflow.open_pool("gevent")
        except aioflow.MissingExtraError as exc:
            print(isinstance(exc, ImportError), "gevent" in str(exc))
        """,
        patched=False,
    )
    assert lines == ["True True"]


def test_is_patched_does_not_import_gevent(tmp_path: Path) -> None:
    """is_patched() is False in a plain process and does not import gevent; True after patch_all()."""
    lines = run_script(
        tmp_path,
        """
        import sys
        from aioflow._gevent_bridge import is_patched
        print(is_patched(), "gevent" in sys.modules)
        import gevent
        print(is_patched())
        from gevent import monkey
        monkey.patch_all()
        print(is_patched())
        """,
        patched=False,
    )
    assert lines == ["False False", "False", "True"]


def test_bridge_leaves_no_thread_behind(tmp_path: Path) -> None:
    """Many bridge calls leave no thread, thread record or file descriptor behind."""
    lines = run_script(
        tmp_path,
        """
        import gc
        import threading
        import psutil
        run(fan(2, value=1))
        gc.collect()
        before = psutil.Process().num_fds()
        for _ in range(20):
            run(fan(2, value=1))
        gc.collect()
        print([t.name for t in threading.enumerate()], psutil.Process().num_fds() - before)
        """,
    )
    assert lines == ["['MainThread'] 0"]


def test_bridge_returns_and_raises(tmp_path: Path) -> None:
    """run_in_bridge_thread returns the coroutine's result and re-raises its exception."""
    lines = run_script(
        tmp_path,
        """
        import asyncio

        async def answer():
            await asyncio.sleep(0.01)
            return 42

        async def fail():
            raise LookupError("nope")

        print(run_in_bridge_thread(answer))
        try:
            run_in_bridge_thread(fail)
        except LookupError as exc:
            print(repr(exc))
        """,
    )
    assert lines == ["42", "LookupError('nope')"]


def test_pool_outside_main_thread_and_bridge_is_refused(tmp_path: Path) -> None:
    """Opening the gevent pool in a thread that is neither the main one nor a bridge raises PoolError."""
    lines = run_script(
        tmp_path,
        """
        from gevent import monkey
        start_new_thread = monkey.get_original("_thread", "start_new_thread")
        allocate_lock = monkey.get_original("_thread", "allocate_lock")
        done = allocate_lock()
        done.acquire()
        seen = []

        def target():
            try:
                aioflow.open_pool("gevent")
            except aioflow.PoolError as exc:
                seen.append("main thread" in str(exc))
            finally:
                done.release()

        start_new_thread(target, ())
        done.acquire()
        print(seen)
        """,
    )
    assert lines == ["[True]"]


def test_loop_in_the_hub_thread_on_gevent_selector(tmp_path: Path) -> None:
    """Without a bridge, an asyncio loop made after patch_all() (gevent's selector) also runs the tasks."""
    lines = run_script(
        tmp_path,
        """
        import asyncio
        results = asyncio.run(aioflow.execute_graph_async(fan(10, value=3), pool_type="gevent", merge_outputs=False))
        print(sorted(r["return_value"] for r in results.values()) == [3] * 10)
        """,
    )
    assert lines == ["True"]


def test_loop_blocking_the_hub_is_refused(tmp_path: Path) -> None:
    """uvloop in the hub's own thread would starve the tasks: PoolError instead of a hang."""
    lines = run_script(
        tmp_path,
        """
        import uvloop
        try:
            uvloop.run(aioflow.execute_graph_async(fan(1), pool_type="gevent"))
        except aioflow.PoolError as exc:
            print("execute_graph()" in str(exc))
        """,
    )
    assert lines == ["True"]


SYNC_DEFAULT = """
from gevent import monkey

monkey.patch_all()
import time

import gevent

import aioflow

graph = {
    "nodes": [
        {"id": i, "task_type": "method", "task_identifier": "tasks.sleep", "default_inputs": [{"name": "seconds", "value": 0.05}]}
        for i in range(100)
    ]
}
ticks = []


def tick():
    for _ in range(10):
        ticks.append(1)
        gevent.sleep(0.01)


ticker = gevent.spawn(tick)
start = time.monotonic()
results = aioflow.execute_graph(graph, merge_outputs=False)
elapsed = time.monotonic() - start
ticker.join()
print(aioflow.pools.default_pool_type(), len(results), elapsed < 2.5, len(ticks))
"""


def test_sync_facade_defaults_to_the_gevent_pool_when_patched(tmp_path: Path) -> None:
    """In a patched process, plain execute_graph uses the gevent pool, concurrently, without blocking greenlets."""
    script = tmp_path / "sync_default.py"
    script.write_text(SYNC_DEFAULT)
    done = subprocess.run(
        [sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["gevent", "100", "True", "10"]


PATCHED_OTHER_POOLS = """
from gevent import monkey

monkey.patch_all()
import aioflow

graph = {"nodes": [{"id": "a", "task_type": "method", "task_identifier": "tasks.inc"}]}
for pool in ("process", "ndprocess", "multiprocessing", "ndmultiprocessing", "billiard"):
    try:
        aioflow.execute_graph(graph, pool_type=pool, timeout=10)
    except aioflow.PoolError as exc:
        print(pool, "refused", "pool_type='gevent'" in str(exc))
print("thread", aioflow.execute_graph(graph, pool_type="thread", timeout=10)["return_value"])
try:
    aioflow.execute_graph(graph, pool_type="thread", uvloop=True)
except aioflow.OptionError as exc:
    print("uvloop refused", exc.option)
"""


def test_patched_process_refuses_process_pools_and_runs_threads(tmp_path: Path) -> None:
    """After patch_all, process-based pools fail fast with advice, the thread pool works, nothing hangs."""
    script = tmp_path / "patched_pools.py"
    script.write_text(PATCHED_OTHER_POOLS)
    done = subprocess.run(
        [sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "process refused True",
        "ndprocess refused True",
        "multiprocessing refused True",
        "ndmultiprocessing refused True",
        "billiard refused True",
        "thread 1",
        "uvloop refused uvloop",
    ]


THREAD_POOL_STOPPING = """
import asyncio
import logging

WARNINGS = []


class Record(logging.Handler):
    def emit(self, record):
        WARNINGS.append(record.getMessage())


logging.getLogger("aioflow.pools").addHandler(Record(logging.WARNING))
ENDLESS = {"graph": {"id": "endless"}, "nodes": [method_node("s", "tasks.sleep", seconds=1000)]}
QUICK = {"graph": {"id": "quick"}, "nodes": [method_node("q", "tasks.inc", x=1)]}


def execute(api, graph, **options):
    if api == "async":
        return asyncio.run(aioflow.execute_graph_async(graph, **options))
    return aioflow.execute_graph(graph, **options)


def time_out(api, **options):
    start = time.monotonic()
    try:
        execute(api, ENDLESS, timeout=1, **options)
    except aioflow.ExecutionTimeoutError:
        elapsed = time.monotonic() - start
        # A hang guard, not a performance assertion: a task that is not
        # stopped is abandoned after INTERRUPT_GRACE (5 s), this is well below.
        print("timed out", "in time" if elapsed < 4 else f"after {elapsed:.1f} s")
"""


@pytest.mark.parametrize("api", ["sync", "async"])
def test_thread_pool_stops_its_greenlets_on_timeout(tmp_path: Path, api: str) -> None:
    """In a patched process the thread pool's workers are greenlets: a timeout kills the running one at once.

    It gets TaskInterrupted from its hub (a thread's async exception cannot
    reach a greenlet): no wait for the interrupt grace, no "did not stop"
    warning, and the pool runs the next execution's task.
    """
    lines = run_script(
        tmp_path,
        THREAD_POOL_STOPPING
        + f"""
API = {api!r}
time_out(API, pool_type="thread")
with aioflow.open_pool("thread") as pool:
    time_out(API, pool=pool)
    print("next", execute(API, QUICK, pool=pool)["return_value"])
print("warnings", WARNINGS)
""",
    )
    assert lines == ["timed out in time", "timed out in time", "next 2", "warnings []"]


def test_thread_pool_abort_from_another_os_thread_kills_in_the_hub(tmp_path: Path) -> None:
    """An abort from a real OS thread hands the kill to the hub owning the greenlet, which throws it there."""
    lines = run_script(
        tmp_path,
        THREAD_POOL_STOPPING
        + """
from gevent import monkey
from aioflow import TaskInterrupted

real_ident = monkey.get_original("_thread", "get_ident")
seen = []


def task():
    try:
        gevent.sleep(3600)
    except TaskInterrupted:
        seen.append(real_ident() == gevent.hub.MAIN_THREAD_IDENT)
        raise


with aioflow.open_pool("thread") as pool:
    future = pool.executor.submit(pool.bind(pool.executor, object(), task))
    gevent.sleep(0.1)
    aborted = []

    def aborter():
        aborted.append(real_ident() == gevent.hub.MAIN_THREAD_IDENT)
        pool.abort()
        aborted.append("done")

    monkey.get_original("_thread", "start_new_thread")(aborter, ())
    while len(aborted) < 2:
        gevent.sleep(0.01)
    print(aborted, seen, future.done() and type(future.exception()).__name__, WARNINGS)
""",
    )
    assert lines == ["[False, 'done'] [True] TaskInterrupted []"]


def test_thread_pool_abandons_a_greenlet_that_does_not_stop(tmp_path: Path) -> None:
    """A task that carries on after TaskInterrupted is given up on after the grace, with the warning."""
    lines = run_script(
        tmp_path,
        THREAD_POOL_STOPPING
        + """
import aioflow.pools._thread

aioflow.pools._thread.INTERRUPT_GRACE = 0.5
stubborn = fan(1, "gevent_tasks.nap_ignoring_interrupt", named=True, then=30)
start = time.monotonic()
try:
    aioflow.execute_graph(stubborn, pool_type="thread", timeout=0.5)
except aioflow.ExecutionTimeoutError:
    print("timed out", time.monotonic() - start < 20)
print(gevent_tasks.INTERRUPTED, [w.split(" did not stop")[0] for w in WARNINGS])
""",
    )
    assert lines == ["timed out True", "['n0'] ['thread(s) aioflow-thread_0']"]


# ------------------------------------------------------------------ process pools started by tasks


def test_task_pools_that_block_the_hub_fail_at_once(tmp_path: Path) -> None:
    """A task starting multiprocessing.Pool or billiard.Pool fails at once, saying why and what to use instead.

    Unguarded, their result-handler greenlet blocks the hub in a pipe read:
    the execution hangs, and its timeout never fires.
    """
    lines = run_script(
        tmp_path,
        """
        for pool in ("gevent", "thread"):
            for kind in ("mppool", "bpool"):
                graph = {"nodes": [method_node(kind, f"matrix_tasks.{kind}")]}
                start = time.monotonic()
                try:
                    aioflow.execute_graph(graph, pool_type=pool, timeout=5)
                except aioflow.NodeError as exc:
                    cause = str(exc.__cause__)
                    print(pool, kind, type(exc.__cause__).__name__, cause.split(" cannot run")[0],
                          "ProcessPoolExecutor" in cause, time.monotonic() - start < 5)
        """,
    )
    assert lines == [
        "gevent mppool RuntimeError multiprocessing.Pool True True",
        "gevent bpool RuntimeError billiard.Pool True True",
        "thread mppool RuntimeError multiprocessing.Pool True True",
        "thread bpool RuntimeError billiard.Pool True True",
    ]


@pytest.mark.parametrize("pool", ["gevent", "thread"])
def test_task_process_that_ends_before_the_fork_returns_is_joined(tmp_path: Path, pool: str) -> None:
    """A task's first multiprocessing.Process is joined even when it has ended before its parent's fork returned.

    gevent's patched fork starts watching the child only after the fork, and
    that first child watcher is what installs gevent's SIGCHLD handler: the
    signal of a child that had already ended was lost, ``join`` waited for
    ever and the execution hung (its timeout cannot stop a task blocked
    there). Here the parent waits, inside the fork, until the child has
    ended, which made that certain; a watchdog thread reports a hang.
    """
    lines = run_script(
        tmp_path,
        f"""
        import os
        from gevent import monkey

        real_sleep = monkey.get_original("time", "sleep")

        def watchdog():
            real_sleep(15)  # a hang guard: the join takes well under a second
            print("hang", flush=True)
            os._exit(0)

        def until_the_child_has_ended():
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                    return  # ended, and left for its parent to reap
                real_sleep(0.005)

        monkey.get_original("_thread", "start_new_thread")(watchdog, ())
        os.register_at_fork(after_in_parent=until_the_child_has_ended)
        graph = {{"nodes": [method_node("mpprocess", "matrix_tasks.mpprocess")]}}
        print(aioflow.execute_graph(graph, pool_type={pool!r}, timeout=30)["return_value"], flush=True)
        """,
    )
    assert lines == ["5"]


def test_guard_when_aioflow_is_imported_before_patching(tmp_path: Path) -> None:
    """Patching after importing aioflow: the guard is installed when the engine first sees the patched process."""
    lines = run_script(
        tmp_path,
        """
        import aioflow
        from gevent import monkey
        monkey.patch_all()
        graph = {"nodes": [{"id": "a", "task_type": "method", "task_identifier": "matrix_tasks.mppool"}]}
        try:
            aioflow.execute_graph(graph, pool_type="thread", timeout=5)
        except aioflow.NodeError as exc:
            print(type(exc.__cause__).__name__, "multiprocessing.Pool cannot run" in str(exc.__cause__))
        """,
        patched=False,
    )
    assert lines[-1] == "RuntimeError True"


def test_nothing_is_changed_until_a_pool_runs_tasks_in_the_process(tmp_path: Path) -> None:
    """import aioflow and is_patched() patch no class and register no at-fork hook; the first gevent pool does, once."""
    lines = run_script(
        tmp_path,
        """
        from gevent import monkey
        monkey.patch_all()
        import os
        import multiprocessing.pool
        import billiard.pool

        hooks = []
        register_at_fork = os.register_at_fork


        def recording(**hook):
            hooks.append(sorted(hook))
            register_at_fork(**hook)


        os.register_at_fork = recording
        originals = multiprocessing.pool.Pool.__init__, billiard.pool.Pool.__init__

        import aioflow
        from aioflow._gevent_bridge import is_patched
        from graphs import method_node


        def unchanged():
            return (multiprocessing.pool.Pool.__init__, billiard.pool.Pool.__init__) == originals


        print(is_patched(), aioflow.pools.default_pool_type(), unchanged(), hooks)
        graph = {"nodes": [method_node("a", "tasks.inc", x=1)]}
        for _ in range(2):
            aioflow.execute_graph(graph, pool_type="gevent")
        print(unchanged(), hooks)
        """,
        patched=False,
    )
    assert lines == ["True gevent True []", "False [['before']]"]


@pytest.mark.parametrize("pool", ["gevent", "thread"])
def test_process_pools_created_outside_the_tasks_are_left_alone(tmp_path: Path, pool: str) -> None:
    """Guards installed, a pool created outside aioflow's tasks is the library's own: checked in its own words, not refused.

    (Invalid sizes, so that they fail before anything starts: such a pool would hang here.)
    """
    lines = run_script(
        tmp_path,
        f"""
        import multiprocessing.pool
        import billiard.pool

        print(aioflow.execute_graph({{"nodes": [method_node("a", "tasks.inc", x=1)]}}, pool_type={pool!r})["return_value"])
        for make in (lambda: multiprocessing.pool.Pool(processes=0), lambda: billiard.pool.Pool(processes=-1)):
            try:
                make()
            except Exception as exc:
                print(type(exc).__name__, exc)
        """,
    )
    assert lines == [
        "2",
        "ValueError Number of processes must be at least 1",
        "ValueError Number of processes must be at least 0",
    ]


def test_thread_pools_of_multiprocessing_still_work_when_patched(tmp_path: Path) -> None:
    """The guard spares multiprocessing's ThreadPool (its threads are greenlets that yield)."""
    lines = run_script(
        tmp_path,
        """
        from multiprocessing.pool import ThreadPool
        with ThreadPool(2) as threads:
            print(threads.map(abs, [-1, -2]))
        """,
    )
    assert lines == ["[1, 2]"]
