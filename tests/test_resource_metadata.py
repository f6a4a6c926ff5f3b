"""RFC 9728 protected-resource metadata (docs/step-up.md): the document,
its scopes (the union of the declared guards'), ``resource_metadata`` on every 401 and never
on a 403, the absolute URL behind a proxy, and configuration that could inject a header."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Security, WebSocket
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from entra_guard import (
    EntraRoute,
    EntraSettings,
    Principal,
    require_auth_context,
    require_client_apps,
    require_groups,
    require_principal,
    require_roles,
    require_scopes,
    require_scopes_or_app_roles,
)
from entra_guard._resource_metadata import WELL_KNOWN_PATH, declared_guards
from entra_guard.testing import FakeEntraID

from .conftest import bearer
from .test_step_up import (
    API_URL,
    ApiMaker,
    InProcessApi,
    bearer_params,
    call,
    idp,
    make_api,
    websocket_session,
)

__all__ = ["idp", "make_api"]  # fixtures shared with test_step_up

METADATA_URL = f"{API_URL}{WELL_KNOWN_PATH}"
READ = require_scopes_or_app_roles(scopes=["Items.Read"], app_roles=["Items.Read.All"])
WRITE = require_scopes("Items.Write", "Items.Admin")
REPORTS = require_scopes("Reports.Read") | require_roles("Auditor")
STEP_UP = require_scopes("Payments.Approve") & require_auth_context("c1")
WS_ONLY = require_scopes("Feed.Listen")
ROUTER_LEVEL = require_scopes("Router.Scope")
ENTRA_ROUTE_LEVEL = require_scopes("Fast.Path")
MOUNTED = require_scopes("Sub.Read")
GUARDS = [READ, WRITE, REPORTS, STEP_UP, WS_ONLY, ROUTER_LEVEL, ENTRA_ROUTE_LEVEL, MOUNTED]
#: Every scope the guards above accept, by hand (what the document must list).
EXPECTED_SCOPES = {
    "Items.Read",
    "Items.Write",
    "Items.Admin",
    "Reports.Read",
    "Payments.Approve",
    "Feed.Listen",
    "Router.Scope",
    "Fast.Path",
    "Sub.Read",
}


def build(api: InProcessApi) -> InProcessApi:
    """Guards declared every way FastAPI allows: route dependencies, endpoint parameters,
    an included router with router-level guards, an EntraRoute router, a WebSocket."""
    api.route("/items", READ)
    api.route("/items", WRITE, method="POST")
    api.route("/reports", REPORTS)
    api.route("/payments/approve", STEP_UP, method="POST")
    api.route("/clients", require_client_apps("0f3e1b2a-1111-4c5d-8e9f-0a1b2c3d4e5f"))
    api.route("/finance", require_groups("3f5c9b1e-2d4a-4e6f-8a7b-1c2d3e4f5a6b"))

    @api.app.get("/me")
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> dict[str, Any]:
        return principal.to_dict()

    @api.app.get("/public")
    async def public() -> dict[str, str]:
        return {"public": "yes"}

    @api.app.websocket("/ws")
    async def feed(websocket: WebSocket, principal: Annotated[Principal, Depends(WS_ONLY)]) -> None:
        await websocket.accept()
        await websocket.close()

    router = APIRouter(prefix="/v2", dependencies=[Security(ROUTER_LEVEL)])

    @router.get("/things")
    async def things() -> dict[str, str]:
        return {"things": "yes"}

    fast = APIRouter(prefix="/fast", route_class=EntraRoute)

    @fast.get("/path", dependencies=[Security(ENTRA_ROUTE_LEVEL)])
    async def fast_path() -> dict[str, str]:
        return {"fast": "yes"}

    api.app.include_router(router)
    api.app.include_router(fast)

    sub = FastAPI()

    @sub.get("/thing", dependencies=[Security(MOUNTED)])
    async def sub_thing() -> dict[str, str]:
        return {"sub": "yes"}

    api.app.mount("/sub", sub)
    return api


@pytest.fixture
def rm_api(make_api: ApiMaker) -> InProcessApi:
    return build(make_api(resource_metadata=True))


# -- the document ---------------------------------------------------------------------------------


async def test_document(rm_api: InProcessApi, idp: FakeEntraID) -> None:
    async with rm_api.client() as client:
        response = await client.get(WELL_KNOWN_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    prefix = f"api://{idp.client_id}/"
    assert response.json() == {
        "resource": f"api://{idp.client_id}",
        "authorization_servers": [f"https://login.microsoftonline.com/{idp.tenant_id}/v2.0"],
        "scopes_supported": sorted(prefix + s for s in EXPECTED_SCOPES),
        "bearer_methods_supported": ["header"],
    }


async def test_scopes_are_the_union_of_the_declared_guards(rm_api: InProcessApi) -> None:
    """Computed independently: every leaf scope guard's scope names, through compositions."""
    declared = declared_guards(rm_api.app)
    assert set(map(id, GUARDS)) <= set(map(id, declared))

    def leaf_scopes(guard: Any) -> set[str]:
        own = set(getattr(guard, "scopes", ()))
        return own.union(*(leaf_scopes(g) for g in getattr(guard, "guards", ())))

    union = set().union(*(leaf_scopes(g) for g in declared))
    assert union == EXPECTED_SCOPES
    async with rm_api.client() as client:
        document = (await client.get(WELL_KNOWN_PATH)).json()
    prefix = f"api://{rm_api.settings.client_id}/"
    assert {s.removeprefix(prefix) for s in document["scopes_supported"]} == union


