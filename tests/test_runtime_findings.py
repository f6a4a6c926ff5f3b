"""Runtime findings of the hostile review (issue 9) and the foundation clean-up (issue 8).

In process: the fake Entra ID is reached through ``httpx.ASGITransport`` and
the apps are called as ASGI (HTTP through httpx, WebSockets through
Starlette's ``TestClient``); no sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from starlette.authentication import requires

from entra_guard import (
    AuthError,
    EntraAuth,
    EntraAuthMiddleware,
    EntraRoute,
    EntraSettings,
    Guard,
    Principal,
    require_directory_roles,
    require_principal,
    require_roles,
    require_scopes,
    require_tenants,
    setup_openapi,
)
from entra_guard._graph import GraphClient
from entra_guard._metadata import MetadataCache
from entra_guard.testing import FakeEntraID, FakeGraph

from .conftest import assert_refused, bearer

IDP_URL = "http://127.0.0.1:9"
ADMIN = require_roles("Admin")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> FakeEntraID:
    return FakeEntraID()


def idp_client(idp: FakeEntraID) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=idp.app))


def guarded_app(idp: FakeEntraID, **middleware: Any) -> FastAPI:
    """A small app trusting ``idp`` in process: guarded HTTP and WebSocket routes."""
    auth = EntraAuth(idp.settings(IDP_URL), http_client=idp_client(idp))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await auth.aclose()
        await auth.http.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(EntraAuthMiddleware, auth=auth, **middleware)
    app.state.auth = auth

    @app.get("/items/{name}")
    async def item(name: str, user: Annotated[Principal, Depends(ADMIN)]) -> dict[str, str]:
        return {"name": name}

    @app.websocket("/ws/{name}")
    async def feed(websocket: WebSocket, user: Annotated[Principal, Depends(ADMIN)]) -> None:
        await websocket.accept()
        await websocket.send_json({"ok": True})
        await websocket.close()

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        return {"user": request.user.is_authenticated, "auth": sorted(request.auth.scopes)}

    return app


async def ws_close_code(app: FastAPI, path: str, token: str | None = None) -> int | None:
    """Run one WebSocket handshake as ASGI; the close code the app sent (None: accepted)."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
        "scheme": "ws",
        "subprotocols": [],
    }
    incoming: list[dict[str, Any]] = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    closes = [m for m in sent if m["type"] == "websocket.close"]
    return closes[0]["code"] if closes else None


async def call(app: FastAPI, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, **kw)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        return await client.get(path, headers=bearer(token) if token else {})


# -- issue 9 finding 3: every log line through one sanitiser --------------------------------

HOSTILE_SEGMENTS = ["a%0aforged=1", "b%0d%0aX", "c%e2%80%a8d", "e%c2%85f", "g%1b[31mh", "i%00j"]


def _control_chars(text: str) -> list[str]:
    return [c for c in text if not c.isprintable()]


async def test_refusal_log_lines_carry_no_control_characters(
    idp: FakeEntraID, caplog: pytest.LogCaptureFixture
) -> None:
    app = guarded_app(idp)
    user = idp.token(scopes=["Items.Read"])  # valid, but not Admin: a guard refusal
    caplog.set_level(logging.DEBUG, logger="entra_guard")
    for segment in HOSTILE_SEGMENTS:
        for token in (None, user, "not-a-token"):
            assert (await call(app, f"/items/{segment}", token)).status_code in (401, 403)
            assert await ws_close_code(app, f"/ws/{segment}", token) == 1008
    for record in caplog.records:
        message = record.getMessage()
        assert not _control_chars(message), repr(message)
        for name, value in vars(record).items():
            if name.startswith("entra_"):
                assert not _control_chars(str(value)), (name, value)
    refusals = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(refusals) == 2 * 3 * len(HOSTILE_SEGMENTS)
    # One line shape for both, from one function (HTTP and WebSocket alike).
    assert {r.getMessage().split(":")[0] for r in refusals} == {"request rejected"}


# -- issue 9 finding 8: exclude_paths by whole segments -------------------------------------


