"""Start-up warm-up that fails soft, and a shutdown that leaves nothing behind.

pytest runs with ``filterwarnings = error``: a socket or transport left open
surfaces as an unraisable ``ResourceWarning`` and fails the test; each test
also collects garbage itself so a leak is blamed on the test that caused it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from entra_guard import (
    AuthError,
    EntraAuth,
    EntraAuthMiddleware,
    EntraSettings,
    Principal,
    require_principal,
)
from entra_guard._metadata import MetadataCache
from entra_guard.testing import FakeEntraID, LiveServer
from sample_app.app import create_app
from tests.conftest import bearer


def other_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


@pytest.fixture(autouse=True)
def _no_destroyed_tasks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.ERROR, logger="asyncio")
    yield
    gc.collect()
    destroyed = [r for r in caplog.records if "destroyed" in r.getMessage()]
    assert not destroyed, destroyed


def documented_app(auth: EntraAuth) -> FastAPI:
    """The lifespan recipe of docs/operations.md "Start-up and shutdown"."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await auth.warm_up()  # logs a warning and returns False if the IdP is down
        try:
            yield
        finally:
            await auth.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(EntraAuthMiddleware, auth=auth)

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> str:
        return principal.tenant_id

    return app


def test_warm_up_fetches_metadata_before_the_first_request(
    fresh_idp: tuple[FakeEntraID, str], client: httpx.Client
) -> None:
    idp, url = fresh_idp
    auth = EntraAuth(idp.settings(url))
    with LiveServer(documented_app(auth)) as server:
        assert idp.hits_matching("/keys") == 1  # before any request
        assert client.get(f"{server.url}/me", headers=bearer(idp.token())).status_code == 200
        assert idp.hits_matching("/keys") == 1
    assert auth.http.is_closed


def test_warm_up_fails_soft_with_a_warning(
    fresh_idp: tuple[FakeEntraID, str],
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    idp, url = fresh_idp
    idp.fail(503)
    auth = EntraAuth(idp.settings(url))
    with (
        caplog.at_level(logging.INFO, logger="entra_guard"),
        LiveServer(documented_app(auth)) as server,
    ):
        warnings = [r for r in caplog.records if "warm-up failed" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        response = client.get(f"{server.url}/me", headers=bearer(idp.token()))
        assert response.status_code == 503 and response.json()["code"] == "idp_unavailable"
    assert auth.http.is_closed


def test_sample_app_shutdown_closes_client_and_tasks(
    entra_settings: EntraSettings, fake_entra: FakeEntraID, client: httpx.Client
) -> None:
    app = create_app(entra_settings)
    auth: EntraAuth = app.state.auth
    with LiveServer(app) as server:
        assert client.get(f"{server.url}/me", headers=bearer(fake_entra.token())).status_code == 200
        assert not auth.http.is_closed
    assert auth.http.is_closed
    assert not auth.metadata._background
    assert auth.metadata._task is None or auth.metadata._task.done()


async def test_aclose_cancels_a_hanging_background_refresh(
    fresh_idp: tuple[FakeEntraID, str],
) -> None:
    idp, url = fresh_idp
    now = [0.0]
    settings = idp.settings(url, metadata_refresh=60.0)
    http = httpx.AsyncClient()
    cache = MetadataCache(settings, http, clock=lambda: now[0])
    try:
        await cache.get()
        idp.hang()
        now[0] += 3600
        await cache.get()  # stale: a background refresh starts and hangs
        for _ in range(200):
            if idp.hits_matching("openid-configuration") >= 3:
                break
            await asyncio.sleep(0.01)
        assert any(not t.done() for t in cache._background)
        await cache.aclose()
        assert not cache._background
        await http.aclose()
        assert other_tasks() == []
    finally:
        idp.recover()
    gc.collect()


async def test_aclose_during_a_cold_load_leaves_no_task(
    fresh_idp: tuple[FakeEntraID, str],
) -> None:
    idp, url = fresh_idp
    idp.hang()
    try:
        auth = EntraAuth(idp.settings(url))
        request = asyncio.ensure_future(auth.authenticate(idp.token()))
        for _ in range(200):
            if idp.hits_matching("openid-configuration") >= 2:
                break
            await asyncio.sleep(0.01)
        assert not request.done()
        await auth.aclose()
        with pytest.raises((AuthError, asyncio.CancelledError)):
            await asyncio.wait_for(request, 5)
        assert auth.http.is_closed
        assert other_tasks() == []
    finally:
        idp.recover()
    gc.collect()


async def test_async_with_and_double_close(
    entra_settings: EntraSettings, fake_entra: FakeEntraID
) -> None:
    async with EntraAuth(entra_settings) as auth:
        await auth.authenticate(fake_entra.token())
    assert auth.http.is_closed
    await auth.aclose()  # idempotent
    assert other_tasks() == []
    gc.collect()
