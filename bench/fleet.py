"""Benchmark 5: several workers, with and without the shared cache (docs/operations.md
"Running several workers and replicas").

The sample app runs as ``uvicorn --workers 4`` against the fake Entra ID and the
fake Graph (each served by its own uvicorn process); a load generator sends
``USERS`` overage users x ``PER_USER`` requests to ``/finance`` over new
connections (so uvicorn spreads them over the workers), 64 at a time. Reported:
Graph membership calls (the target is one per user), p50/p99 of the guarded
route, and Redis commands per request once every worker has the user in its
L1 (the target is 0).

    python -m bench.fleet [--users 2000] [--per-user 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from entra_guard.testing import FakeEntraID, FakeGraph, LiveServer

from .common import ROOT

SECRET = "fleet-bench-secret"
FINANCE = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
WORKERS = 4
CONCURRENCY = 64


@dataclass
class FleetResult:
    label: str
    users: int
    requests: int
    graph_calls: int
    p50_ms: float
    p99_ms: float
    errors: int
    redis_commands_per_warm_request: float | None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _redis_commands(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("stats")
        return int(stats["total_commands_processed"])
    finally:
        client.close()


async def _load(url: str, tokens: list[str]) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(token: str) -> None:
        nonlocal errors
        # A new connection per request: uvicorn hands connections to its workers.
        async with gate, httpx.AsyncClient(timeout=60) as client:
            started = time.perf_counter()
            response = await client.get(
                f"{url}/finance", headers={"authorization": f"Bearer {token}"}
            )
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors += 1

    await asyncio.gather(*(one(t) for t in tokens))
    return latencies, errors


def run_once(label: str, users: int, per_user: int, redis_url: str | None) -> FleetResult:
    idp = FakeEntraID()
    idp.confidential_clients[idp.client_id] = SECRET
    graph = FakeGraph(idp)
    oids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(users)]
    for oid in oids:
        graph.set_groups(oid, [FINANCE])
    tokens = [idp.token(object_id=oid, overage=True) for oid in oids]
    with LiveServer(idp.app) as idp_server, LiveServer(graph.app) as graph_server:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTRA_", "SAMPLE_"))}
        env |= {
            "ENTRA_TENANT_ID": idp.tenant_id,
            "ENTRA_CLIENT_ID": idp.client_id,
            "ENTRA_AUTHORITY_HOST": idp_server.url,
            "ENTRA_GRAPH_URL": graph_server.url,
            "ENTRA_CLIENT_SECRET": SECRET,
            "SAMPLE_FINANCE_GROUP_ID": FINANCE,
            # 2 cores for 4 workers and the load: see docs/benchmarks.md
            "ENTRA_CACHE_TIMEOUT": "1",
            "ENTRA_CACHE_L1_TTL": "600",
        }
        if redis_url is not None:
            env["ENTRA_CACHE_URL"] = redis_url
            env["ENTRA_CACHE_ENCRYPTION_KEY"] = base64.b64encode(os.urandom(32)).decode()
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "sample_app.main:app", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(WORKERS), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url, process)
            latencies, errors = asyncio.run(_load(url, tokens * per_user))
            warm: float | None = None
            if redis_url is not None:
                # Every worker sees one user a few times, then count Redis commands.
                hot = tokens[:1] * 64
                asyncio.run(_load(url, hot))
                before = _redis_commands(redis_url)
                asyncio.run(_load(url, hot))
                warm = (_redis_commands(redis_url) - before - 1) / len(hot)  # minus INFO
        finally:
            process.terminate()
            process.wait(timeout=30)
    return FleetResult(
        label=label,
        users=users,
        requests=len(latencies),
        graph_calls=graph.membership_lookups,
        p50_ms=_percentile(latencies, 0.5) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        errors=errors,
        redis_commands_per_warm_request=warm,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("uvicorn exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("uvicorn did not start")


def run(users: int, per_user: int) -> list[FleetResult]:
    sys.path.insert(0, str(ROOT))
    from tests._redis import RedisServer

    results = [run_once("4 workers, in-process caches", users, per_user, None)]
    with RedisServer() as redis:
        results.append(run_once("4 workers, one Redis", users, per_user, redis.url))
    return results


def table(results: list[FleetResult]) -> str:
    lines = [
        "| setup | users | requests | Graph membership calls | p50 | p99 | non-200 "
        "| Redis commands per warm request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        warm = (
            "-"
            if r.redis_commands_per_warm_request is None
            else (f"{r.redis_commands_per_warm_request:.2f}")
        )
        lines.append(
            f"| {r.label} | {r.users} | {r.requests} | {r.graph_calls} | {r.p50_ms:.1f} ms "
            f"| {r.p99_ms:.1f} ms | {r.errors} | {warm} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--per-user", type=int, default=2)
    args = parser.parse_args()
    print(table(run(args.users, args.per_user)))


if __name__ == "__main__":
    main()
