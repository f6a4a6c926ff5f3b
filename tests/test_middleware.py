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

from entra_guard import AuthError, EntraSettings, Principal, require_principal
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
