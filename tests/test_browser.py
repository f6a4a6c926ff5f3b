"""Sign in from Swagger UI in a real headless Chromium, with no tenant (README "Quick start").

The sample app runs in dev mode under uvicorn on 127.0.0.1; Debian's
``chromium`` is driven by Playwright (``executable_path``: no browser build
is ever downloaded). Chromium is installed with apt when missing and we are
root; where it cannot be, the test is skipped with the reason.
``SAVE_SCREENSHOTS=1`` writes docs/signin.png and docs/try-it-out.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import Depends, FastAPI

from entra_guard import (
    EntraAuth,
    EntraAuthMiddleware,
    EntraSettings,
    Principal,
    require_scopes,
    serve_swagger_ui,
    setup_openapi,
)
from entra_guard.testing import FakeEntraID, LiveServer
from sample_app.app import create_app

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parent.parent / "docs"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Ceiling, not budget (the tests take seconds): a fresh machine first installs Chromium with apt.
pytestmark = pytest.mark.timeout(900)
FINANCE = "33333333-3333-3333-3333-333333333333"
DEV_CLIENT = "d0c5d0c5-0000-4000-8000-00000000d0c5"


def _chromium() -> str:
    """Debian's Chromium, installed with apt (once) when missing; else a visible skip."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("Chromium is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(
                f"Chromium could not be installed ({' '.join(command)}): {done.stderr[-300:]}"
            )
    if not os.path.exists(CHROMIUM):
        pytest.skip("apt-get installed chromium but /usr/bin/chromium is absent")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    executable = _chromium()
    with (
        tempfile.TemporaryDirectory(prefix="entra-guard-chromium-") as profile,
        sync_api.sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=FLAGS,
            viewport={"width": 1100, "height": 900},
        )
        context.set_default_timeout(10_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def dev_app_url() -> Iterator[str]:
    settings = EntraSettings(
        tenant_id="11111111-1111-1111-1111-111111111111",
        client_id="22222222-2222-2222-2222-222222222222",
    )
    app = create_app(settings, dev_mode=True, finance_group_id=FINANCE)
    with LiveServer(app) as server:
        yield server.url


def _screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    target = DOCS / name if os.environ.get("SAVE_SCREENSHOTS") == "1" else tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=False)
    return target


def _try_it_out(page: Any, operation_id: str) -> dict[str, Any]:
    """Expand an operation, Try it out, Execute; the JSON body Swagger UI received."""
    block = page.locator(f"#operations-default-{operation_id}")
    block.locator(".opblock-summary").first.click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    status = block.locator(".live-responses-table .response .response-col_status").first
    status.wait_for(timeout=10_000)
    assert status.inner_text().strip() == "200", block.locator(".live-responses-table").inner_text()
    body = block.locator(".live-responses-table .response-col_description pre").first
    result: dict[str, Any] = json.loads(body.inner_text())
    return result


def test_sign_in_from_swagger_ui_and_call_me_and_items(
    browser: Any, dev_app_url: str, tmp_path: Path
) -> None:
    page = browser.new_page()
    offline: list[str] = []
    page.on(
        "request",
        lambda r: offline.append(r.url) if not r.url.startswith(dev_app_url) else None,
    )
    page.goto(f"{dev_app_url}/docs")
    page.locator("button.authorize").first.click()
    dialog = page.locator(".modal-ux")
    # Pre-configured: the dev public client and the API's scopes, ticked.
    assert dialog.locator("#client_id_authorizationCode").input_value() != ""
    assert dialog.locator("input[type=checkbox]:checked").count() >= 1
    with page.expect_popup() as popup_info:
        dialog.locator("button.authorize").first.click()
    popup = popup_info.value
    popup.wait_for_load_state()
    assert popup.title() == "Sign in (fake Entra ID)"
    assert popup.get_by_label("Items.Read", exact=True).is_checked()
    popup.get_by_label("Grace Hopper (grace@contoso.example)").check()
    popup.get_by_label("Admin", exact=True).check()
    popup.get_by_label(FINANCE, exact=False).check()
    _screenshot(popup, "signin.png", tmp_path)
    with popup.expect_event("close"):
        popup.get_by_role("button", name="Sign in").click()
    dialog.locator("button", has_text="Logout").wait_for()  # signed in, token redeemed
    dialog.locator("button", has_text="Close").click()

    me = _try_it_out(page, "me_me_get")
    assert me["name"] == "Grace Hopper"
    assert me["preferred_username"] == "grace@contoso.example"
    assert "Items.Read" in me["scopes"]
    assert me["roles"] == ["Admin"]
    assert me["groups"] == [FINANCE]
    items = _try_it_out(page, "list_items_items_get")
    assert items["items"] == [{"id": 1, "name": "apple"}]
    page.locator("#operations-default-list_items_items_get").scroll_into_view_if_needed()
    _screenshot(page, "try-it-out.png", tmp_path)
    admin = _try_it_out(page, "admin_area_admin_get")
    assert admin == {"area": "admin"}
    assert offline == [], f"/docs fetched from outside the app: {offline}"


