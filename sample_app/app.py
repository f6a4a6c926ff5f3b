"""Demo API: every entra-guard feature on one small FastAPI app.

Configured only by the environment (``ENTRA_*``, ``SAMPLE_FINANCE_GROUP_ID`` and
``SAMPLE_REPORTS_CLIENT_APPS``).

| route          | guard                                                             |
|----------------|-------------------------------------------------------------------|
| GET /health    | none                                                              |
| GET /me        | any valid token                                                   |
| GET /items     | scope Items.Read (delegated) or app role Items.Read.All (app-only) |
| POST /items    | scope Items.Write                                                 |
| GET /admin     | app role Admin                                                    |
| GET /finance   | group SAMPLE_FINANCE_GROUP_ID (overage resolved through Graph)    |
| POST /payments/approve | auth context `approve-payment` (ENTRA_AUTH_CONTEXTS)     |
| GET /reports   | client apps in SAMPLE_REPORTS_CLIENT_APPS (comma separated)       |
| GET /me/graph  | any user: Graph's /v1.0/me, called on behalf of the caller (OBO)  |
| WS /ws/items   | same as GET /items                                                |
| GET /metrics   | none: Prometheus metrics (when prometheus-client is installed)    |
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import httpx
from fastapi import Body, Depends, FastAPI, Response, Security, WebSocket
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from entra_guard import (
    AuthError,
    EntraAuth,
    EntraAuthMiddleware,
    EntraRoute,
    EntraSettings,
    ErrorCode,
    Guard,
    Principal,
    downstream_client,
    require_auth_context,
    require_client_apps,
    require_delegated,
    require_groups,
    require_principal,
    require_roles,
    require_scopes,
    require_scopes_or_app_roles,
    serve_swagger_ui,
    setup_openapi,
)

if TYPE_CHECKING:
    from entra_guard.contrib.prometheus import PrometheusObserver

logger = logging.getLogger("sample_app")

read_items = require_scopes_or_app_roles(scopes=["Items.Read"], app_roles=["Items.Read.All"])
write_items = require_scopes("Items.Write")
admin = require_roles("Admin")


class _Unconfigured(Guard):
    """/finance when SAMPLE_FINANCE_GROUP_ID is not set: nobody gets in."""

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        raise AuthError("missing_group", "SAMPLE_FINANCE_GROUP_ID is not configured")


def finance_guard(group_id: str | None = None) -> Guard:
    group = (group_id or os.environ.get("SAMPLE_FINANCE_GROUP_ID", "")).strip()
    return require_groups(group) if group else _Unconfigured()


class _Refuse(Guard):
    """A route whose requirement is not configured: nobody gets in (fail closed)."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        self.code: ErrorCode = code
        self.detail = detail

    async def check(self, principal: Principal, connection: object) -> None:
        raise AuthError(self.code, self.detail)


#: The authentication context name POST /payments/approve asks for (``make run`` maps it).
PAYMENT_CONTEXT = "approve-payment"


def payments_guard(settings: EntraSettings) -> Guard:
    """Step-up for POST /payments/approve, when ENTRA_AUTH_CONTEXTS maps the name."""
    if PAYMENT_CONTEXT in settings.auth_contexts:
        return require_auth_context(PAYMENT_CONTEXT)
    return _Refuse("auth_context_required", f"ENTRA_AUTH_CONTEXTS does not map {PAYMENT_CONTEXT!r}")


def reports_guard(client_apps: Sequence[str] | None = None) -> Guard:
    """GET /reports: only the client apps of SAMPLE_REPORTS_CLIENT_APPS."""
    if client_apps is None:
        raw = os.environ.get("SAMPLE_REPORTS_CLIENT_APPS", "")
        client_apps = [a.strip() for a in raw.split(",") if a.strip()]
    if not client_apps:
        return _Refuse("client_not_allowed", "SAMPLE_REPORTS_CLIENT_APPS is not configured")
    return require_client_apps(*client_apps)


def dev_mode_from_env() -> bool:
    """``ENTRA_DEV_MODE`` as pydantic reads booleans (1/true/yes/on)."""
    value = os.environ.get("ENTRA_DEV_MODE", "").strip().lower()
    return value in ("1", "true", "yes", "on", "t", "y")


def prometheus_observer() -> PrometheusObserver | None:
    """Metrics for ``/metrics``, when the ``prometheus`` extra is installed."""
    try:
        from entra_guard.contrib.prometheus import PrometheusObserver
    except ImportError:
        return None
    return PrometheusObserver()  # its own registry: two apps never share counters


