"""``require_auth_context`` (docs/step-up.md): every path over HTTP
in process (httpx.ASGITransport, the fake Entra ID as EntraAuth's transport), the claims
challenge read with a strict RFC 7235 parser, names, start-up errors, WebSockets, the
sample app in dev mode and the example client."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import string
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Security, WebSocket

from entra_guard import (
    EntraAuth,
    EntraAuthMiddleware,
    EntraSettings,
    Guard,
    Principal,
    require_auth_context,
    require_roles,
    require_scopes,
    setup_openapi,
)
from entra_guard._step_up import claims_request
from entra_guard.testing import FakeEntraID
from sample_app.app import create_app

from .conftest import assert_refused, bearer

ROOT = Path(__file__).resolve().parent.parent
#: Nothing listens there: EntraAuth reaches the fake through an in-process transport.
IDP_URL = "http://127.0.0.1"
API_URL = "http://api.test"
EXACT_CLAIMS = b'{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'

# -- a strict RFC 7235 WWW-Authenticate parser ----------------------------------------------------

TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
TOKEN68 = frozenset("-._~+/" + string.ascii_letters + string.digits)
Challenge = tuple[str, str | None, dict[str, str]]


class ChallengeSyntaxError(AssertionError):
    pass


def parse_challenges(header: str) -> list[Challenge]:
    """``1#challenge``; ``challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]``;
    ``auth-param = token BWS "=" BWS ( token / quoted-string )``, quoted-string with
    quoted-pairs. Returns ``(scheme, token68, params)``; params names lower-cased and
    unique per challenge (RFC 7235 §2.1). Anything else raises ``ChallengeSyntaxError``."""
    s, n = header, len(header)

    def fail(i: int, why: str) -> ChallengeSyntaxError:
        return ChallengeSyntaxError(f"{why} at {i}: {s!r}")

    def ows(i: int) -> int:
        while i < n and s[i] in " \t":
            i += 1
        return i

    def token(i: int) -> tuple[str, int]:
        j = i
        while j < n and s[j] in TCHAR:
            j += 1
        if j == i:
            raise fail(i, "expected a token")
        return s[i:j], j

    def quoted(i: int) -> tuple[str, int]:
        if i >= n or s[i] != '"':
            raise fail(i, "expected a quoted-string")
        out, i = [], i + 1
        while True:
            if i >= n:
                raise fail(i, "unterminated quoted-string")
            c = s[i]
            if c == '"':
                return "".join(out), i + 1
            if c == "\\":
                if i + 1 >= n or not (s[i + 1] in "\t " or 0x21 <= ord(s[i + 1]) <= 0x7E):
                    raise fail(i, "bad quoted-pair")
                out.append(s[i + 1])
                i += 2
                continue
            if not (
                c in "\t " or ord(c) == 0x21 or 0x23 <= ord(c) <= 0x5B or 0x5D <= ord(c) <= 0x7E
            ):
                raise fail(i, f"character {c!r} not allowed in a quoted-string")
            out.append(c)
            i += 1

    challenges: list[Challenge] = []
    i = ows(0)
    while True:
        scheme, i = token(i)
        token68: str | None = None
        params: dict[str, str] = {}
        if i < n and s[i] == " ":
            j = i
            while j < n and s[j] == " ":
                j += 1
            k = j
            while k < n and s[k] in TOKEN68:
                k += 1
            if k > j:
                while k < n and s[k] == "=":
                    k += 1
                if ows(k) == n or s[ows(k)] == ",":
                    token68, i = s[j:k], k
            if token68 is None:
                i = j
                while True:
                    name, i = token(i)
                    i = ows(i)
                    if i >= n or s[i] != "=":
                        raise fail(i, "expected '='")
                    i = ows(i + 1)
                    value, i = quoted(i) if i < n and s[i] == '"' else token(i)
                    if name.lower() in params:
                        raise fail(i, f"parameter {name!r} twice")
                    params[name.lower()] = value
                    m = ows(i)
                    if m == n or s[m] != ",":
                        break
                    k = ows(m + 1)
                    _, after = token(k)
                    if ows(after) < n and s[ows(after)] == "=":
                        i = k  # another auth-param of this challenge
                        continue
                    break  # the next challenge
        challenges.append((scheme, token68, params))
        i = ows(i)
        if i == n:
            return challenges
        if s[i] != ",":
            raise fail(i, "expected ',' between challenges")
        i = ows(i + 1)


def bearer_params(response: httpx.Response) -> dict[str, str]:
    """The one ``Bearer`` challenge of a response, strictly parsed."""
    values = response.headers.get_list("www-authenticate")
    assert len(values) == 1, values
    challenges = parse_challenges(values[0])
    assert len(challenges) == 1 and challenges[0][0] == "Bearer" and challenges[0][1] is None
    return challenges[0][2]


def test_the_parser_is_strict() -> None:
    assert parse_challenges('Bearer realm="", error="x"') == [
        ("Bearer", None, {"realm": "", "error": "x"})
    ]
    assert parse_challenges("Bearer") == [("Bearer", None, {})]
    assert parse_challenges('Basic abc==, Bearer a="b\\"c"') == [
        ("Basic", "abc==", {}),
        ("Bearer", None, {"a": 'b"c'}),
    ]
    for bad in (
        'Bearer realm="',
        'Bearer realm="a"b"',
        'Bearer a="1", a="2"',
        'Bearer a="x\r\ny"',
        "Bearer a=b c",
        'Bearer ,a="1"',
        'Bearer a="1",',
        'Bearer a="\\\x01"',
    ):
        with pytest.raises(ChallengeSyntaxError):
            parse_challenges(bad)


# -- an API in process ----------------------------------------------------------------------------


class InProcessApi:
    """A FastAPI app behind EntraAuthMiddleware whose EntraAuth reaches ``idp`` in process."""

    def __init__(self, idp: FakeEntraID, **settings: Any) -> None:
        self.idp = idp
        self.idp_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=idp.app))
        self.settings = idp.settings(IDP_URL, **settings)
        self.auth = EntraAuth(self.settings, http_client=self.idp_http)
        self.app = FastAPI()
        self.app.add_middleware(EntraAuthMiddleware, auth=self.auth)

    def client(self, **transport: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, **transport), base_url=API_URL
        )

    def route(self, path: str, *guards: Guard, method: str = "GET") -> None:
        async def endpoint() -> dict[str, str]:
            return {"path": path}

        self.app.add_api_route(
            path, endpoint, methods=[method], dependencies=[Security(g) for g in guards]
        )

    async def aclose(self) -> None:
        await self.auth.aclose()
        await self.idp_http.aclose()


ApiMaker = Callable[..., InProcessApi]


@pytest.fixture(scope="module")
def idp() -> FakeEntraID:
    return FakeEntraID()


@pytest.fixture
async def make_api(idp: FakeEntraID) -> AsyncIterator[ApiMaker]:
    made: list[InProcessApi] = []

    def make(**settings: Any) -> InProcessApi:
        api = InProcessApi(idp, **settings)
        made.append(api)
        return api

    yield make
    for api in made:
        await api.aclose()


CONTEXTS = {"approve-payment": "c1", "delete-tenant": "c7"}


@pytest.fixture
def step_up_api(make_api: ApiMaker) -> InProcessApi:
    api = make_api(auth_contexts=CONTEXTS)
    api.route("/by-id", require_auth_context("c1"))
    api.route("/by-name", require_auth_context("approve-payment"), method="POST")
    api.route("/either", require_auth_context("delete-tenant", "c1"))
    api.route("/scoped", require_scopes("Items.Read") & require_auth_context("c1"))
    api.route("/or-admin", require_auth_context("c1") | require_roles("Admin"))
    return api


async def call(
    api: InProcessApi, path: str, token: str | None, method: str = "GET"
) -> httpx.Response:
    async with api.client() as client:
        headers = bearer(token) if token is not None else {}
        return await client.request(method, path, headers=headers)


# -- passes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "acrs"),
    [
        ("/by-id", "GET", ["c1"]),
        ("/by-name", "POST", ["c1"]),
        ("/by-name", "POST", ["c3", "c1"]),
        ("/either", "GET", ["c7"]),
        ("/either", "GET", ["c1"]),
        ("/scoped", "GET", ["c1"]),
        ("/or-admin", "GET", ["c1"]),
    ],
)
async def test_acrs_holding_the_context_passes(
    step_up_api: InProcessApi, idp: FakeEntraID, path: str, method: str, acrs: list[str]
) -> None:
    token = idp.token(scopes=["Items.Read"], acrs=acrs, client_capabilities=["cp1"])
    response = await call(step_up_api, path, token, method)
    assert response.status_code == 200, response.text


async def test_v1_tokens_and_tokens_without_xms_cc_pass_too(
    step_up_api: InProcessApi, idp: FakeEntraID
) -> None:
    token = idp.token(version="1.0", scopes=["Items.Read"], acrs=["c1"])
    assert (await call(step_up_api, "/by-id", token)).status_code == 200


async def test_or_composition_passes_on_the_other_guard(
    step_up_api: InProcessApi, idp: FakeEntraID
) -> None:
    token = idp.token(scopes=["Items.Read"], roles=["Admin"])
    assert (await call(step_up_api, "/or-admin", token)).status_code == 200


# -- the claims challenge (a client that declared cp1) --------------------------------------------


@pytest.mark.parametrize("capabilities", [["cp1"], ["CP1"], ["cp2", "Cp1"]])
@pytest.mark.parametrize("acrs", [None, [], ["c2"], "c1"])
async def test_capable_client_gets_the_exact_claims_challenge(
    step_up_api: InProcessApi, idp: FakeEntraID, capabilities: list[str], acrs: Any
) -> None:
    """acrs missing, empty, another context, or not an array (a string is not the claim's
    type): 401 insufficient_claims with Microsoft's challenge shape."""
    claims = idp.claims(scopes=["Items.Read"], client_capabilities=capabilities)
    if acrs is not None:
        claims["acrs"] = acrs
    response = await call(step_up_api, "/by-name", idp.token(claims), "POST")
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "insufficient_claims"
    values = response.headers.get_list("www-authenticate")
    assert len(values) == 1
    params = bearer_params(response)
    assert list(params) == [
        "realm",
        "authorization_uri",
        "error",
        "claims",
    ]  # no resource_metadata: off
    assert params["realm"] == ""
    assert params["error"] == "insufficient_claims"
    # The fake's v2 discovery document names the tenant's authorize endpoint.
    assert params["authorization_uri"] == f"{IDP_URL}/{idp.tenant_id}/oauth2/v2.0/authorize"
    decoded = base64.b64decode(params["claims"], validate=True)  # standard alphabet, padded
    assert decoded == EXACT_CLAIMS
    assert json.loads(decoded) == {"access_token": {"acrs": {"essential": True, "value": "c1"}}}


