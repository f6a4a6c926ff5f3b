"""serve_swagger_ui: /docs loads Swagger UI's files from the app, not a CDN."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from entra_guard import serve_swagger_ui


def _client(app: FastAPI, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_docs_links_the_apps_own_swagger_ui_files() -> None:
    app = FastAPI(title="t", swagger_ui_init_oauth={"clientId": "abc"})
    serve_swagger_ui(app)
    async with _client(app) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "cdn.jsdelivr.net" not in page.text
        assert "fastapi.tiangolo.com" not in page.text
        assert '"/docs-assets/swagger-ui-bundle.js"' in page.text
        assert '"/docs-assets/swagger-ui.css"' in page.text
        assert '"clientId": "abc"' in page.text  # initOAuth kept
        assert "/docs/oauth2-redirect" in page.text
        script = await client.get("/docs-assets/swagger-ui-bundle.js")
        assert script.status_code == 200
        assert "SwaggerUIBundle" in script.text
        css = await client.get("/docs-assets/swagger-ui.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await client.get("/docs-assets/../pyproject.toml")).status_code == 404
        assert len([r for r in app.routes if getattr(r, "path", "") == "/docs"]) == 1


async def test_init_oauth_set_later_is_read_per_request() -> None:
    app = FastAPI()
    serve_swagger_ui(app, assets_path="/static/swagger/")
    app.swagger_ui_init_oauth = {"usePkceWithAuthorizationCodeGrant": True}
    async with _client(app, root_path="/api") as client:
        page = await client.get("/docs")
        assert '"usePkceWithAuthorizationCodeGrant": true' in page.text
        assert '"/api/static/swagger/swagger-ui-bundle.js"' in page.text
        assert "'/api/openapi.json'" in page.text or '"/api/openapi.json"' in page.text


async def test_cdn_keeps_fastapis_page_and_no_docs_means_nothing_to_do() -> None:
    app = FastAPI()
    serve_swagger_ui(app, cdn=True)
    async with _client(app) as client:
        assert "cdn.jsdelivr.net" in (await client.get("/docs")).text
        assert (await client.get("/docs-assets/swagger-ui.css")).status_code == 404
    hidden = FastAPI(docs_url=None)
    serve_swagger_ui(hidden)
    async with _client(hidden) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/docs-assets/swagger-ui.css")).status_code == 404
