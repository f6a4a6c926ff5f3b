"""Dev mode of the demo: a local token issuer inside the app, so nobody needs a tenant.

Only ever active when ``ENTRA_DEV_MODE`` is set; the app then logs a loud
warning. It is the demo's, not the library's: the library only ever sees an
``httpx.AsyncClient`` that happens to reach the fake. The fake Entra ID answers
every metadata request in-process (``httpx.ASGITransport``), and ``POST
/_dev/token`` mints tokens. A fake Microsoft Graph is served the same way, so
groups overage works too: a token minted with ``"overage": true`` carries the
overage marker and its ``groups`` become the user's memberships in the fake
Graph.

The same issuer signs people in from the browser: ``/_dev/oauth2/v2.0/authorize``
shows a sign-in page (pick a user, scopes, app roles, groups) and
``/_dev/oauth2/v2.0/token`` redeems its code (PKCE), so ``/docs`` ->
**Authorize** -> **Try it out** works with no tenant (README "Quick start",
docs/getting-started.md).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, SecretStr
from starlette.types import Receive, Scope, Send

from entra_guard import EntraSettings, Guard
from entra_guard.testing import FakeEntraID, FakeGraph, FakeKey

from .dev_keys import SharedMemberships, shared_signing_key

#: Overage users remembered by the dev Graph (oldest forgotten first).
MAX_DEV_MEMBERSHIPS = 10_000
#: The public client Swagger UI signs in as (when ENTRA_PUBLIC_CLIENT_ID is not set).
DEV_PUBLIC_CLIENT_ID = "d0c5d0c5-0000-4000-8000-00000000d0c5"
#: Where the app serves the browser sign-in in dev mode.
SIGN_IN_PREFIX = "/_dev/oauth2/v2.0"
#: Swagger UI's redirect page, on any loopback port (RFC 8252 §7.3).
DEV_REDIRECT_URIS = tuple(
    f"http://{host}/docs/oauth2-redirect" for host in ("127.0.0.1", "localhost", "[::1]")
)


def declared_by(guards: Iterable[Guard]) -> tuple[list[str], list[str], list[str]]:
    """The scopes, app roles and group ids the given guards (and their parts) accept."""
    claims: dict[str, set[str]] = {"scp": set(), "roles": set(), "groups": set()}
    for guard in guards:
        for claim, values in guard.accepted_claims().items():
            if claim in claims:
                claims[claim] |= values
    return sorted(claims["scp"]), sorted(claims["roles"]), sorted(claims["groups"])


#: uvicorn's own default for ``--host``.
UVICORN_DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cli_bind_host(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The address uvicorn's command line binds: ``--host X`` / ``--host=X``, else
    ``UVICORN_HOST``, else uvicorn's default (loopback)."""
    for i, arg in enumerate(argv):
        if arg == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--host="):
            return arg.partition("=")[2]
    return environ.get("UVICORN_HOST") or UVICORN_DEFAULT_HOST


def require_loopback_bind(argv: Sequence[str], environ: Mapping[str, str]) -> None:
    """Refuse to start dev mode when the server will listen beyond this machine.

    The app cannot see uvicorn's socket before it binds (the lifespan runs first),
    so this reads the same command line and environment uvicorn reads. Servers
    started any other way are covered by ``loopback_only``, request by request.
    """
    host = cli_bind_host(argv, environ)
    if not is_loopback(host):
        raise RuntimeError(
            f"ENTRA_DEV_MODE refuses to start on a non-loopback address ({host!r}): anyone "
            "who can reach the port could mint tokens at /_dev/token. Bind 127.0.0.1 "
            "(or ::1), or turn dev mode off."
        )


async def loopback_only(request: Request) -> None:
    """Serve /_dev/* only to this machine: a loopback client on a loopback address.

    Belt and braces with ``require_loopback_bind``: a connection that arrived on
    a non-loopback address (``scope["server"]``) proves the server listens beyond
    this machine, and a non-loopback client (``scope["client"]``, which uvicorn sets
    from ``X-Forwarded-For`` only for trusted proxies) is not the developer.
    """
    client = request.scope.get("client")
    server = request.scope.get("server")
    if not (client and is_loopback(client[0]) and server and is_loopback(server[0])):
        raise HTTPException(
            403,
            "The dev token issuer only answers loopback clients on a loopback address "
            "(127.0.0.1 / ::1).",
        )


class DevTokenRequest(BaseModel):
    scopes: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    groups: list[str] | None = None
    app_only: bool = False
    overage: bool = False
    version: Literal["1.0", "2.0"] = "2.0"
    tenant_id: str | None = None
    expires_in: int = Field(default=3600, ge=-86400, le=86400)
    # Step-up and client controls (docs/step-up.md).
    acrs: list[str] | None = Field(default=None, max_length=25)
    client_capabilities: list[str] | None = Field(default=None, max_length=5)
    app_id: str | None = Field(default=None, max_length=64)


class DevTokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class DevIssuer:
    """The in-process issuer: ``.client`` and ``.settings`` for ``EntraAuth``, ``.router``
    and ``.sign_in`` (mounted at ``SIGN_IN_PREFIX``) for the app.

    ``.settings`` is the given settings with a generated client secret when none
    was set, registered with the fake token endpoint so Graph calls work, and
    ``DEV_PUBLIC_CLIENT_ID`` as the public client when none was set. ``guards``:
    the app's guards, whose scopes, roles and groups the sign-in page offers.
    """

    def __init__(self, settings: EntraSettings, *, guards: Iterable[Guard] = ()) -> None:
        require_loopback_bind(sys.argv, os.environ)
        if settings.client_secret is None:
            settings = settings.model_copy(
                update={"client_secret": SecretStr(secrets.token_urlsafe(24))}
            )
        if settings.public_client_id is None:
            settings = settings.model_copy(update={"public_client_id": DEV_PUBLIC_CLIENT_ID})
        assert settings.client_secret is not None
        assert settings.public_client_id is not None
        self.settings = settings
        # One signing key and one set of overage memberships for every worker
        # (``make run WORKERS=4``): a token minted by one passes on all.
        self.idp = FakeEntraID(
            tenant_id=settings.tenant_id,
            client_id=settings.client_id,
            key=FakeKey.from_pem(shared_signing_key()),
        )
        secret = settings.client_secret.get_secret_value()
        self.idp.confidential_clients[settings.client_id] = secret
        self.graph = FakeGraph(self.idp, memberships=SharedMemberships())
        sign_in = self.idp.authorization
        sign_in.register_client(settings.public_client_id, DEV_REDIRECT_URIS)
        scopes, roles, groups = declared_by(guards)
        sign_in.offer(scopes=scopes, roles=roles, groups=groups)
        sign_in.audience = self.audience
        sign_in.graph = self.graph
        self.sign_in = sign_in.browser_app()
        self.sign_in_prefix = SIGN_IN_PREFIX
        # as setup_openapi names scopes (docs/getting-started.md "OpenAPI and Swagger UI sign-in")
        prefix = next(
            (a.rstrip("/") + "/" for a in settings.audiences or () if "://" in a),
            f"api://{settings.client_id}/",
        )
        #: ``setup_openapi`` keywords: Swagger UI signs in here, not at the tenant.
        self.openapi_urls = {
            "authorization_url": f"{SIGN_IN_PREFIX}/authorize",
            "token_url": f"{SIGN_IN_PREFIX}/token",
        }
        #: Swagger UI's ``initOAuth``: the scopes ticked by default in **Authorize**.
        self.swagger_init_oauth = {"scopes": " ".join(prefix + s for s in scopes)}
        #: Reaches the fake Entra ID and the fake Graph in-process (also for /me/graph).
        self.transport = httpx.ASGITransport(app=self._dispatch)
        self.client = httpx.AsyncClient(transport=self.transport)
        self.router = APIRouter(prefix="/_dev", tags=["dev"], dependencies=[Depends(loopback_only)])
        self.router.add_api_route(
            "/token", self.mint, methods=["POST"], response_model=DevTokenResponse
        )

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Graph paths (``/v1.0/...``) to the fake Graph, the rest to the fake Entra ID."""
        if scope.get("path", "").startswith("/v1.0/"):
            await self.graph.app(scope, receive, send)
        else:
            await self.idp.app(scope, receive, send)

    @property
    def audience(self) -> str:
        """The ``aud`` of the tokens minted for this API (its first accepted audience)."""
        return (self.settings.audiences or [self.settings.client_id])[0]

    async def mint(self, request: DevTokenRequest) -> DevTokenResponse:
        """Mint an access token for this API (dev mode only)."""
        audience = self.audience
        if request.version == "1.0" and f"api://{self.settings.client_id}" in (
            self.settings.audiences or []
        ):
            audience = f"api://{self.settings.client_id}"
        object_id = str(uuid.uuid4())
        if request.overage:
            self.graph.set_groups(object_id, request.groups or [])
            while len(self.graph.memberships) > MAX_DEV_MEMBERSHIPS:
                del self.graph.memberships[next(iter(self.graph.memberships))]
        token = self.idp.token(
            object_id=object_id,
            version=request.version,
            app_only=request.app_only,
            scopes=request.scopes,
            roles=request.roles,
            groups=request.groups,
            overage=request.overage,
            tenant_id=request.tenant_id,
            audience=audience,
            expires_in=request.expires_in,
            acrs=request.acrs,
            client_capabilities=request.client_capabilities,
            app_id=request.app_id,
        )
        return DevTokenResponse(access_token=token, expires_in=request.expires_in)