def create_app(
    settings: EntraSettings | None = None,
    *,
    http_client: httpx.AsyncClient | None = None,
    finance_group_id: str | None = None,
    dev_mode: bool | None = None,
    reports_client_apps: Sequence[str] | None = None,
) -> FastAPI:
    """The demo app; ``finance_group_id`` defaults to ``SAMPLE_FINANCE_GROUP_ID`` and
    ``dev_mode`` to ``ENTRA_DEV_MODE``."""
    settings = settings if settings is not None else EntraSettings()  # type: ignore[call-arg]
    if dev_mode is None:
        dev_mode = dev_mode_from_env()
    dev_issuer = None
    finance = finance_guard(finance_group_id)
    approve_payments = payments_guard(settings)
    reports = reports_guard(reports_client_apps)
    if dev_mode and http_client is None:
        from .dev import DevIssuer

        logger.warning(
            "ENTRA_DEV_MODE is on: this app serves a local token issuer at /_dev/token and "
            "/_dev/oauth2/v2.0 (sign-in from /docs) and accepts its tokens. "
            "Never enable this in production."
        )
        dev_issuer = DevIssuer(
            settings, guards=[read_items, write_items, admin, finance, approve_payments, reports]
        )
        http_client = dev_issuer.client
        settings = dev_issuer.settings  # with the dev Graph's client secret
    metrics = prometheus_observer()
    auth = EntraAuth(settings, http_client=http_client, observer=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await auth.warm_up()
        try:
            yield
        finally:
            await auth.aclose()
            if dev_issuer is not None:
                await dev_issuer.client.aclose()

    app = FastAPI(
        title="entra-guard sample API",
        lifespan=lifespan,
        swagger_ui_init_oauth=dev_issuer.swagger_init_oauth if dev_issuer else None,
    )
    # Route-level guards (``dependencies=[...]``) are awaited directly, not resolved by
    # FastAPI's dependency machinery: same refusals, several µs less per request.
    app.router.route_class = EntraRoute
    app.add_middleware(EntraAuthMiddleware, auth=auth)
    app.state.auth = auth
    app.state.metrics = metrics
    app.state.dev_issuer = dev_issuer
    # Sign in from /docs: at the tenant, or in dev mode at the app's own dev issuer.
    setup_openapi(app, auth, **(dev_issuer.openapi_urls if dev_issuer else {}))
    serve_swagger_ui(app)  # Swagger UI's files from this app: /docs works offline
    if dev_issuer is not None:
        app.include_router(dev_issuer.router)
        app.mount(dev_issuer.sign_in_prefix, dev_issuer.sign_in)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if metrics is not None:
        exposition = metrics.exposition

        # Public here for the demo; in production serve it on an internal port or guard it.
        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            body, content_type = exposition()
            return Response(body, media_type=content_type)

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> dict[str, Any]:
        return principal.to_dict()

    graph_url = settings.graph_url
    graph_me = downstream_client(
        graph_url,
        scopes=[f"{graph_url}/User.Read"],
        transport=dev_issuer.transport if dev_issuer is not None else None,
    )

    # require_delegated: OBO is for users (it also lists the route as secured in OpenAPI).
    @app.get("/me/graph", dependencies=[Security(require_delegated)])
    async def me_graph(graph: httpx.AsyncClient = Depends(graph_me)) -> Any:  # noqa: B008
        """Microsoft Graph's ``/v1.0/me``, called on behalf of the caller
        (docs/downstream.md)."""
        response = await graph.get("/v1.0/me")
        if response.status_code != 200:
            logger.warning("GET /v1.0/me answered HTTP %s", response.status_code)
            return JSONResponse(
                {"detail": f"Microsoft Graph answered HTTP {response.status_code}"},
                status_code=502,
            )
        return response.json()

    @app.get("/items")
    async def list_items(principal: Annotated[Principal, Security(read_items)]) -> dict[str, Any]:
        return {"items": [{"id": 1, "name": "apple"}], "caller": principal.identity}

    @app.post("/items", status_code=201)
    async def create_item(
        principal: Annotated[Principal, Security(write_items)],
        item: Annotated[dict[str, Any] | None, Body()] = None,
    ) -> dict[str, Any]:
        return {"id": 2, "item": item or {}, "created_by": principal.identity}

    @app.get("/admin", dependencies=[Security(admin)])
    async def admin_area() -> dict[str, str]:
        return {"area": "admin"}

    @app.get("/finance", dependencies=[Security(finance)])
    async def finance_area() -> dict[str, str]:
        return {"area": "finance"}

    @app.post("/payments/approve", dependencies=[Security(approve_payments)])
    async def approve_payment() -> dict[str, str]:
        return {"payment": "approved"}

    @app.get("/reports", dependencies=[Security(reports)])
    async def list_reports() -> dict[str, Any]:
        return {"reports": [{"id": 1, "name": "quarterly"}]}

    @app.websocket("/ws/items")
    async def items_feed(
        websocket: WebSocket, principal: Annotated[Principal, Depends(read_items)]
    ) -> None:
        await websocket.accept()
        await websocket.send_json({"items": [{"id": 1, "name": "apple"}]})
        await websocket.close()

    return app
