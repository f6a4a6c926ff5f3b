"""Groups overage through Microsoft Graph (docs/groups-overage.md), over HTTP: the sample API's
/finance route, the fake Entra ID's token endpoint and the fake Graph, all in process."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import Depends
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from entra_guard import (
    AuthObserver,
    EntraAuth,
    EntraSettings,
    require_groups,
)
from entra_guard.testing import FakeEntraID, FakeGraph, LiveServer

from ._inprocess import entra_client_for, transport_for
from .conftest import (
    FINANCE_GROUP,
    ApiFactory,
    assert_refused,
    bearer,
    protected_app,
    run_coroutine,
)

pytestmark = pytest.mark.in_process


def groups(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def overage_user(graph: FakeGraph, memberships: list[str]) -> str:
    oid = str(uuid.uuid4())
    graph.set_groups(oid, memberships)
    return oid


def finance(client: httpx.Client, api: str, token: str) -> httpx.Response:
    return client.get(f"{api}/finance", headers=bearer(token))


def test_member_among_1200_groups(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    memberships = groups(1200)
    memberships.insert(1100, FINANCE_GROUP)  # on the second page
    oid = overage_user(fake_graph, memberships)
    token = fake_entra.token(object_id=oid, overage=True)
    response = finance(client, groups_api, token)
    assert response.status_code == 200, response.text
    assert fake_graph.membership_lookups == 1
    assert fake_graph.hits[f"/v1.0/users/{oid}/transitiveMemberOf"] == 2  # two pages of 999
    # cached per (tid, oid): a second request (even with another token) asks Graph nothing
    again = fake_entra.token(object_id=oid, overage=True)
    assert finance(client, groups_api, again).status_code == 200
    assert fake_graph.membership_lookups == 1


def test_non_member_with_overage(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, groups(300))
    response = finance(client, groups_api, fake_entra.token(object_id=oid, overage=True))
    assert_refused(response, 403, "missing_group")
    assert fake_graph.membership_lookups == 1


def test_hasgroups_marker_is_overage_too(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    token = fake_entra.token(object_id=oid, hasgroups=True)
    assert finance(client, groups_api, token).status_code == 200
    assert fake_graph.membership_lookups == 1


def test_v1_token_overage(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    token = fake_entra.token(version="1.0", object_id=oid, overage=True)
    assert finance(client, groups_api, token).status_code == 200


def test_groups_claim_without_overage_never_calls_graph(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])  # Graph would say "member"
    member = fake_entra.token(object_id=oid, groups=[FINANCE_GROUP])
    assert finance(client, groups_api, member).status_code == 200
    outsider = fake_entra.token(object_id=oid, groups=groups(3))
    assert_refused(finance(client, groups_api, outsider), 403, "missing_group")
    no_claim = fake_entra.token(object_id=oid)
    assert_refused(finance(client, groups_api, no_claim), 403, "missing_group")
    assert sum(fake_graph.hits.values()) == 0
    assert fake_entra.hits_matching("/oauth2/v2.0/token") == 0


def test_other_routes_never_call_graph(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    token = fake_entra.token(object_id=oid, overage=True, scopes=["Items.Read"])
    assert client.get(f"{groups_api}/items", headers=bearer(token)).status_code == 200
    assert client.get(f"{groups_api}/me", headers=bearer(token)).json()["groups_overage"] is True
    assert sum(fake_graph.hits.values()) == 0


def test_app_only_overage_uses_the_service_principal(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    token = fake_entra.token(app_only=True, object_id=oid, overage=True)
    assert finance(client, groups_api, token).status_code == 200
    assert fake_graph.hits[f"/v1.0/servicePrincipals/{oid}/transitiveMemberOf"] == 1
    assert not any("/users/" in path for path in fake_graph.hits)


def test_graph_down_fails_closed(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    fake_graph.fail(503)
    started = time.monotonic()
    response = finance(client, groups_api, fake_entra.token(object_id=oid, overage=True))
    elapsed = time.monotonic() - started
    assert_refused(response, 503, "groups_unavailable")
    assert elapsed < 12  # bounded retries within the ~10 s budget
    assert 2 <= sum(fake_graph.hits.values()) <= 4
    # recovered: the failure was not cached
    fake_graph.recover()
    assert (
        finance(client, groups_api, fake_entra.token(object_id=oid, overage=True)).status_code
        == 200
    )


def assert_reason_logged(
    caplog: pytest.LogCaptureFixture, body: dict[str, Any], reason: str
) -> None:
    """The operator finds the cause in the log; the client sees no configuration hints."""
    assert reason not in body["detail"]
    assert any(r.levelname == "WARNING" and reason in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


def test_graph_permission_missing_fails_closed_at_once(
    groups_api: str,
    client: httpx.Client,
    fake_entra: FakeEntraID,
    fake_graph: FakeGraph,
    caplog: pytest.LogCaptureFixture,
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    fake_graph.fail(403)
    response = finance(client, groups_api, fake_entra.token(object_id=oid, overage=True))
    body = assert_refused(response, 503, "groups_unavailable")
    assert_reason_logged(caplog, body, "GroupMember.Read.All")
    assert sum(fake_graph.hits.values()) == 1


def test_unknown_user_in_graph_fails_closed(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    response = finance(client, groups_api, fake_entra.token(overage=True))
    assert_refused(response, 503, "groups_unavailable")


def test_graph_429_retry_after_once(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    fake_graph.throttle(times=1, retry_after=1)
    started = time.monotonic()
    response = finance(client, groups_api, fake_entra.token(object_id=oid, overage=True))
    assert response.status_code == 200, response.text
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert sum(fake_graph.hits.values()) == 2


def test_graph_retry_after_beyond_budget_is_503_at_once(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    fake_graph.throttle(times=1, retry_after=60)
    started = time.monotonic()
    response = finance(client, groups_api, fake_entra.token(object_id=oid, overage=True))
    assert_refused(response, 503, "groups_unavailable")
    assert int(response.headers["retry-after"]) == 60
    assert time.monotonic() - started < 3
    assert sum(fake_graph.hits.values()) == 1
    # the throttle is over on the fake's side, but Graph asked for 60 s: the next look-up of
    # any user of that tenant does not call it before then
    other = overage_user(fake_graph, [FINANCE_GROUP])
    response = finance(client, groups_api, fake_entra.token(object_id=other, overage=True))
    assert_refused(response, 503, "groups_unavailable")
    assert 55 <= int(response.headers["retry-after"]) <= 60
    assert sum(fake_graph.hits.values()) == 1


def test_token_endpoint_down_fails_closed(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    fake_entra.fail(400, path_contains="/oauth2/v2.0/token")
    response = finance(client, groups_api, fake_entra.token(object_id=oid, overage=True))
    assert_refused(response, 503, "groups_unavailable")
    assert sum(fake_graph.hits.values()) == 0


def test_wrong_client_secret_fails_closed(
    start_api: ApiFactory,
    graph_settings: EntraSettings,
    client: httpx.Client,
    fake_entra: FakeEntraID,
    fake_graph: FakeGraph,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = graph_settings.model_copy(update={"client_secret": None})
    api = start_api(
        EntraSettings(**{**graph_settings.model_dump(), "client_secret": "wrong"}),
        finance_group_id=FINANCE_GROUP,
    )
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    token = fake_entra.token(object_id=oid, overage=True)
    assert_refused(finance(client, api, token), 503, "groups_unavailable")
    assert sum(fake_graph.hits.values()) == 0
    # and without a secret at all Graph is not even tried
    api = start_api(settings, finance_group_id=FINANCE_GROUP)
    fake_entra.reset_hits()
    body = assert_refused(finance(client, api, token), 503, "groups_unavailable")
    assert_reason_logged(caplog, body, "ENTRA_CLIENT_SECRET")
    assert fake_entra.hits_matching("/oauth2/v2.0/token") == 0


def test_claim_sources_url_is_never_fetched(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    trap_hits: list[str] = []

    async def trap(request: Request) -> Response:
        trap_hits.append(request.url.path)
        return JSONResponse({"value": [FINANCE_GROUP]})

    trap_app = Starlette(routes=[Route("/{path:path}", trap, methods=["GET", "POST"])])
    with LiveServer(trap_app) as trap_server:
        member = overage_user(fake_graph, [FINANCE_GROUP])
        outsider = overage_user(fake_graph, groups(2))
        source = f"{trap_server.url}/{fake_entra.tenant_id}/users/x/getMemberObjects"
        token = fake_entra.token(object_id=member, overage=True, claim_source=source)
        assert finance(client, groups_api, token).status_code == 200
        token = fake_entra.token(object_id=outsider, overage=True, claim_source=source)
        assert_refused(finance(client, groups_api, token), 403, "missing_group")
        fake_graph.fail(403)  # Graph cannot answer: still no fallback to the token's URL
        token = fake_entra.token(object_id=str(uuid.uuid4()), overage=True, claim_source=source)
        assert_refused(finance(client, groups_api, token), 503, "groups_unavailable")
    assert trap_hits == []


def test_next_link_off_the_graph_host_is_never_followed(
    groups_api: str,
    client: httpx.Client,
    fake_entra: FakeEntraID,
    fake_graph: FakeGraph,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trap_hits: list[str] = []

    async def trap(request: Request) -> Response:
        trap_hits.append(request.headers.get("authorization", ""))
        return JSONResponse({"value": [{"id": FINANCE_GROUP}]})

    trap_app = Starlette(routes=[Route("/{path:path}", trap)])
    with LiveServer(trap_app) as trap_server:
        fake_graph.next_link_base = trap_server.url
        oid = overage_user(fake_graph, groups(1500))  # two pages: the second link is the trap
        response = finance(client, groups_api, fake_entra.token(object_id=oid, overage=True))
        body = assert_refused(response, 503, "groups_unavailable")
    assert_reason_logged(caplog, body, "ENTRA_GRAPH_URL")
    assert trap_hits == []  # neither the request nor the Graph app token left for the trap


def test_concurrent_requests_share_one_graph_lookup(
    groups_api: str, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    oid = overage_user(fake_graph, [*groups(50), FINANCE_GROUP])
    token = fake_entra.token(object_id=oid, overage=True)
    fake_graph.response_delay = 0.3  # keep the look-up in flight while requests pile up

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        transport = transport_for(groups_api)
        async with httpx.AsyncClient(timeout=60, limits=limits, transport=transport) as client:
            responses = await asyncio.gather(
                *(client.get(f"{groups_api}/finance", headers=bearer(token)) for _ in range(200))
            )
        return [r.status_code for r in responses]

    statuses = run_coroutine(burst())
    assert statuses == [200] * 200
    assert fake_graph.membership_lookups == 1
    assert sum(fake_graph.hits.values()) == 1
    assert fake_entra.hits_matching("/oauth2/v2.0/token") == 1


def test_app_token_reused_across_users_of_a_tenant(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    users = [overage_user(fake_graph, [FINANCE_GROUP]) for _ in range(3)]
    for oid in users:
        assert finance(client, groups_api, fake_entra.token(object_id=oid, overage=True)).is_success
    assert fake_graph.membership_lookups == 3
    assert fake_entra.hits_matching("/oauth2/v2.0/token") == 1
    assert len(fake_graph.tokens_used) == 1
    assert list(fake_graph.tokens_used.values()) == [3]
    assert fake_graph.tenants_used() == {fake_entra.tenant_id}


def test_revoked_app_token_is_renewed_once(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    first, second = (overage_user(fake_graph, [FINANCE_GROUP]) for _ in range(2))
    assert finance(client, groups_api, fake_entra.token(object_id=first, overage=True)).is_success
    fake_entra.issued_app_tokens.clear()  # Graph no longer accepts the cached app token
    assert finance(client, groups_api, fake_entra.token(object_id=second, overage=True)).is_success
    assert fake_entra.hits_matching("/oauth2/v2.0/token") == 2
    # the revoked token was refused (not counted) and replaced: each accepted token used once
    assert sorted(fake_graph.tokens_used.values()) == [1, 1]


def test_dev_mode_resolves_overage(start_api: ApiFactory, client: httpx.Client) -> None:
    """``make run``: a dev token minted with groups + overage passes /finance via the
    in-process fake Graph."""
    settings = EntraSettings(
        tenant_id="11111111-1111-1111-1111-111111111111",
        client_id="22222222-2222-2222-2222-222222222222",
    )
    api = start_api(settings, finance_group_id=FINANCE_GROUP, dev_mode=True)

    def mint(**body: object) -> str:
        response = client.post(f"{api}/_dev/token", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    member = mint(scopes=["Items.Read"], groups=[*groups(5), FINANCE_GROUP], overage=True)
    me = client.get(f"{api}/me", headers=bearer(member)).json()
    assert me["groups_overage"] is True and me["groups"] == []
    assert finance(client, api, member).status_code == 200
    outsider = mint(scopes=["Items.Read"], groups=groups(5), overage=True)
    assert_refused(finance(client, api, outsider), 403, "missing_group")
    in_claim = mint(scopes=["Items.Read"], groups=[FINANCE_GROUP])
    assert finance(client, api, in_claim).status_code == 200
    app_member = mint(app_only=True, roles=["Admin"], groups=[FINANCE_GROUP], overage=True)
    assert finance(client, api, app_member).status_code == 200


def test_app_token_renewed_shortly_before_expiry(
    groups_api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_graph: FakeGraph
) -> None:
    fake_entra.app_token_lifetime = 2  # kept for max(2 - 300, 2 / 2) = 1 s
    try:
        first, second = (overage_user(fake_graph, [FINANCE_GROUP]) for _ in range(2))
        token = fake_entra.token(object_id=first, overage=True)
        assert finance(client, groups_api, token).status_code == 200
        time.sleep(1.2)
        token = fake_entra.token(object_id=second, overage=True)
        assert finance(client, groups_api, token).status_code == 200
    finally:
        fake_entra.app_token_lifetime = 3600
    assert fake_entra.hits_matching("/oauth2/v2.0/token") == 2
    assert sorted(fake_graph.tokens_used.values()) == [1, 1]


def test_groups_cache_ttl_setting(
    start_api: ApiFactory,
    graph_settings: EntraSettings,
    client: httpx.Client,
    fake_entra: FakeEntraID,
    fake_graph: FakeGraph,
) -> None:
    settings = graph_settings.model_copy(update={"groups_cache_ttl": 0.0})
    api = start_api(settings, finance_group_id=FINANCE_GROUP)
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    token = fake_entra.token(object_id=oid, overage=True)
    assert finance(client, api, token).status_code == 200
    assert finance(client, api, token).status_code == 200
    assert fake_graph.membership_lookups == 2  # nothing kept with a zero TTL
    fake_graph.set_groups(oid, [])  # removed from the group: seen at once without a cache
    assert_refused(finance(client, api, token), 403, "missing_group")


class Recorder(AuthObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, bool]] = []

    def graph_call(self, *, ok: bool, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("graph_call", ok))

    def groups_cache(self, *, hit: bool) -> None:
        self.events.append(("groups_cache", hit))


def test_observer_sees_graph_calls_and_cache_hits(
    start_api: ApiFactory,
    graph_settings: EntraSettings,
    client: httpx.Client,
    fake_entra: FakeEntraID,
    fake_graph: FakeGraph,
) -> None:
    recorder = Recorder()
    http = entra_client_for(graph_settings)  # None over sockets
    app = protected_app(EntraAuth(graph_settings, observer=recorder, http_client=http))

    @app.get("/g", dependencies=[Depends(require_groups(FINANCE_GROUP))])
    async def g() -> dict[str, str]:
        return {}

    api = start_api(app=app)
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    token = fake_entra.token(object_id=oid, overage=True)
    assert client.get(f"{api}/g", headers=bearer(token)).status_code == 200
    # the cache miss, then the token endpoint and one Graph page
    assert recorder.events == [("groups_cache", False), ("graph_call", True), ("graph_call", True)]
    assert client.get(f"{api}/g", headers=bearer(token)).status_code == 200
    assert recorder.events[-1] == ("groups_cache", True)
    fake_graph.fail(403)
    other = fake_entra.token(object_id=overage_user(fake_graph, []), overage=True)
    assert_refused(client.get(f"{api}/g", headers=bearer(other)), 503, "groups_unavailable")
    assert recorder.events[-2:] == [("groups_cache", False), ("graph_call", False)]


async def test_a_shared_failed_look_up_is_logged_once(
    groups_api: str,
    fake_entra: FakeEntraID,
    fake_graph: FakeGraph,
    caplog: pytest.LogCaptureFixture,
) -> None:
    oid = overage_user(fake_graph, [FINANCE_GROUP])
    fake_graph.fail(403)
    fake_graph.response_delay = 0.3  # keep the look-up in flight while requests pile up
    token = fake_entra.token(object_id=oid, overage=True)
    async with httpx.AsyncClient(timeout=30, transport=transport_for(groups_api)) as client:
        responses = await asyncio.gather(
            *(client.get(f"{groups_api}/finance", headers=bearer(token)) for _ in range(20))
        )
    for response in responses:
        assert_refused(response, 503, "groups_unavailable")
    failures = [r for r in caplog.records if r.getMessage().startswith("groups_unavailable")]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert oid in failures[0].getMessage()
