"""Several workers, one Redis (docs/operations.md "Running several workers and replicas"),
over real sockets.

The sample app runs as ``uvicorn --workers 4`` against the fake Entra ID and the
fake Graph, all sharing one real ``redis-server``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from entra_guard.testing import FakeEntraID, FakeGraph, LiveServer

from ._redis import RedisServer
from .conftest import bearer
from .test_sample_app_process import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "fleet-secret"
FINANCE = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
WORKERS = 4


@contextmanager
def sample_app_workers(env: dict[str, str], cwd: Path) -> Iterator[str]:
    """``uvicorn sample_app.main:app --workers 4`` with ``env`` (on top of a clean
    environment); yields its URL once ``/health`` answers, stops it by PID after."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ENTRA_", "SAMPLE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "sample_app.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(WORKERS)],
        cwd=cwd, env=clean | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, "uvicorn --workers 4 exited"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("the workers did not start")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[str, FakeEntraID, FakeGraph, RedisServer]]:
    idp = FakeEntraID()
    idp.confidential_clients[idp.client_id] = SECRET
    graph = FakeGraph(idp)
    with (
        RedisServer() as redis,
        LiveServer(idp.app) as idp_server,
        LiveServer(graph.app) as graph_server,
    ):
        env = {
            "ENTRA_TENANT_ID": idp.tenant_id,
            "ENTRA_CLIENT_ID": idp.client_id,
            "ENTRA_AUTHORITY_HOST": idp_server.url,
            "ENTRA_GRAPH_URL": graph_server.url,
            "ENTRA_CLIENT_SECRET": SECRET,
            "ENTRA_CACHE_URL": redis.url,
            # 4 workers and 40 client threads share 2 cores here: an event loop can stall
            # past the 50 ms default, which would (correctly) open the circuit.
            "ENTRA_CACHE_TIMEOUT": "1",
            "ENTRA_CACHE_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
            "SAMPLE_FINANCE_GROUP_ID": FINANCE,
        }
        with sample_app_workers(env, ROOT) as url:
            yield url, idp, graph, redis


def test_one_graph_lookup_per_user_across_four_workers(
    fleet: tuple[str, FakeEntraID, FakeGraph, RedisServer],
) -> None:
    url, idp, graph, _redis = fleet
    graph.reset()
    users = [f"00000000-0000-4000-8000-{i:012d}" for i in range(20)]
    for user in users:
        graph.set_groups(user, [FINANCE])
    tokens = [idp.token(object_id=user, overage=True) for user in users]

    def call(token: str) -> int:
        # A new connection per call: uvicorn spreads them over the workers.
        with httpx.Client(timeout=30) as client:
            return client.get(f"{url}/finance", headers=bearer(token)).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(call, [t for t in tokens for _ in range(10)]))
    assert statuses == [200] * 200
    assert graph.membership_lookups == 20


def test_on_behalf_of_tokens_are_reused_across_workers(
    fleet: tuple[str, FakeEntraID, FakeGraph, RedisServer],
) -> None:
    url, idp, _graph, _redis = fleet
    oid = "30000000-0000-4000-8000-000000000001"
    token = idp.token(object_id=oid)
    before = len(idp.obo_grants)

    def call(_: int) -> tuple[int, str]:
        with httpx.Client(timeout=30) as client:  # new connections: every worker serves some
            response = client.get(f"{url}/me/graph", headers=bearer(token))
            return response.status_code, response.json().get("id", "")

    assert call(0) == (200, oid)  # one worker acquires the token ...
    assert len(idp.obo_grants) == before + 1
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(40)))
    assert answers == [(200, oid)] * 40
    # ... and every other worker reads it from Redis instead of asking Entra again.
    assert len(idp.obo_grants) == before + 1


def test_shared_entries_hold_no_token(
    fleet: tuple[str, FakeEntraID, FakeGraph, RedisServer],
) -> None:
    url, idp, graph, redis = fleet
    user = "00000000-0000-4000-8000-999999999999"
    graph.set_groups(user, [FINANCE])
    token = idp.token(object_id=user, overage=True)
    assert httpx.get(f"{url}/finance", headers=bearer(token), timeout=30).status_code == 200
    secrets = [token, *token.split("."), *idp.issued_app_tokens]
    keys = redis.stored_keys()
    assert keys, "the fleet wrote to Redis"
    for key in keys:
        value = redis.get(key) or b""
        for secret in secrets:
            assert secret.encode() not in key and secret.encode() not in value


def test_dev_mode_with_four_workers_accepts_a_token_from_any_worker(tmp_path: Path) -> None:
    """``make run WORKERS=4``: every worker signs with the key in ``.dev/`` and reads the
    overage memberships registered there, whichever worker minted the token."""
    env = {
        "ENTRA_DEV_MODE": "1",
        "ENTRA_TENANT_ID": "11111111-1111-1111-1111-111111111111",
        "ENTRA_CLIENT_ID": "22222222-2222-2222-2222-222222222222",
        "SAMPLE_FINANCE_GROUP_ID": FINANCE,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with sample_app_workers(env, tmp_path) as url:  # .dev/ is made in tmp_path
        tokens = []
        for _ in range(8):  # new connections: minted by several workers
            minted = httpx.post(
                f"{url}/_dev/token",
                json={"scopes": ["Items.Read"], "groups": [FINANCE], "overage": True},
                timeout=30,
            )
            assert minted.status_code == 200, minted.text
            tokens.append(minted.json()["access_token"])

        def call(token: str) -> int:
            with httpx.Client(timeout=30) as client:
                return client.get(f"{url}/finance", headers=bearer(token)).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            assert set(pool.map(call, tokens * 8)) == {200}
        assert (tmp_path / ".dev" / "dev-signing-key.pem").exists()


def test_redis_killed_mid_load_costs_no_request(
    fleet: tuple[str, FakeEntraID, FakeGraph, RedisServer],
) -> None:
    """Redis dies while requests flow, then comes back: every answer stays right (a
    member gets 200, a non-member 403), none is a 5xx."""
    url, idp, graph, redis = fleet
    members = [f"10000000-0000-4000-8000-{i:012d}" for i in range(6)]
    outsiders = [f"20000000-0000-4000-8000-{i:012d}" for i in range(6)]
    for user in members:
        graph.set_groups(user, [FINANCE])
    for user in outsiders:
        graph.set_groups(user, [])
    calls = [(idp.token(object_id=u, overage=True), 200) for u in members] + [
        (idp.token(object_id=u, overage=True), 403) for u in outsiders
    ]

    def call(item: tuple[str, int]) -> tuple[int, int]:
        with httpx.Client(timeout=30) as client:
            status = client.get(f"{url}/finance", headers=bearer(item[0])).status_code
            return status, item[1]

    with ThreadPoolExecutor(max_workers=12) as pool:
        first = pool.map(call, calls[:6] * 3)
        redis.stop()  # mid-load
        during = list(pool.map(call, calls * 3))
        redis.start()
        time.sleep(6)  # the circuit closes again after 5 s
        after = list(pool.map(call, calls * 2))
    for got, wanted in [*first, *during, *after]:
        assert got == wanted
