"""Demo API: every entra-guard feature on one small FastAPI app.

Configured only by the environment (``ENTRA_*`` and ``SAMPLE_FINANCE_GROUP_ID``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI

from entra_guard import EntraAuth, EntraAuthMiddleware, EntraSettings, Principal
from entra_guard.guards import require_principal


def create_app(
    settings: EntraSettings | None = None, *, http_client: httpx.AsyncClient | None = None
) -> FastAPI:
    settings = settings if settings is not None else EntraSettings()  # type: ignore[call-arg]
    dev_issuer = None
    if settings.dev_mode and http_client is None:
        from entra_guard.dev import DevIssuer

        dev_issuer = DevIssuer(settings)
        http_client = dev_issuer.client
    auth = EntraAuth(settings, http_client=http_client)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await auth.warm_up()
        try:
            yield
        finally:
            await auth.aclose()
            if dev_issuer is not None:
                await dev_issuer.client.aclose()

    app = FastAPI(title="entra-guard sample API", lifespan=lifespan)
    app.add_middleware(EntraAuthMiddleware, auth=auth)
    app.state.auth = auth
    if dev_issuer is not None:
        app.include_router(dev_issuer.router)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> dict[str, Any]:
        return principal.to_dict()

    return app
