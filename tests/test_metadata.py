"""Metadata and key handling under load and outages (docs/security.md "Key rollover:
timing guarantees", docs/operations.md)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from entra_guard import EntraSettings, Principal, require_principal
from entra_guard._metadata import MetadataCache
from entra_guard.testing import FakeEntraID, FakeKey, LiveServer

from ._inprocess import transport_for
from .conftest import ApiFactory, assert_refused, bearer, protected_app

pytestmark = pytest.mark.in_process

V2_DISCOVERY = "/v2.0/.well-known/openid-configuration"
V1_DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


def cold_app(settings: EntraSettings, clock: Callable[[], float] | None = None) -> FastAPI:
    """An API with no start-up warm-up, so the first requests find an empty cache."""
    app = protected_app(settings, clock=clock)

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> dict[str, Any]:
        return principal.to_dict()

    return app


def hit_counts(idp: FakeEntraID) -> dict[str, int]:
    v2 = idp.hits_matching(V2_DISCOVERY)
    return {
        "v2": v2,
        "v1": idp.hits_matching(V1_DISCOVERY_SUFFIX) - v2,
        "jwks": idp.hits_matching("/keys"),
    }


async def get_many(url: str, tokens: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=250)
    async with httpx.AsyncClient(timeout=30, limits=limits, transport=transport_for(url)) as client:
        return await asyncio.gather(*(client.get(url, headers=bearer(t)) for t in tokens))


async def test_cold_thundering_herd_fetches_each_document_once(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str]
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url)))
    idp.response_delay = 0.3  # keep the first fetch in flight while the herd arrives
    tokens = [idp.token() for _ in range(200)]
    responses = await get_many(f"{api}/me", tokens)
    assert [r.status_code for r in responses] == [200] * 200
    assert hit_counts(idp) == {"v2": 1, "v1": 1, "jwks": 1}


async def test_unknown_kid_storm_is_bounded(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str]
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url)))
    assert (await get_many(f"{api}/me", [idp.token()]))[0].status_code == 200
    storm = [idp.token(header={"kid": uuid.uuid4().hex}) for _ in range(300)]
    responses = await get_many(f"{api}/me", storm[:150])  # concurrent half
    async with httpx.AsyncClient(timeout=30, transport=transport_for(api)) as client:  # sequential
        for token in storm[150:]:
            responses.append(await client.get(f"{api}/me", headers=bearer(token)))
    for response in responses:
        assert_refused(response, 401, "unknown_key")
    assert hit_counts(idp)["jwks"] <= 2
    assert hit_counts(idp)["v2"] == 1


def test_key_rotation_is_picked_up_with_one_fetch(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url)))
    old_token = idp.token()
    assert client.get(f"{api}/me", headers=bearer(old_token)).status_code == 200
    idp.rotate_keys()
    before = hit_counts(idp)["jwks"]
    new_token = idp.token()
    assert client.get(f"{api}/me", headers=bearer(new_token)).status_code == 200
    assert hit_counts(idp)["jwks"] == before + 1
    # The old key is gone from the JWKS: its tokens (even cached ones) stop working.
    assert_refused(client.get(f"{api}/me", headers=bearer(old_token)), 401, "unknown_key")


def test_forced_refreshes_are_rate_limited(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url, min_refresh_interval=60)))
    assert client.get(f"{api}/me", headers=bearer(idp.token())).status_code == 200
    idp.rotate_keys()
    assert client.get(f"{api}/me", headers=bearer(idp.token())).status_code == 200
    idp.rotate_keys()  # a second roll within min_refresh_interval waits for the budget
    fetches = hit_counts(idp)["jwks"]
    assert_refused(client.get(f"{api}/me", headers=bearer(idp.token())), 401, "unknown_key")
    assert hit_counts(idp)["jwks"] == fetches


def test_idp_down_after_warm_up_keeps_validating(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url)))
    assert client.get(f"{api}/me", headers=bearer(idp.token())).status_code == 200
    idp.fail(503)
    for _ in range(5):
        assert client.get(f"{api}/me", headers=bearer(idp.token())).status_code == 200
    # An unknown kid during the outage is a 401 (keys are known), never a 503 or 500.
    stranger = idp.token(key=FakeKey.generate(), header={"kid": "rolled-during-outage"})
    assert_refused(client.get(f"{api}/me", headers=bearer(stranger)), 401, "unknown_key")
    assert client.get(f"{api}/me", headers=bearer(idp.token())).status_code == 200


def test_idp_down_from_cold_then_recovers(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url)))
    idp.fail(503)
    for _ in range(20):
        assert_refused(client.get(f"{api}/me", headers=bearer(idp.token())), 503, "idp_unavailable")
    assert hit_counts(idp)["v2"] <= 2, "retries while the IdP is down must be spaced out"
    idp.recover()
    recovered_at = time.monotonic()
    while True:
        response = client.get(f"{api}/me", headers=bearer(idp.token()))
        if response.status_code == 200:
            break
        assert_refused(response, 503, "idp_unavailable")
        assert time.monotonic() - recovered_at < 15, "a recovered IdP must be used within 15 s"
        time.sleep(0.5)


@pytest.mark.over_sockets  # a real read timeout
def test_hanging_idp_gives_503_within_the_timeout(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url, http_timeout=1)))
    idp.hang()
    started = time.monotonic()
    assert_refused(client.get(f"{api}/me", headers=bearer(idp.token())), 503, "idp_unavailable")
    assert time.monotonic() - started < 5
    idp.recover()


@pytest.mark.parametrize("status", [500, 404, 302])
def test_idp_errors_are_503_never_500(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client, status: int
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url)))
    idp.fail(status, path_contains="/keys")
    assert_refused(client.get(f"{api}/me", headers=bearer(idp.token())), 503, "idp_unavailable")


async def test_multi_tenant_tids_do_not_cause_fetches(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str]
) -> None:
    idp, url = fresh_idp
    api = start_api(app=cold_app(idp.settings(url, tenant_id="organizations")))
    tokens = [idp.token(tenant_id=str(uuid.uuid4())) for _ in range(100)]
    tokens += [idp.token(version="1.0", tenant_id=str(uuid.uuid4())) for _ in range(50)]
    responses = await get_many(f"{api}/me", tokens)
    assert [r.status_code for r in responses] == [200] * 150
    assert {r.json()["token_version"] for r in responses} == {"1.0", "2.0"}
    assert hit_counts(idp) == {"v2": 1, "v1": 1, "jwks": 1}
    assert all(path.startswith("/organizations/") for path in idp.hits)


def test_token_header_urls_and_keys_are_never_used(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    attacker = FakeEntraID()
    with LiveServer(attacker.app) as evil:
        api = start_api(app=cold_app(idp.settings(url)))
        header = {
            "jku": f"{evil.url}/{attacker.tenant_id}/discovery/v2.0/keys",
            "x5u": f"{evil.url}/{attacker.tenant_id}/discovery/keys",
            "jwk": attacker.active_key.public_jwk,
        }
        forged = idp.token(
            key=attacker.active_key, header={**header, "kid": attacker.active_key.kid}
        )
        assert_refused(client.get(f"{api}/me", headers=bearer(forged)), 401, "unknown_key")
        forged_same_kid = idp.token(key=attacker.active_key, header=header)
        assert_refused(
            client.get(f"{api}/me", headers=bearer(forged_same_kid)), 401, "invalid_signature"
        )
        genuine = idp.token(header=header)
        assert client.get(f"{api}/me", headers=bearer(genuine)).status_code == 200
        assert sum(attacker.hits.values()) == 0


def test_cached_result_expires_with_the_token(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    now = [time.time()]
    api = start_api(app=cold_app(idp.settings(url, clock_skew=0), clock=lambda: now[0]))
    token = idp.token(expires_in=60)
    assert client.get(f"{api}/me", headers=bearer(token)).status_code == 200
    assert client.get(f"{api}/me", headers=bearer(token)).status_code == 200  # cached
    now[0] += 61  # the library's clock, as the cache reads it too
    assert_refused(client.get(f"{api}/me", headers=bearer(token)), 401, "token_expired")


async def test_background_refresh_serves_stale_while_revalidating(
    fresh_idp: tuple[FakeEntraID, str],
) -> None:
    idp, url = fresh_idp
    now = [1000.0]
    async with httpx.AsyncClient(transport=transport_for(url)) as http:
        cache = MetadataCache(idp.settings(url), http, clock=lambda: now[0])
        first = await cache.get()
        assert hit_counts(idp) == {"v2": 1, "v1": 1, "jwks": 1}
        now[0] += 86400 * 1.06  # past metadata_refresh (+ jitter)
        idp.fail(503)
        assert await cache.get() is first  # stale answer at once, refresh in background
        await asyncio.sleep(0.3)
        assert cache.current is first  # failed refresh: last known good stays
        idp.recover()
        now[0] += 10  # past the failure back-off
        await cache.get()
        for _ in range(50):
            if cache.current is not first:
                break
            await asyncio.sleep(0.05)
        assert cache.current is not first
        assert (
            cache.current.keys_by_kid[idp.active_key.kid] is first.keys_by_kid[idp.active_key.kid]
        )
        await cache.aclose()


async def test_known_key_answers_without_a_fetch_and_starts_a_due_refresh(
    fresh_idp: tuple[FakeEntraID, str],
) -> None:
    """The validator's fast path to the key (``known_key``) keeps ``signing_key``'s rules:
    nothing before the first load, nothing for an unknown kid, and a refresh that is due
    starts in the background while the current key answers."""
    idp, url = fresh_idp
    now = [1000.0]
    async with httpx.AsyncClient(transport=transport_for(url)) as http:
        cache = MetadataCache(idp.settings(url), http, clock=lambda: now[0])
        kid = idp.active_key.kid
        assert cache.known_key(kid, None) is None and hit_counts(idp)["jwks"] == 0
        key = await cache.signing_key(kid, None)
        assert cache.known_key(kid, None) is key
        assert cache.known_key("invented", None) is None
        assert hit_counts(idp) == {"v2": 1, "v1": 1, "jwks": 1}
        now[0] += 86400 * 1.06  # past metadata_refresh (+ jitter)
        assert cache.known_key(kid, None) is key
        for _ in range(50):
            if hit_counts(idp)["jwks"] == 2:
                break
            await asyncio.sleep(0.05)
        assert hit_counts(idp)["jwks"] == 2
        await cache.aclose()
