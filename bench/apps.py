"""The two entra-guard apps of the HTTP benchmark (``uvicorn --factory bench.apps:bare``).

Both answer ``GET /hello`` with the same body; ``guarded`` puts the route behind
``EntraAuthMiddleware`` and the scope guard, trusting the fake Entra ID at
``BENCH_IDP_URL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from entra_guard import (
    AuthObserver,
    EntraAuth,
    EntraAuthMiddleware,
    EntraRoute,
    EntraSettings,
    require_scopes,
)

from .common import CLIENT_ID, SCOPE, TENANT_ID

BODY = {"message": "hello"}


def guard_name(route_class: bool = True) -> str:
    """How the benchmarked route is guarded (docs/benchmarks.md and table label)."""
    return "require_scopes, EntraRoute" if route_class else "require_scopes, Depends"


def bare() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return BODY

    return app


def guarded(route_class: bool = True, observer: AuthObserver | None = None) -> FastAPI:
    """The guarded app; ``route_class=False`` resolves the guard as a plain FastAPI
    dependency instead of through ``EntraRoute`` (for the in-process comparison);
    ``observer`` is passed to ``EntraAuth`` (bench/otel.py)."""
    settings = EntraSettings(
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        authority_host=os.environ["BENCH_IDP_URL"],
        token_cache_size=int(os.environ.get("BENCH_TOKEN_CACHE_SIZE", "4096")),
    )
    auth = EntraAuth(settings, observer=observer)

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
    if route_class:
        app.router.route_class = EntraRoute

    @app.get("/hello", dependencies=[Depends(require_scopes(SCOPE))])
    async def hello() -> dict[str, str]:
        return BODY

    return app