def test_recipe_browser_test_of_your_own_api(browser: Any) -> None:
    """docs/testing.md "Browser tests of your own API": your app, the fake on its own port
    (so Swagger UI redeems the code cross-origin, as with the real Entra ID)."""
    idp = FakeEntraID()
    idp.authorization.register_client("my-spa", ["http://127.0.0.1/docs/oauth2-redirect"])
    with LiveServer(idp.app) as fake:
        auth = EntraAuth(idp.settings(fake.url, public_client_id="my-spa"))

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            yield
            await auth.aclose()

        app = FastAPI(lifespan=lifespan)
        app.add_middleware(EntraAuthMiddleware, auth=auth)
        setup_openapi(app, auth)
        serve_swagger_ui(app)

        @app.get("/items")
        async def items(user: Annotated[Principal, Depends(require_scopes("Items.Read"))]) -> Any:
            return {"caller": user.name}

        with LiveServer(app) as api:
            page = browser.new_page()
            page.goto(f"{api.url}/docs")
            page.locator("button.authorize").first.click()
            dialog = page.locator(".modal-ux")
            dialog.get_by_text("select all").click()  # api://.../Items.Read
            with page.expect_popup() as popup_info:
                dialog.locator("button.authorize").first.click()
            popup = popup_info.value
            with popup.expect_event("close"):
                popup.get_by_role("button", name="Sign in").click()
            dialog.locator("button", has_text="Logout").wait_for()
            dialog.locator("button", has_text="Close").click()
            assert _try_it_out(page, "items_items_get") == {"caller": "Ada Lovelace"}
            page.close()
    assert idp.authorization.refusals == 0


def test_wrong_redirect_uri_missing_verifier_and_replayed_code_are_refused(
    dev_app_url: str,
) -> None:
    """The same server over real HTTP, no browser needed: what a hostile page could try.

    Sync on purpose: Playwright's sync API holds an event loop in this thread."""
    from tests.test_authorize import REDIRECT, as_form, authorize_query, pkce

    sign_in_url = "/_dev/oauth2/v2.0"

    def code_for(client: httpx.Client) -> tuple[str, str]:
        verifier, challenge = pkce()
        query = authorize_query(challenge)
        answer = client.post(f"{sign_in_url}/authorize", **as_form(query, scp="Items.Read"))
        assert answer.status_code == 303
        return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0], verifier

    def redeem(client: httpx.Client, code: str, verifier: str | None) -> httpx.Response:
        form = {"grant_type": "authorization_code", "client_id": DEV_CLIENT, "code": code}
        form["redirect_uri"] = REDIRECT
        if verifier is not None:
            form["code_verifier"] = verifier
        return client.post(f"{sign_in_url}/token", data=form)

    with httpx.Client(base_url=dev_app_url, timeout=10) as client:
        _, challenge = pkce()
        query = authorize_query(challenge, redirect_uri="http://127.0.0.1:1/elsewhere")
        wrong = client.get(f"{sign_in_url}/authorize", params=query)
        assert wrong.status_code == 400 and "location" not in wrong.headers
        posted = client.post(f"{sign_in_url}/authorize", **as_form(query))
        assert posted.status_code == 400 and "location" not in posted.headers

        code, _ = code_for(client)
        missing = redeem(client, code, None)
        assert (missing.status_code, missing.json()["error"]) == (400, "invalid_grant")

        code, verifier = code_for(client)
        first = redeem(client, code, verifier)
        assert first.status_code == 200
        bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
        assert client.get("/items", headers=bearer).status_code == 200
        replayed = redeem(client, code, verifier)
        assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant")
        assert "already redeemed" in replayed.json()["error_description"]