async def test_the_challenge_asks_for_the_first_listed_context(
    step_up_api: InProcessApi, idp: FakeEntraID
) -> None:
    token = idp.token(scopes=["Items.Read"], client_capabilities=["cp1"])
    params = bearer_params(await call(step_up_api, "/either", token))
    assert base64.b64decode(params["claims"]) == EXACT_CLAIMS.replace(b'"c1"', b'"c7"')


async def test_scope_guard_refuses_before_the_step_up(
    step_up_api: InProcessApi, idp: FakeEntraID
) -> None:
    token = idp.token(scopes=["Other"], client_capabilities=["cp1"])
    assert_refused(await call(step_up_api, "/scoped", token), 403, "insufficient_scope")
    token = idp.token(scopes=["Items.Read"], client_capabilities=["cp1"])
    assert (await call(step_up_api, "/scoped", token)).json()["code"] == "insufficient_claims"


def test_claims_request_is_minified_standard_base64() -> None:
    assert base64.b64decode(claims_request("c1")) == EXACT_CLAIMS
    # Microsoft's documented value for the same JSON with "cp1" (claims-challenge article).
    assert claims_request("cp1") == (
        "eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiY3AxIn19fQ=="
    )


class NoAuthorizeEndpoint(FakeEntraID):
    """A tenant whose discovery document lacks ``authorization_endpoint``."""

    def _discovery(self, request: Any, version: str) -> dict[str, Any]:
        document = super()._discovery(request, version)
        del document["authorization_endpoint"]
        return document


