"""Dev mode of the demo: a local token issuer inside the app, so nobody needs a tenant.

Only ever active when ``ENTRA_DEV_MODE`` is set; the app then logs a loud
warning. It is the demo's, not the library's: the library only ever sees an
``httpx.AsyncClient`` that happens to reach the fake. The fake Entra ID answers
every metadata request in-process (``httpx.ASGITransport``), and ``POST
/_dev/token`` mints tokens. A fake Microsoft Graph is served the same way, so
groups overage works too: a token minted with ``"overage": true`` carries the
overage marker and its ``groups`` become the user's memberships in the fake
Graph.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Literal

import httpx
from fastapi import APIRouter
from pydantic import BaseModel, Field, SecretStr
from starlette.types import Receive, Scope, Send

from entra_guard import EntraSettings
from entra_guard.testing import FakeEntraID, FakeGraph

#: Overage users remembered by the dev Graph (oldest forgotten first).
MAX_DEV_MEMBERSHIPS = 10_000


class DevTokenRequest(BaseModel):
    scopes: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    groups: list[str] | None = None
    app_only: bool = False
    overage: bool = False
    version: Literal["1.0", "2.0"] = "2.0"
    tenant_id: str | None = None
    expires_in: int = Field(default=3600, ge=-86400, le=86400)


class DevTokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class DevIssuer:
    """The in-process issuer: ``.client`` and ``.settings`` for ``EntraAuth``, ``.router``
    for the app.

    ``.settings`` is the given settings with a generated client secret when none
    was set, registered with the fake token endpoint so Graph calls work.
    """

    def __init__(self, settings: EntraSettings) -> None:
        if settings.client_secret is None:
            settings = settings.model_copy(
                update={"client_secret": SecretStr(secrets.token_urlsafe(24))}
            )
        assert settings.client_secret is not None
        self.settings = settings
        self.idp = FakeEntraID(tenant_id=settings.tenant_id, client_id=settings.client_id)
        secret = settings.client_secret.get_secret_value()
        self.idp.confidential_clients[settings.client_id] = secret
        self.graph = FakeGraph(self.idp)
        #: Reaches the fake Entra ID and the fake Graph in-process (also for /me/graph).
        self.transport = httpx.ASGITransport(app=self._dispatch)
        self.client = httpx.AsyncClient(transport=self.transport)
        self.router = APIRouter(prefix="/_dev", tags=["dev"])
        self.router.add_api_route(
            "/token", self.mint, methods=["POST"], response_model=DevTokenResponse
        )

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Graph paths (``/v1.0/...``) to the fake Graph, the rest to the fake Entra ID."""
        if scope.get("path", "").startswith("/v1.0/"):
            await self.graph.app(scope, receive, send)
        else:
            await self.idp.app(scope, receive, send)

    async def mint(self, request: DevTokenRequest) -> DevTokenResponse:
        """Mint an access token for this API (dev mode only)."""
        audience = (self.settings.audiences or [self.settings.client_id])[0]
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
        )
        return DevTokenResponse(access_token=token, expires_in=request.expires_in)
