"""The ``dask`` pool: tasks run on a Dask ``distributed`` cluster that aioflow drives, never builds.

aioflow's scheduler stays the driver (conditions, cycles, error links are
decided in this process, exactly as on the other pools); the cluster only
runs the calls. ``pool_options`` selects the cluster:

- ``{"address": "tcp://host:8786"}``: a running ``dask scheduler``; aioflow
  connects a client and disconnects on close, the cluster keeps running;
- ``{"client": client}``: an existing `distributed.Client`, used as it is and
  left open on close;
- ``connect_timeout`` (seconds, default `CONNECT_TIMEOUT`) bounds the wait
  for a scheduler to answer;
- nothing: a ``LocalCluster`` on 127.0.0.1 with ``max_workers`` worker
  processes of one thread each, started on first use and stopped on close;
  ``{"local_cluster": {...}}`` adds keyword arguments for it.

Actors and data flow. The client is an *asynchronous* one
(``asynchronous=True``), bound to one event loop, its *home loop*:

- by default the pool starts a home loop of its own in one thread
  (``aioflow-dask``), so that the pool serves any caller: the scheduler's
  loop, another loop of a later ``execute_graph``, `aioflow.Executor` and
  ``aioflow.parallel`` from plain threads. A pool may outlive any one of
  those loops; it never outlives its own;
- with a client given by the user, the home loop is that client's loop
  (distributed's own loop thread for a synchronous client);
- after `DaskPool.scope_to_running_loop` (for a pool that is opened, used
  and closed on one loop; `execute_graph_async` does it for the pool it
  opens for itself), the home loop is the caller's loop: no thread at all.

``submit`` (from any thread) returns a `concurrent.futures.Future` at once
and posts the call to the home loop (``call_soon_threadsafe``, or a plain
``call_soon`` from the home loop itself). There, the calls posted during one
turn of the loop go to the cluster together, in one ``client.map`` (one graph
update for the scheduler instead of one per call; each call has a key of its
own, so every call runs, even with equal arguments). One small coroutine per
call waits for the state the scheduler pushes (nothing is fetched); the
results of the calls that finished meanwhile are fetched with one
``client.gather``, and each outcome is copied to its future. No thread waits
on a task: a thousand calls in flight are a thousand suspended coroutines on
one loop.

Which worker ran a call. Once calls are done, one request to the scheduler
per batch (``who_has``, sent alongside the ``client.gather`` of their
results when they are fetched) names the worker that holds each result: the one that computed it,
unless the scheduler copied it since. The process behind each worker address
(its pid and host name) is asked of the workers themselves (``client.run``):
those the cluster has as the client connects at once, in the background, and
a new or restarted worker when its address first appears; then kept. The
answer is noted on the call's future before it is settled (`note_worker`),
for the engine's events. It is never worth a slower or failed call: whatever
goes wrong leaves the worker unknown (``None``), and a scheduler too slow to
answer (`LOCATE_TIMEOUT`) stops the asking for the rest of the connection. A
failed call names no worker: the cluster keeps no result of it to ask about.

Failures. A task's exception comes back as itself, with the worker's
traceback. A worker that dies while it runs a task ends that call with
`distributed.KilledWorker` once the cluster's ``allowed-failures`` budget is
spent, which the pool turns into `aioflow.WorkerLostError`. The
``LocalCluster`` aioflow starts allows no retry (``allowed_failures=0``),
like every other aioflow pool: the node fails at once and the graph's error
links decide. A cluster run by someone else keeps its own policy (Dask's
default reschedules a task three times on other workers first). The cluster
cancelling a call that nobody here cancelled (the scheduler went away) is a
lost worker too.

Stopping. Cancelling a returned future, or aborting (timeout, Ctrl-C, a
failed node), cancels the Dask futures (``client.cancel(force=True)``): calls
not started never start. A call already running on a worker cannot be
interrupted by Dask: it finishes there in the background and its result is
dropped. Closing the pool waits for the submitted calls, then closes, in
this order, the client (if aioflow opened it), the ``LocalCluster`` (if
aioflow started it; its worker processes are stopped by their nannies) and
the home loop thread (if the pool started it).

Who owns what: the connection (client, cluster, home loop) belongs to the
pool and lives until `DaskPool.close`; executors are light views over it, one
after each abort, each with the calls it still owes (``_calls``, under its
``_lock``). Everything that touches the client runs on the home loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import MissingExtraError, OptionError, PoolClosedError, PoolError
from ._base import Pool
from ._futures import Owned, in_place, note_worker, owned_by, settle, this_host
from ._outcomes import DaskTaskLost, unpicklable_type
from ._threads import run_in_own_thread

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable

    from ._options import PoolOptions

__all__ = ["CONNECT_TIMEOUT", "DaskPool", "DaskTaskLost"]

T = TypeVar("T")

logger = logging.getLogger("aioflow.pools")

#: Seconds to wait for the scheduler at ``address`` (or the ``LocalCluster``)
#: to answer. Long enough for a scheduler on a busy login node, short enough
#: that a wrong address is reported before the user gives up waiting.
CONNECT_TIMEOUT = 30.0

#: Seconds a close or an abort waits for the home loop to finish its part.
#: Stopping a ``LocalCluster`` of a few workers takes one to three seconds;
#: only a hung cluster reaches this.
STOP_TIMEOUT = 60.0

#: Seconds to wait for the scheduler to say which workers hold the results
#: of finished calls (or for new workers to say which process they are).
#: Calls wait for the answer before they are settled; a scheduler that takes
#: longer is not asked again (`_Workers`).
LOCATE_TIMEOUT = 5.0

_KNOWN_OPTIONS = ("address", "client", "local_cluster", "connect_timeout")


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise MissingExtraError("pool 'dask'", "distributed", "dask") from exc
    return distributed


def _ignore(future: Any) -> None:
    """The callback of ``distributed.client.done_callback``, which is only awaited here."""


class _Payload:
    """One call as the cluster stores it: opaque to Dask, which never looks inside for tasks or keys."""

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Payload, (self.fn, self.args, self.kwargs))


def _apply(payload: _Payload) -> Any:
    """On a worker: run one call."""
    return payload.fn(*payload.args, **payload.kwargs)


def _apply_chained(payload: _Payload, positions: tuple[int, ...], *upstream: Any) -> Any:
    """On a worker: run one call, with the results of the calls it waited for in their places."""
    return payload.fn(*in_place(payload.args, positions, upstream), **payload.kwargs)


def _whoami() -> tuple[int, str]:
    """On a worker (``client.run``): its process, as `note_worker` names a worker: pid and host name."""
    return os.getpid(), this_host()


# --------------------------------------------------------------------------- the connection


class _HomeLoop:
    """An event loop of the pool's own, running in one daemon thread until `stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name="aioflow-dask", daemon=True)
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def stop(self) -> None:
        """Stop the loop and join its thread (call from another thread)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


class _Connection:
    """The client (and the cluster aioflow started) on the home loop. Owned by one `DaskPool`."""

    def __init__(self, pool_name: str, options: PoolOptions, workers: int, loop: asyncio.AbstractEventLoop | None):
        self._pool_name = pool_name
        extra = options.extra
        self._address: str | None = extra.get("address")
        self._given_client: Any = extra.get("client")
        self._cluster_options: dict[str, Any] = dict(extra.get("local_cluster") or {})
        self._workers = workers
        self._timeout = float(extra.get("connect_timeout", CONNECT_TIMEOUT))
        self._home: _HomeLoop | None = None
        if self._given_client is not None:
            loop = self._given_client.loop.asyncio_loop
        elif loop is None:
            self._home = _HomeLoop()
            loop = self._home.loop
        assert loop is not None
        self.loop: asyncio.AbstractEventLoop = loop
        self.client: Any = None
        self.cluster: Any = None
        self.workers = _Workers()
        self._ready: asyncio.Task[Any] | None = None  # touched on the home loop only
        self.closed = False

    # ------------------------------------------------------------ any thread

    def in_home_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon on the home loop.

        Raises:
            PoolError: the home loop is gone (the pool was closed, or the
                user's client or loop was closed under it).
        """
        try:
            if self.in_home_thread():
                self.loop.call_soon(fn, *args)
            else:
                self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError as exc:  # the loop is closed
            msg = f"the {self._pool_name!r} pool cannot reach its Dask client: its event loop is closed"
            raise PoolError(msg) from exc

    def run(self, make_coro: Callable[[], Coroutine[Any, Any, T]], timeout: float = STOP_TIMEOUT) -> T | None:
        """Run a coroutine on the home loop and wait for it, from another thread.

        From the home loop's own thread nothing can be waited for: the
        coroutine is started and ``None`` returned.
        """
        if self.in_home_thread():
            self.loop.create_task(make_coro())
            return None
        if self.loop.is_closed() or not self.loop.is_running():
            return None
        future = asyncio.run_coroutine_threadsafe(make_coro(), self.loop)
        return future.result(timeout)

    # ------------------------------------------------------------ home loop

    async def get_client(self) -> Any:
        """The connected client (connecting on first call)."""
        if self._ready is None:
            # One connection attempt, shared: a caller cancelled meanwhile does not stop it.
            self._ready = self.loop.create_task(self._connect())
        return await asyncio.shield(self._ready)

    async def _connect(self) -> Any:
        distributed = _import_distributed()
        if self._given_client is not None:
            self.client = self._given_client
            self.workers.start(self.client)
            return self.client
        if self._address is not None:
            where = f"the Dask scheduler at {self._address!r}"
        else:
            where = "a Dask LocalCluster on 127.0.0.1"
            cluster_options = {
                "n_workers": self._workers,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                # No dashboard (it needs bokeh, and nobody looks at it in a
                # batch run); the scheduler's small HTTP server (health,
                # metrics) still starts, on a free port rather than 8787,
                # which another cluster on the machine may hold.
                "dashboard_address": None,
                "scheduler_kwargs": {
                    "dashboard_address": "127.0.0.1:0",
                    # aioflow's semantics: a worker that dies fails its node (no silent retry).
                    "allowed_failures": 0,
                },
                **self._cluster_options,
            }
            self.cluster = await distributed.LocalCluster(asynchronous=True, **cluster_options)
        try:
            address = self._address if self.cluster is None else self.cluster
            self.client = await asyncio.wait_for(
                distributed.Client(address, asynchronous=True, timeout=self._timeout, set_as_default=False),
                self._timeout + 5,
            )
        except BaseException as exc:
            await self._close_cluster()
            if isinstance(exc, (OSError, TimeoutError)):
                msg = f"the {self._pool_name!r} pool could not connect to {where}: {exc}"
                raise PoolError(msg) from exc
            raise
        self.workers.start(self.client)
        return self.client

    async def cancel(self, dask_futures: list[Any]) -> None:
        if dask_futures and self.client is not None and self.client.status == "running":
            try:
                await self.client.cancel(dask_futures, force=True, asynchronous=True)
            except Exception:  # the connection is going away: nothing left to cancel
                logger.debug("cancelling Dask futures failed", exc_info=True)

    async def aclose(self) -> None:
        """Close what aioflow opened: the client, then the cluster."""
        self.closed = True
        if self._ready is not None and not self._ready.done():
            await asyncio.wait([self._ready])  # a connection half made is closed, not leaked
        await self.workers.stop()
        client, self.client = self.client, None
        if client is not None and client is not self._given_client:
            await client.close()
        await self._close_cluster()

    async def _close_cluster(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            await cluster.close()

    def stop_home(self) -> None:
        """Stop the pool's own loop thread (from another thread)."""
        if self._home is not None:
            self._home.stop()


class _Workers:
    """Which worker process holds the results of finished calls, as the scheduler and the workers tell it.

    Home loop only. Keeps worker address -> (pid, host) for the connection's
    life. The workers the cluster has when the client connects are asked at
    once, in the background (`start`), so that the first calls do not wait
    for it; a worker that joins later (or restarts: it comes back under a
    new address) is asked when its address first appears. Addresses that did
    not answer are not asked again.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, str]] = {}
        self._silent: set[str] = set()
        self._given_up = False
        self._first: asyncio.Task[None] | None = None

    def start(self, client: Any) -> None:
        """Ask the cluster's current workers which process they are, in the background."""
        if self._first is None:
            self._first = asyncio.get_running_loop().create_task(self._learn(client, None))

    async def stop(self) -> None:
        """Stop asking (the connection closes)."""
        first, self._first = self._first, None
        if first is not None and not first.done():
            first.cancel()
            await asyncio.wait([first])

    async def locate(self, client: Any, keys: list[Any]) -> dict[Any, tuple[int, str]]:
        """The worker process (pid, host) holding each key's result; keys it cannot tell are left out.

        One ``who_has`` request to the scheduler, plus one ``client.run`` for
        the addresses not known yet. Never raises but the home loop's
        cancellation: a failure leaves the keys out.
        """
        if self._given_up or not keys:
            return {}
        try:
            async with asyncio.timeout(LOCATE_TIMEOUT):
                holders: dict[Any, Any] = await client.scheduler.who_has(keys=keys)
        except TimeoutError:
            self._given_up = True
            logger.warning(
                "the Dask scheduler took over %s s to say which workers hold results: "
                "events will name no Dask worker for the rest of this connection",
                LOCATE_TIMEOUT,
            )
            return {}
        except Exception:  # the connection is going away: the calls settle without a worker
            logger.debug("could not ask the Dask scheduler which workers hold results", exc_info=True)
            return {}
        where = {key: addresses[0] for key, addresses in holders.items() if addresses}
        if self._first is not None and not self._first.done() and not self._knows(where.values()):
            await asyncio.wait([self._first])  # the workers are being asked already
        known = self._known
        unknown = {address for address in where.values() if address not in known and address not in self._silent}
        if unknown:
            await self._learn(client, sorted(unknown))
        return {key: known[address] for key, address in where.items() if address in known}

    def _knows(self, addresses: Iterable[str]) -> bool:
        return all(address in self._known or address in self._silent for address in addresses)

    async def _learn(self, client: Any, addresses: list[str] | None) -> None:
        """Ask workers (``None``: all the cluster has) which process they are."""
        try:
            async with asyncio.timeout(LOCATE_TIMEOUT):
                answers = await client.run(_whoami, workers=addresses, on_error="return", asynchronous=True)
        except Exception:  # a timeout, or the scheduler refused: these workers stay unknown
            logger.debug("could not ask Dask workers %s for their pid", addresses or "(all)", exc_info=True)
            answers = {}
        for address in answers if addresses is None else addresses:
            answer = answers.get(address)
            if isinstance(answer, (tuple, list)) and len(answer) == 2:
                self._known[address] = (int(answer[0]), str(answer[1]))
            elif addresses is not None:  # one asked by name that did not answer
                self._silent.add(address)


# --------------------------------------------------------------------------- the executor


class _Call:
    __slots__ = ("dask_future", "fn_name", "future", "owner", "remote")

    def __init__(
        self, future: concurrent.futures.Future[Any], owner: object, fn_name: str, remote: bool = False
    ) -> None:
        self.future = future
        self.owner = owner
        self.fn_name = fn_name  # the prefix of its Dask key
        self.remote = remote  # its result stays on the cluster: the future gets a _Remote
        self.dask_future: Any = None


class _Remote:
    """A call's result left on the cluster: what the future of a `DaskPool.bind_remote` call resolves to.

    It holds the Dask future, so the cluster keeps the value until the
    handle is dropped. Given back to ``submit`` as the result of a future
    argument, it reaches the worker from the worker that holds it;
    `DaskPool.afetch` brings values here.
    """

    __slots__ = ("dask_future",)

    def __init__(self, dask_future: Any) -> None:
        self.dask_future = dask_future

    def __reduce__(self) -> Any:
        msg = "a result kept on the Dask cluster cannot be pickled: fetch it with DaskPool.afetch first"
        raise TypeError(msg)


class _DaskExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` whose calls run on the connection's Dask cluster."""

    def __init__(self, connection: _Connection) -> None:
        self._conn = connection
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._calls: dict[concurrent.futures.Future[Any], _Call] = {}
        self._shutdown = False
        # Home loop only: calls to send to the cluster, calls done there whose results are to be fetched,
        # and calls done there whose results stay there, waiting to learn which worker holds them.
        self._to_submit: list[tuple[_Call, Callable[..., Any], tuple[Any, ...], dict[str, Any], tuple[int, ...]]] = []
        self._to_gather: list[_Call] = []
        self._gathering = False
        self._to_locate: list[_Call] = []
        self._locating = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        owner = None
        remote = False
        if isinstance(fn, Owned):
            owner, remote, fn = fn.owner, fn.remote, fn.fn
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        call = _Call(future, owner, _key_name(fn, args), remote)
        with self._lock:
            if self._shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            self._calls[future] = call
        waits_for = tuple(i for i, arg in enumerate(args) if isinstance(arg, concurrent.futures.Future))
        try:
            self._conn.post(self._start, call, fn, args, kwargs, waits_for)
        except BaseException:
            self._forget(future)
            raise
        future.add_done_callback(self._on_cancel)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            calls = list(self._calls.values())
        if cancel_futures:
            for call in calls:
                call.future.cancel()
        if wait and not self._conn.in_home_thread():
            with self._idle:
                self._idle.wait_for(lambda: not self._calls)

    # ------------------------------------------------------------ internals

    def calls(self, owner: object | None = None) -> list[_Call]:
        with self._lock:
            return [c for c in self._calls.values() if owner is None or owned_by(c.owner, owner)]

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._idle:
            self._calls.pop(future, None)
            if not self._calls:
                self._idle.notify_all()

    def _on_cancel(self, future: concurrent.futures.Future[Any]) -> None:
        if not future.cancelled():
            return
        with self._lock:
            call = self._calls.get(future)
        self._forget(future)
        if call is not None and call.dask_future is not None:
            try:
                self._conn.post(self._cancel_dask, call)
            except PoolError:
                pass  # the connection is gone, and the call with it

    def _cancel_dask(self, call: _Call) -> None:  # on the home loop
        self._conn.loop.create_task(self._conn.cancel([call.dask_future]))

    def _start(
        self,
        call: _Call,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waits_for: tuple[int, ...] = (),
    ) -> None:
        """On the home loop: queue a call; the calls queued in one turn of the loop are sent together."""
        if call.future.cancelled():
            return
        self._to_submit.append((call, fn, args, kwargs, waits_for))
        if len(self._to_submit) == 1:
            self._conn.loop.create_task(self._submit())

    async def _submit(self) -> None:
        """On the home loop: send the queued calls to the cluster, as few messages as possible, then watch each.

        One ``client.map`` for many calls: the scheduler handles one graph
        update instead of one per call, which is most of its cost per task.
        Calls that wait for others go in the same way, grouped by how many
        they wait for; a call waiting for one queued just before it is sent
        after it (the Dask future it needs exists only then).
        """
        try:
            client = await self._conn.get_client()
        except Exception as exc:
            failed, self._to_submit = self._to_submit, []
            for call, *_ in failed:
                self._done(call, error=self._describe(exc))
            return
        queued, self._to_submit = [b for b in self._to_submit if not b[0].future.cancelled()], []
        # The calls of this batch not sent yet: a call waiting for one of them is sent after it.
        unsent = {b[0].future for b in queued}
        # Calls to send, grouped by how many Dask futures they take: (call, arguments of the applier).
        groups: dict[int, list[tuple[_Call, tuple[Any, ...]]]] = {}
        for call, fn, args, kwargs, waits_for in queued:
            if not waits_for:
                groups.setdefault(0, []).append((call, (_Payload(fn, args, kwargs),)))
                continue
            arguments = self._resolve(call, fn, args, kwargs, waits_for, unsent)
            if arguments is _SEND_EARLIER:
                self._send_groups(client, groups, unsent)  # what it waits for is among them
                arguments = self._resolve(call, fn, args, kwargs, waits_for, unsent)
            if isinstance(arguments, tuple):
                width = len(arguments) - 2
                groups.setdefault(width, []).append((call, arguments if width else arguments[:1]))
            else:  # settled, or waiting here: not sent in this batch
                unsent.discard(call.future)
        self._send_groups(client, groups, unsent)

    def _resolve(
        self,
        call: _Call,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waits_for: tuple[int, ...],
        unsent: set[concurrent.futures.Future[Any]],
    ) -> tuple[Any, ...] | object | None:
        """The arguments of `_apply_chained` for a call that waits for others.

        Each future it waits for becomes the Dask future of its call (or of
        the result that call left on the cluster), or its result, when it is
        only here. Returns `_SEND_EARLIER` if one of them is among the
        ``unsent`` calls of this batch, and ``None`` when the call is settled
        (a dependency failed) or waits here for one not on this cluster.
        """
        values = list(args)
        positions: list[int] = []
        upstream: list[Any] = []
        for position in waits_for:
            dependency: concurrent.futures.Future[Any] = args[position]
            with self._lock:
                on_cluster = self._calls.get(dependency)
            if on_cluster is not None and on_cluster.dask_future is not None:
                positions.append(position)
                upstream.append(on_cluster.dask_future)
                values[position] = None  # its result takes this place on the worker
            elif dependency in unsent:
                return _SEND_EARLIER
            elif dependency.done():
                if dependency.cancelled():
                    self._done(call, error=concurrent.futures.CancelledError())
                    return None
                error = dependency.exception()
                if error is not None:
                    self._done(call, error=error)
                    return None
                value = dependency.result()
                if isinstance(value, _Remote):  # still on the cluster: from there
                    positions.append(position)
                    upstream.append(value.dask_future)
                    values[position] = None
                else:
                    values[position] = value
            else:
                dependency.add_done_callback(lambda _: self._retry(call, fn, args, kwargs, waits_for))
                return None
        return (_Payload(fn, tuple(values), kwargs), tuple(positions), *upstream)

    def _send_groups(
        self,
        client: Any,
        groups: dict[int, list[tuple[_Call, tuple[Any, ...]]]],
        unsent: set[concurrent.futures.Future[Any]],
    ) -> None:
        """On the home loop: send each group in one ``client.map``, and watch each call."""
        for width, group in groups.items():
            applier = _apply if width == 0 else _apply_chained
            calls = [call for call, _ in group]
            unsent.difference_update(call.future for call in calls)
            keys = [_key(call.fn_name) for call in calls]
            columns = list(zip(*(arguments for _, arguments in group), strict=True))
            try:
                futures: list[Any] = client.map(applier, *columns, key=keys, pure=False)
            except Exception:
                # One call that cannot be sent (an argument that does not pickle)
                # must fail alone: send them one by one, under new keys (the
                # client may have registered the first ones before it failed).
                futures = []
                for (call, arguments), key in zip(group, keys, strict=True):
                    try:
                        futures.append(client.submit(applier, *arguments, key=f"{key}-1", pure=False))
                    except Exception as exc:
                        self._done(call, error=_unsendable(exc))
                        futures.append(None)
            del columns  # the cluster holds the calls now
            for call, dask_future in zip(calls, futures, strict=True):
                if dask_future is not None:  # None: could not be sent
                    self._sent(call, dask_future, client)
        groups.clear()

    def _retry(self, *start: Any) -> None:
        """From any thread: queue a chained call again, once what it waited for here is done."""
        try:
            self._conn.post(self._start, *start)
        except PoolError as exc:
            self._done(start[0], error=exc)

    def _sent(self, call: _Call, dask_future: Any, client: Any) -> None:
        call.dask_future = dask_future
        if call.future.cancelled():  # from another thread, just now
            self._conn.loop.create_task(self._conn.cancel([dask_future]))
        self._conn.loop.create_task(self._watch(call, client))

    async def _watch(self, call: _Call, client: Any) -> None:
        """On the home loop: wait until the cluster says a call is done, then queue it to be gathered (or located)."""
        try:
            # Waits for the future's state (a message the scheduler pushes), fetching nothing.
            await _import_distributed().client.done_callback(call.dask_future, _ignore)
        except BaseException as exc:  # cancelled: the home loop is closing
            self._done(call, error=PoolError(f"the Dask call was abandoned: {type(exc).__name__}"))
            raise
        if call.remote and call.dask_future.status == "finished":  # nothing to fetch
            self._to_locate.append(call)
            if not self._locating:
                self._locating = True
                self._conn.loop.create_task(self._settle_remote(client))
            return
        self._to_gather.append(call)
        if not self._gathering:
            self._gathering = True
            self._conn.loop.create_task(self._gather(client))

    async def _gather(self, client: Any) -> None:
        """On the home loop: fetch the results of finished calls, many in one request.

        Results of calls that finished while a fetch was on its way are
        fetched together by the next one: under load, one request per batch
        rather than one per call. Which workers hold them is asked of the
        scheduler at the same time (`_Workers.locate`).
        """
        try:
            while self._to_gather:
                batch, self._to_gather = self._to_gather, []
                finished = [c for c in batch if c.dask_future.status == "finished"]
                one_by_one = [c for c in batch if c.dask_future.status != "finished"]
                located: dict[Any, tuple[int, str]] = {}
                if finished:
                    keys = [c.dask_future.key for c in finished]
                    located, values = await asyncio.gather(
                        self._conn.workers.locate(client, keys), _fetch(client, [c.dask_future for c in finished])
                    )
                    if values is None:
                        one_by_one += finished  # one of them went wrong meanwhile: find which
                    else:
                        for call, key, value in zip(finished, keys, values, strict=True):
                            self._done(call, result=value, worker=located.get(key))
                for call in one_by_one:
                    key = call.dask_future.key
                    try:
                        value = await client.gather(call.dask_future, asynchronous=True)
                    except Exception as exc:
                        self._done(call, error=self._describe(exc))
                    else:
                        self._done(call, result=value, worker=located.get(key))
        except BaseException as exc:  # cancelled: the home loop is closing
            for call in self._to_gather:
                self._done(call, error=PoolError(f"the Dask call was abandoned: {type(exc).__name__}"))
            self._to_gather = []
            raise
        finally:
            self._gathering = False

    async def _settle_remote(self, client: Any) -> None:
        """On the home loop: settle finished calls whose results stay on the cluster, naming the workers that hold them.

        Calls that finished while the scheduler was being asked are asked
        about together next: one request per batch, as in `_gather`.
        """
        batch: list[_Call] = []
        try:
            while self._to_locate:
                batch, self._to_locate = self._to_locate, []
                located = await self._conn.workers.locate(client, [c.dask_future.key for c in batch])
                for call in batch:
                    self._done(call, result=_Remote(call.dask_future), worker=located.get(call.dask_future.key))
        except BaseException:  # cancelled: the home loop is closing; the results are there all the same
            for call in batch + self._to_locate:
                if call.dask_future is not None:
                    self._done(call, result=_Remote(call.dask_future))
            self._to_locate = []
            raise
        finally:
            self._locating = False

    def _done(
        self,
        call: _Call,
        *,
        result: Any = None,
        error: BaseException | None = None,
        worker: tuple[int, str] | None = None,
    ) -> None:
        call.dask_future = None
        if worker is not None:
            note_worker(call.future, *worker)
        settle(call.future, result=result, error=error)
        self._forget(call.future)

    def _describe(self, exc: Exception) -> BaseException:
        distributed = _import_distributed()
        if isinstance(exc, distributed.KilledWorker):
            lost = DaskTaskLost(f"a Dask worker died while it ran the task: {exc}")
        elif isinstance(exc, distributed.client.FutureCancelledError):
            lost = DaskTaskLost(f"the Dask cluster dropped the task: {exc}")
        else:
            return exc
        lost.__cause__ = exc
        return lost


async def _fetch(client: Any, dask_futures: list[Any]) -> list[Any] | None:
    """The results of finished calls, in one ``client.gather``; ``None`` if one of them went wrong meanwhile."""
    try:
        values: list[Any] = await client.gather(dask_futures, asynchronous=True)
    except Exception:
        return None
    return values


def _key_name(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """The prefix of a call's Dask key: the task a node runs, else the function's name.

    Dask groups tasks by this prefix: the dashboard shows one bar per task,
    and the scheduler's placement follows the groups' dependencies as it
    does for hand-written ``client.submit`` calls of the same functions. A
    node's call (`aioflow._tasks.TaskCall`, `ChainedCall`) names its task in
    its ``call_name``; any other call is named after its function.
    """
    first: Any = args[0] if args else None
    name = first.call_name if hasattr(first, "call_name") else getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name:
        return "call"
    # "/path/tasks.py::func" -> "func"; "-" separates Dask's prefix from the rest of the key.
    return name.rpartition("::")[2].replace("-", "_") or "call"


def _key(name: str) -> str:
    """A key of its own for every call: equal calls still all run."""
    return f"{name}-{uuid.uuid4().hex}"


# What `_DaskExecutor._resolve` returns for a call that waits for one queued before it in the same batch.
_SEND_EARLIER = object()


def _unsendable(exc: Exception) -> Exception:
    """The pickling error under Dask's ``Could not serialize object of type ...`` (it names the real culprit)."""
    seen: Exception | None = exc
    while seen is not None:
        if unpicklable_type(seen) is not None:
            return seen
        cause = seen.__cause__ or seen.__context__
        seen = cause if isinstance(cause, Exception) else None
    return exc


# --------------------------------------------------------------------------- the pool


class DaskPool(Pool):
    """Tasks run on a Dask ``distributed`` cluster: one at ``address``, a given ``client``, or a LocalCluster."""

    name = "dask"
    workers_elsewhere = True
    chains_calls = True
    keeps_results_remote = True
    # Calls whose results stay on the cluster cost the driver a handle each,
    # and Dask's scheduler queues what its workers cannot take yet: a deep
    # window lets it place a wide fan at once (1000 tiny tasks on 2 workers:
    # 0.9 s with 512 in flight, 1.5 s with 32).
    calls_in_flight_per_worker = 256

    def __init__(self, options: PoolOptions) -> None:
        super().__init__(options)
        self._connection: _Connection | None = None
        self._scoped_loop: asyncio.AbstractEventLoop | None = None

    def _validate(self, options: PoolOptions) -> None:
        extra = options.extra
        unknown = set(extra) - set(_KNOWN_OPTIONS)
        if unknown:
            raise OptionError("pool_options", f"a dict with keys among {', '.join(_KNOWN_OPTIONS)}", extra)
        if options.context is not None:
            expected = "None for the 'dask' pool (Dask starts its own workers; start methods apply to process pools)"
            raise OptionError("context", expected, options.context)
        address, client, local = extra.get("address"), extra.get("client"), extra.get("local_cluster")
        if address is not None and client is not None:
            raise OptionError("pool_options", "a dict with 'address' or 'client', not both", extra)
        if address is not None and not isinstance(address, str):
            raise OptionError("pool_options['address']", "a scheduler address such as 'tcp://host:8786'", address)
        if local is not None and (not isinstance(local, dict) or address is not None or client is not None):
            expected = "a dict of LocalCluster keyword arguments, without 'address' or 'client'"
            raise OptionError("pool_options['local_cluster']", expected, local)
        timeout = extra.get("connect_timeout", CONNECT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise OptionError("pool_options['connect_timeout']", "a number of seconds > 0", timeout)
        distributed = _import_distributed()
        if client is not None and not isinstance(client, distributed.Client):
            raise OptionError("pool_options['client']", "a distributed.Client", client)

    def _default_max_workers(self) -> int:
        # The LocalCluster aioflow starts has one single-threaded worker
        # process per core, like the process pool. For a cluster run by
        # someone else, this only sizes how many calls the driver keeps in
        # flight (Dask queues the surplus on its scheduler).
        return os.cpu_count() or 1

    def scope_to_running_loop(self) -> None:
        """Keep the Dask client on the running event loop instead of a thread of the pool's own.

        For a pool that is opened, used and closed (`aclose`) on this one loop
        only, as the pool an `execute_graph_async` call opens for itself.
        Waiting for the pool's calls from this loop's thread without
        ``await`` (a synchronous ``execute_graph`` or ``Executor.submit(...).result()``
        inside a coroutine) would then wait forever: use the default instead.

        Raises:
            RuntimeError: no event loop runs in this thread.
            PoolError: the pool is already in use.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._connection is not None:
                msg = f"the {self.name!r} pool is already connected; scope it to a loop before its first use"
                raise PoolError(msg)
            self._scoped_loop = loop

    # ------------------------------------------------------------ the seam the scheduler uses

    def _create_executor(self) -> concurrent.futures.Executor:
        # Called under self._lock by Pool.executor: _connect takes it itself.
        connection = self._connection
        if connection is None or connection.closed:
            connection = self._connection = _Connection(self.name, self.options, self.capacity, self._scoped_loop)
        return _DaskExecutor(connection)

    def bind(self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., T]) -> Callable[..., T]:
        return Owned(owner, fn)

    def bind_remote(
        self, executor: concurrent.futures.Executor, owner: object, fn: Callable[..., Any]
    ) -> Callable[..., Any]:
        return Owned(owner, fn, remote=True)

    async def afetch(self, handles: list[Any]) -> list[Any]:
        """Fetch the values of results kept on the cluster, in one ``client.gather``.

        Raises:
            PoolClosedError: the pool is closed: the results it kept are gone.
            PoolError: its cluster cannot be reached.
            Exception: what fetching raised (a value that does not unpickle here...).
        """
        if not handles:
            return []
        connection = self._connection
        if connection is None:
            raise PoolClosedError(self.name, "the results it kept on its cluster are gone")

        async def gather() -> list[Any]:
            client = await connection.get_client()
            values: list[Any] = await client.gather([h.dask_future for h in handles], asynchronous=True)
            return values

        try:
            if connection.in_home_thread():
                return await gather()
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(gather(), connection.loop))
        except (OSError, RuntimeError) as exc:  # the connection, or the home loop, is gone
            msg = f"the {self.name!r} pool could not fetch results from its cluster: {type(exc).__name__}: {exc}"
            raise PoolError(msg) from exc

    def lost_worker(self, executor: concurrent.futures.Executor, error: BaseException) -> str | None:
        # One worker died; the cluster and the other calls carry on: keep the executor.
        return str(error) or None

    def _abort_running(self, executor: concurrent.futures.Executor) -> None:
        assert isinstance(executor, _DaskExecutor)
        executor.shutdown(wait=False)
        self._cancel(executor, executor.calls())

    def _abort_owner(self, executor: concurrent.futures.Executor, owner: object) -> None:
        assert isinstance(executor, _DaskExecutor)
        self._cancel(executor, executor.calls(owner))

    def _cancel(self, executor: _DaskExecutor, calls: list[_Call]) -> None:
        dask_futures = [c.dask_future for c in calls if c.dask_future is not None]
        for call in calls:
            call.future.cancel()
        if dask_futures:
            executor._conn.run(lambda: executor._conn.cancel(dask_futures))

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        connection = self._connection
        if connection is not None and connection.in_home_thread():
            msg = f"the {self.name!r} pool lives on this event loop: close it with 'await pool.aclose()'"
            raise PoolError(msg)
        super().close()
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.run(connection.aclose)
        finally:
            connection.stop_home()

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            connection, self._connection = self._connection, None
        if executor is not None:
            if connection is not None and connection.in_home_thread():
                await _wait_idle(executor)
            else:
                await run_in_own_thread(executor.shutdown, True)
        if connection is None:
            return
        if connection.in_home_thread():
            await connection.aclose()
        else:
            await run_in_own_thread(connection.run, connection.aclose)
        await run_in_own_thread(connection.stop_home)


async def _wait_idle(executor: concurrent.futures.Executor) -> None:
    """On the home loop: wait until the executor's calls are settled, without blocking the loop."""
    assert isinstance(executor, _DaskExecutor)
    executor.shutdown(wait=False)
    pending = [asyncio.wrap_future(call.future) for call in executor.calls()]
    if pending:
        await asyncio.wait(pending)