async def test_authorization_uri_falls_back_to_the_authority() -> None:
    idp = NoAuthorizeEndpoint()
    api = InProcessApi(idp)
    try:
        api.route("/x", require_auth_context("c1"))
        token = idp.token(scopes=["Items.Read"], client_capabilities=["cp1"])
        params = bearer_params(await call(api, "/x", token))
        assert params["authorization_uri"] == f"{IDP_URL}/{idp.tenant_id}/oauth2/v2.0/authorize"
        assert api.auth.metadata.current is not None
        assert api.auth.metadata.current.authorization_endpoint is None
    finally:
        await api.aclose()


# -- 403 auth_context_required --------------------------------------------------------------------


@pytest.mark.parametrize("capabilities", [None, [], ["cp2"], "cp1x", [1]])
async def test_client_without_cp1_gets_403(
    step_up_api: InProcessApi, idp: FakeEntraID, capabilities: Any
) -> None:
    claims = idp.claims(scopes=["Items.Read"], acrs=["c2"])
    if capabilities is not None:
        claims["xms_cc"] = capabilities
    response = await call(step_up_api, "/by-id", idp.token(claims))
    body = assert_refused(response, 403, "auth_context_required")
    assert "www-authenticate" not in response.headers
    assert "c1" in body["detail"]


