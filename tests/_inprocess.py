"""In-process HTTP for tests: ASGI apps behind made-up ``*.localhost`` hosts, no sockets.

``InProcessNetwork`` is one httpx transport (sync and async) that sends each request
straight into the ASGI app registered for its host through ``httpx.ASGITransport``.
The apps and their lifespans run on one event loop of their own (one thread for the
whole session), so a sync test keeps its ``client.get(...)`` shape, an async test can
pile up concurrent requests, and an app's own ``EntraAuth`` reaches the fake Entra ID
and the fake Graph the same way, all without a socket. Requests to hosts that are not
registered go to the real network (a live server, a port nobody listens on), except
``*.localhost`` names, which fail like a refused connection.

What only a server shows (keep-alive, header limits, WebSockets over a socket, proxies,
TLS, streaming, shutdown and socket leaks) stays with ``LiveServer``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any, TypeVar

import httpx
from starlette.types import ASGIApp

from entra_guard import EntraSettings

T = TypeVar("T")


class InProcessNetwork(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Host name -> ASGI app; ``add(app)`` returns the app's base URL."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="in-process-network", daemon=True
        )
        self._thread.start()
        self._apps: dict[str, httpx.ASGITransport] = {}
        self._lifespans: dict[str, tuple[asyncio.Queue[Any], asyncio.Task[None]]] = {}
        self._names = itertools.count(1)
        self._outside = httpx.AsyncHTTPTransport()
        self._lock = threading.Lock()

    # -- apps --------------------------------------------------------------------------

    def add(self, app: ASGIApp, name: str = "app") -> str:
        """Serve ``app`` at a fresh ``http://NAME-N.localhost``, its lifespan started as
        uvicorn starts it (``lifespan="on"``)."""
        host = f"{name}-{next(self._names)}.localhost"
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        self._lifespans[host] = self.run(self._start_lifespan(app))
        with self._lock:
            self._apps[host] = transport
        return f"http://{host}"

    def remove(self, url: str) -> None:
        """Stop serving ``url`` and run the app's shutdown."""
        host = httpx.URL(url).host
        with self._lock:
            self._apps.pop(host, None)
        lifespan = self._lifespans.pop(host, None)
        if lifespan is not None:
            self.run(self._stop_lifespan(*lifespan))

    @staticmethod
    async def _start_lifespan(app: ASGIApp) -> tuple[asyncio.Queue[Any], asyncio.Task[None]]:
        """The ASGI lifespan protocol, as a server speaks it."""
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def send(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set_result(None)
            elif message["type"] == "lifespan.startup.failed":
                started.set_exception(RuntimeError(message.get("message", "startup failed")))
            elif message["type"] == "lifespan.shutdown.failed":
                raise RuntimeError(message.get("message", "shutdown failed"))

        async def serve() -> None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
            try:
                await app(scope, inbox.get, send)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                    return
                raise

        await inbox.put({"type": "lifespan.startup"})
        task = asyncio.ensure_future(serve())
        await started
        return inbox, task

    @staticmethod
    async def _stop_lifespan(inbox: asyncio.Queue[Any], task: asyncio.Task[None]) -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await task

    # -- running things on the network's loop -------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run ``coroutine`` on the network's loop from a thread without a running loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return await coroutine
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self._loop
        )
        return await asyncio.wrap_future(future)

    # -- httpx transport ---------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        return self.run(self._send(request, body))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        return await self._on_loop(self._send(request, body))

    async def _send(self, request: httpx.Request, body: bytes) -> httpx.Response:
        with self._lock:
            app = self._apps.get(request.url.host)
        copy = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            content=body,
            extensions=request.extensions,
        )
        if app is None:
            if request.url.host.endswith(".localhost"):
                raise httpx.ConnectError(f"nothing serves {request.url.host}", request=request)
            response = await self._outside.handle_async_request(copy)
        else:
            # Enforce the client's read timeout as a socket would (the app's whole answer
            # is buffered in process, so one bound covers it).
            timeout = request.extensions.get("timeout", {}).get("read")
            try:
                response = await asyncio.wait_for(app.handle_async_request(copy), timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("in-process app did not answer", request=request) from None
        try:
            content = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code, headers=response.headers.raw, content=content, request=request
        )

    def close(self) -> None:
        """Closing a client closes its transport: the shared network stays up."""

    async def aclose(self) -> None:
        """Closing a client closes its transport: the shared network stays up."""

    def shutdown(self) -> None:
        for url in [f"http://{host}" for host in list(self._lifespans)]:
            with suppress(Exception):
                self.remove(url)
        with suppress(Exception):
            self.run(self._outside.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- clients -----------------------------------------------------------------------

    def client(self, **kw: Any) -> httpx.Client:
        """A sync client for tests (``client.get(f"{api}/me")``)."""
        return httpx.Client(transport=self, **{"timeout": 30, **kw})

    def async_client(self, **kw: Any) -> httpx.AsyncClient:
        """An async client for tests; requests run concurrently on the network's loop."""
        return httpx.AsyncClient(transport=self, **{"timeout": 30, **kw})

    def entra_client(self, settings: EntraSettings) -> httpx.AsyncClient:
        """The ``http_client`` an in-process ``EntraAuth`` gets: what ``build_client``
        configures (timeout, no redirects, user agent) over this transport instead of
        sockets (proxy and TLS settings are the socket layer's business)."""
        return httpx.AsyncClient(
            transport=self,
            timeout=httpx.Timeout(settings.http_timeout),
            follow_redirects=False,
            headers={"user-agent": "entra-guard"},
        )

    def serves(self, url: str) -> bool:
        with self._lock:
            return httpx.URL(url).host in self._apps


_network: InProcessNetwork | None = None


def network() -> InProcessNetwork:
    """The session's network (started on first use; closed by ``close_network``)."""
    global _network
    if _network is None:
        _network = InProcessNetwork()
    return _network


def close_network() -> None:
    global _network
    if _network is not None:
        _network.shutdown()
        _network = None


def entra_client_for(settings: EntraSettings) -> httpx.AsyncClient | None:
    """An in-process ``http_client`` when ``settings`` point at an in-process fake Entra ID
    (``None``: the settings point at a real server, use the production client)."""
    if _network is None or not _network.serves(settings.authority_host):
        return None
    return _network.entra_client(settings)


def transport_for(url: str) -> InProcessNetwork | None:
    """For tests that build their own client: ``httpx.AsyncClient(transport=transport_for(api))``
    reaches an in-process ``api`` and is an ordinary client for a live one."""
    if _network is not None and _network.serves(url):
        return _network
    return None
