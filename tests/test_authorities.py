"""Several authorities on one API: ``EntraAuthMiddleware(app, auth=[a, b, ...])``
(docs/customer-identities.md "Several authorities on one API")."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from entra_guard import (
    AuthObserver,
    EntraAuth,
    EntraAuthMiddleware,
    Principal,
    require_scopes,
    setup_openapi,
)
from entra_guard._inspect import inspect_token
from entra_guard._validation import decode_json_segment
from entra_guard.testing import FakeB2C, FakeEntraID, FakeExternalID, LiveServer

from ._customer_apps import api_client, authority, bearer, customer_app
from .conftest import assert_refused, run_coroutine

WORKFORCE = "http://login.workforce.localhost"
B2C = "http://contoso.b2clogin.localhost"
CIAM = "http://contoso.ciamlogin.localhost"
POLICY = "B2C_1_signupsignin"


class Recorder(AuthObserver):
    def __init__(self) -> None:
        self.accepted = 0
        self.cache_hits = 0
        self.refused: Counter[str] = Counter()

    def token_cache(self, *, hit: bool) -> None:
        self.cache_hits += hit

    def authenticated(self, *, cached: bool, seconds: float) -> None:
        self.accepted += 1

    def rejected(self, code: str) -> None:
        self.refused[code] += 1


@pytest.fixture(scope="module")
def fakes() -> dict[str, Any]:
    return {
        "workforce": FakeEntraID(),
        "b2c": FakeB2C(policies=(POLICY,)),
        "ciam": FakeExternalID(),
    }


@asynccontextmanager
async def several(
    fakes: dict[str, Any], *names: str, **settings: dict[str, Any]
) -> AsyncIterator[tuple[list[EntraAuth], list[Recorder]]]:
    urls = {"workforce": WORKFORCE, "b2c": B2C, "ciam": CIAM}
    async with AsyncExitStack() as stack:
        auths, recorders = [], []
        for name in names:
            recorder = Recorder()
            auth = await stack.enter_async_context(
                authority(fakes[name], urls[name], observer=recorder, **settings.get(name, {}))
            )
            auths.append(auth)
            recorders.append(recorder)
        yield auths, recorders


PAIRS = [("workforce", "b2c"), ("b2c", "ciam"), ("ciam", "workforce")]


def token_of(fakes: dict[str, Any], name: str, **options: Any) -> str:
    return str(fakes[name].token(**options))


@pytest.mark.parametrize("names", PAIRS)
async def test_each_token_accepted_by_its_own_authority(
    fakes: dict[str, Any], names: tuple[str, str]
) -> None:
    async with (
        several(fakes, *names) as (auths, recorders),
        api_client(customer_app(auths)) as client,
    ):
        for index, name in enumerate(names):
            fake = fakes[name]
            token = token_of(fakes, name, scopes=["Items.Read"])
            response = await client.get("/me", headers=bearer(token))
            assert response.status_code == 200, response.text
            me = response.json()
            # The scope's AUTH_KEY is the EntraAuth that accepted the token.
            assert me["authority"] == auths[index].settings.authority_host
            assert me["issuer"] == fake.claims()["iss"]
            assert me["tenant_id"] == fake.tenant_id
            assert me["policy"] == (POLICY if name == "b2c" else None)
            items = await client.get("/items", headers=bearer(token))
            assert items.status_code == 200
            admin = await client.get("/admin", headers=bearer(token))
            assert_refused(admin, 403, "missing_role")
            assert recorders[index].refused["missing_role"] == 1
        # Per authority metrics: each accepted its own tokens, and only those.
        assert [r.accepted for r in recorders] == [3, 3]  # /me, /items, /admin
        assert [r.cache_hits for r in recorders] == [2, 2]  # from the accepting one's cache


@pytest.mark.parametrize("names", PAIRS)
async def test_token_signed_by_one_authority_claiming_the_other_is_refused(
    fakes: dict[str, Any], names: tuple[str, str]
) -> None:
    """Lying in iss only routes the token to the other authority, whose keys refuse it."""
    signer, victim = names
    async with (
        several(fakes, *names) as (auths, recorders),
        api_client(customer_app(auths)) as client,
    ):
        victim_claims = fakes[victim].claims()
        forged = fakes[signer].token(victim_claims)  # signer's key and kid
        response = await client.get("/me", headers=bearer(forged))
        assert_refused(response, 401, "unknown_key")
        # With the victim's kid in the header: the signature does not verify.
        victim_header = fakes[victim].token(victim_claims).split(".")[0]
        kid = decode_json_segment(victim_header, "header")["kid"]
        forged_kid = fakes[signer].token(
            victim_claims, key=_signing_key(fakes[signer], victim_claims), header={"kid": kid}
        )
        response = await client.get("/me", headers=bearer(forged_kid))
        assert_refused(response, 401, "invalid_signature")
        # Refusals before acceptance are counted by the first authority.
        assert sum(recorders[0].refused.values()) == 2
        assert not recorders[1].refused and recorders[1].accepted == 0


def _signing_key(fake: Any, claims: dict[str, Any]) -> Any:
    if isinstance(fake, FakeB2C):
        return fake.policy_keys[POLICY.lower()]
    return fake.active_key


async def test_unknown_issuer_refused_without_fetching_its_address(
    fakes: dict[str, Any],
) -> None:
    async with (
        several(fakes, "workforce", "b2c") as (auths, _),
        api_client(customer_app(auths)) as client,
    ):
        evil = "http://evil.localhost/tenant/v2.0"
        for iss in (evil, "https://sts.windows.net/x/", "", None):
            token = fakes["workforce"].token(iss=iss)
            response = await client.get("/me", headers=bearer(token))
            body = assert_refused(response, 401, "invalid_issuer")
            assert body["code"] == "invalid_issuer"
        sent = [url for auth in auths for url in auth.sent]  # type: ignore[attr-defined]
        assert sent and all(url.startswith(WORKFORCE) or url.startswith(B2C) for url in sent), sent
        # Warm: another unknown issuer costs no fetch at all.
        before = len(sent)
        response = await client.get("/me", headers=bearer(fakes["b2c"].token(iss=evil)))
        assert_refused(response, 401, "invalid_issuer")
        assert sum(len(auth.sent) for auth in auths) == before  # type: ignore[attr-defined]


async def test_missing_and_malformed_tokens_answered_by_the_first(
    fakes: dict[str, Any],
) -> None:
    async with (
        several(fakes, "b2c", "ciam") as (auths, recorders),
        api_client(customer_app(auths)) as client,
    ):
        assert_refused(await client.get("/me"), 401, "missing_token")
        response = await client.get("/me", headers=bearer("not.a.token"))
        assert_refused(response, 401, "malformed_token")
        assert recorders[0].refused == Counter({"missing_token": 1, "malformed_token": 1})


async def test_one_authority_down_does_not_affect_the_other(fakes: dict[str, Any]) -> None:
    down = FakeEntraID()
    down.fail(503)
    async with (
        several({**fakes, "workforce": down}, "workforce", "ciam") as (auths, _),
        api_client(customer_app(auths)) as client,
    ):
        ok = await client.get("/me", headers=bearer(token_of(fakes, "ciam")))
        assert ok.status_code == 200, ok.text
        refused = await client.get("/me", headers=bearer(down.token()))
        assert_refused(refused, 503, "idp_unavailable")
        # An unknown issuer while an authority cannot be asked: it might be that one.
        unknown = fakes["ciam"].token(iss="https://elsewhere.example/x/v2.0")
        assert_refused(await client.get("/me", headers=bearer(unknown)), 503, "idp_unavailable")
    down.recover()


async def test_resource_metadata_and_openapi_with_several(fakes: dict[str, Any]) -> None:
    settings = {"workforce": {"resource_metadata": True}}
    async with several(fakes, "workforce", "b2c", **settings) as (auths, _):
        app = customer_app(auths)
        setup_openapi(app, auths)
        async with api_client(app) as client:
            response = await client.get("/.well-known/oauth-protected-resource")
            servers = response.json()["authorization_servers"]
            assert servers == [fakes["workforce"].claims()["iss"], fakes["b2c"].issuer]
            refused = await client.get("/me", headers=bearer(fakes["b2c"].token(iss="x")))
            body = assert_refused(refused, 401, "invalid_issuer")
            assert body["code"] == "invalid_issuer"
            assert "resource_metadata=" in refused.headers["www-authenticate"]
            schema = (await client.get("/openapi.json")).json()
    flows = next(iter(schema["components"]["securitySchemes"].values()))["flows"]
    # Swagger UI signs in with the first authority.
    assert flows["authorizationCode"]["authorizationUrl"].startswith(WORKFORCE)


async def test_inspect_explains_a_token_of_another_authority(fakes: dict[str, Any]) -> None:
    ciam = fakes["ciam"]
    settings = ciam.settings(CIAM)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ciam.app), base_url=CIAM
    ) as http:
        report = await inspect_token(fakes["workforce"].token(), settings, http_client=http)
    assert not report.valid and report.failed_rule == "key" and report.code == "unknown_key"
    assert report.hint is not None and "ENTRA_AUTHORITY_HOST" in report.hint


def test_middleware_needs_an_authority() -> None:
    with pytest.raises(ValueError, match="at least one EntraAuth"):
        EntraAuthMiddleware(FastAPI(), auth=[])


async def test_multi_tenant_workforce_beside_a_customer_tenant(fakes: dict[str, Any]) -> None:
    """A ``{tenantid}`` issuer template routes with the token's own tid."""
    async with (
        several(fakes, "workforce", "ciam", workforce={"tenant_id": "organizations"}) as (
            auths,
            _,
        ),
        api_client(customer_app(auths)) as client,
    ):
        other_tenant = "0b1f2a3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
        token = fakes["workforce"].token(tenant_id=other_tenant)
        response = await client.get("/me", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["tenant_id"] == other_tenant
        assert response.json()["authority"] == WORKFORCE
        ciam = await client.get("/me", headers=bearer(fakes["ciam"].token()))
        assert ciam.json()["authority"] == CIAM
        # The CIAM tenant's token cannot pass as a workforce one by naming its issuer.
        forged = fakes["ciam"].token(
            iss=f"https://login.microsoftonline.com/{fakes['ciam'].tenant_id}/v2.0"
        )
        assert_refused(await client.get("/me", headers=bearer(forged)), 401, "unknown_key")


def test_websocket_with_several_authorities(fakes: dict[str, Any]) -> None:
    """WebSocket handshakes route the same way (over a socket: what only a server shows)."""

    def auth_for(fake: Any, url: str) -> EntraAuth:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app), base_url=url)
        return EntraAuth(fake.settings(url), http_client=client)

    auths = [auth_for(fakes["b2c"], B2C), auth_for(fakes["ciam"], CIAM)]
    app = FastAPI()
    app.add_middleware(EntraAuthMiddleware, auth=auths)

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket, principal: Annotated[Principal, Depends(require_scopes("Items.Read"))]
    ) -> None:
        await websocket.accept()
        await websocket.send_text(json.dumps({"iss": principal.issuer, "pol": principal.policy}))
        await websocket.close()

    try:
        with LiveServer(app) as server:
            url = server.url.replace("http://", "ws://") + "/ws"
            for name, policy in (("b2c", POLICY), ("ciam", None)):
                token = token_of(fakes, name)
                with connect(url, additional_headers=bearer(token), open_timeout=10) as socket:
                    body = json.loads(socket.recv(timeout=10))
                assert body == {"iss": fakes[name].claims()["iss"], "pol": policy}
            forged = fakes["ciam"].token(fakes["b2c"].claims())
            with (
                connect(url, additional_headers=bearer(forged), open_timeout=10) as socket,
                pytest.raises(ConnectionClosed) as closed,
            ):
                socket.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "unknown_key")
    finally:
        for auth in auths:
            run_coroutine(auth.aclose())
            run_coroutine(auth.http.aclose())