async def test_app_only_tokens_get_403_even_when_capable(
    step_up_api: InProcessApi, idp: FakeEntraID
) -> None:
    token = idp.token(app_only=True, client_capabilities=["cp1"])
    response = await call(step_up_api, "/by-id", token)
    assert_refused(response, 403, "auth_context_required")
    assert "app-only" in response.json()["detail"]
    assert "www-authenticate" not in response.headers


async def test_app_only_token_claiming_acrs_is_still_refused(
    step_up_api: InProcessApi, idp: FakeEntraID
) -> None:
    """Only user sign-ins satisfy an authentication context: an app-only token never passes."""
    claims = idp.claims(app_only=True, acrs=["c1"])
    assert_refused(
        await call(step_up_api, "/by-id", idp.token(claims)), 403, "auth_context_required"
    )


async def test_no_token_and_bad_token_keep_their_401s(
    step_up_api: InProcessApi, idp: FakeEntraID
) -> None:
    assert_refused(await call(step_up_api, "/by-id", None), 401, "missing_token")
    expired = idp.token(scopes=["Items.Read"], acrs=["c1"], expires_in=-3600)
    assert_refused(await call(step_up_api, "/by-id", expired), 401, "token_expired")


# -- names and start-up ---------------------------------------------------------------------------


def test_auth_contexts_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, idp: FakeEntraID
) -> None:
    monkeypatch.setenv("ENTRA_TENANT_ID", idp.tenant_id)
    monkeypatch.setenv("ENTRA_CLIENT_ID", idp.client_id)
    monkeypatch.setenv("ENTRA_AUTH_CONTEXTS", '{"approve-payment": "C1", "wipe": "c99"}')
    settings = EntraSettings()  # type: ignore[call-arg]
    assert settings.auth_contexts == {"approve-payment": "c1", "wipe": "c99"}
    guard = require_auth_context("approve-payment", "wipe", "c3")
    assert guard.resolve(settings) == ("c1", "c99", "c3")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value",
    [
        '{"a": "c0"}',
        '{"a": "c100"}',
        '{"a": "x1"}',
        '{"a": ""}',
        '{"a": 1}',
        '{"c2": "c1"}',
        '{"": "c1"}',
        "not json",
    ],
)
def test_bad_auth_contexts_stop_the_settings(
    monkeypatch: pytest.MonkeyPatch, idp: FakeEntraID, value: str
) -> None:
    monkeypatch.setenv("ENTRA_TENANT_ID", idp.tenant_id)
    monkeypatch.setenv("ENTRA_CLIENT_ID", idp.client_id)
    monkeypatch.setenv("ENTRA_AUTH_CONTEXTS", value)
    with pytest.raises(ValueError, match=r"ENTRA_AUTH_CONTEXTS|auth_contexts"):
        EntraSettings()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "bad", ["", " ", 'a"b', "a\\b", "a\r\nb", "a\nb", "a\x00", "a\x7f", "x" * 101]
)
def test_bad_ids_fail_where_declared(bad: str) -> None:
    with pytest.raises(ValueError):
        require_auth_context(bad)


def test_no_ids_fail_where_declared() -> None:
    with pytest.raises(ValueError):
        require_auth_context()


def unknown_name_app(make_api: ApiMaker) -> tuple[InProcessApi, list[str]]:
    api = make_api(auth_contexts={"approve-payment": "c1"})
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("user lifespan started")
        yield

    api.app.router.lifespan_context = lifespan
    api.route("/ok", require_auth_context("approve-payment"))
    api.route("/typo", require_scopes("Items.Read") | require_auth_context("aprove-payment"))
    return api, events


