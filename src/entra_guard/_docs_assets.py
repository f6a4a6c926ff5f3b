"""Swagger UI's JavaScript and CSS served by the app itself, not a public CDN.

    serve_swagger_ui(app)

FastAPI's ``/docs`` loads Swagger UI from a CDN: on a machine without internet
access (CI, many corporate networks) it is a blank page. This replaces that
page with the same one linking to the files of the ``swagger-ui-bundle-v2``
package (extra ``entra-guard[swagger-ui]``), mounted under ``assets_path``.
``cdn=True`` keeps FastAPI's page. See docs/getting-started.md "Swagger UI offline".
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute
from starlette.staticfiles import StaticFiles


def _swagger_ui_directory() -> str:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError as exc:
        raise RuntimeError(
            "serve_swagger_ui needs the Swagger UI files: pip install 'entra-guard[swagger-ui]' "
            "(or pass cdn=True to keep the CDN)"
        ) from exc
    return str(swagger_ui_path)


def serve_swagger_ui(app: FastAPI, *, cdn: bool = False, assets_path: str = "/docs-assets") -> None:
    """Serve ``app.docs_url`` with Swagger UI's files from this app (``cdn=False``).

    Call it once, after creating the app; ``setup_openapi`` may come before or
    after (the page reads ``app.swagger_ui_init_oauth`` on every request).
    """
    if cdn or app.docs_url is None:
        return
    directory = _swagger_ui_directory()
    docs_url, assets = app.docs_url, assets_path.rstrip("/")

    def is_docs_page(route: BaseRoute) -> bool:
        return getattr(route, "path", None) == docs_url

    app.router.routes[:] = [r for r in app.router.routes if not is_docs_page(r)]
    app.mount(assets, StaticFiles(directory=directory), name="swagger-ui-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        redirect = app.swagger_ui_oauth2_redirect_url
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon-32x32.png",
            oauth2_redirect_url=f"{root}{redirect}" if redirect else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    app.add_route(docs_url, swagger_ui, include_in_schema=False)


__all__ = ["serve_swagger_ui"]