async def test_exclude_paths_match_whole_path_segments(idp: FakeEntraID) -> None:
    app = guarded_app(idp, exclude_paths=["/public", "/static/"])

    @app.get("/public")
    @app.get("/public/{rest:path}")
    @app.get("/publications")
    @app.get("/publicx")
    @app.get("/static")
    @app.get("/static/{rest:path}")
    @app.get("/statics")
    async def anything(request: Request) -> dict[str, bool]:
        return {"user": request.user.is_authenticated}

    token = idp.token()
    excluded = ["/public", "/public/", "/public/x/y", "/static/a.css", "/static"]
    included = ["/publications", "/publicx", "/statics"]
    for path in excluded:
        assert (await call(app, path, token)).json() == {"user": False}, path
    for path in included:
        assert (await call(app, path, token)).json() == {"user": True}, path


# -- issue 9 finding 6: request.auth keeps scopes and app roles apart -----------------------


async def test_request_auth_prefixes_scopes_and_app_roles(idp: FakeEntraID) -> None:
    app = guarded_app(idp)

    @app.get("/graph-like")
    @requires("User.Read.All")
    async def bare(request: Request) -> dict[str, str]:
        return {"ok": "bare"}

    @app.get("/as-role")
    @requires("role:User.Read.All")
    async def as_role(request: Request) -> dict[str, str]:
        return {"ok": "role"}

    @app.get("/as-scope")
    @requires("scp:User.Read.All")
    async def as_scope(request: Request) -> dict[str, str]:
        return {"ok": "scope"}

    delegated = idp.token(scopes=["User.Read.All"])
    daemon = idp.token(app_only=True, roles=["User.Read.All"])
    assert (await call(app, "/whoami", delegated)).json()["auth"] == ["scp:User.Read.All"]
    assert (await call(app, "/whoami", daemon)).json()["auth"] == ["role:User.Read.All"]
    # A delegated scope named like an app role no longer passes a role check, nor vice versa.
    assert (await call(app, "/graph-like", delegated)).status_code == 403
    assert (await call(app, "/as-role", delegated)).status_code == 403
    assert (await call(app, "/as-scope", delegated)).status_code == 200
    assert (await call(app, "/as-role", daemon)).status_code == 200
    assert (await call(app, "/as-scope", daemon)).status_code == 403


# -- issue 9 finding 5: key rollover budget ------------------------------------------------


async def _kid_lookup(cache: MetadataCache, kid: str) -> bool:
    try:
        await cache.signing_key(kid, None)
    except AuthError as exc:
        assert exc.code == "unknown_key"
        return False
    return True


async def test_one_invented_kid_delays_a_rollover_by_at_most_30_seconds(
    idp: FakeEntraID,
) -> None:
    clock = FakeClock()
    async with idp_client(idp) as http:
        cache = MetadataCache(idp.settings(IDP_URL), http, clock=clock)
        await cache.get()  # the initial load does not count
        idp.reset_hits()
        assert not await _kid_lookup(cache, "invented")  # first refresh: immediate
        assert idp.hits_matching("keys") == 1
        new = idp.rotate_keys()  # emergency rollover, right after the attacker's request
        clock.now += 29
        assert not await _kid_lookup(cache, new.kid)  # still cooling down
        assert idp.hits_matching("keys") == 1
        clock.now += 1  # 30 s after the attacker's refresh
        assert await _kid_lookup(cache, new.kid)
        assert idp.hits_matching("keys") == 2


async def test_a_random_kid_storm_costs_at_most_two_jwks_fetches_a_minute(
    idp: FakeEntraID,
) -> None:
    clock = FakeClock()
    async with idp_client(idp) as http:
        cache = MetadataCache(idp.settings(IDP_URL), http, clock=clock)
        await cache.get()
        idp.reset_hits()
        fetch_times: list[float] = []
        for _ in range(1200):  # 10 minutes, 2 random kids a second, some concurrent
            before = idp.hits_matching("keys")
            results = await asyncio.gather(
                *(_kid_lookup(cache, uuid.uuid4().hex) for _ in range(2))
            )
            assert results == [False, False]
            fetch_times += [clock.now] * (idp.hits_matching("keys") - before)
            clock.now += 0.5
        assert fetch_times[0] == 1000.0  # the first one is immediate
        for start in fetch_times:
            assert sum(1 for t in fetch_times if start <= t < start + 60) <= 2
        assert len(fetch_times) >= 19  # and it does keep refreshing (every 30 s)