async def test_resource_uri_and_custom_app_id_uri(make_api: ApiMaker, idp: FakeEntraID) -> None:
    api = make_api(
        resource_metadata=True,
        resource_uri="https://api.contoso.example",
        audiences=[idp.client_id, "https://contoso.example/items-api"],
    )
    api.route("/items", READ)
    async with api.client() as client:
        document = (await client.get(WELL_KNOWN_PATH)).json()
    assert document["resource"] == "https://api.contoso.example"
    assert document["scopes_supported"] == ["https://contoso.example/items-api/Items.Read"]


async def test_multi_tenant_names_the_authority(make_api: ApiMaker) -> None:
    api = make_api(resource_metadata=True, tenant_id="organizations")
    async with api.client() as client:
        document = (await client.get(WELL_KNOWN_PATH)).json()
    assert document["authorization_servers"] == ["http://127.0.0.1/organizations/v2.0"]
    assert document["scopes_supported"] == []


async def test_idp_down_still_serves_the_document(make_api: ApiMaker, idp: FakeEntraID) -> None:
    api = make_api(resource_metadata=True)
    idp.fail(503)
    try:
        async with api.client() as client:
            response = await client.get(WELL_KNOWN_PATH)
    finally:
        idp.recover()
    assert response.status_code == 200
    assert response.json()["authorization_servers"] == [f"http://127.0.0.1/{idp.tenant_id}/v2.0"]


async def test_head_and_other_methods(rm_api: InProcessApi) -> None:
    async with rm_api.client() as client:
        head = await client.head(WELL_KNOWN_PATH)
        post = await client.post(WELL_KNOWN_PATH)
    assert head.status_code == 200 and head.content == b""
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_under_a_root_path(rm_api: InProcessApi, idp: FakeEntraID) -> None:
    async with rm_api.client(root_path="/api") as client:
        served = await client.get("/api" + WELL_KNOWN_PATH)
        refused = await client.get("/api/items")
    assert served.status_code == 200
    assert served.json()["resource"] == f"api://{idp.client_id}"
    params = bearer_params(refused)
    assert params == {"resource_metadata": f"{API_URL}/api{WELL_KNOWN_PATH}"}


async def test_off_by_default(make_api: ApiMaker, idp: FakeEntraID) -> None:
    api = build(make_api())
    async with api.client() as client:
        assert (await client.get(WELL_KNOWN_PATH)).status_code == 404
        refused = await client.get("/items")
        expired = await client.get("/items", headers=bearer(idp.token(expires_in=-3600)))
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "resource_metadata" not in expired.headers["www-authenticate"]