async def test_unknown_name_fails_the_lifespan_start_up(make_api: ApiMaker) -> None:
    api, events = unknown_name_app(make_api)
    sent: list[dict[str, Any]] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})

    async def send(message: Any) -> None:
        sent.append(message)

    with pytest.raises(ValueError, match="aprove-payment"):
        await api.app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send
        )
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "'aprove-payment' is not in ENTRA_AUTH_CONTEXTS" in sent[0]["message"]
    assert "approve-payment" in sent[0]["message"]  # the configured names, to spot the typo
    assert events == []  # the app's own start-up never ran


UNKNOWN_NAME_APP = """
from fastapi import FastAPI, Security
from entra_guard import EntraAuth, EntraAuthMiddleware, EntraSettings, require_auth_context

settings = EntraSettings(
    tenant_id="11111111-1111-1111-1111-111111111111",
    client_id="22222222-2222-2222-2222-222222222222",
    authority_host="http://127.0.0.1:9",
    auth_contexts={"approve-payment": "c1"},
)
app = FastAPI()
app.add_middleware(EntraAuthMiddleware, auth=EntraAuth(settings))


@app.post("/pay", dependencies=[Security(require_auth_context("aprove-payment"))])
async def pay() -> dict[str, str]:
    return {"paid": "yes"}
"""


def test_uvicorn_refuses_to_start_with_an_unknown_name(tmp_path: Path) -> None:
    """The real server: exits with uvicorn's start-up failure status, naming the typo."""
    (tmp_path / "typo_app.py").write_text(UNKNOWN_NAME_APP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "typo_app:app", "--host", "127.0.0.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 3, result.stderr  # uvicorn's STARTUP_FAILURE
    assert "'aprove-payment' is not in ENTRA_AUTH_CONTEXTS" in result.stderr
    assert "Application startup failed. Exiting." in result.stderr


class BrokenSettingsCheck(Guard):
    """A guard whose start-up check fails with something other than ValueError."""

    def check_settings(self, settings: EntraSettings) -> None:
        raise KeyError("broken check")


async def test_any_failing_check_stops_the_start_up(make_api: ApiMaker) -> None:
    api = make_api()
    api.route("/broken", BrokenSettingsCheck())
    sent: list[dict[str, Any]] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})

    async def send(message: Any) -> None:
        sent.append(message)

    with pytest.raises(KeyError):
        await api.app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send
        )
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "broken check" in sent[0]["message"]


async def test_known_names_start_and_serve(make_api: ApiMaker, idp: FakeEntraID) -> None:
    api = make_api(auth_contexts={"approve-payment": "c1"})
    api.route("/ok", require_auth_context("approve-payment"))
    sent: list[dict[str, Any]] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            await queue.put({"type": "lifespan.shutdown"})

    await api.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    token = idp.token(scopes=["Items.Read"], acrs=["c1"])
    assert (await call(api, "/ok", token)).status_code == 200


async def test_unknown_name_without_a_lifespan_fails_loudly_at_first_use(
    make_api: ApiMaker, idp: FakeEntraID
) -> None:
    api, _ = unknown_name_app(make_api)
    token = idp.token(scopes=["Other"], acrs=["c1"])
    with pytest.raises(RuntimeError, match="aprove-payment"):
        await call(api, "/typo", token)


# -- OpenAPI --------------------------------------------------------------------------------------


async def test_openapi_shows_the_requirement(step_up_api: InProcessApi) -> None:
    setup_openapi(step_up_api.app, step_up_api.auth)
    async with step_up_api.client() as client:
        schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/by-name"]["post"]
    assert operation["x-entra-auth-context"] == ["c1"]
    assert "approve-payment (c1)" in operation["description"]
    assert schema["paths"]["/either"]["get"]["x-entra-auth-context"] == ["c7", "c1"]
    assert schema["paths"]["/scoped"]["get"]["security"] == [
        {"EntraID": [f"api://{step_up_api.settings.client_id}/Items.Read"]}
    ]


# -- WebSocket ------------------------------------------------------------------------------------


STEP_UP_C1 = require_auth_context("c1")


