"""The other guards (tenants, directory roles, token type, guests) and composition, on an
app written the way docs/guards.md shows, served over HTTP."""

from __future__ import annotations

import inspect
import threading
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Security
from starlette.requests import HTTPConnection

from entra_guard import (
    AuthError,
    EntraRoute,
    EntraSettings,
    Guard,
    Principal,
    all_of,
    any_of,
    refuse_guests,
    require_app_only,
    require_auth_context,
    require_client_apps,
    require_delegated,
    require_directory_roles,
    require_groups,
    require_principal,
    require_roles,
    require_scopes,
    require_scopes_or_app_roles,
    require_tenants,
)
from entra_guard._errors import STATUS_BY_CODE
from entra_guard.testing import FakeEntraID

from .conftest import ApiFactory, assert_refused, bearer, protected_app

pytestmark = pytest.mark.in_process

OTHER_TENANT = "0b1f2a3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
THIRD_TENANT = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
GROUP = "a1b2c3d4-0000-4000-8000-000000000001"
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"

GUARD_THREADS: set[int] = set()


class ThreadProbe(Guard):
    """Records the thread a guard runs in (must be the event loop's, never a pool)."""

    async def check(self, principal: Principal, connection: Any) -> None:
        GUARD_THREADS.add(threading.get_ident())


def build_app(settings: EntraSettings) -> FastAPI:
    app = protected_app(settings)

    def route(path: str, *guards: Any) -> None:
        @app.get(path, dependencies=list(guards))
        async def endpoint() -> dict[str, str]:
            return {"path": path}

    route("/tenants", Depends(require_tenants(TID, OTHER_TENANT.upper())))
    route("/wids", Depends(require_directory_roles(GLOBAL_ADMIN)))
    route("/app-only", Depends(require_app_only))
    route("/delegated", Depends(require_delegated))
    route("/no-guests", Depends(refuse_guests))
    route("/and", Security(require_scopes("Items.Read") & require_tenants(TID)))
    route("/or", Depends(require_roles("Admin") | require_scopes("Items.Read")))
    route("/or-groups", Depends(any_of(require_roles("Admin"), require_groups(GROUP))))
    route(
        "/nested",
        Depends(all_of(refuse_guests, any_of(require_scopes("A"), require_scopes("B")))),
    )
    route("/stacked", Depends(require_delegated), Security(require_scopes("Items.Read")))
    route("/thread", Depends(ThreadProbe()))
    route("/groups-claim", Depends(require_groups(GROUP.upper())))

    @app.get("/principal")
    async def whoami(
        principal: Annotated[Principal, Security(require_scopes("Items.Read"))],
    ) -> dict[str, Any]:
        return {"tid": principal.tenant_id, "scopes": sorted(principal.scopes)}

    router = APIRouter(dependencies=[Depends(require_roles("Admin"))])

    @router.get("/router")
    async def in_router() -> dict[str, str]:
        return {"ok": "router"}

    app.include_router(router)
    return app


@pytest.fixture
def multi_api(start_api: ApiFactory, fake_entra: FakeEntraID, fake_entra_url: str) -> str:
    """A multi-tenant API (``organizations``) with one route per guard."""
    settings = fake_entra.settings(fake_entra_url, tenant_id="organizations")
    return start_api(app=build_app(settings))


def status_of(client: httpx.Client, url: str, token: str) -> int:
    return client.get(url, headers=bearer(token)).status_code


