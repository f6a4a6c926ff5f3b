"""A misbehaving IdP or Graph, or absurd numbers in a signed token: never a 500, never a pass."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from entra_guard import EntraSettings, Principal, require_groups, require_principal
from entra_guard._http import MAX_RETRY_AFTER, retry_after_seconds
from entra_guard.testing import FakeEntraID, LiveServer, sign_token

from ._inprocess import transport_for
from .conftest import FINANCE_GROUP, ApiFactory, assert_refused, bearer, protected_app

pytestmark = pytest.mark.in_process


def me_app(settings: EntraSettings) -> Any:
    app = protected_app(settings)

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> dict[str, Any]:
        return principal.to_dict()

    @app.get("/finance", dependencies=[Depends(require_groups(FINANCE_GROUP))])
    async def finance() -> dict[str, str]:
        return {"area": "finance"}

    return app


# -- Graph ---------------------------------------------------------------------------


@pytest.fixture
def hostile_graph(start_api: ApiFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """A 'Graph' whose answer each test chooses: ``behaviour["response"]``."""
    behaviour: dict[str, Any] = {"hits": 0}

    async def anything(request: Request) -> Response:
        behaviour["hits"] += 1
        response: Response = behaviour["response"]()
        return response

    app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])
    yield start_api(app=app), behaviour


@pytest.mark.parametrize(
    ("response", "graph_calls"),
    [
        # A 200 we cannot use is the same on every attempt: asked once per request.
        (lambda: Response(b"[" * 100_000 + b"]" * 100_000, media_type="application/json"), 2),
        # Throttling with a Retry-After we cannot read: backoff, all 4 attempts per request.
        # (the other unreadable values are parsed the same way: test_retry_after_parsing)
        (lambda: Response(b"{}", status_code=429, headers={"Retry-After": "inf"}), 8),
        # Odd items are skipped: an answer (no groups), cached for the second request.
        (lambda: Response(b'{"value": [{"id": 1}, null, "x"]}', media_type="application/json"), 1),
        (lambda: Response(b'{"value": 7}', media_type="application/json"), 2),
    ],
    ids=["deeply-nested-json", "retry-after-inf", "odd-items", "odd-value"],
)
def test_hostile_graph_answers_fail_closed(
    start_api: ApiFactory,
    graph_settings: EntraSettings,
    hostile_graph: tuple[str, dict[str, Any]],
    client: httpx.Client,
    fake_entra: FakeEntraID,
    response: Any,
    graph_calls: int,
) -> None:
    url, behaviour = hostile_graph
    behaviour["response"] = response
    api = start_api(app=me_app(graph_settings.model_copy(update={"graph_url": url})))
    token = fake_entra.token(overage=True)
    for _ in range(2):  # and the next request of the tenant is no 500 either
        refused = client.get(f"{api}/finance", headers=bearer(token))
        assert refused.status_code != 500
        if refused.status_code == 403:
            assert refused.json()["code"] == "missing_group"
        else:
            assert_refused(refused, 503, "groups_unavailable")
    assert behaviour["hits"] == graph_calls


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("NaN", None),
        ("1e309", None),  # float() says inf
        ("soon", None),
        ("", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),  # an HTTP-date: not waited for
        ("-5", 0.0),
        ("2.5", 2.5),
        ("99999", MAX_RETRY_AFTER),
    ],
)
def test_retry_after_parsing(header: str, seconds: float | None) -> None:
    response = httpx.Response(429, headers={"Retry-After": header})
    assert retry_after_seconds(response) == seconds


def test_huge_retry_after_is_capped(
    start_api: ApiFactory,
    graph_settings: EntraSettings,
    hostile_graph: tuple[str, dict[str, Any]],
    client: httpx.Client,
    fake_entra: FakeEntraID,
) -> None:
    url, behaviour = hostile_graph
    behaviour["response"] = lambda: Response(
        b"{}", status_code=429, headers={"Retry-After": "1e12"}
    )
    api = start_api(app=me_app(graph_settings.model_copy(update={"graph_url": url})))
    refused = client.get(f"{api}/finance", headers=bearer(fake_entra.token(overage=True)))
    assert_refused(refused, 503, "groups_unavailable")
    assert int(refused.headers["retry-after"]) <= 300


# -- identity provider ---------------------------------------------------------------


async def test_unknown_kids_during_a_failing_refresh_are_401(
    start_api: ApiFactory, fresh_idp: tuple[FakeEntraID, str]
) -> None:
    idp, url = fresh_idp
    api = start_api(app=me_app(idp.settings(url)))
    async with httpx.AsyncClient(timeout=30, transport=transport_for(api)) as client:
        assert (await client.get(f"{api}/me", headers=bearer(idp.token()))).status_code == 200
        idp.fail(503)
        idp.response_delay = 0.5  # the forced refresh is still failing when the second arrives
        strangers = [idp.token(header={"kid": uuid.uuid4().hex}) for _ in range(6)]
        responses = await asyncio.gather(
            *(client.get(f"{api}/me", headers=bearer(t)) for t in strangers)
        )
    for response in responses:
        assert_refused(response, 401, "unknown_key")


@pytest.mark.over_sockets  # a body that drips over a socket
def test_dripping_idp_is_cut_off_by_the_load_budget(start_api: ApiFactory) -> None:
    idp = FakeEntraID()

    async def drip() -> AsyncIterator[bytes]:
        for _ in range(60):  # bounded: one byte every 0.5 s, each read within http_timeout
            yield b" "
            await asyncio.sleep(0.5)

    async def dripping(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/keys"):
            await StreamingResponse(drip(), media_type="application/json")(scope, receive, send)
        else:
            await idp.app(scope, receive, send)

    with LiveServer(dripping) as server:
        api = start_api(app=me_app(idp.settings(server.url, http_timeout=1)))
        started = time.monotonic()
        refused = httpx.get(f"{api}/me", headers=bearer(idp.token()), timeout=30)
        assert_refused(refused, 503, "idp_unavailable")
        assert time.monotonic() - started < 6  # 2 x http_timeout + 1, plus slack


# -- absurd numbers in a validly signed token ------------------------------------------


@pytest.mark.parametrize("exp", [float("nan"), float("inf"), 10**400], ids=["nan", "inf", "1e400"])
def test_non_finite_or_huge_exp_is_malformed(
    api: str, client: httpx.Client, fake_entra: FakeEntraID, exp: Any
) -> None:
    claims = fake_entra.claims()
    claims["exp"] = exp
    token = sign_token(
        {"typ": "JWT", "alg": "RS256", "kid": fake_entra.active_key.kid},
        claims,
        fake_entra.active_key,
    )
    assert_refused(client.get(f"{api}/me", headers=bearer(token)), 401, "malformed_token")
