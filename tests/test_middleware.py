"""EntraAuthMiddleware conventions: scope contents, exclusions, WebSocket handshakes."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, WebSocket
from starlette.authentication import requires
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from entra_guard import (
    AuthError,
    EntraAuth,
    EntraAuthMiddleware,
    EntraSettings,
    Principal,
    require_principal,
)
from entra_guard.testing import FakeEntraID

from .conftest import ApiFactory, assert_refused, bearer, protected_app

pytestmark = pytest.mark.in_process


def build_app(settings: EntraSettings, **middleware: Any) -> FastAPI:
    app = protected_app(settings, **middleware)

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        user = request.user
        return {
            "authenticated": user.is_authenticated,
            "display_name": user.display_name,
            "credentials": request.auth.scopes,
        }

    @app.get("/starlette-requires")
    @requires("scp:Items.Read")
    async def starlette_requires(request: Request) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/public/info")
    async def public_info(
        principal: Annotated[Principal, Depends(require_principal)],
    ) -> dict[str, str]:
        return {"oid": str(principal.object_id)}

    @app.get("/raises")
    async def raises() -> None:
        raise AuthError("missing_role", "Only auditors may read this")

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket, principal: Annotated[Principal, Depends(require_principal)]
    ) -> None:
        await websocket.accept()
        await websocket.send_text(json.dumps({"oid": principal.object_id}))
        await websocket.close()

    return app


@pytest.fixture
def app_url(start_api: ApiFactory, entra_settings: EntraSettings) -> str:
    return start_api(app=build_app(entra_settings, exclude_paths=["/public"]))


def test_request_user_and_auth_follow_starlette_conventions(
    app_url: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    token = fake_entra.token(scopes=["Items.Read"], roles=["Admin"])
    body = client.get(f"{app_url}/whoami", headers=bearer(token)).json()
    assert body == {
        "authenticated": True,
        "display_name": "Ada Lovelace",
        "credentials": ["role:Admin", "scp:Items.Read"],
    }
    anonymous = client.get(f"{app_url}/whoami", headers=bearer("bad")).json()
    assert anonymous["authenticated"] is False and anonymous["credentials"] == []
    assert client.get(f"{app_url}/starlette-requires", headers=bearer(token)).status_code == 200
    assert client.get(f"{app_url}/starlette-requires").status_code == 403


def test_excluded_paths_are_never_authenticated(
    app_url: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    response = client.get(f"{app_url}/public/info", headers=bearer(fake_entra.token()))
    assert_refused(response, 401, "missing_token")


def test_auth_error_raised_by_a_route_is_rendered(app_url: str, client: httpx.Client) -> None:
    body = assert_refused(client.get(f"{app_url}/raises"), 403, "missing_role")
    assert body["detail"] == "Only auditors may read this"


@pytest.mark.over_sockets  # a WebSocket handshake over a real socket
async def test_websocket_handshake_is_authenticated(app_url: str, fake_entra: FakeEntraID) -> None:
    ws_url = app_url.replace("http://", "ws://") + "/ws"
    oid = "5d2b9a5e-0000-4000-8000-00000000000a"
    token = fake_entra.token(object_id=oid)
    async with ws_connect(ws_url, additional_headers=bearer(token)) as ws:
        assert json.loads(await ws.recv()) == {"oid": oid}


@pytest.mark.over_sockets
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not.a.token"}])
async def test_websocket_without_valid_token_is_closed_with_1008(
    app_url: str, headers: dict[str, str]
) -> None:
    ws_url = app_url.replace("http://", "ws://") + "/ws"
    expected = "missing_token" if not headers else "malformed_token"
    try:
        async with ws_connect(ws_url, additional_headers=headers) as ws:
            await asyncio.wait_for(ws.recv(), 5)
    except InvalidStatus as refused:  # servers may answer the close with HTTP 403
        assert refused.response.status_code == 403
    except ConnectionClosed as closed:
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (1008, expected)
    else:
        pytest.fail("the handshake of an unauthenticated WebSocket was accepted")


def test_anonymous_callers_get_credentials_of_their_own(
    start_api: ApiFactory, entra_settings: EntraSettings, client: httpx.Client
) -> None:
    """``request.auth.scopes`` is a list the request may change: never one shared by all."""
    app = protected_app(entra_settings)

    @app.get("/grab")
    async def grab(request: Request) -> list[str]:
        seen = list(request.auth.scopes)
        request.auth.scopes.append("scp:Leaked")
        return seen

    url = start_api(app=app)
    assert client.get(f"{url}/grab").json() == []
    assert client.get(f"{url}/grab", headers=bearer("not.a.token")).json() == []


def _http_scope(path: str) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}


async def test_an_auth_error_is_answered_only_while_no_response_has_started(
    entra_settings: EntraSettings,
) -> None:
    """Before the response starts, an ``AuthError`` from below becomes the refusal; after,
    it propagates (a second ``http.response.start`` would break the protocol)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise AuthError("missing_role", "Only auditors may read this")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with EntraAuth(entra_settings) as auth:  # no token is sent: nothing is fetched
        middleware = EntraAuthMiddleware(app, auth=auth)
        await middleware(_http_scope("/early"), receive, send)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert sent[0]["status"] == 403
        assert json.loads(sent[1]["body"])["code"] == "missing_role"
        assert b"www-authenticate" not in dict(sent[0]["headers"])  # a 403 without a challenge
        sent.clear()
        with pytest.raises(AuthError) as raised:
            await middleware(_http_scope("/late"), receive, send)
        assert raised.value.code == "missing_role"
        assert [m["type"] for m in sent] == ["http.response.start"]


async def test_an_entra_auth_subclass_that_overrides_authenticate_gets_text(
    entra_settings: EntraSettings, fake_entra: FakeEntraID
) -> None:
    """The middleware passes the header's bytes only to ``EntraAuth.authenticate`` itself."""
    seen: list[type] = []

    class Auditing(EntraAuth):
        async def authenticate(self, token: str | bytes, **kwargs: Any) -> Principal:
            seen.append(type(token))
            return await super().authenticate(token, **kwargs)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = _http_scope("/")
    scope["headers"] = [(b"authorization", b"Bearer not-a-token")]
    async with Auditing(entra_settings) as auth:
        await EntraAuthMiddleware(app, auth=auth)(scope, receive, send)
    assert seen == [str]
    assert scope["entra_guard.error"].code == "malformed_token"