async def test_removed_key_drops_out_of_the_token_cache_at_the_next_refresh(
    idp: FakeEntraID,
) -> None:
    settings = idp.settings(IDP_URL, min_refresh_interval=0.2)
    async with idp_client(idp) as http, EntraAuth(settings, http_client=http) as auth:
        old = idp.token()
        assert (await auth.authenticate(old)).object_id  # cached now
        with pytest.raises(AuthError):  # an attacker spends the first refresh
            await auth.metadata.signing_key("invented", None)
        idp.rotate_keys()  # the old key is removed
        assert (await auth.authenticate(old)).object_id  # not refreshed yet: still cached
        await asyncio.sleep(0.25)
        assert (await auth.authenticate(idp.token())).object_id  # new kid: refresh
        with pytest.raises(AuthError) as refused:
            await auth.authenticate(old)
        assert refused.value.code == "unknown_key"


def test_default_unknown_kid_cooldown_is_30_seconds() -> None:
    settings = EntraSettings(
        tenant_id="11111111-1111-1111-1111-111111111111",
        client_id="22222222-2222-2222-2222-222222222222",
    )
    assert settings.min_refresh_interval == 30


# -- issue 9 finding 4: the dev issuer only answers loopback --------------------------------


def dev_settings() -> EntraSettings:
    return EntraSettings(
        tenant_id="11111111-1111-1111-1111-111111111111",
        client_id="22222222-2222-2222-2222-222222222222",
    )


async def test_dev_issuer_refuses_non_loopback_clients() -> None:
    from sample_app.app import create_app

    app = create_app(dev_settings(), dev_mode=True)
    async with app.router.lifespan_context(app):
        for client, server in [
            (("203.0.113.7", 5555), ("127.0.0.1", 8000)),
            (("10.0.0.2", 5555), ("10.0.0.1", 8000)),
            (("127.0.0.1", 5555), ("10.0.0.1", 8000)),  # reached on a non-loopback address
        ]:
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(
                transport=transport, base_url=f"http://{server[0]}:{server[1]}"
            ) as remote:
                refused = await remote.post("/_dev/token", json={})
            assert refused.status_code == 403, (client, server)
            assert "loopback" in refused.json()["detail"]
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as local:
            assert (await local.post("/_dev/token", json={})).status_code == 200


@pytest.mark.parametrize(
    ("argv", "env", "host"),
    [
        (["uvicorn", "sample_app.main:app"], {}, "127.0.0.1"),
        (["uvicorn", "sample_app.main:app", "--host", "0.0.0.0"], {}, "0.0.0.0"),
        (["uvicorn", "x:app", "--host=::"], {}, "::"),
        (["uvicorn", "x:app"], {"UVICORN_HOST": "192.0.2.1"}, "192.0.2.1"),
    ],
)
def test_cli_bind_host(argv: list[str], env: dict[str, str], host: str) -> None:
    from sample_app.dev import cli_bind_host

    assert cli_bind_host(argv, env) == host


def test_dev_mode_refuses_to_start_on_a_non_loopback_bind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sample_app.app import create_app

    monkeypatch.setattr("sys.argv", ["uvicorn", "sample_app.main:app", "--host", "0.0.0.0"])
    with pytest.raises(RuntimeError, match="loopback"):
        create_app(dev_settings(), dev_mode=True)
    monkeypatch.setattr("sys.argv", ["uvicorn", "sample_app.main:app", "--host", "::1"])
    create_app(dev_settings(), dev_mode=True)


# -- issue 8: guards -------------------------------------------------------------------------


def test_guid_claims_are_lower_cased_once_in_principal(idp: FakeEntraID) -> None:
    tid = "AAAAAAAA-1111-2222-3333-BBBBBBBBBBBB"
    claims = idp.claims(
        tenant_id=tid,
        object_id="CCCCCCCC-1111-2222-3333-DDDDDDDDDDDD",
        groups=["EEEEEEEE-1111-2222-3333-FFFFFFFFFFFF"],
        wids=["62E90394-69F5-4237-9190-012177145E10"],
    )
    principal = Principal.from_claims(claims, "2.0")
    assert principal.tenant_id == tid.lower()
    assert principal.object_id == "cccccccc-1111-2222-3333-dddddddddddd"
    assert principal.groups == {"eeeeeeee-1111-2222-3333-ffffffffffff"}
    assert principal.wids == {"62e90394-69f5-4237-9190-012177145e10"}


