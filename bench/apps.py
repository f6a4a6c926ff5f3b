"""The two entra-guard apps of the HTTP benchmark (``uvicorn --factory bench.apps:bare``).

Both answer ``GET /hello`` with the same body; ``guarded`` puts the route behind
``EntraAuthMiddleware`` and the scope guard, trusting the fake Entra ID at
``BENCH_IDP_URL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

import entra_guard
from entra_guard import EntraAuth, EntraAuthMiddleware, EntraSettings

from .common import CLIENT_ID, SCOPE, TENANT_ID

BODY = {"message": "hello"}


def guard_name() -> str:
    """``require_scopes`` once it exists, ``require_principal`` before that."""
    return "require_scopes" if hasattr(entra_guard, "require_scopes") else "require_principal"


def _guard() -> Callable[..., Any]:
    factory = getattr(entra_guard, "require_scopes", None)
    if factory is not None:
        guard: Callable[..., Any] = factory(SCOPE)
        return guard
    return entra_guard.require_principal


def bare() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return BODY

    return app


def guarded() -> FastAPI:
    settings = EntraSettings(
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        authority_host=os.environ["BENCH_IDP_URL"],
        token_cache_size=int(os.environ.get("BENCH_TOKEN_CACHE_SIZE", "4096")),
    )
    auth = EntraAuth(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not await auth.warm_up():
            raise RuntimeError("could not load metadata from the fake Entra ID")
        try:
            yield
        finally:
            await auth.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(EntraAuthMiddleware, auth=auth)

    @app.get("/hello", dependencies=[Depends(_guard())])
    async def hello() -> dict[str, str]:
        return BODY

    return app