# -- resource_metadata on every 401, never on a 403 -----------------------------------------------


def tokens(idp: FakeEntraID) -> dict[str, tuple[str, str | None, int, str]]:
    """name -> (path, token, status, code)."""
    return {
        "missing": ("/items", None, 401, "missing_token"),
        "malformed": ("/items", "not-a-jwt", 401, "malformed_token"),
        "expired": ("/items", idp.token(expires_in=-3600), 401, "token_expired"),
        "audience": ("/items", idp.token(audience="api://other"), 401, "invalid_audience"),
        "step_up": (
            "/payments/approve",
            idp.token(scopes=["Payments.Approve"], client_capabilities=["cp1"]),
            401,
            "insufficient_claims",
        ),
        "scope": ("/items", idp.token(scopes=["Other"]), 403, "insufficient_scope"),
        "role": ("/items", idp.token(app_only=True, roles=["Other"]), 403, "missing_role"),
        "context": (
            "/payments/approve",
            idp.token(scopes=["Payments.Approve"]),
            403,
            "auth_context_required",
        ),
        "client": ("/clients", idp.token(), 403, "client_not_allowed"),
        "group": ("/finance", idp.token(groups=[]), 403, "missing_group"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "malformed",
        "expired",
        "audience",
        "step_up",
        "scope",
        "role",
        "context",
        "client",
        "group",
    ],
)
async def test_resource_metadata_on_every_401_only(
    rm_api: InProcessApi, idp: FakeEntraID, case: str
) -> None:
    path, token, status, code = tokens(idp)[case]
    method = "POST" if path == "/payments/approve" else "GET"
    response = await call(rm_api, path, token, method)
    assert response.status_code == status and response.json()["code"] == code, response.text
    if status == 401:
        params = bearer_params(response)  # strict RFC 7235 parse of the one challenge
        assert params["resource_metadata"] == METADATA_URL
        if code == "missing_token":
            assert params == {"resource_metadata": METADATA_URL}
        elif code == "insufficient_claims":
            assert list(params) == [
                "realm",
                "authorization_uri",
                "error",
                "claims",
                "resource_metadata",
            ]
        else:
            assert params["error"] == "invalid_token" and params["error_description"]
    else:
        assert "resource_metadata" not in response.headers.get("www-authenticate", "")
        if code == "insufficient_scope":
            assert bearer_params(response)["error"] == "insufficient_scope"
        else:
            assert "www-authenticate" not in response.headers


async def test_public_routes_and_valid_tokens_are_untouched(
    rm_api: InProcessApi, idp: FakeEntraID
) -> None:
    async with rm_api.client() as client:
        assert (await client.get("/public", headers=bearer("garbage"))).status_code == 200
        ok = await client.get("/items", headers=bearer(idp.token()))
        assert ok.status_code == 200 and "www-authenticate" not in ok.headers
        assert (await client.get("/v2/things", headers=bearer(idp.token()))).json()["code"] == (
            "insufficient_scope"
        )
        mounted = await client.get("/sub/thing", headers=bearer(idp.token(scopes=["Sub.Read"])))
        assert mounted.status_code == 200


async def test_websocket_refusal_is_still_a_1008_close(
    rm_api: InProcessApi, idp: FakeEntraID
) -> None:
    sent = await websocket_session(rm_api.app, idp.token(scopes=["Other"]))
    assert (sent[-1]["type"], sent[-1]["code"]) == ("websocket.close", 1008)


# -- the absolute URL -----------------------------------------------------------------------------


