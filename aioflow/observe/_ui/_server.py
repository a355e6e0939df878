"""The live web view's HTTP server: a Starlette app, served by uvicorn in a thread of its own.

Design:

- `ViewServer` binds its socket in the caller's thread (so that a port in
  use is an `aioflow.OptionError` at once, and port 0 is known before
  anything runs), then starts a daemon thread that runs its own event loop
  with ``uvicorn.Server.serve``. Everything the server knows lives in that
  loop: the `Site` (what is served: one live run, or a journal's runs) and
  its `aioflow.observe._ui._feed.Channel` objects. Other threads reach it
  only through `ViewServer.call` (``run_coroutine_threadsafe``).
- Routes: ``/`` the page, ``/static/...`` its script and style (shipped in
  the package), ``/api/info``, ``/api/runs`` (a journal's), ``/api/graph``,
  ``/api/state`` (a snapshot), ``/api/events`` (server-sent events: a
  snapshot, then batches, and a comment every `KEEPALIVE` s), ``POST
  /api/cancel``. The journal's routes take ``?run=RUN_ID``.
- Access (`_Guard`): on a loopback address without a token, only requests
  whose ``Host`` is that loopback address are answered (a page of another
  site that points a name of its own at 127.0.0.1, "DNS rebinding", gets
  403). With a token (required on any other address), every request must
  carry it, as ``?token=`` or in the cookie set when the page is opened with
  it; tokens are compared with `hmac.compare_digest`. ``POST /api/cancel``
  also needs the ``X-Aioflow-Request`` header, which a form of another site
  cannot send, and which a script of another origin cannot send without
  the preflight this server never grants.
- Stopping (`ViewServer.stop`): the site publishes its last changes and
  closes its channels, so that each event stream sends what it holds and
  ends; after at most `DRAIN_DEADLINE` s, uvicorn is told to exit, and the
  thread is joined.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..._errors import MissingExtraError, OptionError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ._feed import Channel

__all__ = ["DRAIN_DEADLINE", "KEEPALIVE", "STATIC", "Site", "SiteError", "ViewServer", "require_extra"]

#: The page's files, shipped in the package.
STATIC = Path(__file__).resolve().parent / "static"

#: Seconds between two keep-alive comments on an idle event stream: proxies and browsers close a
#: connection silent for a minute or so; a comment is ignored by EventSource.
KEEPALIVE = 15.0

#: Seconds `ViewServer.stop` waits for event streams to send their last batch before the server exits.
DRAIN_DEADLINE = 1.0

#: Seconds uvicorn then gives a connection still open (a browser that reads nothing) before it is cut.
_GRACE = 1

#: Seconds to wait for the server's thread to start serving, and to end.
_THREAD_DEADLINE = 10.0

#: The header ``POST /api/cancel`` needs (see the module docstring).
CSRF_HEADER = "x-aioflow-request"


def require_extra(what: str = "the live web view") -> None:
    """Raise `MissingExtraError` naming ``aioflow[ui]`` unless Starlette and uvicorn can be imported."""
    for package in ("starlette", "uvicorn"):
        try:
            __import__(package)
        except ImportError:
            raise MissingExtraError(what, package, "ui") from None


class SiteError(Exception):
    """A request the site cannot answer: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Site(Protocol):
    """What a `ViewServer` serves; every method runs in the server's loop."""

    mode: str

    def info(self) -> dict[str, Any]: ...

    async def start(self) -> None:
        """Start background work (in the server's loop, before the first request)."""

    async def stop(self) -> None:
        """Publish the last changes, close the channels and stop background work."""

    async def runs(self) -> list[dict[str, Any]]: ...

    async def graph(self, run_id: str | None) -> dict[str, Any]: ...

    async def channel(self, run_id: str | None) -> Channel: ...

    async def state(self, run_id: str | None) -> dict[str, Any]: ...

    async def cancel(self, run_id: str | None) -> dict[str, Any]: ...


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    """The host part of a URL for a server listening on ``host``."""
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname()  # every address: the machine's name is what others reach it by
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port).

    Raises:
        OptionError: the address cannot be used (in use, not this machine's, no such name).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OptionError(
            "port", "a free port", port, message=f"the live view cannot listen on {where}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    return sock


class _Guard:
    """ASGI middleware: the token, or on loopback the ``Host`` header (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str | None, hosts: frozenset[str], cookie: str) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse

        request = Request(scope)
        if self.token is None:
            if request.headers.get("host", "").lower() not in self.hosts:
                host = min(self.hosts)
                text = f"this view answers requests to its loopback address only: open http://{host}/\n"
                await PlainTextResponse(text, status_code=403)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        expected = self.token.encode()
        given = request.query_params.get("token")
        by_query = given is not None and hmac.compare_digest(given.encode(), expected)
        kept = request.cookies.get(self.cookie)
        by_cookie = kept is not None and hmac.compare_digest(kept.encode(), expected)
        if not (by_query or by_cookie):
            text = "this view needs its token: open the URL aioflow printed (it ends with ?token=...)\n"
            await PlainTextResponse(text, status_code=403)(scope, receive, send)
            return
        if by_cookie:
            await self.app(scope, receive, send)
            return
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _json_error(status: int, message: str) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def build_app(site: Site, *, keepalive: float, streams: set[asyncio.Task[Any]]) -> ASGIApp:
    """The Starlette app serving ``site`` (without `_Guard`).

    ``streams`` collects the tasks of the event streams under way, so that a
    stop can wait for them.
    """
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    no_store = {"Cache-Control": "no-store"}

    def answering(
        handler: Callable[[Request, str | None], Awaitable[Any]],
    ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                data = await handler(request, request.query_params.get("run"))
            except SiteError as exc:
                return _json_error(exc.status, exc.message)
            if isinstance(data, JSONResponse | StreamingResponse):
                return data
            return JSONResponse(data, headers=no_store)

        return endpoint

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=no_store)

    async def info(request: Request, run_id: str | None) -> dict[str, Any]:
        return site.info()

    async def runs(request: Request, run_id: str | None) -> list[dict[str, Any]]:
        return await site.runs()

    async def graph(request: Request, run_id: str | None) -> dict[str, Any]:
        return await site.graph(run_id)

    async def state(request: Request, run_id: str | None) -> dict[str, Any]:
        return await site.state(run_id)

    async def cancel(request: Request, run_id: str | None) -> Any:
        if request.headers.get(CSRF_HEADER) is None:
            raise SiteError(403, f"a cancel request needs the {CSRF_HEADER!r} header (the page sends it)")
        return await site.cancel(run_id)

    async def events(request: Request, run_id: str | None) -> StreamingResponse:
        channel = await site.channel(run_id)
        subscription = channel.subscribe()

        async def stream() -> AsyncIterator[str]:
            task = asyncio.current_task()
            assert task is not None
            streams.add(task)
            try:
                yield "retry: 2000\n\n"  # EventSource reconnects after 2 s if the stream breaks
                while True:
                    message = await subscription.next(keepalive)
                    if message is None:
                        yield ": keep-alive\n\n"
                    elif message.kind == "close":
                        return
                    else:
                        yield f"event: {message.kind}\ndata: {message.data}\n\n"
            finally:
                channel.unsubscribe(subscription)
                streams.discard(task)

        headers = {**no_store, "X-Accel-Buffering": "no"}  # a proxy (nginx) must not hold the stream back
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    routes = [
        Route("/", page),
        Route("/api/info", answering(info)),
        Route("/api/runs", answering(runs)),
        Route("/api/graph", answering(graph)),
        Route("/api/state", answering(state)),
        Route("/api/events", answering(events)),
        Route("/api/cancel", answering(cancel), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


class ViewServer:
    """A `Site` served over HTTP by uvicorn in a daemon thread with its own event loop.

    Args:
        site: what to serve.
        host: the address to listen on (default: loopback only).
        port: the port (0: any free port; `port` says which).
        token: the access token; generated when ``host`` is not a loopback
            address and none is given.
        keepalive: seconds between keep-alive comments on an idle event stream.

    Raises:
        MissingExtraError: Starlette or uvicorn is not installed.
        OptionError: the address cannot be listened on.
    """

    def __init__(
        self,
        site: Site,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        keepalive: float = KEEPALIVE,
    ) -> None:
        require_extra()
        if token is not None and not token:
            raise OptionError("token", "a non-empty string", token)
        self.site = site
        self.host = host
        self.token = token if token is not None or is_loopback(host) else secrets.token_urlsafe(16)
        self._socket = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]
        self._keepalive = keepalive
        self._streams: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address (with its token)."""
        query = f"?token={self.token}" if self.token is not None else ""
        return f"http://{_url_host(self.host)}:{self.port}/{query}"

    def _allowed_hosts(self) -> frozenset[str]:
        names = {"127.0.0.1", "localhost", "[::1]", _url_host(self.host).lower()}
        return frozenset(f"{name}:{self.port}" for name in names)

    def start(self) -> None:
        """Serve, from a new daemon thread; return once requests are answered.

        Raises:
            RuntimeError: the server did not start (its error is the cause).
        """
        self._thread = threading.Thread(target=self._main, name="aioflow live view", daemon=True)
        self._thread.start()
        if not self._ready.wait(_THREAD_DEADLINE) or self._failure is not None:
            self.stop()
            msg = "the live view's server did not start"
            raise RuntimeError(msg) from self._failure

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # uvicorn exits with SystemExit on a start-up failure
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        import uvicorn

        self._loop = asyncio.get_running_loop()
        app = build_app(self.site, keepalive=self._keepalive, streams=self._streams)
        guarded = _Guard(app, self.token, self._allowed_hosts(), f"aioflow_token_{self.port}")
        config = uvicorn.Config(
            guarded,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=_GRACE,
        )
        server = self._server = uvicorn.Server(config)
        await self.site.start()
        serving = asyncio.create_task(server.serve(sockets=[self._socket]))
        # uvicorn tells that it serves by its `started` flag only.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        self._ready.set()
        await serving

    def call(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = _THREAD_DEADLINE) -> Any:
        """Run the coroutine ``make()`` in the server's loop, from another thread, and return its result."""
        loop = self._loop
        if loop is None or loop.is_closed():
            msg = "the live view's server is not running"
            raise RuntimeError(msg)
        return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout)

    async def _drain(self) -> None:
        await self.site.stop()
        if self._streams:
            await asyncio.wait(list(self._streams), timeout=DRAIN_DEADLINE)

    def stop(self) -> None:
        """Send the last changes, end the event streams, stop serving and join the thread. Idempotent."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._server is not None:
            try:
                self.call(self._drain, timeout=DRAIN_DEADLINE + _THREAD_DEADLINE)
            except (RuntimeError, TimeoutError):  # the loop is gone already, or stuck
                pass
            self._server.should_exit = True
            thread.join(_THREAD_DEADLINE)
        self._socket.close()

    def __enter__(self) -> ViewServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