async def test_membership_guards_share_one_implementation(idp: FakeEntraID) -> None:
    roles = require_roles("Admin")
    tenants = require_tenants(idp.tenant_id.upper())
    wids = require_directory_roles("62E90394-69F5-4237-9190-012177145E10")
    assert type(roles) is type(tenants) is type(wids)
    principal = Principal.from_claims(
        idp.claims(roles=["Admin"], wids=["62e90394-69f5-4237-9190-012177145e10"]), "2.0"
    )
    for guard in (roles, tenants, wids):
        await guard.check(principal, None)  # type: ignore[arg-type]
    nobody = Principal.from_claims(idp.claims(tenant_id=str(uuid.uuid4())), "2.0")
    for guard, code in ((roles, "missing_role"), (tenants, "tenant_not_allowed")):
        with pytest.raises(AuthError) as refused:
            await guard.check(nobody, None)  # type: ignore[arg-type]
        assert refused.value.code == code
    assert repr(roles) == "require_roles('Admin',)"


async def test_each_refusal_is_a_fresh_error(idp: FakeEntraID) -> None:
    app = guarded_app(idp)
    errors: list[AuthError] = []

    @app.get("/capture")
    async def capture(request: Request) -> dict[str, str]:
        errors.append(request.scope["entra_guard.error"])
        return {}

    for _ in range(2):
        await call(app, "/capture")
    assert errors[0] is not errors[1]
    assert errors[0].code == errors[1].code == "missing_token"


async def test_guard_check_receives_the_connection(idp: FakeEntraID) -> None:
    seen: list[Any] = []

    class PathGuard(Guard):
        async def check(self, principal: Principal, connection: Any) -> None:
            seen.append(connection)
            if connection.url.path.endswith("/no"):
                raise AuthError("missing_role", "not here")

    app = guarded_app(idp)
    guard = PathGuard()

    @app.get("/p/{x}", dependencies=[Depends(guard)])
    async def p(x: str) -> dict[str, str]:
        return {"x": x}

    token = idp.token()
    assert (await call(app, "/p/yes", token)).status_code == 200
    assert_refused(await call(app, "/p/no", token), 403, "missing_role")
    assert seen and all(hasattr(c, "url") and hasattr(c, "scope") for c in seen)


# -- issue 8: EntraRoute keeps its OpenAPI security -----------------------------------------


def _security(app: FastAPI, path: str) -> Any:
    return app.openapi()["paths"][path]["get"].get("security")


@pytest.mark.parametrize("route_class", [None, EntraRoute])
@pytest.mark.parametrize("with_setup", [False, True])
def test_guarded_routes_keep_openapi_security(
    idp: FakeEntraID, route_class: type[EntraRoute] | None, with_setup: bool
) -> None:
    app = FastAPI()
    if route_class is not None:
        app.router.route_class = route_class
    router = APIRouter(route_class=route_class or EntraRoute)
    read = require_scopes("Items.Read")

    @app.get("/items", dependencies=[Depends(read)])
    async def items() -> dict[str, str]:
        return {}

    @app.get("/me", dependencies=[Depends(require_principal)])
    async def me() -> dict[str, str]:
        return {}

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    @router.get("/nested", dependencies=[Depends(read)])
    async def nested() -> dict[str, str]:
        return {}

    app.include_router(router, prefix="/r")
    if with_setup:
        setup_openapi(app, idp.settings(IDP_URL))
    prefix = f"api://{idp.client_id}/" if with_setup else ""
    items_scopes = [f"{prefix}Items.Read"] if with_setup else []
    assert _security(app, "/items") == [{"EntraID": items_scopes}]
    assert _security(app, "/r/nested") == [{"EntraID": items_scopes}]
    assert _security(app, "/me") == [{"EntraID": []}]
    assert _security(app, "/open") is None


