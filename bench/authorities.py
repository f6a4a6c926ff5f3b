"""Several authorities: per-request cost of ``EntraAuthMiddleware(auth=[...])`` with 1 and
3 authorities, the token belonging to the last one (the worst case), in process (ASGI
calls, no server). ``python -m bench.authorities``; docs/customer-identities.md "Several
authorities on one API".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from entra_guard import EntraAuth, EntraAuthMiddleware
from entra_guard.testing import FakeB2C, FakeEntraID, FakeExternalID

from .common import http_scope, median

Message = MutableMapping[str, Any]


def _auth(fake: FakeEntraID, url: str) -> EntraAuth:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app), base_url=url)
    return EntraAuth(fake.settings(url), http_client=client)


def _app(auths: list[EntraAuth]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(EntraAuthMiddleware, auth=auths)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


async def _call(app: Any, token: str) -> int:
    scope = http_scope("/hello", [(b"authorization", b"Bearer " + token.encode())])
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _per_request_us(app: Any, tokens: list[str]) -> float:
    started = time.perf_counter()
    for token in tokens:
        assert await _call(app, token) == 200
    return (time.perf_counter() - started) / len(tokens) * 1e6


@dataclass(frozen=True)
class AuthoritiesResult:
    hit_one_us: float
    hit_three_us: float
    fresh_one_us: float
    fresh_three_us: float
    rounds: int


async def _run(rounds: int, batch: int, fresh_batch: int) -> AuthoritiesResult:
    workforce = FakeEntraID()
    b2c = FakeB2C()
    ciam = FakeExternalID()
    one = _app([_auth(ciam, "http://ciam.localhost")])
    three = _app(
        [
            _auth(workforce, "http://workforce.localhost"),
            _auth(b2c, "http://b2c.localhost"),
            _auth(ciam, "http://ciam.localhost"),
        ]
    )
    hit = ciam.token()
    for app in (one, three):  # warm metadata and the verified-token cache
        await _call(app, hit)
    results: dict[str, list[float]] = {k: [] for k in ("hit1", "hit3", "fresh1", "fresh3")}
    for _ in range(rounds):
        results["hit1"].append(await _per_request_us(one, [hit] * batch))
        results["hit3"].append(await _per_request_us(three, [hit] * batch))
        fresh = [ciam.token() for _ in range(fresh_batch)]
        results["fresh1"].append(await _per_request_us(one, fresh))
        results["fresh3"].append(await _per_request_us(three, fresh))
    return AuthoritiesResult(
        hit_one_us=median(results["hit1"]),
        hit_three_us=median(results["hit3"]),
        fresh_one_us=median(results["fresh1"]),
        fresh_three_us=median(results["fresh3"]),
        rounds=rounds,
    )


def run(rounds: int = 31, batch: int = 2000, fresh_batch: int = 200) -> AuthoritiesResult:
    return asyncio.run(_run(rounds, batch, fresh_batch))


def table(r: AuthoritiesResult) -> list[str]:
    hit, fresh = r.hit_three_us / r.hit_one_us, r.fresh_three_us / r.fresh_one_us
    ok = {True: "met", False: "**MISSED**"}
    return [
        "### Several authorities: `EntraAuthMiddleware(auth=[workforce, b2c, external_id])`, "
        f"token of the last one, FastAPI in process (median of {r.rounds} interleaved rounds)",
        "",
        "| path | 1 authority | 3 authorities | ratio | target | |",
        "|---|---:|---:|---:|---|---|",
        f"| verified-token cache hit | {r.hit_one_us:.1f} µs | {r.hit_three_us:.1f} µs "
        f"| {hit:.3f} | ≤ 1.05 | {ok[hit <= 1.05]} |",
        f"| fresh token (full validation) | {r.fresh_one_us:.1f} µs | {r.fresh_three_us:.1f} µs "
        f"| {fresh:.3f} | ≤ 1.05 | {ok[fresh <= 1.05]} |",
    ]


if __name__ == "__main__":
    print("\n".join(table(run())))