def ws_app(api: InProcessApi) -> None:
    @api.app.websocket("/ws")
    async def feed(
        websocket: WebSocket, principal: Annotated[Principal, Depends(STEP_UP_C1)]
    ) -> None:
        await websocket.accept()
        await websocket.send_json({"ok": True})
        await websocket.close()


async def websocket_session(app: Any, token: str, path: str = "/ws") -> list[dict[str, Any]]:
    """Drive one WebSocket handshake through the ASGI app in process; the messages it sent."""
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api.test"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("api.test", 80),
        "subprotocols": [],
    }
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            await incoming.put({"type": "websocket.disconnect", "code": message["code"]})

    await asyncio.wait_for(app(scope, incoming.get, send), 30)
    return sent


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"client_capabilities": ["cp1"]}, "insufficient_claims"),
        ({}, "auth_context_required"),
        ({"app_only": True}, "auth_context_required"),
    ],
)
async def test_websocket_refusals_close_1008(
    make_api: ApiMaker, idp: FakeEntraID, options: dict[str, Any], reason: str
) -> None:
    api = make_api()
    ws_app(api)
    token = idp.token(**({"scopes": ["Items.Read"]} | options))
    sent = await websocket_session(api.app, token)
    assert sent[-1]["type"] == "websocket.close"
    assert (sent[-1]["code"], sent[-1].get("reason")) == (1008, reason)
    assert not any(m["type"] == "websocket.send" for m in sent)


async def test_websocket_with_the_context_is_served(make_api: ApiMaker, idp: FakeEntraID) -> None:
    api = make_api()
    ws_app(api)
    token = idp.token(scopes=["Items.Read"], acrs=["c1"])
    sent = await websocket_session(api.app, token)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert json.loads(sent[1]["text"]) == {"ok": True}


# -- the sample app in dev mode, and the example client -------------------------------------------


def dev_settings(**overrides: Any) -> EntraSettings:
    values: dict[str, Any] = {
        "tenant_id": "11111111-1111-1111-1111-111111111111",
        "client_id": "22222222-2222-2222-2222-222222222222",
        "auth_contexts": {"approve-payment": "c1"},
        "resource_metadata": True,
    }
    return EntraSettings(**(values | overrides))


@pytest.fixture
async def sample_client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(dev_settings(), dev_mode=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as client,
    ):
        yield client


async def dev_token(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/_dev/token", json={"scopes": ["Items.Read"]} | body)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_sample_payments_approve(sample_client: httpx.AsyncClient) -> None:
    plain = await dev_token(sample_client)
    response = await sample_client.post("/payments/approve", headers=bearer(plain))
    assert_refused(response, 403, "auth_context_required")
    capable = await dev_token(sample_client, client_capabilities=["cp1"])
    response = await sample_client.post("/payments/approve", headers=bearer(capable))
    params = bearer_params(response)
    assert base64.b64decode(params["claims"]) == EXACT_CLAIMS
    assert params["resource_metadata"] == (
        "http://127.0.0.1:8000/.well-known/oauth-protected-resource"
    )
    stepped_up = await dev_token(sample_client, client_capabilities=["cp1"], acrs=["c1"])
    response = await sample_client.post("/payments/approve", headers=bearer(stepped_up))
    assert response.status_code == 200 and response.json() == {"payment": "approved"}


async def test_sample_without_the_mapping_refuses_everyone() -> None:
    app = create_app(dev_settings(auth_contexts={}), dev_mode=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        # The dev issuer answers loopback only (docs/security.md).
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            token = await dev_token(client, acrs=["c1"], client_capabilities=["cp1"])
            response = await client.post("/payments/approve", headers=bearer(token))
    assert_refused(response, 403, "auth_context_required")


def load_example() -> Any:
    path = ROOT / "examples" / "step_up_client.py"
    spec = importlib.util.spec_from_file_location("step_up_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_up_client"] = module
    spec.loader.exec_module(module)
    return module


async def test_example_client_answers_the_challenge(sample_client: httpx.AsyncClient) -> None:
    example = load_example()
    lines: list[str] = []
    result = await example.approve_payment(sample_client, log=lines.append)
    assert result == {"payment": "approved"}
    text = "\n".join(lines)
    assert "401 insufficient_claims" in text
    assert EXACT_CLAIMS.decode() in text
    assert "200" in text
