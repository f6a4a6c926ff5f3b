"""Sign-in for the fake Entra ID: authorization endpoint, code and refresh-token grants.

A browser (Swagger UI's **Authorize**, a single-page app under test) signs in
through a small server-rendered page: pick a user, tick scopes, app roles,
groups, overage and an auth context, and get redirected back with a one-time
code, redeemed at the token endpoint with PKCE (S256 only). What it checks is
what Entra checks for a public client: a registered ``client_id``, an exact
``redirect_uri`` (any port for a loopback one, RFC 8252 §7.3), ``state``,
PKCE, one-time and short-lived codes. See docs/testing.md "Browser tests of your own API".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from ._graph import FakeGraph
    from ._idp import FakeEntraID

#: Bounds of everything a browser can make the fake remember or parse.
MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 200
MAX_PENDING = 10_000
MAX_PARAM = 2048
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
_USER_NAMESPACE = uuid.UUID("0f6a5d3e-2b1c-4e8f-9a7d-6c5b4a392817")


@dataclass(frozen=True)
class SignInUser:
    """A person offered on the sign-in page (the object id is stable per username)."""

    name: str
    username: str

    @property
    def object_id(self) -> str:
        return str(uuid.uuid5(_USER_NAMESPACE, self.username.lower()))


SEEDED_USERS = (
    SignInUser("Ada Lovelace", "ada@contoso.example"),
    SignInUser("Grace Hopper", "grace@contoso.example"),
    SignInUser("Alan Turing", "alan@contoso.example"),
)


@dataclass
class _Grant:
    """What a sign-in decided, kept behind a code or a refresh token."""

    client_id: str
    user: SignInUser
    requested: tuple[str, ...]
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    overage: bool
    acrs: tuple[str, ...]
    expires_at: float
    redirect_uri: str = ""
    code_challenge: str = ""
    nonce: str | None = None


class _Refused(Exception):
    """An authorization request that must not redirect (unknown client or redirect URI)."""


@dataclass
class AuthorizationServer:
    """The fake's sign-in: ``FakeEntraID().authorization``.

    ``register_client(client_id, redirect_uris)`` first (a public client, as
    Entra's "SPA" platform); the page offers ``scopes``, ``roles``, ``groups``
    (id -> label) and ``auth_contexts``; ``users`` are the seeded people (any
    other name can be typed). ``graph`` set: an "overage" sign-in stores the
    user's groups in that fake Graph, as a real tenant would hold them.
    """

    idp: FakeEntraID
    scopes: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)
    auth_contexts: list[str] = field(default_factory=lambda: ["c1", "c2", "c3"])
    users: list[SignInUser] = field(default_factory=lambda: list(SEEDED_USERS))
    audience: str | None = None
    graph: FakeGraph | None = None
    code_lifetime: float = 60.0
    token_lifetime: int = 3600
    refresh_lifetime: int = 86400
    clients: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: token requests refused so far (a test's proof that the refusal came from here).
    refusals: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
        self._redeemed: dict[str, float] = {}

    # -- configuration ---------------------------------------------------------------

    def register_client(self, client_id: str, redirect_uris: Iterable[str]) -> None:
        """Accept sign-ins of a public client redirecting to exactly these URIs.

        A loopback ``http`` URI without a port (``http://127.0.0.1/cb``) matches
        any port, as Entra and RFC 8252 §7.3 allow for native and local apps.
        """
        self.clients[client_id] = tuple(redirect_uris)

    def offer(
        self,
        *,
        scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
        groups: Mapping[str, str] | Iterable[str] = (),
    ) -> None:
        """Add choices to the sign-in page (short scope names, app roles, group ids)."""
        self.scopes.extend(s for s in scopes if s not in self.scopes)
        self.roles.extend(r for r in roles if r not in self.roles)
        labels = dict(groups) if isinstance(groups, Mapping) else {g: g for g in groups}
        for group_id, label in labels.items():
            self.groups.setdefault(group_id, label)

    def browser_app(self) -> Starlette:
        """``/authorize`` and ``/token`` (code and refresh grants only) for the fake's own
        tenant, to mount inside an app: in dev mode the API serves its own sign-in, e.g.
        at ``/_dev/oauth2/v2.0``, while the fake itself stays in-process."""
        return Starlette(
            routes=[
                Route("/authorize", self.authorize, methods=["GET", "POST"]),
                Route("/token", self.token, methods=["POST", "OPTIONS"]),
            ]
        )

    # -- authorization endpoint ------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        """GET: the sign-in page. POST: the page's answer, redirected back with a code."""
        injected = await self.idp._injected(request)
        if injected is not None:
            return injected
        if request.method == "GET":
            params = dict(request.query_params.multi_items())
            fields: dict[str, list[str]] = {}
        else:
            form = await _read_form(request)
            if form is None:
                return _error_page("The sign-in form is too large or malformed.", 400)
            fields = form
            params = {k: v[-1] for k, v in form.items() if k.startswith("p_")}
            params = {k[2:]: v for k, v in params.items()}
        try:
            client_id, redirect_uri = self._client(params)
        except _Refused as exc:
            return _error_page(str(exc), 400)
        problem = _check_request(params)
        status = 302 if request.method == "GET" else 303
        state = params.get("state")
        if problem is not None:
            error, description = problem
            return _redirect(
                redirect_uri, status, error=error, description=description, state=state
            )
        assert state is not None
        if request.method == "GET":
            return self._page(request, params, client_id, redirect_uri)
        if _last(fields, "action") != "allow":
            return _redirect(
                redirect_uri,
                status,
                error="access_denied",
                description="The user cancelled the sign-in.",
                state=state,
            )
        grant = self._decide(params, fields, client_id, redirect_uri)
        code = secrets.token_urlsafe(32)
        with self._lock:
            _put(self._codes, code, grant)
        return _redirect(redirect_uri, status, code=code, state=state)

    def _client(self, params: Mapping[str, str]) -> tuple[str, str]:
        client_id = params.get("client_id", "")
        registered = self.clients.get(client_id)
        if registered is None:
            raise _Refused(f"AADSTS700016: Application '{client_id}' was not found.")
        redirect_uri = params.get("redirect_uri", "")
        if not any(_redirect_matches(uri, redirect_uri) for uri in registered):
            raise _Refused(
                f"AADSTS50011: The redirect URI '{redirect_uri}' does not match the "
                f"redirect URIs configured for the application '{client_id}'."
            )
        return client_id, redirect_uri

    def _offered_scopes(self, requested: Iterable[str]) -> list[str]:
        offered = list(self.scopes)
        for name in requested:
            if name not in offered:
                offered.append(name)
        return offered

    def _decide(
        self,
        params: Mapping[str, str],
        fields: Mapping[str, list[str]],
        client_id: str,
        redirect_uri: str,
    ) -> _Grant:
        requested = tuple(params.get("scope", "").split())
        offered_scopes = self._offered_scopes(_api_scopes(requested))
        typed = _last(fields, "name").strip()[:100]
        chosen = _last(fields, "user")
        user = next((u for u in self.users if u.username == chosen), self.users[0])
        if typed:
            slug = re.sub(r"[^a-z0-9]+", ".", typed.lower()).strip(".") or "user"
            user = SignInUser(typed, f"{slug}@contoso.example")
        return _Grant(
            client_id=client_id,
            user=user,
            requested=requested,
            scopes=_picked(fields, "scp", offered_scopes),
            roles=_picked(fields, "role", self.roles),
            groups=_picked(fields, "group", list(self.groups)),
            overage=_last(fields, "overage") == "on",
            acrs=_picked(fields, "acrs", self.auth_contexts),
            expires_at=time.time() + self.code_lifetime,
            redirect_uri=redirect_uri,
            code_challenge=params.get("code_challenge", ""),
            nonce=params.get("nonce"),
        )

    def _page(
        self, request: Request, params: Mapping[str, str], client_id: str, redirect_uri: str
    ) -> Response:
        requested = _api_scopes(params.get("scope", "").split())
        hidden = "".join(
            f'<input type="hidden" name="p_{_e(k)}" value="{_e(v)}">'
            for k, v in params.items()
            if k
            in (
                "client_id",
                "redirect_uri",
                "response_type",
                "scope",
                "state",
                "code_challenge",
                "code_challenge_method",
                "nonce",
                "response_mode",
            )
        )
        users = "".join(
            _choice("radio", "user", u.username, f"{u.name} ({u.username})", i == 0, f"user{i}")
            for i, u in enumerate(self.users)
        )
        scopes = _checkboxes("scp", self._offered_scopes(requested), set(requested))
        roles = _checkboxes("role", self.roles, set())
        groups = (
            "".join(
                _choice(
                    "checkbox",
                    "group",
                    gid,
                    label if label == gid else f"{label} ({gid})",
                    False,
                    f"group{i}",
                )
                for i, (gid, label) in enumerate(self.groups.items())
            )
            or "<p>This API declares no groups.</p>"
        )
        contexts = _checkboxes("acrs", self.auth_contexts, set())
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(redirect_uri))
        body = _PAGE.format(
            action=_e(request.url.path),
            client=_e(client_id),
            hidden=hidden,
            users=users,
            scopes=scopes or "<p>This API declares no delegated scopes.</p>",
            roles=roles or "<p>This API declares no app roles.</p>",
            groups=groups,
            contexts=contexts or "<p>No authentication contexts.</p>",
        )
        csp = (
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
            f"frame-ancestors 'none'; form-action 'self' {origin}"
        )
        return HTMLResponse(
            body,
            headers={
                "Content-Security-Policy": csp,
                "X-Frame-Options": "DENY",
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )

    # -- token endpoint --------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        """The token endpoint for browsers: ``authorization_code`` and ``refresh_token``."""
        if request.method == "OPTIONS":
            return self._cors(request, Response(status_code=204), preflight=True)
        injected = await self.idp._injected(request)
        if injected is not None:
            return injected
        form = await _read_form(request)
        if form is None:
            return _token_error("invalid_request", "The request body is too large or malformed.")
        fields = {k: v[-1] for k, v in form.items()}
        grant_type = fields.get("grant_type")
        if grant_type == "authorization_code":
            return await self.authorization_code_grant(request, fields)
        if grant_type == "refresh_token":
            return await self.refresh_token_grant(request, fields)
        return _token_error("unsupported_grant_type", "Only authorization_code, refresh_token.")

    async def authorization_code_grant(self, request: Request, form: Mapping[str, str]) -> Response:
        """Redeem a one-time code: same client, same redirect URI, PKCE S256 verifier."""
        code = form.get("code", "")
        with self._lock:
            grant = self._codes.pop(code, None)  # burnt by any attempt, good or bad
            replayed = grant is None and code in self._redeemed
            if grant is not None:
                _put(self._redeemed, code, time.time())
        problem: str | None = None
        if replayed:
            problem = "AADSTS54005: OAuth2 Authorization code was already redeemed."
        elif grant is None:
            problem = "The authorization code is not valid."
        elif time.time() >= grant.expires_at:
            problem = "AADSTS70008: The provided authorization code has expired."
        elif form.get("client_id") != grant.client_id:
            problem = "The code was issued to another client."
        elif form.get("redirect_uri") != grant.redirect_uri:
            problem = "The redirect_uri differs from the one of the authorization request."
        else:
            verifier = form.get("code_verifier", "")
            if not _VERIFIER.fullmatch(verifier):
                problem = "PKCE: a code_verifier (43-128 characters) is required."
            elif not hmac.compare_digest(_s256(verifier), grant.code_challenge):
                problem = (
                    "AADSTS501481: The Code_Verifier does not match the code_challenge "
                    "supplied in the authorization request."
                )
        if problem is not None or grant is None:
            self.refusals += 1
            return self._cors(request, _token_error("invalid_grant", problem or ""))
        return self._cors(request, self._tokens(grant))

    async def refresh_token_grant(self, request: Request, form: Mapping[str, str]) -> Response:
        """Trade a refresh token (rotated: each one works once) for new tokens."""
        refresh = form.get("refresh_token", "")
        with self._lock:
            grant = self._refresh.pop(refresh, None)
        if grant is None or time.time() >= grant.expires_at:
            self.refusals += 1
            return self._cors(
                request, _token_error("invalid_grant", "The refresh token is not valid.")
            )
        if form.get("client_id") != grant.client_id:
            self.refusals += 1
            return self._cors(
                request, _token_error("invalid_grant", "The token was issued to another client.")
            )
        return self._cors(request, self._tokens(grant))

    def _tokens(self, grant: _Grant) -> Response:
        user, idp = grant.user, self.idp
        if grant.overage and self.graph is not None:
            self.graph.set_groups(user.object_id, grant.groups)
            while len(self.graph.memberships) > MAX_PENDING:
                del self.graph.memberships[next(iter(self.graph.memberships))]
        extra: dict[str, Any] = {
            "name": user.name,
            "preferred_username": user.username,
            "azp": grant.client_id,
        }
        if grant.acrs:
            extra["acrs"] = list(grant.acrs)
        access = idp.token(
            object_id=user.object_id,
            scopes=grant.scopes,
            roles=grant.roles,
            groups=grant.groups or None,
            overage=grant.overage,
            audience=self.audience,
            expires_in=self.token_lifetime,
            **extra,
        )
        prefix = _prefix(grant.requested, self.audience or idp.client_id)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(prefix + s for s in grant.scopes),
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": access,
        }
        if "offline_access" in grant.requested:
            refresh = secrets.token_urlsafe(48)
            kept = replace(grant, expires_at=time.time() + self.refresh_lifetime)
            with self._lock:
                _put(self._refresh, refresh, kept)
            body["refresh_token"] = refresh
        if "openid" in grant.requested:
            body["id_token"] = self._id_token(grant)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _id_token(self, grant: _Grant) -> str:
        now = int(time.time())
        claims = self.idp.claims(object_id=grant.user.object_id)
        id_claims: dict[str, Any] = {
            "aud": grant.client_id,
            "iss": claims["iss"],
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
            "name": grant.user.name,
            "preferred_username": grant.user.username,
            "oid": grant.user.object_id,
            "sub": claims["sub"],
            "tid": claims["tid"],
            "ver": "2.0",
        }
        if grant.nonce:
            id_claims["nonce"] = grant.nonce
        return self.idp.token(id_claims)

    def _cors(self, request: Request, response: Response, *, preflight: bool = False) -> Response:
        """Let a registered (SPA) origin call the token endpoint from the browser."""
        origin = request.headers.get("origin")
        if origin and any(
            _redirect_matches(uri, origin + urlsplit(uri).path)
            for uris in self.clients.values()
            for uri in uris
        ):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            if preflight:
                response.headers["Access-Control-Allow-Methods"] = "POST"
                response.headers["Access-Control-Allow-Headers"] = (
                    "accept, content-type, x-requested-with"
                )
                response.headers["Access-Control-Max-Age"] = "600"
        return response


# -- helpers ---------------------------------------------------------------------------


def _check_request(params: Mapping[str, str]) -> tuple[str, str] | None:
    """The first problem of an authorization request (after its client and redirect URI)."""
    if params.get("response_type") != "code":
        return "unsupported_response_type", "Only response_type=code is supported."
    if params.get("response_mode", "query") != "query":
        return "invalid_request", "Only response_mode=query is supported."
    if not params.get("state"):
        return "invalid_request", "A state parameter is required."
    if params.get("code_challenge_method") != "S256":
        return "invalid_request", "PKCE with code_challenge_method=S256 is required (not plain)."
    if not _CHALLENGE.fullmatch(params.get("code_challenge", "")):
        return "invalid_request", "The code_challenge must be a base64url SHA-256 (43 chars)."
    if any(len(v) > MAX_PARAM for v in params.values()):
        return "invalid_request", f"A parameter is longer than {MAX_PARAM} characters."
    return None


def _redirect_matches(registered: str, given: str) -> bool:
    if hmac.compare_digest(registered.encode(), given.encode()):
        return True
    try:
        reg, got = urlsplit(registered), urlsplit(given)
        if reg.port is not None or got.port is None:
            return False
    except ValueError:
        return False
    return (
        reg.scheme == got.scheme == "http"
        and reg.hostname in _LOOPBACK
        and reg.hostname == got.hostname
        and (reg.path, reg.query, reg.fragment) == (got.path, got.query, got.fragment)
        and got.username is None
        and got.password is None
    )


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _api_scopes(requested: Iterable[str]) -> list[str]:
    """Short names of the API scopes among the requested ones (``api://x/Items.Read``)."""
    return [s.rsplit("/", 1)[-1] for s in requested if s not in _OIDC_SCOPES and s]


def _prefix(requested: Iterable[str], audience: str) -> str:
    for scope in requested:
        if "/" in scope:
            return scope.rsplit("/", 1)[0] + "/"
    return audience.rstrip("/") + "/" if "://" in audience else f"api://{audience}/"


def _picked(fields: Mapping[str, list[str]], name: str, offered: Iterable[str]) -> tuple[str, ...]:
    allowed = set(offered)
    chosen = fields.get(name, [])
    return tuple(dict.fromkeys(v for v in chosen if v in allowed))


def _last(fields: Mapping[str, list[str]], name: str) -> str:
    values = fields.get(name)
    return values[-1] if values else ""


def _put(store: dict[str, Any], key: str, value: Any) -> None:
    store[key] = value
    while len(store) > MAX_PENDING:
        del store[next(iter(store))]


async def _read_form(request: Request) -> dict[str, list[str]] | None:
    """An urlencoded body, bounded (parsed by hand: no python-multipart dependency)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        return parse_qs(body.decode("ascii"), max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None


def _redirect(uri: str, status: int, **params: str | None) -> Response:
    names = {"description": "error_description"}
    query = urlencode({names.get(k, k): v for k, v in params.items() if v is not None})
    return RedirectResponse(
        f"{uri}{'&' if '?' in uri else '?'}{query}",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _token_error(error: str, description: str) -> Response:
    status = 401 if error == "invalid_client" else 400
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def _choice(kind: str, name: str, value: str, label: str, checked: bool, ident: str) -> str:
    mark = " checked" if checked else ""
    return (
        f'<div class="choice"><input type="{kind}" id="{_e(ident)}" name="{_e(name)}" '
        f'value="{_e(value)}"{mark}><label for="{_e(ident)}">{_e(label)}</label></div>'
    )


def _checkboxes(name: str, values: Iterable[str], checked: set[str]) -> str:
    return "".join(
        _choice("checkbox", name, v, v, v in checked, f"{name}{i}") for i, v in enumerate(values)
    )


def _error_page(message: str, status: int) -> Response:
    return HTMLResponse(
        _ERROR.format(message=_e(message)),
        status_code=status,
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f3f2f1;color:#1b1b1b}
main{max-width:34rem;margin:2rem auto;background:#fff;padding:1.5rem 2rem;
border:1px solid #d0d0d0;border-radius:4px}
h1{font-size:1.5rem;margin:0 0 .5rem}
fieldset{border:1px solid #c8c8c8;margin:0 0 1rem;padding:.5rem 1rem}
legend{font-weight:600;padding:0 .25rem}
.choice{margin:.25rem 0}
label{margin-left:.4rem}
input[type=text]{font:inherit;padding:.25rem;width:100%;box-sizing:border-box}
.note{font-size:.9rem;color:#444}
button{font:inherit;padding:.4rem 1.2rem;margin-right:.5rem;border:1px solid #0067b8;
border-radius:2px;background:#fff;color:#0067b8;cursor:pointer}
button.primary{background:#0067b8;color:#fff}
button:focus,input:focus{outline:3px solid #ffb900;outline-offset:2px}
"""

_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Sign in (fake Entra ID)</title><style>"
    + _STYLE.replace("{", "{{").replace("}", "}}")
    + "</style></head><body><main>"
    "<h1>Sign in</h1>"
    '<p class="note">Fake Microsoft Entra ID for development and tests: no password. '
    "Choose who you are and what the access token for <code>{client}</code> carries.</p>"
    '<form method="post" action="{action}">{hidden}'
    "<fieldset><legend>User</legend>{users}"
    '<label for="name" style="margin:0">Or type a name</label>'
    '<input type="text" id="name" name="name" maxlength="100" autocomplete="off"></fieldset>'
    "<fieldset><legend>Delegated scopes</legend>{scopes}</fieldset>"
    "<fieldset><legend>App roles</legend>{roles}</fieldset>"
    "<fieldset><legend>Groups</legend>{groups}"
    '<div class="choice"><input type="checkbox" id="overage" name="overage" value="on">'
    '<label for="overage">Too many groups (overage): the token carries none, '
    "the API reads them from Graph</label></div></fieldset>"
    "<fieldset><legend>Authentication context (step-up)</legend>{contexts}</fieldset>"
    '<button type="submit" class="primary" name="action" value="allow">Sign in</button>'
    '<button type="submit" name="action" value="deny">Cancel</button>'
    "</form></main></body></html>"
)

_ERROR = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    "<title>Sign-in error (fake Entra ID)</title></head><body><main>"
    '<h1>Sorry, the sign-in cannot go on</h1><p role="alert">{message}</p>'
    "</main></body></html>"
)