async def challenge_url(api: InProcessApi, client_addr: str, headers: dict[str, str]) -> str:
    """``resource_metadata`` of a 401, the app behind uvicorn's proxy-headers middleware
    trusting 127.0.0.1 (what ``--forwarded-allow-ips 127.0.0.1`` installs)."""
    app = ProxyHeadersMiddleware(api.app, trusted_hosts="127.0.0.1")
    transport = httpx.ASGITransport(app=app, client=(client_addr, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=API_URL) as client:
        response = await client.get("/items", headers=headers)
    assert response.status_code == 401
    return bearer_params(response)["resource_metadata"]


async def test_forwarded_proto_from_a_trusted_proxy(rm_api: InProcessApi) -> None:
    headers = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"}
    url = await challenge_url(rm_api, "127.0.0.1", headers)
    assert url == f"https://api.test{WELL_KNOWN_PATH}"


async def test_forwarded_proto_from_anyone_else_is_ignored(rm_api: InProcessApi) -> None:
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "evil.example"}
    url = await challenge_url(rm_api, "198.51.100.7", headers)
    assert url == f"http://api.test{WELL_KNOWN_PATH}"


async def test_forwarded_host_is_never_parsed_here(rm_api: InProcessApi) -> None:
    """X-Forwarded-Host is not read (uvicorn does not apply it): the proxy passes Host."""
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "evil.example"}
    assert "evil" not in await challenge_url(rm_api, "127.0.0.1", headers)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.contoso.example:8443", "http://api.contoso.example:8443"),
        ("[::1]:8000", "http://[::1]:8000"),
        ('evil"x', "http://api.test"),  # not a host: the server address instead
        ("evil.example, resource_metadata=x", "http://api.test"),
        ("a b", "http://api.test"),
        ("evil\\x", "http://api.test"),
    ],
)
async def test_host_header_cannot_inject(rm_api: InProcessApi, host: str, expected: str) -> None:
    async with rm_api.client() as client:
        response = await client.get("/items", headers={"host": host})
    params = bearer_params(response)  # still exactly one well-formed challenge
    assert params == {"resource_metadata": expected + WELL_KNOWN_PATH}


# -- configuration that could reach a header is refused at start-up -------------------------------


def settings(**overrides: Any) -> EntraSettings:
    base: dict[str, Any] = {
        "tenant_id": "11111111-1111-1111-1111-111111111111",
        "client_id": "22222222-2222-2222-2222-222222222222",
    }
    return EntraSettings(**(base | overrides))


@pytest.mark.parametrize(
    "name",
    [
        'approve"payment',
        "approve\r\nX-Injected: 1",
        "approve\npayment",
        "a\x00",
        "a\x7f",
        "a\\b",
        " ",
    ],
)
def test_auth_context_names_that_could_inject_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="ENTRA_AUTH_CONTEXTS"):
        settings(auth_contexts={name: "c1"})


@pytest.mark.parametrize("value", ['c1"', "c1\r\n", "c1, c2", "c1 "])
def test_auth_context_ids_that_could_inject_are_refused(value: str) -> None:
    if value == "c1 ":
        assert settings(auth_contexts={"a": value}).auth_contexts == {"a": "c1"}  # trimmed
        return
    with pytest.raises(ValueError, match="ENTRA_AUTH_CONTEXTS"):
        settings(auth_contexts={"a": value})


@pytest.mark.parametrize(
    "uri",
    [
        'api://x"y',
        "api://x\r\ny",
        "https://api.example/\n",
        "api://x y",
        "api://x\\y",
        "https://api.example/#frag",
        "/relative",
        "no-scheme",
        "https:///nohost",
        "api://" + "x" * 2100,
    ],
)
def test_resource_uris_that_could_inject_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="ENTRA_RESOURCE_URI"):
        settings(resource_uri=uri)


def test_resource_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRA_TENANT_ID", "11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("ENTRA_CLIENT_ID", "22222222-2222-2222-2222-222222222222")
    monkeypatch.setenv("ENTRA_RESOURCE_METADATA", "true")
    monkeypatch.setenv("ENTRA_RESOURCE_URI", "https://api.contoso.example")
    loaded = EntraSettings()  # type: ignore[call-arg]
    assert loaded.resource_metadata is True
    assert loaded.resource_uri == "https://api.contoso.example"
    monkeypatch.setenv("ENTRA_RESOURCE_URI", 'https://api.contoso.example/"')
    with pytest.raises(ValueError, match="ENTRA_RESOURCE_URI"):
        EntraSettings()  # type: ignore[call-arg]
