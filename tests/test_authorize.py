"""The fake Entra ID's sign-in: authorization endpoint, code + refresh grants, PKCE.

In-process (``httpx.ASGITransport``): the sample app in dev mode, whose
``/_dev/oauth2/v2.0`` serves the fake's sign-in, and whose API then accepts
the tokens; and ``FakeEntraID.app`` itself (tenant paths, CORS, refresh).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from entra_guard import EntraSettings
from entra_guard.testing import FakeEntraID, FakeGraph
from sample_app.app import create_app

TENANT = "11111111-1111-1111-1111-111111111111"
API = "22222222-2222-2222-2222-222222222222"
FINANCE = "33333333-3333-3333-3333-333333333333"
DEV_CLIENT = "d0c5d0c5-0000-4000-8000-00000000d0c5"
SIGN_IN = "/_dev/oauth2/v2.0"
REDIRECT = "http://127.0.0.1:8000/docs/oauth2-redirect"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_query(challenge: str, **overrides: str | None) -> dict[str, str]:
    query: dict[str, str | None] = {
        "client_id": DEV_CLIENT,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": f"api://{API}/Items.Read openid offline_access",
        "state": "st-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    query.update(overrides)
    return {k: v for k, v in query.items() if v is not None}


def sign_in_form(query: dict[str, str], **choices: Any) -> list[tuple[str, str]]:
    """What the page posts: the request (``p_*``) and the choices."""
    form = [(f"p_{k}", v) for k, v in query.items()]
    form.append(("action", choices.pop("action", "allow")))
    for name, values in choices.items():
        for value in [values] if isinstance(values, str) else values:
            form.append((name, value))
    return form


def as_form(query: dict[str, str], **choices: Any) -> dict[str, Any]:
    """``client.post(url, **as_form(...))``: the page's urlencoded post (repeated names)."""
    return {
        "content": urlencode(sign_in_form(query, **choices)),
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    }


def redirect_params(response: httpx.Response) -> dict[str, str]:
    location = response.headers["location"]
    assert location.startswith(REDIRECT.split("?")[0] + "?"), location
    return {k: v[-1] for k, v in parse_qs(urlsplit(location).query).items()}


async def sign_in(
    client: httpx.AsyncClient,
    prefix: str = SIGN_IN,
    query: dict[str, str] | None = None,
    **choices: Any,
) -> tuple[str, str, dict[str, str]]:
    """Open the page, post the choices; returns (code, verifier, query)."""
    verifier, challenge = pkce()
    query = query or authorize_query(challenge)
    page = await client.get(f"{prefix}/authorize", params=query)
    assert page.status_code == 200, page.text
    answer = await client.post(f"{prefix}/authorize", **as_form(query, **choices))
    assert answer.status_code == 303, answer.text
    params = redirect_params(answer)
    assert params["state"] == query["state"]
    return params["code"], verifier, query


async def redeem(
    client: httpx.AsyncClient, code: str, verifier: str | None, prefix: str = SIGN_IN, **over: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": DEV_CLIENT,
        "code": code,
        "redirect_uri": REDIRECT,
        **over,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return await client.post(f"{prefix}/token", data=form)


@pytest.fixture
async def dev_app() -> AsyncIterator[FastAPI]:
    settings = EntraSettings(tenant_id=TENANT, client_id=API)
    app = create_app(settings, dev_mode=True, finance_group_id=FINANCE)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def dev(dev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=dev_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
        yield c


# -- the whole flow ------------------------------------------------------------------


async def test_sign_in_gives_a_token_the_api_accepts(dev: httpx.AsyncClient) -> None:
    code, verifier, _ = await sign_in(
        dev, user="alan@contoso.example", scp="Items.Read", role="Admin", group=FINANCE, acrs="c2"
    )
    answer = await redeem(dev, code, verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == f"api://{API}/Items.Read"
    assert tokens["refresh_token"] and tokens["id_token"]  # offline_access, openid
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = (await dev.get("/me", headers=bearer)).json()
    assert me["name"] == "Alan Turing"
    assert me["preferred_username"] == "alan@contoso.example"
    assert (me["scopes"], me["roles"], me["groups"]) == (["Items.Read"], ["Admin"], [FINANCE])
    assert me["app_id"] == DEV_CLIENT
    claims = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))
    assert claims["acrs"] == ["c2"]
    assert (await dev.get("/items", headers=bearer)).status_code == 200
    assert (await dev.get("/admin", headers=bearer)).status_code == 200
    assert (await dev.get("/finance", headers=bearer)).status_code == 200
    refused = await dev.post("/items", headers=bearer, json={})
    assert refused.status_code == 403  # Items.Write was not ticked
    assert refused.json()["code"] == "insufficient_scope"


async def test_a_typed_name_and_overage_groups_through_the_dev_graph(
    dev: httpx.AsyncClient,
) -> None:
    code, verifier, _ = await sign_in(
        dev, name="Katherine Johnson", scp="Items.Read", group=FINANCE, overage="on"
    )
    tokens = (await redeem(dev, code, verifier)).json()
    claims = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))
    assert "groups" not in claims and claims["_claim_names"] == {"groups": "src1"}
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = (await dev.get("/me", headers=bearer)).json()
    assert me["name"] == "Katherine Johnson"
    assert me["preferred_username"] == "katherine.johnson@contoso.example"
    assert me["groups_overage"] is True
    assert (await dev.get("/finance", headers=bearer)).status_code == 200  # resolved via Graph


