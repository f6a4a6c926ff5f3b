"""OpenAPI and Swagger UI sign-in: the security scheme, per-route scopes, open routes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Security

from entra_guard import (
    EntraSettings,
    require_roles,
    require_scopes,
    require_tenants,
    setup_openapi,
)
from entra_guard.testing import FakeEntraID

from .conftest import ApiFactory, protected_app

pytestmark = pytest.mark.in_process

TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def schema_of(client: httpx.Client, api: str) -> dict[str, Any]:
    response = client.get(f"{api}/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_sample_app_security_scheme(
    api: str, client: httpx.Client, fake_entra: FakeEntraID, fake_entra_url: str
) -> None:
    schema = schema_of(client, api)
    scheme = schema["components"]["securitySchemes"]["EntraID"]
    assert scheme["type"] == "oauth2"
    flow = scheme["flows"]["authorizationCode"]
    base = f"{fake_entra_url}/{fake_entra.tenant_id}/oauth2/v2.0"
    assert flow["authorizationUrl"] == f"{base}/authorize"
    assert flow["tokenUrl"] == f"{base}/token"
    prefix = f"api://{fake_entra.client_id}/"
    assert {prefix + "Items.Read", prefix + "Items.Write"} <= set(flow["scopes"])
    assert all(name.startswith(prefix) for name in flow["scopes"])


def test_sample_app_routes_list_their_scopes(
    api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    paths = schema_of(client, api)["paths"]
    prefix = f"api://{fake_entra.client_id}/"
    assert paths["/items"]["get"]["security"] == [{"EntraID": [prefix + "Items.Read"]}]
    assert paths["/items"]["post"]["security"] == [{"EntraID": [prefix + "Items.Write"]}]
    assert paths["/admin"]["get"]["security"] == [{"EntraID": []}]  # a role, not a scope
    assert paths["/finance"]["get"]["security"] == [{"EntraID": []}]
    assert paths["/me"]["get"]["security"] == [{"EntraID": []}]
    assert "security" not in paths["/health"]["get"]  # open routes stay open
    assert "/_dev/token" not in paths  # dev mode is off


def test_docs_sign_in_with_pkce(
    start_api: ApiFactory, client: httpx.Client, entra_settings: EntraSettings
) -> None:
    public = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
    api = start_api(entra_settings.model_copy(update={"public_client_id": public}))
    html = client.get(f"{api}/docs").text
    assert "initOAuth" in html
    assert '"usePkceWithAuthorizationCodeGrant": true' in html
    assert f'"clientId": "{public}"' in html
    assert client.get(f"{api}/docs/oauth2-redirect").status_code == 200


def test_docs_without_public_client_still_uses_pkce(api: str, client: httpx.Client) -> None:
    html = client.get(f"{api}/docs").text
    assert '"usePkceWithAuthorizationCodeGrant": true' in html
    assert "clientId" not in html


def build_app(settings: EntraSettings, *, with_setup: bool) -> FastAPI:
    app = protected_app(settings)
    auth = app.state.auth
    if with_setup:
        setup_openapi(app, auth, scopes={"Reports.Read": "Read reports"})

    @app.get("/either", dependencies=[Security(require_scopes("A", "B"))])
    async def either() -> None: ...

    @app.get("/both", dependencies=[Depends(require_scopes("A") & require_scopes("C"))])
    async def both() -> None: ...

    @app.get("/mixed", dependencies=[Depends(require_scopes("A") | require_roles("R"))])
    async def mixed() -> None: ...

    @app.get("/tenant", dependencies=[Depends(require_tenants(TID))])
    async def tenant() -> None: ...

    @app.get("/open")
    async def open_route() -> None: ...

    return app


def test_custom_app_scope_alternatives(
    start_api: ApiFactory, client: httpx.Client, entra_settings: EntraSettings
) -> None:
    schema = schema_of(client, start_api(app=build_app(entra_settings, with_setup=True)))
    p = f"api://{entra_settings.client_id}/"
    paths = schema["paths"]
    # OpenAPI: requirement objects are alternatives, the scopes inside one are all needed
    assert paths["/either"]["get"]["security"] == [{"EntraID": [p + "A"]}, {"EntraID": [p + "B"]}]
    assert paths["/both"]["get"]["security"] == [{"EntraID": [p + "A", p + "C"]}]
    assert paths["/mixed"]["get"]["security"] == [{"EntraID": [p + "A"]}, {"EntraID": []}]
    assert paths["/tenant"]["get"]["security"] == [{"EntraID": []}]
    assert "security" not in paths["/open"]["get"]
    scopes = schema["components"]["securitySchemes"]["EntraID"]["flows"]["authorizationCode"]
    assert scopes["scopes"][p + "Reports.Read"] == "Read reports"
    assert {p + "A", p + "B", p + "C"} <= set(scopes["scopes"])


def test_app_id_uri_audience_names_the_scopes(
    start_api: ApiFactory, client: httpx.Client, entra_settings: EntraSettings
) -> None:
    settings = entra_settings.model_copy(
        update={"audiences": [entra_settings.client_id, "https://api.contoso.example"]}
    )
    schema = schema_of(client, start_api(app=build_app(settings, with_setup=True)))
    assert schema["paths"]["/both"]["get"]["security"] == [
        {"EntraID": ["https://api.contoso.example/A", "https://api.contoso.example/C"]}
    ]


def test_without_setup_guards_still_mark_routes_as_secured(
    start_api: ApiFactory, client: httpx.Client, entra_settings: EntraSettings
) -> None:
    schema = schema_of(client, start_api(app=build_app(entra_settings, with_setup=False)))
    assert schema["components"]["securitySchemes"]["EntraID"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Microsoft Entra ID access token for this API",
    }
    assert schema["paths"]["/either"]["get"]["security"] == [{"EntraID": []}]
    assert "security" not in schema["paths"]["/open"]["get"]


def test_multi_tenant_scheme_uses_organizations(
    start_api: ApiFactory, client: httpx.Client, fake_entra: FakeEntraID, fake_entra_url: str
) -> None:
    settings = fake_entra.settings(fake_entra_url, tenant_id="organizations")
    schema = schema_of(client, start_api(app=build_app(settings, with_setup=True)))
    flow = schema["components"]["securitySchemes"]["EntraID"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == f"{fake_entra_url}/organizations/oauth2/v2.0/authorize"
