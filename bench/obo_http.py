"""Benchmark 4b: the on-behalf-of route over HTTP (uvicorn, one worker, h11).

One server process serves four routes behind ``EntraAuthMiddleware``:
``/fake/fixed`` and ``/fake/obo`` call the fake Graph's ``/v1.0/me`` (in the
server process, through ``httpx.ASGITransport``) with a fixed pre-acquired
token and with ``downstream_client`` (warm OBO cache); ``/stub/fixed`` and
``/stub/obo`` do the same against a canned answer (``httpx.MockTransport``),
which leaves the client-side cost alone. A load generator in another process
(``bench.loadgen``, 16 keep-alive connections) hits the routes in interleaved
rounds; ratios are taken within each round and the median is reported.

    python -m bench.obo_http
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Depends, FastAPI
from starlette.types import Receive, Scope, Send

from entra_guard import EntraAuth, EntraAuthMiddleware, downstream_client
from entra_guard.testing import FakeEntraID, FakeGraph

from .common import CLIENT_ID, ROOT, TENANT_ID, median, realistic_token
from .obo import AUTHORITY, GRAPH, SECRET, _stub

STUB = "https://stub.bench"
ROUTES = ("/fake/fixed", "/fake/obo", "/stub/fixed", "/stub/obo")


def create_app() -> FastAPI:
    """The server side (``uvicorn bench.obo_http:create_app --factory``)."""
    idp = FakeEntraID(tenant_id=TENANT_ID, client_id=CLIENT_ID)
    idp.confidential_clients[CLIENT_ID] = SECRET
    graph = FakeGraph(idp)

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        host = dict(scope["headers"]).get(b"host", b"")
        await (graph.app if host.startswith(b"graph.") else idp.app)(scope, receive, send)

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream))
    auth = EntraAuth(
        idp.settings(AUTHORITY, graph_url=GRAPH, client_secret=SECRET), http_client=http
    )
    token = realistic_token(idp)
    fake = httpx.ASGITransport(app=graph.app)
    stub = httpx.MockTransport(_stub)
    pools: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await auth.warm_up()
        fixed = await auth.acquire_token_on_behalf_of(token, [f"{GRAPH}/User.Read"])
        header = {"authorization": f"Bearer {fixed}"}
        pools["fake"] = httpx.AsyncClient(base_url=GRAPH, transport=fake, headers=header)
        pools["stub"] = httpx.AsyncClient(base_url=STUB, transport=stub, headers=header)
        yield
        await auth.aclose()
        await http.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(EntraAuthMiddleware, auth=auth)

    @app.get("/_token")
    async def bench_token() -> dict[str, str]:
        return {"token": token}  # the bench's own fake user; never do this in an API

    scopes = [f"{GRAPH}/User.Read"]
    for name, base, transport in (("fake", GRAPH, fake), ("stub", STUB, stub)):

        def fixed_client(name: str = name) -> httpx.AsyncClient:
            return pools[name]

        obo_client = downstream_client(base, scopes=scopes, transport=transport)
        for kind, dependency in (("fixed", fixed_client), ("obo", obo_client)):

            async def route(client: httpx.AsyncClient = Depends(dependency)) -> Any:  # noqa: B008
                return (await client.get("/v1.0/me")).json()

            app.add_api_route(f"/{name}/{kind}", route, methods=["GET"])
    return app


@dataclass(frozen=True)
class OboHttpResult:
    rps: dict[str, float]
    ratio_fake: float
    ratio_stub: float
    rounds: int
    duration: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _load(url: str, token: str, duration: float) -> float:
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            url,
            "--header",
            f"Authorization: Bearer {token}",
            "--duration",
            str(duration),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    result = json.loads(process.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"{url}: {result['errors']} errors")
    return float(result["rps"])


def run(rounds: int = 5, duration: float = 2.0) -> OboHttpResult:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.obo_http:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--http",
            "h11",
            "--h11-max-incomplete-event-size",
            "65536",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                token = httpx.get(f"{base}/_token", timeout=5).json()["token"]
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("bench.obo_http server did not start") from None
                time.sleep(0.2)
        for route in ROUTES:  # warm-up: OBO cache filled, connections open
            _load(f"{base}{route}", token, 0.5)
        samples: dict[str, list[float]] = {route: [] for route in ROUTES}
        for round_ in range(rounds):
            order = ROUTES[round_ % 4 :] + ROUTES[: round_ % 4]
            for route in order:
                samples[route].append(_load(f"{base}{route}", token, duration))
    finally:
        server.terminate()
        server.wait(timeout=30)

    def ratio(name: str) -> float:
        pairs = zip(samples[f"/{name}/obo"], samples[f"/{name}/fixed"], strict=True)
        return median([o / f for o, f in pairs])

    return OboHttpResult(
        rps={route: median(values) for route, values in samples.items()},
        ratio_fake=ratio("fake"),
        ratio_stub=ratio("stub"),
        rounds=rounds,
        duration=duration,
    )


def table(r: OboHttpResult) -> list[str]:
    def ok(value: float) -> str:
        return "met" if value >= 0.9 else "**MISSED**"

    return [
        f"### 4b. The same routes over HTTP (uvicorn h11, 1 worker; Python load generator, 16 "
        f"connections, {r.rounds} interleaved rounds x {r.duration:g} s; ratio per round, "
        "median)",
        "",
        "| downstream | fixed token, req/s | OBO, req/s | OBO vs fixed | target | |",
        "|---|---:|---:|---:|---|---|",
        f"| fake Graph (in the server process) | {r.rps['/fake/fixed']:,.0f} "
        f"| {r.rps['/fake/obo']:,.0f} | {r.ratio_fake:.0%} | ≥ 90 % | {ok(r.ratio_fake)} |",
        f"| canned answer | {r.rps['/stub/fixed']:,.0f} | {r.rps['/stub/obo']:,.0f} "
        f"| {r.ratio_stub:.0%} | ≥ 90 % | {ok(r.ratio_stub)} |",
    ]


if __name__ == "__main__":
    print("\n".join(table(run())))
