"""EntraRoute: route-level guards awaited directly, with the same refusals as Depends."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, Request, Security
from starlette.requests import HTTPConnection

from entra_guard import (
    AuthError,
    EntraRoute,
    EntraSettings,
    Guard,
    Principal,
    require_principal,
    require_roles,
    require_scopes,
    require_tenants,
    setup_openapi,
)
from entra_guard.testing import FakeEntraID

from .conftest import ApiFactory, assert_refused, bearer, protected_app

pytestmark = pytest.mark.in_process

OTHER_TENANT = "0b1f2a3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"


def routed_app(settings: EntraSettings) -> FastAPI:
    app = protected_app(settings)
    app.router.route_class = EntraRoute
    calls: list[str] = []
    app.state.calls = calls

    async def other_dependency(request: Request) -> None:
        calls.append(request.url.path)

    @app.get(
        "/read",
        dependencies=[Depends(require_scopes("Items.Read")), Depends(other_dependency)],
    )
    async def read() -> dict[str, str]:
        return {"ok": "read"}

    @app.post("/write", dependencies=[Security(require_scopes("Items.Write"))])
    async def write(item: Annotated[dict[str, int], Body()]) -> dict[str, Any]:
        return item

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> dict[str, Any]:
        return {"oid": principal.object_id}

    admin = APIRouter(
        prefix="/admin",
        route_class=EntraRoute,
        dependencies=[Depends(require_tenants(settings.tenant_id))],
    )

    @admin.get("/report", dependencies=[Depends(require_roles("Admin"))])
    async def report() -> dict[str, str]:
        return {"ok": "report"}

    app.include_router(admin)
    plain = APIRouter(prefix="/plain", dependencies=[Depends(require_scopes("Items.Audit"))])

    @plain.get("/audit")
    async def audit() -> dict[str, str]:
        return {"ok": "audit"}

    app.include_router(plain)
    app.state.admin_router = admin
    setup_openapi(app, settings)
    return app


@pytest.fixture
def routed(start_api: ApiFactory, entra_settings: EntraSettings) -> tuple[str, FastAPI]:
    app = routed_app(entra_settings)
    return start_api(app=app), app


def test_guards_leave_the_dependency_graph(routed: tuple[str, FastAPI]) -> None:
    _, app = routed
    routes = {getattr(r, "path", ""): r for r in app.routes}
    read = routes["/read"]
    assert isinstance(read, EntraRoute)
    assert [repr(g) for g in read.entra_guards] == ["require_scopes('Items.Read',)"]
    assert [d.call.__name__ for d in read.resolved_dependant.dependencies] == ["other_dependency"]
    report = app.state.admin_router.routes[0]
    assert isinstance(report, EntraRoute) and len(report.entra_guards) == 2
    assert report.resolved_dependant.dependencies == []


def test_same_answers_as_depends(
    routed: tuple[str, FastAPI], client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    url, app = routed
    ok = client.get(f"{url}/read", headers=bearer(fake_entra.token(scopes=["Items.Read"])))
    assert ok.status_code == 200 and ok.json() == {"ok": "read"}
    assert app.state.calls == ["/read"]  # the remaining dependency still runs
    assert_refused(client.get(f"{url}/read"), 401, "missing_token")
    assert_refused(client.get(f"{url}/read", headers=bearer("x.y.z")), 401, "malformed_token")
    wrong = client.get(f"{url}/read", headers=bearer(fake_entra.token(scopes=["Other"])))
    assert_refused(wrong, 403, "insufficient_scope")
    assert 'scope="Items.Read"' in wrong.headers["www-authenticate"]
    assert app.state.calls == ["/read"]  # refused before any other dependency ran


def test_guard_refuses_before_the_body_is_validated(
    routed: tuple[str, FastAPI], client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    url, _ = routed
    assert_refused(client.post(f"{url}/write", content=b"not json"), 401, "missing_token")
    writer = bearer(fake_entra.token(scopes=["Items.Write"]))
    assert client.post(f"{url}/write", content=b"not json", headers=writer).status_code == 422
    assert client.post(f"{url}/write", json={"n": 1}, headers=writer).json() == {"n": 1}


def test_router_guards_then_route_guards(
    routed: tuple[str, FastAPI], client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    url, _ = routed
    admin = fake_entra.token(app_only=True, roles=["Admin"])
    assert client.get(f"{url}/admin/report", headers=bearer(admin)).status_code == 200
    no_role = fake_entra.token(app_only=True, roles=["Reader"])
    assert_refused(client.get(f"{url}/admin/report", headers=bearer(no_role)), 403, "missing_role")


def test_parameter_guards_stay_dependencies(
    routed: tuple[str, FastAPI], client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    url, _ = routed
    token = fake_entra.token(object_id="3f1c2b4a-0000-4000-8000-0000000000aa")
    assert client.get(f"{url}/me", headers=bearer(token)).json() == {
        "oid": "3f1c2b4a-0000-4000-8000-0000000000aa"
    }


def test_openapi_still_lists_the_scopes(
    routed: tuple[str, FastAPI], client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    url, _ = routed
    paths = client.get(f"{url}/openapi.json").json()["paths"]
    prefix = f"api://{fake_entra.client_id}/"
    assert paths["/read"]["get"]["security"] == [{"EntraID": [prefix + "Items.Read"]}]
    assert paths["/write"]["post"]["security"] == [{"EntraID": [prefix + "Items.Write"]}]
    assert paths["/admin/report"]["get"]["security"] == [{"EntraID": []}]
    # an included router with ordinary Depends guards lists its scopes too
    assert paths["/plain/audit"]["get"]["security"] == [{"EntraID": [prefix + "Items.Audit"]}]


def test_a_guard_that_admits_from_the_token_is_not_called_and_others_are(
    start_api: ApiFactory,
    entra_settings: EntraSettings,
    client: httpx.Client,
    fake_entra: FakeEntraID,
) -> None:
    """``Guard.admits`` is the fast path; a guard without it (yours) is always asked."""
    called: list[str] = []

    class Counting(Guard):
        def __init__(self, name: str, admits: bool) -> None:
            self.name, self._admits = name, admits

        def admits(self, principal: Principal) -> bool:
            return self._admits

        async def check(self, principal: Principal, connection: HTTPConnection) -> None:
            called.append(self.name)

    class Refusing(Guard):
        async def check(self, principal: Principal, connection: HTTPConnection) -> None:
            raise AuthError("missing_role", "Never")

    app = protected_app(entra_settings)
    app.router.route_class = EntraRoute

    @app.get(
        "/both", dependencies=[Depends(Counting("fast", True)), Depends(Counting("asked", False))]
    )
    async def both() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/refused", dependencies=[Depends(require_principal), Depends(Refusing())])
    async def refused() -> dict[str, str]:
        return {"ok": "never"}

    url = start_api(app=app)
    token = fake_entra.token()
    assert client.get(f"{url}/both", headers=bearer(token)).json() == {"ok": "yes"}
    assert called == ["asked"]
    assert_refused(client.get(f"{url}/both"), 401, "missing_token")  # no caller: asked, refused
    assert_refused(client.get(f"{url}/refused", headers=bearer(token)), 403, "missing_role")
