"""Dev mode: a local token issuer inside the app, so nobody needs a tenant to try the API.

Only ever active when ``ENTRA_DEV_MODE`` is set; ``EntraAuth`` then logs a
loud warning. The fake Entra ID answers every metadata request in-process
(``httpx.ASGITransport``), and ``POST /_dev/token`` mints tokens.
"""

from __future__ import annotations

from typing import Literal

import httpx
from fastapi import APIRouter
from pydantic import BaseModel, Field

from .settings import EntraSettings
from .testing.idp import FakeEntraID


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
    """The in-process issuer: ``.client`` for ``EntraAuth``, ``.router`` for the app."""

    def __init__(self, settings: EntraSettings) -> None:
        if not settings.dev_mode:
            raise RuntimeError("DevIssuer needs ENTRA_DEV_MODE=1")
        self.settings = settings
        self.idp = FakeEntraID(tenant_id=settings.tenant_id, client_id=settings.client_id)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.idp.app))
        self.router = APIRouter(prefix="/_dev", tags=["dev"])
        self.router.add_api_route(
            "/token", self.mint, methods=["POST"], response_model=DevTokenResponse
        )

    async def mint(self, request: DevTokenRequest) -> DevTokenResponse:
        """Mint an access token for this API (dev mode only)."""
        audience = (self.settings.audiences or [self.settings.client_id])[0]
        if request.version == "1.0" and f"api://{self.settings.client_id}" in (
            self.settings.audiences or []
        ):
            audience = f"api://{self.settings.client_id}"
        token = self.idp.token(
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
