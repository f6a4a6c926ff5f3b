"""Guards on WebSocket routes (docs/guards.md, WebSockets): a refused handshake closes with 1008.

Uses the ``websockets`` client library against the sample API's ``/ws/items``
(same guard as ``GET /items``) and an app with a group guard.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated

import pytest
from fastapi import Depends, WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from entra_guard import (
    EntraSettings,
    Principal,
    require_groups,
    require_principal,
)
from entra_guard.testing import FakeEntraID, FakeGraph

from .conftest import FINANCE_GROUP, ApiFactory, protected_app


def ws_url(api: str, path: str = "/ws/items") -> str:
    return api.replace("http://", "ws://") + path


def refused_close(url: str, token: str | None) -> tuple[int, str]:
    """Connect, and return the close code and reason the server ended with."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with (
        connect(url, additional_headers=headers, open_timeout=10) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None, "the server must send a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_websocket_with_valid_token(api: str, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(scopes=["Items.Read"])
    with connect(ws_url(api), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["items"]


def test_websocket_app_only_with_app_role(api: str, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(app_only=True, roles=["Items.Read.All"])
    with connect(ws_url(api), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["items"]


def test_websocket_wrong_scope_closes_1008(api: str, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(scopes=["Items.Write"])
    assert refused_close(ws_url(api), token) == (1008, "insufficient_scope")


def test_websocket_app_only_without_role_closes_1008(api: str, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(app_only=True, roles=["Admin"])
    assert refused_close(ws_url(api), token) == (1008, "missing_role")


def test_websocket_without_token_closes_1008(api: str) -> None:
    assert refused_close(ws_url(api), None) == (1008, "missing_token")


def test_websocket_invalid_token_closes_1008(api: str, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(scopes=["Items.Read"], expires_in=-3600)
    assert refused_close(ws_url(api), token) == (1008, "token_expired")


def test_websocket_token_in_query_string_is_ignored(api: str, fake_entra: FakeEntraID) -> None:
    token = fake_entra.token(scopes=["Items.Read"])
    url = ws_url(api) + f"?access_token={token}"
    assert refused_close(url, None) == (1008, "missing_token")


def test_websocket_group_guard_with_overage(
    start_api: ApiFactory,
    graph_settings: EntraSettings,
    fake_entra: FakeEntraID,
    fake_graph: FakeGraph,
) -> None:
    app = protected_app(graph_settings)

    @app.websocket("/ws/finance")
    async def feed(
        websocket: WebSocket,
        principal: Annotated[Principal, Depends(require_groups(FINANCE_GROUP))],
    ) -> None:
        await websocket.accept()
        await websocket.send_text(principal.object_id or "")
        await websocket.close()

    @app.websocket("/ws/me")
    async def me(
        websocket: WebSocket, principal: Annotated[Principal, Depends(require_principal)]
    ) -> None:
        await websocket.accept()
        await websocket.send_text(principal.tenant_id)
        await websocket.close()

    url = ws_url(start_api(app=app), "/ws/finance")
    member, outsider = (
        "11111111-2222-4333-8444-555555555555",
        "66666666-2222-4333-8444-5555555555ab",
    )
    fake_graph.set_groups(member, [FINANCE_GROUP])
    fake_graph.set_groups(outsider, [])
    token = fake_entra.token(object_id=member, overage=True)
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert ws.recv(timeout=10) == member
    token = fake_entra.token(object_id=outsider, overage=True)
    assert refused_close(url, token) == (1008, "missing_group")
    fake_graph.fail(403)
    token = fake_entra.token(object_id=str(uuid.uuid4()), overage=True)
    assert refused_close(url, token) == (1008, "groups_unavailable")
    me_url = url.replace("/ws/finance", "/ws/me")
    assert refused_close(me_url, "not-a-token") == (1008, "malformed_token")