async def test_entra_route_runs_each_guard_once(idp: FakeEntraID) -> None:
    calls: list[str] = []

    class Counting(Guard):
        async def check(self, principal: Principal, connection: Any) -> None:
            calls.append("x")

    app = guarded_app(idp)
    app.router.route_class = EntraRoute
    router = APIRouter(route_class=EntraRoute)

    @app.get("/once", dependencies=[Depends(Counting())])
    async def once() -> dict[str, str]:
        return {}

    @router.get("/nested", dependencies=[Depends(Counting())])
    async def nested() -> dict[str, str]:
        return {}

    app.include_router(router, prefix="/r")
    token = idp.token()
    assert (await call(app, "/once", token)).status_code == 200
    assert calls == ["x"]
    assert (await call(app, "/r/nested", token)).status_code == 200
    assert calls == ["x", "x"]
    assert (await call(app, "/once")).status_code == 401


# -- issue 8: Graph failures, logged once with a cause ---------------------------------------


def graph_client(idp: FakeEntraID, **settings: Any) -> tuple[GraphClient, FakeGraph]:
    """A GraphClient whose Entra ID and Graph are both fakes, in process."""
    graph = FakeGraph(idp)
    idp.confidential_clients[idp.client_id] = "s3cret"

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        target = graph.app if scope.get("path", "").startswith("/v1.0/") else idp.app
        await target(scope, receive, send)

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=dispatch))
    values = {"graph_url": IDP_URL, "client_secret": "s3cret", **settings}
    return GraphClient(idp.settings(IDP_URL, **values), http, budget=2), graph


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("refused", "refused"),
        ("down", "http_error"),
        ("unconfigured", "not_configured"),
    ],
)
async def test_graph_failures_are_logged_once_with_their_cause(
    idp: FakeEntraID, caplog: pytest.LogCaptureFixture, fault: str, cause: str
) -> None:
    client, graph = graph_client(
        idp, **({"client_secret": None} if fault == "unconfigured" else {})
    )
    if fault == "refused":
        graph.fail(403)
    elif fault == "down":
        graph.fail(404)
    principal = Principal.from_claims(idp.claims(overage=True), "2.0")
    caplog.set_level(logging.INFO, logger="entra_guard")
    outcomes = await asyncio.gather(
        *(client.group_ids(principal) for _ in range(20)), return_exceptions=True
    )
    await client.aclose()
    await client.http.aclose()
    assert all(isinstance(o, AuthError) and o.code == "groups_unavailable" for o in outcomes)
    assert len({id(o) for o in outcomes}) == 20  # a fresh error per waiter
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    expected = 20 if fault == "unconfigured" else 1  # no shared look-up to log once for
    assert len(lines) == expected, lines
    assert all(f"cause={cause} " in line for line in lines), lines
    assert principal.object_id in lines[0]


def test_graph_dead_code_is_gone(idp: FakeEntraID) -> None:
    assert not hasattr(GraphClient, "forget")
    graph = FakeGraph(idp)
    # Only the delegated /me/getMemberObjects (groups via OBO) remains; the app-permission
    # variant per object id was never called.
    paths = [getattr(r, "path", "") for r in graph.app.routes]
    assert [p for p in paths if "getMemberObjects" in p] == ["/v1.0/me/getMemberObjects"]


async def test_metadata_failure_log_lines_carry_no_control_characters(
    idp: FakeEntraID, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile discovery document (a jwks_uri with U+2028, NEL) cannot forge a log line."""
    forged = "http://127.0.0.1:9/keys\u2028request rejected: code=none\x85"

    async def hostile(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "openid-configuration" in scope["path"]:
            body = json.dumps({"issuer": "x", "jwks_uri": forged}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await idp.app(scope, receive, send)

    caplog.set_level(logging.DEBUG, logger="entra_guard")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hostile)) as http:
        cache = MetadataCache(idp.settings(IDP_URL), http)
        with pytest.raises(AuthError):
            await cache.get()
    assert any("metadata fetch failed" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert not _control_chars(record.getMessage()), repr(record.getMessage())


def test_auth_scopes_are_built_once_per_principal(idp: FakeEntraID) -> None:
    """``request.auth`` names come from the cached Principal, not from work per request."""
    principal = Principal.from_claims(idp.claims(scopes=["B", "A"], roles=["R"]), "2.0")
    assert principal.auth_scopes == ("role:R", "scp:A", "scp:B")
    assert "auth_scopes" not in repr(principal)