async def test_the_page_offers_what_the_guards_declare_and_is_locked_down(
    dev: httpx.AsyncClient,
) -> None:
    _, challenge = pkce()
    page = await dev.get(f"{SIGN_IN}/authorize", params=authorize_query(challenge))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "form-action 'self' http://127.0.0.1:8000" in csp
    assert page.headers["x-frame-options"] == "DENY"
    for offered in ("Items.Read", "Items.Write", "Items.Read.All", "Admin", FINANCE, "c1"):
        assert f'value="{offered}"' in page.text
    assert '<label for="scp0">Items.Read</label>' in page.text
    assert 'id="scp0" name="scp" value="Items.Read" checked' in page.text  # requested
    assert "<script" not in page.text


async def test_everything_echoed_is_html_escaped(dev: httpx.AsyncClient) -> None:
    evil = '"><script>alert(1)</script>'
    _, challenge = pkce()
    query = authorize_query(challenge, state=evil, scope=f"api://{API}/{evil} openid")
    page = await dev.get(f"{SIGN_IN}/authorize", params=query)
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    wrong = await dev.get(
        f"{SIGN_IN}/authorize", params=authorize_query(challenge, redirect_uri=evil)
    )
    assert wrong.status_code == 400
    assert "<script>" not in wrong.text and "&lt;script&gt;" in wrong.text
    unknown = await dev.get(
        f"{SIGN_IN}/authorize", params=authorize_query(challenge, client_id=evil)
    )
    assert unknown.status_code == 400
    assert "<script>" not in unknown.text


# -- the authorization request -------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"redirect_uri": "http://127.0.0.1:8000/docs/other"}, "AADSTS50011"),
        ({"redirect_uri": "https://127.0.0.1:8000/docs/oauth2-redirect"}, "AADSTS50011"),
        ({"redirect_uri": "http://127.0.0.1.evil.example/docs/oauth2-redirect"}, "AADSTS50011"),
        ({"redirect_uri": "http://evil.example:8000/docs/oauth2-redirect"}, "AADSTS50011"),
        ({"redirect_uri": "http://u@127.0.0.1:8000/docs/oauth2-redirect"}, "AADSTS50011"),
        ({"redirect_uri": None}, "AADSTS50011"),
        ({"client_id": "someone-else"}, "AADSTS700016"),
        ({"client_id": None}, "AADSTS700016"),
    ],
)
async def test_an_unknown_client_or_redirect_uri_is_refused_without_redirecting(
    dev: httpx.AsyncClient, override: dict[str, str | None], fragment: str
) -> None:
    _, challenge = pkce()
    query = authorize_query(challenge, **override)
    for response in (
        await dev.get(f"{SIGN_IN}/authorize", params=query),
        await dev.post(f"{SIGN_IN}/authorize", **as_form(query)),
    ):
        assert response.status_code == 400
        assert "location" not in response.headers
        assert fragment in response.text


