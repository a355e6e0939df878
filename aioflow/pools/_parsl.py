"""The ``parsl`` pool: tasks run on the workers of a Parsl DataFlowKernel (``pip install 'aioflow[parsl]'``).

aioflow does not build a cluster: Parsl does, from a ``Config`` (a provider
for the batch system, a launcher, an executor), and aioflow sends its calls
to that DataFlowKernel (DFK). The scheduler keeps its own dependency
tracking: conditions, cycles and error links are decided in this process.

Data flow: ``submit(fn, *args, **kwargs)`` on the pool's `ParslExecutor`
returns a plain `concurrent.futures.Future` at once. The call goes to
``DataFlowKernel.submit`` as ``_invoke(call)``, the call pickled to bytes
(`_pack`): packed this way, Parsl does not read keyword arguments it
reserves (``inputs``, ``outputs``, ``stdout``, ``walltime``), and does not
spend its slower serializer on the call's objects. Parsl's ``AppFuture``
resolves on one of Parsl's threads; a done-callback copies its outcome to
the returned future. No thread waits per task.

Straight to the executor: aioflow's scheduler already does, per node, what
the DFK does per task (dependencies, states, outcomes). When the DFK would
add nothing of its own (no ``retries``, no monitoring, no checkpoints), a
call goes straight to one of its executors (``executor.submit``, under the
DFK's submission lock, as the DFK itself does), which saves about a third of
a millisecond of bookkeeping per task in this process. On a
HighThroughputExecutor, the pickled call is the task's payload as it is
(``submit_payload``, with `_invoke` to run it), rather than an argument
Parsl's serializer wraps again. Otherwise a call goes through
``DataFlowKernel.submit``, and Parsl's retries, monitoring and checkpoints
apply.

Chaining (`Pool.chains_calls`): a future among the positional arguments is a
dependency of the call, and only those: the call starts when they are done,
with their results in their places, from a callback on the thread that
finishes the last one (Parsl's, for the DFK's dependencies), with no round
trip through the event loop. The scheduler uses it to send a node whose
predecessors are still running.

Why a future of our own rather than the ``AppFuture``: Parsl cannot cancel a
task (``AppFuture.cancel`` raises ``NotImplementedError``), and asyncio
cancels the executor's future when an awaiting task is cancelled. Ours can
be cancelled; the Parsl task then runs to its end and its outcome is dropped.

Who owns the DFK: with ``pool_options={"dfk": dfk}`` the caller does, and the
pool never stops it. Otherwise the pool loads it (from
``pool_options={"config": config}``, or from `default_config`) in a loader
thread of its own: starting a DFK takes about a second (more with a batch
provider). Calls submitted meanwhile wait in the executor and are sent in
order once the DFK is up; if it cannot start, they fail with
`aioflow.PoolError`. `ParslPool.close` waits for the calls in flight, then
cleans the DFK up (which cancels its blocks: the workers stop) and removes
the default config's temporary ``run_dir``.

Parsl's apps beside the pool: a DFK the pool loads is Parsl's current one
(``parsl.load``'s) while the pool is open, unless the caller has loaded one
already, so that ``@python_app``s without ``data_flow_kernel=`` run there and
take the pool's futures as inputs (Parsl's DFK waits for any
`concurrent.futures.Future` among an app's arguments), as with Parsl's
``ParslPoolExecutor``. An app must find the DFK up: with a ``config``, the
pool loads it as it opens, as ``ParslPoolExecutor(config)`` does (inside an
event loop, on first use); the first call waits for the DFK to be up
(``submit`` returns once it is). Not so for the pool a graph execution opens
for itself (`ParslPool.scope_to_running_loop`): it is opened and used in the
execution's event loop, which never waits for Parsl to start, and nobody
else has its futures, so its DFK loads on first use and stays private.

Parsl's apps as functions: a Parsl app given to ``submit`` in place of a
function (``@python_app``, ``PythonApp(fn)``) is called as an app, once the
DFK is up: the call goes through the app's own DFK and executors, with
Parsl's serializer and bookkeeping, rather than aioflow's direct path.
Parsl cannot cancel a task: from then on the call counts as running, and
its future can no longer be cancelled. `aioflow.parsl.ParslPoolExecutor`,
the drop-in for Parsl's class, sends every call so, through one app per
function, as Parsl's class does.

Stopping: Parsl cannot stop a running task. `ParslPool.abort` cancels the
pool's futures (their results are dropped) and leaves the DFK up; the tasks
already on workers finish there, or stop when the pool closes and the DFK
it owns is cleaned up.

Lost workers: a worker that dies fails its task with Parsl's ``WorkerLost``
(or ``ManagerLost`` when a whole node goes), which becomes
`aioflow.WorkerLostError`. Parsl starts a new worker; the pool carries on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib.util
import logging
import math
import os
import pickle
import shlex
import shutil
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import MissingExtraError, OptionError, PoolClosedError, PoolError
from .._lost import WorkerLostError
from ._base import Pool
from ._futures import in_place, settle

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._options import PoolOptions

__all__ = [
    "DEFAULT_HEARTBEAT_PERIOD",
    "DEFAULT_STRATEGY_PERIOD",
    "LABEL",
    "ParslExecutor",
    "ParslPool",
    "default_config",
]

T = TypeVar("T")

logger = logging.getLogger("aioflow.pools")

#: The label of the executor in `default_config`.
LABEL = "aioflow_htex"

#: Seconds between two rounds of Parsl's block strategy in `default_config`.
#: Parsl starts the first block on its first round (5 s after start with
#: Parsl's default); a local block is cheap to poll (a ``kill -0`` per block),
#: so a short period gets the workers going at once.
DEFAULT_STRATEGY_PERIOD = 0.2

#: Seconds between the heartbeats of `default_config`'s workers. Parsl's
#: manager looks for dead workers once per heartbeat period (30 s by
#: default): a shorter one reports a lost worker within seconds, for one
#: small message per period on loopback.
DEFAULT_HEARTBEAT_PERIOD = 2

_OPTIONS = ("config", "dfk", "executors")

# Parsl's exceptions for a lost worker (a process) and a lost manager (a node, or its whole block).
_LOST = ("WorkerLost", "ManagerLost")


def _invoke(call: bytes, positions: tuple[int, ...], *upstream: Any) -> Any:
    """Run in a Parsl worker: the call, unpickled, with the results of the calls it waited for in their places."""
    fn, args, kwargs = pickle.loads(call)
    return fn(*in_place(args, positions, upstream), **kwargs)


#: A call sent as an HTEX task's payload (`_takes_payloads`): Parsl's worker
#: imports `_invoke` by this path and calls it with the payload and ``()``
#: (no upstream results to put in place: they are in the call already).
_INVOKE_PATH = f"{__name__}._invoke"


def _takes_payloads(executor: Any) -> bool:
    """Whether ``executor`` runs payloads of ours: a HighThroughputExecutor whose workers import `_invoke`.

    Parsl's HTEX sends a call as three buffers of its serializer (function,
    arguments, keyword arguments), each through dill: about 100 us per call
    in this process, for a call aioflow has pickled already. Since Parsl
    2025.10, ``submit_payload`` takes the bytes as they are, with the path of
    the function its worker runs them with. Subclasses that change how a
    task is submitted (such as the MPIExecutor) keep their own ``submit``.
    """
    try:
        from parsl.executors import HighThroughputExecutor
    except ImportError:
        return False
    if type(executor).submit is not HighThroughputExecutor.submit or not hasattr(executor, "submit_payload"):
        return False
    return _workers_run_task_executors()


@functools.cache
def _workers_run_task_executors() -> bool:
    """Whether this Parsl's HTEX workers honour a task's ``task_executor`` (the same Parsl runs on both ends)."""
    spec = importlib.util.find_spec("parsl.executors.high_throughput.process_worker_pool")
    if spec is None or spec.origin is None:
        return False
    try:
        with open(spec.origin, encoding="utf-8") as source:
            return '"task_executor"' in source.read()
    except OSError:
        return False


def _pack(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """A call as bytes, for `_invoke`.

    The standard pickle when it can (importable functions and classes travel
    by name), else cloudpickle, which also sends functions of ``__main__``, a
    notebook, lambdas and closures by value. Not the dill Parsl would use on
    the objects: dill costs about 140 us for a node's call, cloudpickle 25,
    pickle 7, all spent in the thread that submits. Parsl then only wraps
    the bytes.

    A pickle that names ``__main__`` would refer, on the worker, to the
    worker's own main module: such calls go to cloudpickle too.
    """
    call = (fn, args, kwargs)
    try:
        packed = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # a lambda, a closure, an object only cloudpickle can send
        packed = b"__main__"
    if b"__main__" not in packed:
        return packed
    import cloudpickle

    by_value: bytes = cloudpickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
    return by_value


def default_config(max_workers: int, run_dir: str) -> Any:
    """The Parsl ``Config`` the ``parsl`` pool uses without ``config`` or ``dfk``: one machine, loopback only.

    A HighThroughputExecutor with one block of ``max_workers`` worker
    processes on this machine (LocalProvider), listening on 127.0.0.1. Its
    workers get this process's ``sys.path`` (as ``PYTHONPATH``), as spawned
    process workers do, so task modules import by the same names.

    Args:
        max_workers: worker processes in the block.
        run_dir: where Parsl writes its run directory (scripts, worker logs).
    """
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    provider = LocalProvider(  # type: ignore[no-untyped-call]  # parsl leaves it unannotated
        init_blocks=1,
        min_blocks=1,
        max_blocks=1,
        worker_init=f"export PYTHONPATH={shlex.quote(path)}",
    )
    executor = HighThroughputExecutor(
        label=LABEL,
        address="127.0.0.1",
        loopback_address="127.0.0.1",
        max_workers_per_node=max_workers,
        cores_per_worker=1,
        heartbeat_period=DEFAULT_HEARTBEAT_PERIOD,
        provider=provider,
    )
    # strategy "none": the one block starts and stays; nothing scales in or out.
    # initialize_logging=False: no DEBUG log file written for every task.
    return Config(
        executors=[executor],
        run_dir=run_dir,
        strategy="none",
        strategy_period=DEFAULT_STRATEGY_PERIOD,
        initialize_logging=False,
    )


class _Kernel:
    """The DFK the pool's calls go to: the caller's, or one the pool loads (in a thread) and cleans up.

    A DFK the pool loads is Parsl's current one (what ``parsl.load`` makes
    it: ``@python_app``s without ``data_flow_kernel=`` run there, and take
    the pool's futures as inputs) until it is cleaned up, unless another is
    current already, or the pool is private (`make_private`). A call that
    finds the DFK still loading waits for it, unless the pool is private: so
    once ``submit`` has returned, Parsl's apps find the DFK, as they do
    after ``ParslPoolExecutor(config)``.
    """

    def __init__(self, dfk: Any = None, config: Any = None, max_workers: int = 1) -> None:
        self._lock = threading.Lock()
        self._dfk = dfk
        self._owned = dfk is None
        self._config = config
        self._max_workers = max_workers
        self._error: BaseException | None = None
        self._waiting: list[Callable[[Any, BaseException | None], None]] = []
        self._thread: threading.Thread | None = None
        # Set once loading has ended, either way, before the waiting calls are sent.
        self._loaded = threading.Event()
        self._private = False
        self._run_dir: str | None = None
        self._closed = False

    def make_private(self) -> None:
        """Never make the DFK Parsl's current one, nor make a call wait for it (a graph execution's own pool).

        Only that execution sends calls to it, from its event loop, which
        must not wait for Parsl to start; nobody else has its futures to give
        to an app. Called before the pool's first call.
        """
        with self._lock:
            self._private = True

    def load(self) -> None:
        """Load the DFK now, if the pool loads one, and return once it is up (or could not start).

        Nothing starts once the pool is closed.
        """
        with self._lock:
            if self._dfk is not None or self._error is not None or self._closed:
                return
            self._start()
        self._loaded.wait()

    def ready(self) -> Any:
        """The DFK, up: loaded now (blocking) if the pool loads one and has not yet.

        Raises:
            PoolError: Parsl could not start (`PoolClosedError`: the pool is closed).
        """
        self.load()
        with self._lock:
            dfk, error = self._dfk, self._error
        if error is not None:
            raise PoolError(str(error)) from error.__cause__
        if dfk is None:  # closed, before or while it loaded
            raise _closed_error()
        return dfk

    def when_ready(self, callback: Callable[[Any, BaseException | None], None]) -> None:
        """Call ``callback(dfk, error)`` once the DFK is up (now, if it is), starting it if needed.

        While it loads, the callback waits in a list, and the calling thread
        waits for the load to end, unless the pool is private.
        """
        with self._lock:
            if self._closed:
                raise _closed_error()
            dfk, error = self._dfk, self._error
            loading = dfk is None and error is None
            if loading:
                self._waiting.append(callback)
                self._start()
            wait = loading and not self._private
        if wait:
            self._loaded.wait()  # the callback runs in the loader thread
        elif not loading:
            callback(dfk, error)

    def _start(self) -> None:
        """Under ``_lock``: start the loader thread, unless it runs already."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._load, args=(self._private,), name="aioflow-parsl-load", daemon=True
            )
            self._thread.start()

    def _load(self, private: bool) -> None:
        dfk: Any = None
        error: BaseException | None = None
        try:
            import parsl
            from parsl.dataflow.dflow import DataFlowKernel

            config = self._config
            if config is None:
                self._run_dir = tempfile.mkdtemp(prefix="aioflow-parsl-")
                config = default_config(self._max_workers, self._run_dir)
            # parsl.load() makes it the current DFK; a caller's current one stays current.
            dfk = DataFlowKernel(config) if private or _current_dfk() is not None else parsl.load(config)
        except Exception as exc:
            error = PoolError(f"the 'parsl' pool could not start Parsl: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
        with self._lock:
            self._dfk, self._error = dfk, error
            waiting, self._waiting = self._waiting, []
        # Before the waiting calls are sent: a caller waiting in when_ready()
        # may hold a lock their done-callbacks need (aioflow.Executor.asubmit
        # holds its executor's), so it must not wait for them.
        self._loaded.set()
        for callback in waiting:
            callback(dfk, error)

    def close(self) -> None:
        """Clean up the DFK the pool loaded (its workers stop; no longer Parsl's current one) and its run_dir.

        Blocking.
        """
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:
            dfk, self._dfk = self._dfk, None
        try:
            if dfk is not None and self._owned:
                dfk.cleanup()  # Parsl's cleanup also clears it as the current DFK
        finally:
            if self._run_dir is not None:
                shutil.rmtree(self._run_dir, ignore_errors=True)


def _closed_error() -> PoolClosedError:
    return PoolClosedError("parsl")


def _in_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop (async code, a Jupyter cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _current_dfk() -> Any:
    """Parsl's current DFK (``parsl.load``'s), or None."""
    import parsl
    from parsl.errors import NoDataFlowKernelError

    try:
        return parsl.dfk()
    except NoDataFlowKernelError:
        return None


class ParslExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` over a Parsl DFK: each ``submit`` is one Parsl task.

    Shutting it down does not stop the DFK (the pool does, when it owns it).
    """

    def __init__(self, kernel: _Kernel, executors: str | list[str] = "all") -> None:
        self._kernel = kernel
        self._executors = executors
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        # Per pending future, the calls waiting for it (see `_after`).
        self._dependents: dict[concurrent.futures.Future[Any], list[Callable[[Any], None]]] = {}
        self._shutdown = False
        # The Parsl executors calls go to directly, in turn (None: through the DFK),
        # and for each whether it takes our payloads (`_takes_payloads`).
        self._direct: list[Any] | None = None
        self._payloads: list[bool] = []
        self._turn = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            self._pending.add(future)
        # Registered before the caller sees the future: calls chained to this
        # one are sent before any other callback runs (such as an event
        # loop's wake-up, which would compete for the GIL meanwhile).
        future.add_done_callback(self._settled)

        def launch(dfk: Any, error: BaseException | None) -> None:
            if future.done():  # cancelled while the DFK was starting
                return
            if error is not None:
                settle(future, error=error)
                return
            if _is_app(fn):
                _call_app(fn, future, args, kwargs)
                return
            # Futures among the positional arguments are dependencies of the
            # task: it starts when they are done, with their results, and
            # fails (without running) if one of them fails.
            waits_for = tuple(i for i, arg in enumerate(args) if isinstance(arg, concurrent.futures.Future))
            upstream = tuple(args[i] for i in waits_for)
            try:
                direct = self._direct_executors(dfk)
            except Exception as exc:  # never leave the future unsettled
                settle(future, error=exc)
                return
            if direct:
                _when_done(
                    upstream,
                    lambda values: self._send(dfk, direct, future, fn, args, kwargs, waits_for, values),
                    future,
                    self._after,
                )
                return
            # The futures go to the DFK beside the call, which it pickles without them.
            packed = in_place(args, waits_for, (None,) * len(waits_for))
            try:
                app_future = dfk.submit(
                    _invoke,
                    app_args=(_pack(fn, packed, kwargs), waits_for, *upstream),
                    executors=self._executors,
                    cache=False,
                    ignore_for_cache=None,
                    app_kwargs={},
                )
            except Exception as exc:
                settle(future, error=exc)
                return
            app_future.add_done_callback(lambda done: _copy(done, future))

        self._kernel.when_ready(launch)
        return future

    def _direct_executors(self, dfk: Any) -> list[Any]:
        """The Parsl executors to send calls to directly, or ``[]`` to go through the DFK.

        aioflow's scheduler already does what the DataFlowKernel does per task
        (dependencies, states, the outcome), so the DFK's own bookkeeping,
        about a third of a millisecond per task in this process, buys nothing,
        unless it does something aioflow does not: retries, monitoring,
        checkpoints. Calls then go through the DFK.
        """
        if self._direct is None:
            config = dfk.config
            plain = (
                not getattr(config, "retries", 0)
                and getattr(dfk, "monitoring", None) is None
                and not getattr(config, "checkpoint_mode", None)
                and hasattr(dfk, "submitter_lock")
            )
            labels = [label for label in dfk.executors if label != "_parsl_internal"]
            if self._executors != "all":
                labels = [label for label in labels if label in self._executors]
            direct = [dfk.executors[label] for label in labels] if plain else []
            self._payloads = [_takes_payloads(executor) for executor in direct]
            self._direct = direct
        return self._direct

    def _send(
        self,
        dfk: Any,
        executors: list[Any],
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waits_for: tuple[int, ...],
        upstream: tuple[Any, ...],
    ) -> None:
        """Hand one call, with the results it waited for in their places, to a Parsl executor.

        As the DFK would: under its submission lock. The call travels as one
        pickle (`_pack`): as the task's payload itself when the executor takes
        it (`_takes_payloads`), else wrapped by Parsl's own serializer.
        """
        if future.done():  # cancelled meanwhile
            return
        turn = self._turn % len(executors)
        executor = executors[turn]
        self._turn += 1
        try:
            call = _pack(fn, in_place(args, waits_for, upstream), kwargs)
            with dfk.submitter_lock:
                if self._payloads[turn]:
                    # A context of its own per task: Parsl keeps it with the task.
                    context = {"task_executor": {"f": _INVOKE_PATH, "a": ((),)}}
                    parsl_future = executor.submit_payload(context, call)
                else:
                    parsl_future = executor.submit(_invoke, {}, call, ())
        except Exception as exc:
            settle(future, error=exc)
            return
        parsl_future.add_done_callback(lambda done: _copy(done, future))

    def _settled(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)
            dependents = self._dependents.pop(future, ())
        for dependent in dependents:
            try:
                dependent(future)
            except Exception:  # as concurrent.futures does for a callback: the others still run
                logger.exception("a call chained to a Parsl call could not be sent")

    def _after(self, dependency: concurrent.futures.Future[Any], callback: Callable[[Any], None]) -> None:
        """Call ``callback(dependency)`` once it is done: first among its callbacks if it is one of ours."""
        with self._lock:
            if dependency in self._pending:
                self._dependents.setdefault(dependency, []).append(callback)
                return
        dependency.add_done_callback(callback)  # another executor's, or done already (then: now)

    def cancel_all(self) -> int:
        """Cancel every future not resolved yet (their Parsl tasks run on; the outcome is dropped)."""
        with self._lock:
            pending = list(self._pending)
        return sum(future.cancel() for future in pending)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            self.cancel_all()
        if wait:
            with self._lock:
                pending = list(self._pending)
            concurrent.futures.wait(pending)


def _is_app(fn: Any) -> bool:
    """Whether ``fn`` is a Parsl app (``@python_app``, ``PythonApp(f)``): calling it submits a task to its DFK.

    Without importing parsl: an app exists only once parsl is imported.
    """
    app_module = sys.modules.get("parsl.app.app")
    return app_module is not None and isinstance(fn, app_module.AppBase)


def _call_app(
    app: Callable[..., Any], future: concurrent.futures.Future[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Call a Parsl app, whose DFK runs the call (once the futures among its arguments are done); copy its outcome.

    Parsl cannot cancel a task: from here ``future`` counts as running, and
    ``cancel`` no longer succeeds.
    """
    if not future.set_running_or_notify_cancel():
        return  # cancelled while it waited for the DFK
    try:
        app_future = app(*args, **kwargs)
    except Exception as exc:  # Parsl refused it: a closed DFK, an unknown executor label
        settle(future, error=exc)
        return
    app_future.add_done_callback(lambda done: _copy(done, future))


def _when_done(
    upstream: tuple[concurrent.futures.Future[Any], ...],
    then: Callable[[tuple[Any, ...]], None],
    future: concurrent.futures.Future[Any],
    after: Callable[[concurrent.futures.Future[Any], Callable[[Any], None]], None],
) -> None:
    """Call ``then(results)`` once every future of ``upstream`` is done, in the thread that finishes the last.

    If one of them failed or was cancelled, ``future`` gets that error instead.
    ``after(dependency, callback)`` registers a callback on a dependency.
    """
    if not upstream:
        then(())
        return
    remaining = [len(upstream)]
    lock = threading.Lock()

    def one_done(_: concurrent.futures.Future[Any]) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        for dependency in upstream:
            if dependency.cancelled():
                settle(future, error=concurrent.futures.CancelledError("a call it waited for was cancelled"))
                return
            error = dependency.exception()
            if error is not None:
                settle(future, error=error)
                return
        then(tuple(dependency.result() for dependency in upstream))

    for dependency in upstream:
        after(dependency, one_done)


def _copy(source: concurrent.futures.Future[Any], target: concurrent.futures.Future[Any]) -> None:
    error = source.exception()
    if error is not None:
        settle(target, error=error)
    else:
        settle(target, result=source.result())


def _worker_count(config: Any) -> int | None:
    """How many tasks a Parsl ``Config`` runs at once, when its executors say (HTEX, threads)."""
    total = 0
    for executor in getattr(config, "executors", ()):
        per_node: Any = getattr(executor, "max_workers_per_node", None) or getattr(executor, "max_threads", None)
        provider = getattr(executor, "provider", None)
        blocks = getattr(provider, "max_blocks", 1) if provider is not None else 1
        nodes = getattr(provider, "nodes_per_block", 1) if provider is not None else 1
        try:
            count = float(per_node) * float(blocks) * float(nodes)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(count) or count < 1:
            return None
        total += int(count)
    return total or None


class ParslPool(Pool):
    """Tasks run on Parsl's workers: a local HighThroughputExecutor by default, any Parsl ``Config`` or DFK.

    ``pool_options``:
        config: a ``parsl.config.Config``; the pool loads a DFK from it as
            it opens (inside an event loop: on first use) and cleans it up
            when it closes. One config serves one pool (Parsl's executors
            inside it start once).
        dfk: a loaded ``DataFlowKernel`` (``parsl.load(config)``); the pool
            sends calls to it and leaves it running.
        executors: the labels of the Parsl executors to use (default ``"all"``).

    Without ``config`` or ``dfk``: `default_config` with ``max_workers``
    workers, loaded on first use, its ``run_dir`` in a temporary directory
    removed at close. ``max_workers`` otherwise only sets how many calls the
    scheduler keeps in flight (default: the workers the config declares,
    else one per CPU). ``scaling_workers`` and ``idle_timeout`` do not
    apply: Parsl's strategy scales the blocks.

    A DFK the pool loads is Parsl's current one while the pool is open
    (Parsl's apps run there, on the pool's futures), unless another is, or
    the pool is a graph execution's own.
    """

    name = "parsl"
    workers_elsewhere = True
    chains_calls = True

    # Each call is a network round trip: keep enough in flight that they
    # overlap, and let a wide fan go to Parsl at once, sent ahead of its
    # source, as hand-written futures would. The calls wait in Parsl's
    # interchange, not in this process. A fan of 1,000 on 2 workers: about
    # 10% faster with 256 per worker than with 64, and about 15% faster
    # again with 1,024 (the whole fan is sent from one callback when its
    # source finishes, none of it through the event loop).
    calls_in_flight_per_worker = 1024

    def __init__(self, options: PoolOptions) -> None:
        super().__init__(options)
        extra = options.extra
        self._kernel = _Kernel(dfk=extra.get("dfk"), config=extra.get("config"), max_workers=self.capacity)
        if extra.get("config") is not None and not _in_event_loop():
            # As ParslPoolExecutor(config): the DFK is up, and Parsl's current
            # one, when the pool is. In an event loop it loads on first use
            # (a graph execution opens its own pool there, and makes it private).
            try:
                self._kernel.load()
            except BaseException:  # interrupted while it loads: leave nothing running
                self._kernel.close()
                raise

    @property
    def dfk(self) -> Any:
        """The DataFlowKernel the calls go to: the caller's, or the pool's own, loaded now if it is not yet (blocking).

        Raises:
            PoolError: Parsl could not start (`PoolClosedError`: the pool is closed).
        """
        return self._kernel.ready()

    def scope_to_running_loop(self) -> None:
        # A graph execution's own pool: its DFK stays out of Parsl's current slot, and its loop never waits for it.
        self._kernel.make_private()

    def _validate(self, options: PoolOptions) -> None:
        if importlib.util.find_spec("parsl") is None:
            raise MissingExtraError("the 'parsl' pool", "parsl", "parsl")
        if options.context is not None:
            raise OptionError("context", "None for the 'parsl' pool (Parsl starts its workers)", options.context)
        extra = options.extra
        unknown = set(extra) - set(_OPTIONS)
        if unknown:
            raise OptionError("pool_options", f"a dict with keys among {', '.join(_OPTIONS)}", extra)
        if extra.get("config") is not None and extra.get("dfk") is not None:
            raise OptionError("pool_options", "a dict with 'config' or 'dfk', not both", extra)
        # The objects come from parsl, so it is imported already when they are right.
        config, dfk = extra.get("config"), extra.get("dfk")
        config_module, dflow_module = sys.modules.get("parsl.config"), sys.modules.get("parsl.dataflow.dflow")
        if config is not None and (config_module is None or not isinstance(config, config_module.Config)):
            raise OptionError("pool_options['config']", "a parsl.config.Config", config)
        if dfk is not None and (dflow_module is None or not isinstance(dfk, dflow_module.DataFlowKernel)):
            raise OptionError("pool_options['dfk']", "a parsl DataFlowKernel (parsl.load(config))", dfk)
        executors = extra.get("executors", "all")
        if executors != "all" and not (isinstance(executors, list) and all(isinstance(e, str) for e in executors)):
            raise OptionError("pool_options['executors']", "'all' or a list of executor labels", executors)

    def _default_max_workers(self) -> int:
        extra = self.options.extra
        config = extra.get("config")
        if config is None and extra.get("dfk") is not None:
            config = extra["dfk"].config
        counted = _worker_count(config) if config is not None else None
        return counted or os.cpu_count() or 1

    def _create_executor(self) -> concurrent.futures.Executor:
        return ParslExecutor(self._kernel, self.options.extra.get("executors", "all"))

    def translate(
        self, error: BaseException, executor: concurrent.futures.Executor, where: str, **fields: Any
    ) -> BaseException:
        if type(error).__name__ in _LOST and type(error).__module__.startswith("parsl."):
            lost = WorkerLostError(f"{where} lost its Parsl worker ({error})", **fields)
            lost.__cause__ = error
            return lost
        return super().translate(error, executor, where, **fields)

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, ParslExecutor)
        executor.shutdown(wait=False)
        if executor.cancel_all():
            logger.warning(
                "Parsl cannot stop running tasks: the stopped calls finish on their workers and their results "
                "are dropped (closing a pool that loaded its own Parsl DFK stops its workers)"
            )

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._kernel.close()

    async def aclose(self) -> None:
        from ._threads import run_in_own_thread

        try:
            await super().aclose()
        finally:
            await run_in_own_thread(self._kernel.close)
