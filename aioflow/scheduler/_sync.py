"""Running an execution from synchronous code: `run_execution`, and `execute_graph`, the engine's synchronous entry point.

`run_execution` runs the coroutine of one execution (the engine's
`execute_graph_async`, or a face above it) to completion, and returns its
result or raises its exception:

- No event loop running in the calling thread (a script, a batch job, the
  CLI): the engine runs on a fresh loop in this thread (`asyncio.Runner`),
  which turns Ctrl-C into a cancellation that stops every worker.
- A loop already running in this thread (a Jupyter cell without ``await``,
  or a call from inside a coroutine): the engine runs on its own loop in a
  helper thread, and this thread waits for it. Ctrl-C while waiting cancels
  the execution in the helper thread, waits for its cleanup, and re-raises.
  No loop is re-entered (no nest_asyncio).
- gevent has monkey-patched the process and the execution uses the
  ``gevent`` pool (the default there): the engine runs on its own loop in a
  real OS thread (see `aioflow._gevent_bridge`) while the calling
  greenlet waits in the gevent hub, so that other greenlets, the pool's
  tasks among them, keep running.

With ``uvloop=None`` (the default), an execution runs on uvloop when it is
installed, except a graph given as a `Graph` or a dict with fewer than
`UVLOOP_MIN_NODES` nodes (`loop_for`): importing uvloop costs a first call
about 2.5 ms, and its faster loop saves about 20 µs per firing, so below
that size asyncio's own loop is faster. ``uvloop=True`` always uses it,
``uvloop=False`` never.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Mapping, Sized
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import MissingExtraError, OptionError
from .._gevent_bridge import is_patched, run_in_bridge_thread
from ..graph import Graph
from ._run import execute_graph_async

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

    from .._results import Results

__all__ = ["UVLOOP_MIN_NODES", "execute_graph", "loop_for", "run_execution", "run_sync"]

T = TypeVar("T")

#: The fewest nodes for which ``uvloop=None`` runs an execution on uvloop.
UVLOOP_MIN_NODES = 100


def loop_for(graph: Any, uvloop: Any) -> Any:
    """What ``uvloop=`` means for an execution of ``graph``: ``None`` is `False` for a small graph.

    Small means a `Graph` or a dict of fewer than `UVLOOP_MIN_NODES` nodes
    (a dict's subgraph nodes counted as one); a graph given as a file or a
    string is not read here, and counts as large. Any other value is
    returned as it is (`_loop_factory` checks it).
    """
    if uvloop is not None:
        return uvloop
    if isinstance(graph, Graph):
        nodes: Any = graph.nodes
    elif isinstance(graph, Mapping):
        nodes = graph.get("nodes")
    else:
        return None
    if isinstance(nodes, Sized) and len(nodes) < UVLOOP_MIN_NODES:
        return False
    return None


def _loop_factory(use_uvloop: bool | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if use_uvloop is False:
        return None
    if use_uvloop is not None and use_uvloop is not True:
        raise OptionError("uvloop", "True, False or None", use_uvloop)
    try:
        import uvloop
    except ImportError:
        if use_uvloop:
            raise MissingExtraError("uvloop=True", "uvloop", "uvloop") from None
        return None
    return uvloop.new_event_loop


def run_sync(make_coro: Callable[[], Coroutine[Any, Any, T]], *, uvloop: bool | None = None) -> T:
    """Run a coroutine to completion from synchronous code, running loop or not."""
    factory = _loop_factory(uvloop)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(make_coro())
    return _run_in_helper_thread(make_coro, factory)


def _run_in_helper_thread(
    make_coro: Callable[[], Coroutine[Any, Any, T]],
    factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> T:
    outcome: dict[str, Any] = {}
    started = threading.Event()
    # Set when the helper thread is completely done, cleanup included. Waiting
    # on an Event survives a KeyboardInterrupt; Thread.join() does not (on 3.11
    # an interrupted join marks the thread as stopped while it still runs).
    done = threading.Event()
    handles: dict[str, Any] = {}

    async def main() -> T:
        handles["loop"] = asyncio.get_running_loop()
        handles["task"] = asyncio.current_task()
        started.set()
        return await make_coro()

    def target() -> None:
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                outcome["value"] = runner.run(main())
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            started.set()
            done.set()

    thread = threading.Thread(target=target, name="aioflow-sync", daemon=True)
    with _plain_sigint():
        thread.start()
        try:
            done.wait()
        except KeyboardInterrupt:
            started.wait()
            loop, task = handles.get("loop"), handles.get("task")
            if loop is not None and task is not None and not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
            done.wait()
            thread.join()
            raise
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def _plain_sigint() -> Iterator[None]:
    """While the calling thread waits, Ctrl-C raises KeyboardInterrupt in it.

    A running loop may have replaced the SIGINT handler (``asyncio.run`` does:
    its handler only cancels the loop's main task, which is blocked here, so
    the first Ctrl-C would do nothing). Only the main thread can change it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, signal.default_int_handler, None):
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_execution(
    make_coro: Callable[[], Coroutine[Any, Any, T]], options: dict[str, Any], *, uvloop: bool | None = None
) -> T:
    """Run one execution's coroutine from synchronous code, running loop or not, gevent or not.

    Args:
        make_coro: makes the coroutine (called in the thread that runs it).
        options: the execution's keyword arguments: the pool they select
            (``pool``, ``pool_type``) decides where the loop runs.
        uvloop: use uvloop when installed (``None``), always (``True``), or never (``False``).
    """
    if is_patched():
        if _runs_in_gevent_hub(options):
            return run_in_bridge_thread(make_coro, loop_factory=_loop_factory(uvloop))
        # Other pools run on asyncio's own loop in this thread: gevent has
        # patched its selector, so the hub keeps running while it waits.
        # uvloop's loop is not patched and would block the hub (and hang).
        if uvloop:
            raise OptionError(
                "uvloop", "False or None in a process gevent has monkey-patched (except with the 'gevent' pool)", uvloop
            )
        uvloop = False
    return run_sync(make_coro, uvloop=uvloop)


def execute_graph(graph: Any, *, uvloop: bool | None = None, **options: Any) -> Results:
    """Execute a graph from synchronous code: the engine's `execute_graph_async`, run by `run_execution`.

    Args:
        graph: a `Graph`, or anything `aioflow.load_graph` accepts.
        uvloop: use uvloop when installed (``None``: for a graph of `UVLOOP_MIN_NODES` nodes or
            more, see `loop_for`), always (``True``), or never (``False``).
        **options: the keyword arguments of `execute_graph_async`.
    """
    return run_execution(lambda: execute_graph_async(graph, **options), options, uvloop=loop_for(graph, uvloop))


def _runs_in_gevent_hub(options: dict[str, Any]) -> bool:
    """Whether the pool these `execute_graph_async` options select runs its tasks in the gevent hub."""
    from ..pools import Pool, default_pool_type, pool_class

    pool = options.get("pool")
    if isinstance(pool, Pool):
        return pool.runs_in_gevent_hub
    if pool is not None:
        return False  # execute_graph_async refuses it, saying why
    try:
        return pool_class(options.get("pool_type") or default_pool_type()).runs_in_gevent_hub
    except OptionError:
        return False  # an unknown pool_type: execute_graph_async says so