def test_require_tenants(multi_api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    url = f"{multi_api}/tenants"
    assert status_of(client, url, fake_entra.token(tenant_id=TID)) == 200
    assert status_of(client, url, fake_entra.token(tenant_id=OTHER_TENANT)) == 200
    response = client.get(url, headers=bearer(fake_entra.token(tenant_id=THIRD_TENANT)))
    assert_refused(response, 403, "tenant_not_allowed")


def test_require_directory_roles(
    multi_api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    url = f"{multi_api}/wids"
    assert status_of(client, url, fake_entra.token(wids=[GLOBAL_ADMIN])) == 200
    other = fake_entra.token(wids=["b79fbf4d-3ef9-4689-8143-76b194e85509"])
    assert_refused(client.get(url, headers=bearer(other)), 403, "missing_role")
    assert_refused(client.get(url, headers=bearer(fake_entra.token())), 403, "missing_role")


def test_token_type_guards(multi_api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    app_token = fake_entra.token(app_only=True)
    user_token = fake_entra.token(scopes=["Items.Read"], roles=["Items.Read.All"])
    assert status_of(client, f"{multi_api}/app-only", app_token) == 200
    assert status_of(client, f"{multi_api}/delegated", user_token) == 200
    response = client.get(f"{multi_api}/app-only", headers=bearer(user_token))
    assert_refused(response, 403, "wrong_token_type")
    response = client.get(f"{multi_api}/delegated", headers=bearer(app_token))
    assert_refused(response, 403, "wrong_token_type")


def test_refuse_guests(multi_api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    url = f"{multi_api}/no-guests"
    assert status_of(client, url, fake_entra.token()) == 200
    response = client.get(url, headers=bearer(fake_entra.token(guest=True)))
    assert_refused(response, 403, "guest_not_allowed")
    # idp different from iss alone makes a guest too
    idp_only = fake_entra.token(idp="https://sts.windows.net/" + OTHER_TENANT + "/")
    assert_refused(client.get(url, headers=bearer(idp_only)), 403, "guest_not_allowed")


def test_new_codes_are_403() -> None:
    assert STATUS_BY_CODE["wrong_token_type"] == 403
    assert STATUS_BY_CODE["guest_not_allowed"] == 403
    assert AuthError("guest_not_allowed", "x").www_authenticate() is None


def test_all_of(multi_api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    url = f"{multi_api}/and"
    assert status_of(client, url, fake_entra.token(scopes=["Items.Read"], tenant_id=TID)) == 200
    wrong_scope = fake_entra.token(scopes=["X"], tenant_id=TID)
    assert_refused(client.get(url, headers=bearer(wrong_scope)), 403, "insufficient_scope")
    wrong_tenant = fake_entra.token(scopes=["Items.Read"], tenant_id=OTHER_TENANT)
    assert_refused(client.get(url, headers=bearer(wrong_tenant)), 403, "tenant_not_allowed")


def test_any_of(multi_api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    url = f"{multi_api}/or"
    assert status_of(client, url, fake_entra.token(app_only=True, roles=["Admin"])) == 200
    assert status_of(client, url, fake_entra.token(scopes=["Items.Read"])) == 200
    response = client.get(url, headers=bearer(fake_entra.token(scopes=["X"])))
    assert_refused(response, 403, "missing_role")  # the first alternative's reason


def test_any_of_skips_graph_when_a_cheaper_guard_passes(
    multi_api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    """No client secret configured: reaching Graph would be a 503."""
    url = f"{multi_api}/or-groups"
    admin_with_overage = fake_entra.token(app_only=True, roles=["Admin"], overage=True)
    assert status_of(client, url, admin_with_overage) == 200
    response = client.get(url, headers=bearer(fake_entra.token(overage=True)))
    assert_refused(response, 503, "groups_unavailable")
    assert "ENTRA_CLIENT_SECRET" not in response.json()["detail"]  # the reason is only logged
    assert status_of(client, url, fake_entra.token(groups=[GROUP])) == 200
    response = client.get(url, headers=bearer(fake_entra.token(groups=["other"])))
    assert_refused(response, 403, "missing_role")


def test_nested_composition(multi_api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    url = f"{multi_api}/nested"
    assert status_of(client, url, fake_entra.token(scopes=["B"])) == 200
    response = client.get(url, headers=bearer(fake_entra.token(scopes=["B"], guest=True)))
    assert_refused(response, 403, "guest_not_allowed")
    response = client.get(url, headers=bearer(fake_entra.token(scopes=["C"])))
    assert_refused(response, 403, "insufficient_scope")


def test_stacked_guards_all_apply(
    multi_api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    url = f"{multi_api}/stacked"
    assert status_of(client, url, fake_entra.token(scopes=["Items.Read"])) == 200
    response = client.get(url, headers=bearer(fake_entra.token(app_only=True)))
    assert_refused(response, 403, "wrong_token_type")


def test_security_returns_the_principal(
    multi_api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    response = client.get(
        f"{multi_api}/principal", headers=bearer(fake_entra.token(scopes=["Items.Read", "B"]))
    )
    assert response.json() == {"tid": TID, "scopes": ["B", "Items.Read"]}
    assert_refused(client.get(f"{multi_api}/principal"), 401, "missing_token")


def test_router_level_guard(multi_api: str, client: httpx.Client, fake_entra: FakeEntraID) -> None:
    url = f"{multi_api}/router"
    assert status_of(client, url, fake_entra.token(roles=["Admin"])) == 200
    assert_refused(client.get(url, headers=bearer(fake_entra.token())), 403, "missing_role")


def test_groups_from_claim_compare_ids_case_insensitively(
    multi_api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    url = f"{multi_api}/groups-claim"
    assert status_of(client, url, fake_entra.token(groups=["x", GROUP])) == 200
    response = client.get(url, headers=bearer(fake_entra.token(groups=[])))
    assert_refused(response, 403, "missing_group")


def test_guards_run_on_the_event_loop(
    multi_api: str, client: httpx.Client, fake_entra: FakeEntraID
) -> None:
    GUARD_THREADS.clear()
    for _ in range(5):
        assert status_of(client, f"{multi_api}/thread", fake_entra.token()) == 200
    assert len(GUARD_THREADS) == 1  # a thread pool would spread them over several threads


@pytest.mark.parametrize(
    "guard",
    [
        require_principal,
        require_scopes("a"),
        require_roles("r"),
        require_scopes_or_app_roles(scopes="a", app_roles="r"),
        require_groups(GROUP),
        require_tenants(TID),
        require_directory_roles(GLOBAL_ADMIN),
        require_app_only,
        require_delegated,
        refuse_guests,
        require_scopes("a") & require_roles("b"),
        require_scopes("a") | require_roles("b"),
    ],
)
def test_guards_are_async_single_parameter_dependencies(guard: Guard) -> None:
    assert inspect.iscoroutinefunction(type(guard).__call__)
    assert list(inspect.signature(guard).parameters) == ["connection"]


def test_guard_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        require_scopes()
    with pytest.raises(ValueError):
        require_groups("")
    with pytest.raises(ValueError):
        require_scopes_or_app_roles()
    with pytest.raises(TypeError):
        all_of(require_scopes("a"), "b")  # type: ignore[arg-type]
    # one string is one name, not its letters; a list works like varargs
    assert require_scopes_or_app_roles(scopes="Items.Read").scope_alternatives() == [
        frozenset({"Items.Read"})
    ]
    assert require_scopes(["a", "b"]).scope_alternatives() == [  # type: ignore[arg-type]
        frozenset({"a"}),
        frozenset({"b"}),
    ]


GROUP_A, GROUP_B = "aaaaaaaa-0000-0000-0000-00000000000a", "bbbbbbbb-0000-0000-0000-00000000000b"
OTHER_TENANT = "11111111-2222-3333-4444-555555555555"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"


def _callers(idp: FakeEntraID) -> list[Principal]:
    """Users and apps with and without each thing a guard asks for."""
    variants: list[dict[str, Any]] = [
        {},
        {"scopes": ["Items.Read"]},
        {"scopes": ["Other"]},
        {"app_only": True, "roles": ["Admin"]},
        {"app_only": True, "roles": ["Reader"]},
        {"roles": ["Admin"], "scopes": ["Items.Read"]},
        {"groups": [GROUP_A.upper()]},
        {"groups": [GROUP_B], "overage": True},
        {"tenant_id": OTHER_TENANT, "scopes": ["Items.Read"]},
        {"wids": [GLOBAL_ADMIN.upper()]},
        {"guest": True, "scopes": ["Items.Read"]},
        {"app_id": "CCCCCCCC-0000-0000-0000-00000000000C"},
    ]
    return [Principal.from_claims(idp.claims(**v), "2.0") for v in variants]


class _Throttled(Guard):
    """A guard of your own that refuses with something other than ``AuthError``."""

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        raise HTTPException(429, "slow down")


def _guards(idp: FakeEntraID) -> list[Guard]:
    scopes, admin = require_scopes("Items.Read"), require_roles("Admin")
    return [
        require_principal,
        scopes,
        admin,
        require_scopes_or_app_roles(scopes=["Items.Read"], app_roles=["Admin"]),
        require_scopes_or_app_roles(app_roles=["Admin"]),
        require_tenants(idp.tenant_id),
        require_directory_roles(GLOBAL_ADMIN),
        require_groups(GROUP_A),
        require_app_only,
        require_delegated,
        refuse_guests,
        require_client_apps("cccccccc-0000-0000-0000-00000000000c"),
        scopes & admin,
        scopes | admin,
        all_of(scopes, any_of(admin, refuse_guests)),
        require_auth_context("c1"),
        _Throttled() | admin,
        admin | _Throttled(),
        scopes | require_groups(GROUP_A) | admin,
    ]


async def test_a_guard_admits_only_callers_its_check_passes(fake_entra: FakeEntraID) -> None:
    """``EntraRoute`` skips the call of a guard that admits the caller: ``admits`` must
    never say yes where ``check`` would not pass (refuse, raise anything else), and where
    a guard says the token alone decides, a no from ``admits`` is a refusal from
    ``check`` (what lets ``any_of`` skip it)."""
    scope = {"type": "http", "headers": [], "entra_guard.auth": None}
    connection = HTTPConnection(scope)
    asked = decided = 0
    for guard in _guards(fake_entra):
        for principal in _callers(fake_entra):
            if guard.admits(principal):
                asked += 1
                await guard.check(principal, connection)  # must not raise anything
            elif guard._token_decides:
                decided += 1
                with pytest.raises(AuthError):
                    await guard.check(principal, connection)
    assert asked > 20 and decided > 20  # the fast path is taken, not just never wrong
    groups, throttled_first = require_groups(GROUP_A), _guards(fake_entra)[-3]
    assert not groups._token_decides and not throttled_first._token_decides
    assert require_auth_context("c1")._token_decides is False


def test_a_subclass_that_changes_check_is_always_asked() -> None:
    """Its parent's ``admits`` no longer speaks for it."""

    class OnlyOnWeekdays(type(require_client_apps("x"))):  # type: ignore[misc]
        async def check(self, principal: Principal, connection: HTTPConnection) -> None:
            raise AuthError("client_not_allowed", "Not today")

    guard = OnlyOnWeekdays(("cccccccc-0000-0000-0000-00000000000c",))
    caller = Principal.from_claims(
        FakeEntraID().claims(app_id="cccccccc-0000-0000-0000-00000000000c"), "2.0"
    )
    assert require_client_apps("cccccccc-0000-0000-0000-00000000000c").admits(caller)
    assert not guard.admits(caller) and not guard._token_decides


def test_an_alternative_of_your_own_is_asked_in_its_turn(
    start_api: ApiFactory,
    entra_settings: EntraSettings,
    client: httpx.Client,
    fake_entra: FakeEntraID,
) -> None:
    """``any_of`` tries alternatives in order: one that raises something other than
    ``AuthError`` before an alternative the caller satisfies is not skipped."""
    app = protected_app(entra_settings)
    app.router.route_class = EntraRoute

    @app.get("/first", dependencies=[Depends(_Throttled() | require_roles("Admin"))])
    async def first() -> dict[str, str]:
        return {"ok": "first"}

    @app.get("/second", dependencies=[Depends(require_roles("Admin") | _Throttled())])
    async def second() -> dict[str, str]:
        return {"ok": "second"}

    url = start_api(app=app)
    admin = bearer(fake_entra.token(roles=["Admin"]))
    assert client.get(f"{url}/first", headers=admin).status_code == 429
    assert client.get(f"{url}/second", headers=admin).json() == {"ok": "second"}
