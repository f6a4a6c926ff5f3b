"""``require_client_apps`` (docs/step-up.md): the calling application
(``azp``, ``appid`` in v1) must be listed; every path over HTTP in process, composition,
WebSocket close 1008, OpenAPI and the sample app's ``/reports``."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, WebSocket

from entra_guard import (
    Principal,
    require_client_apps,
    require_roles,
    require_scopes,
    setup_openapi,
)
from entra_guard.testing import DEFAULT_CLIENT_APP_ID, FakeEntraID
from sample_app.app import create_app

from .conftest import assert_refused, bearer
from .test_step_up import (
    ApiMaker,
    InProcessApi,
    call,
    dev_settings,
    dev_token,
    idp,
    make_api,
    websocket_session,
)

__all__ = ["idp", "make_api"]  # fixtures shared with test_step_up

SPA = "0f3e1b2a-1111-4c5d-8e9f-0a1b2c3d4e5f"
DAEMON = "7a6b5c4d-2222-4e3f-9a8b-1c2d3e4f5a6b"
OTHER = "9e8d7c6b-3333-4a5b-8c7d-6e5f4a3b2c1d"
LISTED = require_client_apps(SPA, DAEMON.upper())


@pytest.fixture
def apps_api(make_api: ApiMaker) -> InProcessApi:
    api = make_api()
    api.route("/listed", LISTED)
    api.route("/as-list", require_client_apps([SPA]))
    api.route("/and-scope", require_client_apps(SPA) & require_scopes("Items.Read"))
    api.route("/or-admin", require_client_apps(SPA) | require_roles("Admin"))
    return api


@pytest.mark.parametrize(
    "options",
    [
        {"app_id": SPA},
        {"app_id": SPA.upper()},  # ids compare case-insensitively
        {"app_id": DAEMON},  # listed in upper case
        {"app_id": SPA, "version": "1.0"},  # appid
        {"app_id": DAEMON, "app_only": True},  # a daemon's client credentials token
    ],
)
async def test_listed_apps_pass(
    apps_api: InProcessApi, idp: FakeEntraID, options: dict[str, Any]
) -> None:
    response = await call(apps_api, "/listed", idp.token(**options))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "claims_options",
    [
        {"app_id": OTHER},
        {},  # the fake's default client app
        {"app_id": OTHER, "version": "1.0"},
        {"azp": None},  # no azp at all
        {"version": "1.0", "appid": None},  # no appid at all
    ],
)
async def test_other_apps_get_403_client_not_allowed(
    apps_api: InProcessApi, idp: FakeEntraID, claims_options: dict[str, Any]
) -> None:
    claims = idp.claims(**claims_options)
    response = await call(apps_api, "/listed", idp.token(claims))
    body = assert_refused(response, 403, "client_not_allowed")
    assert "www-authenticate" not in response.headers
    assert SPA not in body["detail"] and DAEMON not in body["detail"]  # the list stays private


async def test_iterable_form(apps_api: InProcessApi, idp: FakeEntraID) -> None:
    assert (await call(apps_api, "/as-list", idp.token(app_id=SPA))).status_code == 200
    assert_refused(await call(apps_api, "/as-list", idp.token()), 403, "client_not_allowed")


async def test_and_composition(apps_api: InProcessApi, idp: FakeEntraID) -> None:
    ok = idp.token(app_id=SPA, scopes=["Items.Read"])
    assert (await call(apps_api, "/and-scope", ok)).status_code == 200
    wrong_scope = idp.token(app_id=SPA, scopes=["Other"])
    assert_refused(await call(apps_api, "/and-scope", wrong_scope), 403, "insufficient_scope")
    wrong_app = idp.token(app_id=OTHER, scopes=["Items.Read"])
    assert_refused(await call(apps_api, "/and-scope", wrong_app), 403, "client_not_allowed")


async def test_or_composition(apps_api: InProcessApi, idp: FakeEntraID) -> None:
    assert (await call(apps_api, "/or-admin", idp.token(app_id=SPA))).status_code == 200
    admin = idp.token(app_id=OTHER, roles=["Admin"])
    assert (await call(apps_api, "/or-admin", admin)).status_code == 200
    neither = idp.token(app_id=OTHER)
    assert_refused(await call(apps_api, "/or-admin", neither), 403, "client_not_allowed")


async def test_no_token_is_still_401(apps_api: InProcessApi) -> None:
    assert_refused(await call(apps_api, "/listed", None), 401, "missing_token")


@pytest.mark.parametrize("bad", ["", "  ", 'a"b', "a\r\nb", "a\tb", "x" * 101])
def test_bad_ids_fail_where_declared(bad: str) -> None:
    with pytest.raises(ValueError):
        require_client_apps(SPA, bad)


def test_no_ids_fail_where_declared() -> None:
    with pytest.raises(ValueError):
        require_client_apps()


async def test_openapi_lists_the_client_apps(apps_api: InProcessApi) -> None:
    setup_openapi(apps_api.app, apps_api.auth)
    async with apps_api.client() as client:
        schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/listed"]["get"]
    assert operation["x-entra-client-apps"] == [SPA, DAEMON.upper()]
    assert SPA in operation["description"]


def ws_app(api: InProcessApi) -> None:
    @api.app.websocket("/ws")
    async def feed(websocket: WebSocket, principal: Annotated[Principal, Depends(LISTED)]) -> None:
        await websocket.accept()
        await websocket.send_json({"app": principal.app_id})
        await websocket.close()


async def test_websocket_from_another_app_closes_1008(make_api: ApiMaker, idp: FakeEntraID) -> None:
    api = make_api()
    ws_app(api)
    sent = await websocket_session(api.app, idp.token(app_id=OTHER))
    assert sent[-1]["type"] == "websocket.close"
    assert (sent[-1]["code"], sent[-1]["reason"]) == (1008, "client_not_allowed")
    sent = await websocket_session(api.app, idp.token(app_id=SPA))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]


async def test_sample_reports_route() -> None:
    app = create_app(dev_settings(), dev_mode=True, reports_client_apps=[SPA])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client,
    ):
        listed = await dev_token(client, app_id=SPA)
        response = await client.get("/reports", headers=bearer(listed))
        assert response.status_code == 200 and response.json()["reports"]
        default = await dev_token(client)  # minted for the fake's default client app
        assert_refused(
            await client.get("/reports", headers=bearer(default)), 403, "client_not_allowed"
        )


async def test_sample_reports_unconfigured_refuses_everyone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SAMPLE_REPORTS_CLIENT_APPS", raising=False)
    app = create_app(dev_settings(), dev_mode=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client,
    ):
        token = await dev_token(client, app_id=DEFAULT_CLIENT_APP_ID)
        assert_refused(
            await client.get("/reports", headers=bearer(token)), 403, "client_not_allowed"
        )


async def test_sample_reports_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMPLE_REPORTS_CLIENT_APPS", f" {OTHER} , {SPA} ")
    app = create_app(dev_settings(), dev_mode=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client,
    ):
        token = await dev_token(client, app_id=SPA)
        assert (await client.get("/reports", headers=bearer(token))).status_code == 200
