"""Graph throttling awareness (docs/operations.md "Running several workers and replicas"): priority
header, resource-unit and 429 metrics, and a Retry-After that every worker honours."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from entra_guard import AuthError, AuthObserver, EntraAuth, Principal
from entra_guard.contrib.prometheus import PrometheusObserver
from entra_guard.testing import FakeEntraID, FakeGraph, FakeKey

from ._redis import RedisServer

AUTHORITY = "https://login.test"
GRAPH = "https://graph.test"
SECRET = "throttling-secret"
GROUP = "3f5c9b1e-2d4a-4e6f-8a7b-1c2d3e4f5a6b"


class Fakes:
    def __init__(self) -> None:
        self.idp = FakeEntraID()
        self.idp.confidential_clients[self.idp.client_id] = SECRET
        self.graph = FakeGraph(self.idp)

    async def upstream(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = dict(scope["headers"]).get(b"host", b"")
        target = self.graph.app if host.startswith(b"graph.") else self.idp.app
        await target(scope, receive, send)

    def auth(self, observer: AuthObserver | None = None, **settings: Any) -> EntraAuth:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.upstream))
        values = {"client_secret": SECRET, "graph_url": GRAPH, **settings}
        settings_ = self.idp.settings(AUTHORITY, **values)
        return EntraAuth(settings_, http_client=http, observer=observer)

    async def overage_user(self, auth: EntraAuth, groups: list[str]) -> Principal:
        oid = str(uuid.uuid4())
        self.graph.set_groups(oid, groups)
        return await auth.authenticate(self.idp.token(object_id=oid, overage=True))


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    yield Fakes()


async def close(*auths: EntraAuth) -> None:
    for auth in auths:
        await auth.aclose()
        await auth.http.aclose()


async def test_user_facing_lookups_ask_for_high_priority(fakes: Fakes) -> None:
    auth = fakes.auth()
    principal = await fakes.overage_user(auth, [GROUP])
    assert GROUP in await auth.group_ids(principal)
    assert fakes.graph.priorities == {"high": 1}
    await close(auth)


async def test_metrics_count_resource_units_and_throttling(fakes: Fakes) -> None:
    metrics = PrometheusObserver()
    auth = fakes.auth(observer=metrics)
    fakes.graph.throttle(times=1, retry_after=0.2)
    principal = await fakes.overage_user(auth, [GROUP])
    assert GROUP in await auth.group_ids(principal)
    assert metrics.value("entra_guard_graph_responses_total", status="429") == 1
    assert metrics.value("entra_guard_graph_responses_total", status="2xx") == 1
    assert metrics.value("entra_guard_graph_resource_units_total") == 1  # $select: 1 unit
    await close(auth)


def shared(fakes: Fakes, url: str) -> Callable[[], EntraAuth]:
    key = base64.b64encode(os.urandom(32)).decode()
    return lambda: fakes.auth(cache_url=url, cache_encryption_key=key, cache_timeout=0.5)


async def test_a_retry_after_seen_by_one_worker_stops_the_others(fakes: Fakes) -> None:
    with RedisServer() as redis:
        make = shared(fakes, redis.url)
        first, second = make(), make()  # two workers (or replicas) on one Redis
        alice = await fakes.overage_user(first, [GROUP])
        bob = await fakes.overage_user(second, [GROUP])
        fakes.graph.throttle(times=1, retry_after=60)  # beyond the 10 s look-up budget
        with pytest.raises(AuthError) as refused:
            await first.group_ids(alice)
        assert refused.value.code == "groups_unavailable" and refused.value.retry_after >= 59
        calls = sum(fakes.graph.hits.values())
        with pytest.raises(AuthError) as refused_too:
            await second.group_ids(bob)  # another user of the same tenant, another worker
        assert refused_too.value.code == "groups_unavailable"
        assert refused_too.value.retry_after >= 58
        assert sum(fakes.graph.hits.values()) == calls, "the second worker did not call Graph"
        await close(first, second)


async def test_memberships_and_app_tokens_are_shared_between_workers(fakes: Fakes) -> None:
    with RedisServer() as redis:
        make = shared(fakes, redis.url)
        first, second = make(), make()
        oid = "7b0c2d1e-3f4a-4b5c-8d6e-9f0a1b2c3d4e"
        fakes.graph.set_groups(oid, [GROUP])
        token = fakes.idp.token(object_id=oid, overage=True)
        assert GROUP in await first.group_ids(await first.authenticate(token))
        assert GROUP in await second.group_ids(await second.authenticate(token))
        assert fakes.graph.membership_lookups == 1
        other = "8c1d3e2f-4a5b-4c6d-9e7f-0a1b2c3d4e5f"
        fakes.graph.set_groups(other, [])
        third = fakes.idp.token(object_id=other, overage=True)
        assert await second.group_ids(await second.authenticate(third)) == frozenset()
        assert fakes.idp.hits_matching("/oauth2/v2.0/token") == 1  # one app token, shared
        await close(first, second)


async def test_a_cold_worker_starts_from_the_fleets_metadata(fakes: Fakes) -> None:
    """Warm start after a deploy: the second worker reads the discovery documents and
    keys the first one fetched, and still checks tokens against them."""
    with RedisServer() as redis:
        make = shared(fakes, redis.url)
        first = make()
        assert await first.warm_up()
        fetched = sum(fakes.idp.hits.values())
        assert fetched >= 2  # discovery and keys
        second = make()
        assert await second.warm_up()
        assert sum(fakes.idp.hits.values()) == fetched, "no fetch from the IdP"
        principal = await second.authenticate(fakes.idp.token(object_id=str(uuid.uuid4())))
        assert principal.tenant_id == fakes.idp.tenant_id
        forged = fakes.idp.token(key=FakeKey.generate())
        with pytest.raises(AuthError) as refused:
            await second.authenticate(forged)
        assert refused.value.code == "invalid_signature"
        await close(first, second)
