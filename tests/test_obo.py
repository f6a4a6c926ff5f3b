"""On-behalf-of calls (docs/downstream.md): grants, cache, errors, CAE.

In process: the API, the fake Entra ID and the fake Graph are ASGI apps joined
by ``httpx.ASGITransport`` (real HTTP semantics, no sockets). The real-socket
cases (a hanging token endpoint, the sample app's ``/me/graph``) are at the end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.types import Receive, Scope, Send

from entra_guard import (
    AuthError,
    EntraAuth,
    EntraAuthMiddleware,
    EntraSettings,
    downstream_client,
    downstream_token,
    require_groups,
)
from entra_guard.testing import FakeEntraID, FakeGraph, LiveServer

from .conftest import bearer

AUTHORITY = "https://login.test"
GRAPH = "https://graph.test"
USER_READ = f"{GRAPH}/User.Read"
SECRET = "obo-client-secret-value"
FINANCE = "3f5c9b1e-2d4a-4e6f-8a7b-1c2d3e4f5a6b"


class Clock:
    """Wall clock the test moves forward."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    idp: FakeEntraID
    graph: FakeGraph
    auth: EntraAuth
    client: httpx.AsyncClient
    clock: Clock

    def user_token(self, **kw: Any) -> str:
        kw.setdefault("expires_in", 7200)
        return self.idp.token(**kw)


def api(auth: EntraAuth, graph_transport: httpx.AsyncBaseTransport) -> FastAPI:
    app = FastAPI()
    app.add_middleware(EntraAuthMiddleware, auth=auth)
    graph_me = downstream_client(GRAPH, scopes=[USER_READ], transport=graph_transport)

    @app.get("/graph/me")
    async def me(graph: httpx.AsyncClient = Depends(graph_me)) -> Any:  # noqa: B008
        response = await graph.get("/v1.0/me")
        return response.json()

    @app.get("/token")
    async def token(
        access: str = Depends(downstream_token(USER_READ)),
    ) -> dict[str, int]:
        return {"length": len(access)}  # never echo a token

    @app.get("/token/other")
    async def other(
        access: str = Depends(downstream_token(f"{GRAPH}/Mail.Read", USER_READ)),
    ) -> dict[str, int]:
        return {"length": len(access)}

    @app.get("/finance", dependencies=[Depends(require_groups(FINANCE))])
    async def finance() -> dict[str, str]:
        return {"area": "finance"}

    return app


def make_world(**settings: Any) -> tuple[World, Callable[[], Any]]:
    idp = FakeEntraID()
    graph = FakeGraph(idp)
    idp.confidential_clients[idp.client_id] = SECRET
    values: dict[str, Any] = {"client_secret": SECRET, "graph_url": GRAPH, "http_timeout": 2}
    values.update(settings)
    if values.get("client_secret") is None:
        values.pop("client_secret")

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        host = dict(scope["headers"]).get(b"host", b"")
        target = graph.app if host.startswith(b"graph.") else idp.app
        await target(scope, receive, send)

    transport = httpx.ASGITransport(app=upstream)
    http = httpx.AsyncClient(transport=transport)
    clock = Clock()
    auth = EntraAuth(idp.settings(AUTHORITY, **values), http_client=http, clock=clock)
    app = api(auth, httpx.ASGITransport(app=graph.app))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    world = World(idp, graph, auth, client, clock)

    async def close() -> None:
        await client.aclose()
        await auth.aclose()
        await http.aclose()

    return world, close


@pytest.fixture
async def world() -> AsyncIterator[World]:
    built, close = make_world()
    yield built
    await close()


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


# -- the happy path, the cache -----------------------------------------------------------


