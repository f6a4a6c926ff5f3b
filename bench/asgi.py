"""Benchmark 2b: the same apps called in-process as ASGI callables (no server, no socket).

This isolates what entra-guard and FastAPI add per request from uvicorn's own
HTTP cost, which dilutes the ratio under real HTTP. Interleaved batches,
median µs per request. ``bare + 1 dependency`` is the bare route with one
trivial async dependency: FastAPI's own per-dependency cost, for reference.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI
from starlette.requests import HTTPConnection

from entra_guard.testing import FakeEntraID, LiveServer

from . import apps
from .common import CLIENT_ID, TENANT_ID, http_scope, median, realistic_token

Message = MutableMapping[str, Any]


@dataclass(frozen=True)
class AsgiResult:
    bare_us: float
    dependency_us: float
    guarded_us: float
    guarded_depends_us: float
    rounds: int


async def _trivial(connection: HTTPConnection) -> int:
    return 1


def bare_with_dependency() -> FastAPI:
    app = FastAPI()

    @app.get("/hello", dependencies=[Depends(_trivial)])
    async def hello() -> dict[str, str]:
        return apps.BODY

    return app


async def _run(token: str, rounds: int, batch: int) -> AsgiResult:
    built = {
        "bare": apps.bare(),
        "dependency": bare_with_dependency(),
        "guarded": apps.guarded(),
        "guarded_depends": apps.guarded(route_class=False),
    }
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench"),
        (b"accept", b"*/*"),
        (b"authorization", b"Bearer " + token.encode()),
    ]

    def scope() -> dict[str, Any]:
        return http_scope("/hello", headers)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def timed(app: Callable[..., Awaitable[None]]) -> float:
        started = time.perf_counter_ns()
        for _ in range(batch):
            await app(scope(), receive, send)
        return (time.perf_counter_ns() - started) / batch / 1000

    guarded, depends = built["guarded"], built["guarded_depends"]
    async with (
        guarded.router.lifespan_context(guarded),
        depends.router.lifespan_context(depends),
    ):
        for app in built.values():
            await timed(app)  # warm-up (builds the middleware stack)
        if set(statuses) != {200}:
            raise RuntimeError(f"in-process apps answered {sorted(set(statuses))}")
        samples: dict[str, list[float]] = {name: [] for name in built}
        for _ in range(rounds):
            for name, app in built.items():
                samples[name].append(await timed(app))
    return AsgiResult(
        bare_us=median(samples["bare"]),
        dependency_us=median(samples["dependency"]),
        guarded_us=median(samples["guarded"]),
        guarded_depends_us=median(samples["guarded_depends"]),
        rounds=rounds,
    )


def run(rounds: int = 15, batch: int = 1000) -> AsgiResult:
    idp = FakeEntraID(tenant_id=TENANT_ID, client_id=CLIENT_ID)
    with LiveServer(idp.app) as server:
        os.environ["BENCH_IDP_URL"] = server.url
        return asyncio.run(_run(realistic_token(idp), rounds, batch))


if __name__ == "__main__":
    print(run())