async def test_any_loopback_port_matches_a_registered_loopback_uri(
    dev: httpx.AsyncClient,
) -> None:
    for uri in (
        "http://127.0.0.1:51234/docs/oauth2-redirect",
        "http://localhost:3000/docs/oauth2-redirect",
        "http://[::1]:8080/docs/oauth2-redirect",
    ):
        _, challenge = pkce()
        page = await dev.get(
            f"{SIGN_IN}/authorize", params=authorize_query(challenge, redirect_uri=uri)
        )
        assert page.status_code == 200, (uri, page.text)


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"state": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"nonce": "n" * 5000}, "invalid_request"),
    ],
)
async def test_a_bad_authorization_request_is_sent_back_with_an_error(
    dev: httpx.AsyncClient, override: dict[str, str | None], error: str
) -> None:
    _, challenge = pkce()
    query = authorize_query(challenge, **override)
    response = await dev.get(f"{SIGN_IN}/authorize", params=query)
    assert response.status_code == 302
    params = redirect_params(response)
    assert params["error"] == error
    assert "code" not in params
    if "state" in query:
        assert params["state"] == query["state"]
    posted = await dev.post(f"{SIGN_IN}/authorize", **as_form(query))
    assert posted.status_code == 303
    assert redirect_params(posted)["error"] == error  # the post is checked again


async def test_cancel_sends_access_denied(dev: httpx.AsyncClient) -> None:
    _, challenge = pkce()
    query = authorize_query(challenge)
    response = await dev.post(f"{SIGN_IN}/authorize", **as_form(query, action="deny"))
    assert response.status_code == 303
    assert redirect_params(response) == {
        "error": "access_denied",
        "error_description": "The user cancelled the sign-in.",
        "state": "st-123",
    }


