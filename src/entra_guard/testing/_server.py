"""Run any ASGI app under uvicorn on 127.0.0.1 in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

from starlette.types import ASGIApp


def _websocket_protocol() -> str:
    """uvicorn's sans-I/O websockets protocol where it has one (0.35 and newer, its default
    from 0.50): the older one warns on every connection with websockets 13 and newer,
    which fails a test run that turns warnings into errors (docs/supported-versions.md)."""
    try:
        import uvicorn.protocols.websockets.websockets_sansio_impl  # noqa: F401
    except ImportError:
        return "auto"
    return "websockets-sansio"


class LiveServer:
    """A real HTTP server for tests: ``with LiveServer(app) as server: server.url``."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, **config: Any):
        import uvicorn  # the ``testing`` extra; imported here so the library never needs it

        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto is TCP; with proto 0 every keep-alive response after the first waits
        # ~40 ms (Nagle + delayed ACK between the header and body writes).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        options: dict[str, Any] = {
            "log_level": "warning",
            "lifespan": "on",
            "http": "h11",
            "h11_max_incomplete_event_size": 64 * 1024,
            "timeout_graceful_shutdown": 1,
            "ws": _websocket_protocol(),
        }
        options.update(config)
        self._server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LiveServer:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
