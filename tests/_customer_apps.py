"""In-process helpers for the customer-identity tests: each fake authority behind its own
``httpx.ASGITransport`` (no sockets), and a small API behind ``EntraAuthMiddleware``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request, Security

from entra_guard import (
    AuthObserver,
    EntraAuth,
    EntraAuthMiddleware,
    Principal,
    require_principal,
    require_roles,
    require_scopes,
)
from entra_guard._middleware import AUTH_KEY
from entra_guard.testing import FakeEntraID

API = "http://api.localhost"


@asynccontextmanager
async def authority(
    fake: FakeEntraID, url: str, *, observer: AuthObserver | None = None, **overrides: Any
) -> AsyncIterator[EntraAuth]:
    """An ``EntraAuth`` trusting ``fake`` (served in process at ``url``); every request it
    sends is recorded in ``auth.sent`` (URLs)."""
    settings = fake.settings(url, **overrides)
    sent: list[str] = []

    async def record(request: httpx.Request) -> None:
        sent.append(str(request.url))

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app),
        base_url=url,
        event_hooks={"request": [record]},
    ) as http:
        auth = EntraAuth(settings, http_client=http, observer=observer)
        auth.sent = sent  # type: ignore[attr-defined]
        try:
            yield auth
        finally:
            await auth.aclose()


def customer_app(auth: EntraAuth | Sequence[EntraAuth]) -> FastAPI:
    """``/me`` (any caller), ``/items`` (scope ``Items.Read``), ``/admin`` (role ``Admin``);
    ``/me`` also says which authority's settings accepted the caller."""
    app = FastAPI()
    app.add_middleware(EntraAuthMiddleware, auth=auth)

    @app.get("/me")
    async def me(
        request: Request, principal: Annotated[Principal, Depends(require_principal)]
    ) -> dict[str, Any]:
        accepted_by: EntraAuth = request.scope[AUTH_KEY]
        return {**principal.to_dict(), "authority": accepted_by.settings.authority_host}

    @app.get("/items", dependencies=[Security(require_scopes("Items.Read"))])
    async def items() -> dict[str, Any]:
        return {"items": [1, 2]}

    @app.get("/admin", dependencies=[Security(require_roles("Admin"))])
    async def admin() -> dict[str, str]:
        return {"ok": "admin"}

    return app


@asynccontextmanager
async def api_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