async def test_graph_me_on_behalf_of_the_caller(world: World) -> None:
    token = world.user_token(object_id="0b6f1c8e-2f3a-4b5c-9d6e-7f8091a2b3c4")
    response = await world.client.get("/graph/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "0b6f1c8e-2f3a-4b5c-9d6e-7f8091a2b3c4"
    [grant] = world.idp.obo_grants
    assert grant.scope == USER_READ and grant.client_id == world.idp.client_id
    assert grant.claims is None  # no capabilities declared


async def test_one_grant_per_user_and_scope_set_under_200_concurrent_requests(
    world: World,
) -> None:
    alice, bob = world.user_token(), world.user_token()
    world.idp.response_delay = 0.05  # keep the grant in flight while the others arrive
    responses = await asyncio.gather(
        *(
            world.client.get("/graph/me", headers=bearer(alice if i % 2 else bob))
            for i in range(200)
        )
    )
    assert {r.status_code for r in responses} == {200}
    assert len(world.idp.obo_grants) == 2  # one per user
    assert world.graph.me_calls == 200


async def test_reuse_until_five_minutes_before_expiry_then_one_renewal(world: World) -> None:
    token = world.user_token()
    assert (await world.client.get("/token", headers=bearer(token))).status_code == 200
    world.clock.now += 3600 - 300 - 1  # the fake's tokens live 3600 s
    for _ in range(3):
        assert (await world.client.get("/token", headers=bearer(token))).status_code == 200
    assert len(world.idp.obo_grants) == 1
    world.clock.now += 2
    for _ in range(3):
        assert (await world.client.get("/token", headers=bearer(token))).status_code == 200
    assert len(world.idp.obo_grants) == 2


async def test_different_scopes_are_different_grants(world: World) -> None:
    token = world.user_token()
    await world.client.get("/token", headers=bearer(token))
    await world.client.get("/token/other", headers=bearer(token))
    await world.client.get("/token/other", headers=bearer(token))
    scopes = [g.scope for g in world.idp.obo_grants]
    assert scopes == [USER_READ, f"{GRAPH}/Mail.Read {USER_READ}"]  # sorted, space-separated


async def test_acquire_token_on_behalf_of_validates_and_shares_the_cache(world: World) -> None:
    token = world.user_token()
    first = await world.auth.acquire_token_on_behalf_of(token, [USER_READ])
    again = await world.auth.acquire_token_on_behalf_of(token, (USER_READ, USER_READ))
    assert first == again and len(world.idp.obo_grants) == 1
    assert first in world.idp.issued_obo_tokens
    forged = world.idp.token(key=__import__("entra_guard.testing").testing.FakeKey.generate())
    with pytest.raises(AuthError) as caught:
        await world.auth.acquire_token_on_behalf_of(forged, [USER_READ])
    assert caught.value.code == "invalid_signature"
    assert len(world.idp.obo_grants) == 1
    with pytest.raises(ValueError):
        await world.auth.acquire_token_on_behalf_of(token, [])


async def test_app_only_tokens_are_refused(world: World) -> None:
    token = world.idp.token(app_only=True)
    response = await world.client.get("/graph/me", headers=bearer(token))
    refused(response, 403, "wrong_token_type")
    assert response.headers.get("www-authenticate") is None
    assert world.idp.obo_grants == []
    with pytest.raises(AuthError) as caught:
        await world.auth.acquire_token_on_behalf_of(token, [USER_READ])
    assert caught.value.code == "wrong_token_type"


async def test_no_token_is_missing_token(world: World) -> None:
    response = await world.client.get("/graph/me")
    refused(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_fake_refuses_app_only_assertions_itself(world: World) -> None:
    """The fake checks what Entra checks, even when the API would not ask."""
    token = world.idp.token(app_only=True)
    response = await world.auth.http.post(
        f"{AUTHORITY}/{world.idp.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "requested_token_use": "on_behalf_of",
            "assertion": token,
            "scope": USER_READ,
            "client_id": world.idp.client_id,
            "client_secret": SECRET,
        },
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [7000114]
    other_api = world.idp.token(audience="api://someone-else")
    response = await world.auth.http.post(
        f"{AUTHORITY}/{world.idp.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "requested_token_use": "on_behalf_of",
            "assertion": other_api,
            "scope": USER_READ,
            "client_id": world.idp.client_id,
            "client_secret": SECRET,
        },
    )
    assert response.status_code == 400 and response.json()["error_codes"] == [50013]


# -- Entra's refusals, as the caller sees them ---------------------------------------------


async def test_interaction_required_becomes_a_claims_challenge(world: World) -> None:
    claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    world.idp.fail_obo("interaction_required", claims=claims)
    response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
    body = refused(response, 401, "insufficient_claims")
    challenge = response.headers["www-authenticate"]
    encoded = base64.b64encode(claims.encode()).decode()
    assert challenge == (
        f'Bearer realm="", authorization_uri="{AUTHORITY}/{world.idp.tenant_id}/oauth2/v2.0/'
        f'authorize", error="insufficient_claims", claims="{encoded}"'
    )
    assert "AADSTS" not in body["detail"] and "Trace" not in body["detail"]


async def test_consent_missing_is_403_consent_required(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.idp.fail_obo("consent_required")
    with caplog.at_level(logging.INFO, logger="entra_guard"):
        response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
    body = refused(response, 403, "consent_required")
    assert response.headers.get("www-authenticate") is None
    assert USER_READ in body["detail"] and "knownClientApplications" in body["detail"]
    assert "AADSTS65001" not in body["detail"] and "Trace ID" not in response.text
    assert "AADSTS65001" in caplog.text and "Trace ID" in caplog.text  # for the operator


async def test_expired_assertion_is_token_expired(world: World) -> None:
    world.idp.fail_obo("expired")
    response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
    refused(response, 401, "token_expired")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "AADSTS" not in response.text


@pytest.mark.parametrize("times", [1, None])
async def test_throttling_within_and_beyond_the_retry_after_budget(
    world: World, times: int | None
) -> None:
    world.idp.fail_obo("throttle", times=times, retry_after=1 if times else 30)
    response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
    if times == 1:  # one 429 with Retry-After: 1 is waited out
        assert response.status_code == 200, response.text
        return
    refused(response, 503, "downstream_unavailable")
    assert response.headers["retry-after"] == "30"
    assert response.headers.get("www-authenticate") is None


async def test_server_errors_are_retried_then_503(world: World) -> None:
    world.idp.fail_obo("error", status=502, times=None)
    response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
    refused(response, 503, "downstream_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    world.idp.recover_obo()
    world.idp.fail_obo("error", status=500, times=1)
    response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
    assert response.status_code == 200


async def test_a_refused_client_is_503_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    built, close = make_world(client_secret="not-the-registered-secret")
    try:
        with caplog.at_level(logging.WARNING, logger="entra_guard"):
            response = await built.client.get("/graph/me", headers=bearer(built.user_token()))
        refused(response, 503, "downstream_unavailable")
        assert "not-the-registered-secret" not in caplog.text + response.text
        assert "AADSTS7000215" in caplog.text
        assert built.idp.client_refusals == ["AADSTS7000215"]
    finally:
        await close()


async def test_no_credential_configured_is_503() -> None:
    built, close = make_world(client_secret=None)
    try:
        response = await built.client.get("/graph/me", headers=bearer(built.user_token()))
        refused(response, 503, "downstream_unavailable")
        assert "ENTRA_" not in response.text  # configuration hints go to the log
    finally:
        await close()


# -- Continuous Access Evaluation: the downstream API's claims challenge -------------------


async def test_cae_challenge_one_reacquire_then_success() -> None:
    built, close = make_world(client_capabilities="cp1")
    try:
        token = built.user_token()
        assert (await built.client.get("/graph/me", headers=bearer(token))).status_code == 200
        built.graph.cae_challenge(times=1)
        response = await built.client.get("/graph/me", headers=bearer(token))
        assert response.status_code == 200, response.text
        first, second = built.idp.obo_grants
        assert json.loads(first.claims or "") == {"access_token": {"xms_cc": {"values": ["cp1"]}}}
        merged = json.loads(second.claims or "")
        assert merged["access_token"]["xms_cc"] == {"values": ["cp1"]}
        assert merged["access_token"]["nbf"] == {"essential": True, "value": "1700000000"}
        # the fresh token replaced the challenged one in the cache
        assert (await built.client.get("/graph/me", headers=bearer(token))).status_code == 200
        assert len(built.idp.obo_grants) == 2
    finally:
        await close()


async def test_a_second_cae_challenge_goes_to_the_caller(world: World) -> None:
    world.graph.cae_challenge(times=2)
    response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
    refused(response, 401, "insufficient_claims")
    encoded = base64.b64encode(world.graph.cae_claims.encode()).decode()
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="", authorization_uri="{AUTHORITY}/{world.idp.tenant_id}/oauth2/v2.0/'
        f'authorize", error="insufficient_claims", claims="{encoded}"'
    )
    assert len(world.idp.obo_grants) == 2  # the first grant and exactly one re-acquire


async def test_an_unreadable_cae_challenge_is_503(world: World) -> None:
    world.graph.cae_challenge(times=1, claims="not json")
    response = await world.client.get("/graph/me", headers=bearer(world.user_token()))
    refused(response, 503, "downstream_unavailable")
    assert len(world.idp.obo_grants) == 1  # no grant with a garbage claims parameter


async def test_the_claims_answer_can_itself_need_interaction(world: World) -> None:
    token = world.user_token()
    assert (await world.client.get("/graph/me", headers=bearer(token))).status_code == 200
    world.graph.cae_challenge(times=1)
    world.idp.fail_obo("interaction_required")
    response = await world.client.get("/graph/me", headers=bearer(token))
    refused(response, 401, "insufficient_claims")
    assert 'claims="' in response.headers["www-authenticate"]


# -- groups overage with a delegated Graph token (ENTRA_GROUPS_VIA_OBO) ----------------


async def test_groups_overage_via_obo_needs_no_app_permission() -> None:
    built, close = make_world(groups_via_obo=True)
    try:
        member, outsider = str(uuid.uuid4()), str(uuid.uuid4())
        built.graph.set_groups(member, [FINANCE.upper()])
        built.graph.set_groups(outsider, ["0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"])
        token = built.user_token(object_id=member, overage=True)
        for _ in range(3):
            response = await built.client.get("/finance", headers=bearer(token))
            assert response.status_code == 200, response.text
        assert built.graph.membership_lookups == 1  # cached per user
        assert [g.scope for g in built.idp.obo_grants] == [USER_READ]
        assert built.idp.issued_app_tokens == {}  # no client-credentials token at all
        response = await built.client.get(
            "/finance", headers=bearer(built.user_token(object_id=outsider, overage=True))
        )
        refused(response, 403, "missing_group")
        built.idp.fail_obo("consent_required")
        response = await built.client.get(
            "/finance", headers=bearer(built.user_token(object_id=str(uuid.uuid4()), overage=True))
        )
        refused(response, 403, "consent_required")
        built.graph.fail(503, times=None)
        response = await built.client.get(
            "/finance", headers=bearer(built.user_token(object_id=str(uuid.uuid4()), overage=True))
        )
        refused(response, 503, "groups_unavailable")
    finally:
        await close()


# -- no token anywhere it should not be ----------------------------------------------------


async def test_no_token_in_logs_bodies_or_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    built, close = make_world(client_capabilities="cp1")
    try:
        token = built.user_token()
        seen: list[str] = []
        with caplog.at_level(logging.DEBUG):
            for provoke in (
                lambda: None,
                lambda: built.idp.fail_obo("interaction_required"),
                lambda: built.idp.fail_obo("consent_required"),
                lambda: built.idp.fail_obo("expired"),
                lambda: built.idp.fail_obo("throttle", retry_after=60),
                lambda: built.idp.fail_obo("error", times=None),
                lambda: built.graph.cae_challenge(times=2),
            ):
                built.idp.recover_obo()
                built.auth.cache.forget_local("obo")
                provoke()
                response = await built.client.get("/graph/me", headers=bearer(token))
                seen += [response.text, str(response.headers)]
                try:
                    await built.auth.acquire_token_on_behalf_of(token, [f"{GRAPH}/Files.Read"])
                except AuthError as exc:
                    seen += [str(exc), repr(exc), exc.detail]
        issued = list(built.idp.issued_obo_tokens)
        assert issued, "at least one downstream token was issued"
        secrets_ = [token, SECRET, *issued, token.split(".")[2]]
        seen += [caplog.text, repr(built.auth.obo), repr(built.auth.credential)]
        seen += [repr(built.auth.downstream)]
        for text in seen:
            for secret in secrets_:
                assert secret not in text
    finally:
        await close()


async def test_downstream_client_views_share_one_pool_closed_by_entra_auth(world: World) -> None:
    token = world.user_token()
    dependency = downstream_client(GRAPH, scopes=[USER_READ])
    assert "Bearer" not in repr(dependency)
    await world.client.get("/graph/me", headers=bearer(token))
    pool = world.auth.downstream.pool(GRAPH)
    async with world.auth.downstream.view(pool, httpx.Auth()) as view:
        assert view.base_url == pool.base_url
    assert not pool.is_closed  # closing a view leaves the pool alone
    await world.auth.aclose()
    assert pool.is_closed


def test_dependency_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        downstream_token()
    with pytest.raises(ValueError):
        downstream_token("two words")
    with pytest.raises(ValueError):
        downstream_client("graph.test", scopes=[USER_READ])


# -- over real sockets ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_hanging_token_endpoint_is_503_within_the_budget(
    fresh_idp: tuple[FakeEntraID, str], start_api: Callable[..., str]
) -> None:
    import time

    idp, url = fresh_idp
    graph = FakeGraph(idp)
    idp.confidential_clients[idp.client_id] = SECRET
    with LiveServer(graph.app) as graph_server:
        settings = idp.settings(
            url, graph_url=graph_server.url, client_secret=SECRET, http_timeout=0.5
        )
        base = start_api(settings)
        token = idp.token(expires_in=7200)
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{base}/me/graph", headers=bearer(token)).status_code == 200
            idp.fail_obo("hang", times=None)
            started = time.monotonic()
            response = client.get(f"{base}/me/graph", headers=bearer(idp.token(expires_in=7200)))
            elapsed = time.monotonic() - started
            idp.recover_obo()
    refused(response, 503, "downstream_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < 5


def test_sample_app_me_graph_over_http(
    fake_entra: FakeEntraID, graph_settings: EntraSettings, start_api: Callable[..., str]
) -> None:
    base = start_api(graph_settings)
    oid = "5d3c2b1a-0f9e-4d8c-b7a6-958473625140"
    token = fake_entra.token(object_id=oid)
    with httpx.Client(timeout=30) as client:
        response = client.get(f"{base}/me/graph", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == oid
        refused(client.get(f"{base}/me/graph"), 401, "missing_token")


async def test_sample_app_dev_mode_me_graph_is_the_callers_oid() -> None:
    """``make run``: the embedded fake Entra ID and fake Graph answer ``/me/graph``."""
    from sample_app.app import create_app

    settings = EntraSettings(
        tenant_id="11111111-1111-1111-1111-111111111111",
        client_id="22222222-2222-2222-2222-222222222222",
    )
    app = create_app(settings, dev_mode=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c,
    ):
        minted = await c.post("/_dev/token", json={"scopes": ["Items.Read"]})
        token = minted.json()["access_token"]
        me = (await c.get("/me", headers=bearer(token))).json()
        response = await c.get("/me/graph", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == me["object_id"]
        daemon = {"app_only": True, "roles": ["Items.Read.All"]}
        app_only = (await c.post("/_dev/token", json=daemon)).json()["access_token"]
        refused(await c.get("/me/graph", headers=bearer(app_only)), 403, "wrong_token_type")


async def test_observer_sees_each_acquisition(world: World) -> None:
    """``AuthObserver.obo_acquire`` (OpenTelemetry's ``entra_guard.obo.acquire`` span)."""
    from entra_guard import AuthObserver

    class Recorder(AuthObserver):
        def __init__(self) -> None:
            self.events: list[tuple[bool, bool, str | None]] = []

        def obo_acquire(self, *, cached: bool, ok: bool, code: str | None, seconds: float) -> None:
            assert seconds >= 0
            self.events.append((cached, ok, code))

    recorder = Recorder()
    world.auth.obo.observer = recorder
    token = world.user_token()
    await world.auth.acquire_token_on_behalf_of(token, [USER_READ])
    await world.auth.acquire_token_on_behalf_of(token, [USER_READ])
    world.idp.fail_obo("consent_required")
    with pytest.raises(AuthError):
        await world.auth.acquire_token_on_behalf_of(token, [f"{GRAPH}/Mail.Read"])
    assert recorder.events == [
        (False, True, None),
        (True, True, None),
        (False, False, "consent_required"),
    ]