async def test_an_oversized_or_non_ascii_form_is_refused(dev: httpx.AsyncClient) -> None:
    big = await dev.post(
        f"{SIGN_IN}/authorize",
        content=b"a=" + b"b" * 70_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 400
    raw = await dev.post(
        f"{SIGN_IN}/authorize",
        content="p_client_id=\u00e9".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert raw.status_code == 400
    token = await dev.post(f"{SIGN_IN}/token", content=b"x=" + b"y" * 70_000)
    assert token.status_code == 400
    assert token.json()["error"] == "invalid_request"


# -- the token endpoint --------------------------------------------------------------


async def test_a_missing_or_wrong_pkce_verifier_is_refused(dev: httpx.AsyncClient) -> None:
    code, _, _ = await sign_in(dev, scp="Items.Read")
    missing = await redeem(dev, code, None)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_grant"
    assert "code_verifier" in missing.json()["error_description"]
    code, verifier, _ = await sign_in(dev, scp="Items.Read")
    wrong = await redeem(dev, code, pkce()[0])
    assert wrong.status_code == 400
    assert "AADSTS501481" in wrong.json()["error_description"]
    burnt = await redeem(dev, code, verifier)  # a failed attempt burns the code
    assert burnt.status_code == 400
    assert burnt.json()["error"] == "invalid_grant"


async def test_a_replayed_code_is_refused(dev: httpx.AsyncClient) -> None:
    code, verifier, _ = await sign_in(dev, scp="Items.Read")
    assert (await redeem(dev, code, verifier)).status_code == 200
    again = await redeem(dev, code, verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert "AADSTS54005" in again.json()["error_description"]
    assert "access_token" not in again.json()


async def test_a_code_is_bound_to_its_client_and_redirect_uri(dev: httpx.AsyncClient) -> None:
    code, verifier, _ = await sign_in(dev)
    other = await redeem(dev, code, verifier, client_id="someone-else")
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    code, verifier, _ = await sign_in(dev)
    moved = await redeem(
        dev, code, verifier, redirect_uri="http://127.0.0.1:9/docs/oauth2-redirect"
    )
    assert moved.status_code == 400 and moved.json()["error"] == "invalid_grant"
    unknown = await redeem(dev, "no-such-code", verifier)
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"


async def test_codes_are_short_lived(dev_app: FastAPI, dev: httpx.AsyncClient) -> None:
    sign_in_server = dev_app.state.dev_issuer.idp.authorization
    sign_in_server.code_lifetime = 0.0
    code, verifier, _ = await sign_in(dev)
    expired = await redeem(dev, code, verifier)
    assert expired.status_code == 400
    assert "AADSTS70008" in expired.json()["error_description"]


async def test_unsupported_grants_are_refused(dev: httpx.AsyncClient) -> None:
    for grant in ("client_credentials", "password", ""):
        response = await dev.post(f"{SIGN_IN}/token", data={"grant_type": grant})
        assert response.status_code == 400
        assert response.json()["error"] == "unsupported_grant_type"


# -- the fake itself: tenant paths, refresh, CORS ------------------------------------


@pytest.fixture
async def idp_client() -> AsyncIterator[tuple[FakeEntraID, httpx.AsyncClient]]:
    idp = FakeEntraID()
    idp.authorization.register_client(DEV_CLIENT, [REDIRECT])
    idp.authorization.offer(scopes=["Items.Read"], roles=["Admin"], groups={FINANCE: "Finance"})
    transport = httpx.ASGITransport(app=idp.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as c:
        yield idp, c


async def test_refresh_tokens_rotate_and_work_once(
    idp_client: tuple[FakeEntraID, httpx.AsyncClient],
) -> None:
    idp, client = idp_client
    prefix = f"/{idp.tenant_id}/oauth2/v2.0"
    nonce_query = authorize_query(pkce()[1], nonce="n-1")
    verifier, challenge = pkce()
    nonce_query["code_challenge"] = challenge
    page = await client.get(f"{prefix}/authorize", params=nonce_query)
    assert "Finance (33333333" in page.text
    answer = await client.post(f"{prefix}/authorize", **as_form(nonce_query, scp="Items.Read"))
    code = redirect_params(answer)["code"]
    first = (await redeem(client, code, verifier, prefix=prefix)).json()
    id_claims = json.loads(base64.urlsafe_b64decode(first["id_token"].split(".")[1] + "=="))
    assert (id_claims["aud"], id_claims["nonce"]) == (DEV_CLIENT, "n-1")
    refresh = {"grant_type": "refresh_token", "client_id": DEV_CLIENT}
    second = await client.post(
        f"{prefix}/token", data={**refresh, "refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    reused = await client.post(
        f"{prefix}/token", data={**refresh, "refresh_token": first["refresh_token"]}
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    stolen = await client.post(
        f"{prefix}/token",
        data={**refresh, "client_id": "other", "refresh_token": second.json()["refresh_token"]},
    )
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert idp.authorization.refusals == 2


async def test_no_refresh_token_without_offline_access(
    idp_client: tuple[FakeEntraID, httpx.AsyncClient],
) -> None:
    idp, client = idp_client
    prefix = f"/{idp.tenant_id}/oauth2/v2.0"
    verifier, challenge = pkce()
    query = authorize_query(challenge, scope=f"api://{idp.client_id}/Items.Read")
    code, verifier, _ = await sign_in(client, prefix, query=query, scp="Items.Read")
    body = (await redeem(client, code, verifier, prefix=prefix)).json()
    assert "refresh_token" not in body and "id_token" not in body


async def test_the_token_endpoint_allows_registered_origins_only(
    idp_client: tuple[FakeEntraID, httpx.AsyncClient],
) -> None:
    idp, client = idp_client
    token_url = f"/{idp.tenant_id}/oauth2/v2.0/token"
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = await client.options(
        token_url, headers={**preflight, "Origin": "http://127.0.0.1:8000"}
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert "x-requested-with" in allowed.headers["access-control-allow-headers"]
    other = await client.options(token_url, headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    refused = await client.post(
        token_url,
        data={"grant_type": "authorization_code"},
        headers={"Origin": "http://127.0.0.1:8000"},
    )
    assert refused.status_code == 400
    assert refused.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"


async def test_client_credentials_still_work_beside_the_new_grants(
    idp_client: tuple[FakeEntraID, httpx.AsyncClient],
) -> None:
    idp, client = idp_client
    idp.confidential_clients["app"] = "secret"
    response = await client.post(
        f"/{idp.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "app",
            "client_secret": "secret",
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    assert response.status_code == 200 and response.json()["access_token"]


async def test_overage_sign_in_fills_the_fake_graph(
    idp_client: tuple[FakeEntraID, httpx.AsyncClient],
) -> None:
    idp, client = idp_client
    idp.authorization.graph = graph = FakeGraph(idp)
    prefix = f"/{idp.tenant_id}/oauth2/v2.0"
    code, verifier, _ = await sign_in(
        client, prefix, user="grace@contoso.example", group=FINANCE, overage="on"
    )
    assert (await redeem(client, code, verifier, prefix=prefix)).status_code == 200
    grace = next(u for u in idp.authorization.users if u.username == "grace@contoso.example")
    assert graph.memberships[grace.object_id] == [FINANCE]


async def test_dev_openapi_points_swagger_ui_at_the_app(dev: httpx.AsyncClient) -> None:
    schema = (await dev.get("/openapi.json")).json()
    flow = schema["components"]["securitySchemes"]["EntraID"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == f"{SIGN_IN}/authorize"
    assert flow["tokenUrl"] == f"{SIGN_IN}/token"
    docs = (await dev.get("/docs")).text
    assert DEV_CLIENT in docs  # initOAuth clientId
    assert f"api://{API}/Items.Read" in docs  # initOAuth scopes, ticked in Authorize
