"""Security review findings on validation (issue 9: 1, 2, 7, 10; issue 8: 4, 5), in process.

Each test drives ``EntraAuth.authenticate`` (or the middleware through
``httpx.ASGITransport``) against the fake Entra ID served in process: no sockets.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import freezegun
import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from entra_guard import AuthError, EntraAuth, Principal, require_principal
from entra_guard._crypto import b64url_encode
from entra_guard._settings import GUID_RE
from entra_guard.testing import FakeEntraID
from entra_guard.testing._idp import sign_token
from tests.conftest import assert_refused, bearer, protected_app
from tests.fuzz import in_process_auth


@pytest.fixture
def idp() -> FakeEntraID:
    return FakeEntraID()


@pytest.fixture
async def auth(idp: FakeEntraID) -> AsyncIterator[EntraAuth]:
    async with in_process_auth(idp) as engine:
        yield engine


async def refused(auth: EntraAuth, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await auth.authenticate(token)
    return info.value


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def other_spellings(segment: str) -> list[str]:
    """Every other last character that decodes to the same bytes (non-zero unused bits)."""
    unused = {2: 4, 3: 2}.get(len(segment) % 4, 0)
    last = _ALPHABET.index(segment[-1])
    base = last & ~((1 << unused) - 1)
    return [segment[:-1] + _ALPHABET[base | bits] for bits in range(1, 1 << unused)]


# -- finding 1: canonical base64url only -----------------------------------------------------


async def test_the_15_other_spellings_of_a_signature_are_malformed(
    auth: EntraAuth, idp: FakeEntraID
) -> None:
    token = idp.token()
    head, body, signature = token.split(".")
    assert len(signature) % 4 == 2  # RSA-2048: 256 bytes -> 4 unused bits -> 15 spellings
    spellings = other_spellings(signature)
    assert len(spellings) == 15
    await auth.authenticate(token)
    for spelling in spellings:
        error = await refused(auth, f"{head}.{body}.{spelling}")
        assert error.code == "malformed_token" and error.reason == "non_canonical_base64"


@pytest.mark.parametrize("segment", [0, 1])
async def test_non_canonical_header_or_payload_is_malformed(
    auth: EntraAuth, idp: FakeEntraID, segment: int
) -> None:
    for extra in range(4):  # pad the JSON until its base64 ends with unused bits
        claims = idp.claims(pad="x" * extra)
        header = {"typ": "JWT", "alg": "RS256", "kid": idp.active_key.kid, "p": "x" * extra}
        token = sign_token(header, claims, idp.active_key)
        parts = token.split(".")
        spellings = other_spellings(parts[segment])
        if spellings:
            break
    await auth.authenticate(token)
    parts[segment] = spellings[0]
    error = await refused(auth, ".".join(parts))
    assert error.code == "malformed_token"


# -- finding 2: lone surrogates ---------------------------------------------------------------


@pytest.mark.parametrize("where", [0, 1, 2])
async def test_lone_surrogate_is_malformed_not_a_crash(
    auth: EntraAuth, idp: FakeEntraID, where: int
) -> None:
    parts = idp.token().split(".")
    parts[where] = parts[where][:5] + json.loads('"\\ud800"') + parts[where][5:]
    error = await refused(auth, ".".join(parts))
    assert error.code == "malformed_token"


# -- finding 7: a GUID is the whole string ----------------------------------------------------


def test_guid_re_refuses_a_trailing_newline() -> None:
    guid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    assert GUID_RE.fullmatch(guid)
    assert not GUID_RE.match(guid + "\n")
    assert not GUID_RE.search(guid + "\n")


async def test_tid_with_a_trailing_newline_is_refused_multi_tenant(idp: FakeEntraID) -> None:
    idp.active_key.public_jwk.pop("issuer")  # no per-key tenant scope to save the day
    tid = idp.tenant_id + "\n"
    token = idp.token(tenant_id=tid, iss=f"https://login.microsoftonline.com/{tid}/v2.0")
    async with in_process_auth(idp, tenant_id="organizations") as engine:
        await engine.authenticate(idp.token())
        error = await refused(engine, token)
    assert error.code == "invalid_issuer"


# -- finding 10: the alg is never echoed ------------------------------------------------------


async def test_unsupported_algorithm_detail_does_not_echo_the_alg(
    auth: EntraAuth, idp: FakeEntraID
) -> None:
    error = await refused(auth, idp.token(alg="XY999"))
    assert error.code == "unsupported_algorithm"
    assert "XY999" not in error.detail and "XY999" not in repr(error)
    assert "not accepted" in error.detail and "RS256" in error.detail


# -- issue 8 #4: decode every segment before choosing a key -----------------------------------


async def test_no_kid_and_a_payload_that_is_not_json_is_malformed(
    auth: EntraAuth, idp: FakeEntraID
) -> None:
    head = b64url_encode(b'{"alg":"RS256"}')
    body = b64url_encode(b"\xff\xfe not json")
    signature = b64url_encode(idp.active_key.signer.sign(f"{head}.{body}".encode()))
    error = await refused(auth, f"{head}.{body}.{signature}")
    assert error.code == "malformed_token"


async def test_no_kid_with_a_json_payload_is_still_unknown_key(
    auth: EntraAuth, idp: FakeEntraID
) -> None:
    error = await refused(auth, idp.token(header={"kid": None, "x5t": None}))
    assert error.code == "unknown_key" and error.reason == "no_kid"


# -- issue 8 #5: the clock is read at call time -----------------------------------------------


FROZEN_TIME_IGNORES = ["asyncio.base_events"]


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


async def test_freezegun_moves_the_library_clock(idp: FakeEntraID) -> None:
    # freezegun also freezes time.monotonic, which every event loop in the process (the
    # session's live servers, in their threads) schedules its timers by: a timer set
    # while frozen at a wall-clock value never fires, and each server's shutdown hung
    # 10 s. real_asyncio=True patches the loop class only after time.monotonic, which
    # leaves a window; ignoring calls from asyncio.base_events (loop.time()) has none.
    token = idp.token(expires_in=3600)
    async with in_process_auth(idp) as engine:
        await engine.authenticate(token)  # fresh, then cached
        await engine.authenticate(token)
        with freezegun.freeze_time(_at(time.time() + 3600 + 301 + 5), ignore=FROZEN_TIME_IGNORES):
            error = await refused(engine, token)
    assert error.code == "token_expired"
    async with in_process_auth(idp) as engine:
        with freezegun.freeze_time(
            _at(time.time() - 3600), ignore=FROZEN_TIME_IGNORES
        ):  # before nbf - skew
            error = await refused(engine, token)
    assert error.code == "token_not_yet_valid"


async def test_an_injected_clock_still_wins(idp: FakeEntraID) -> None:
    token = idp.token(expires_in=60)
    async with in_process_auth(idp, clock=lambda: time.time() + 10_000) as engine:
        assert (await refused(engine, token)).code == "token_expired"


# -- allowed_client_apps: the global "allowed_client_app" rule --------------------------------

CALLER_APP = "99999999-9999-9999-9999-999999999999"  # FakeEntraID's default azp / appid


def _app(auth: EntraAuth) -> FastAPI:
    app = protected_app(auth)

    @app.get("/me", dependencies=[Depends(require_principal)])
    async def me(request: Request) -> dict[str, Any]:
        principal: Principal = request.user
        return principal.to_dict()

    return app


async def _get(auth: EntraAuth, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.get("/me", headers=bearer(token))


@pytest.mark.parametrize("version", ["1.0", "2.0"])
async def test_allowed_client_apps_refuses_other_apps(idp: FakeEntraID, version: str) -> None:
    token = idp.token(version=version)
    claims = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "==").decode())
    caller = claims.get("azp") or claims.get("appid")
    async with in_process_auth(idp, allowed_client_apps=[caller]) as engine:
        assert (await _get(engine, token)).status_code == 200
    other = "0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0a"
    async with in_process_auth(idp, allowed_client_apps=[other]) as engine:
        response = await _get(engine, token)
    assert_refused(response, 403, "client_not_allowed")
    assert "www-authenticate" not in response.headers
    # a token naming no calling app at all is refused too
    async with in_process_auth(idp, allowed_client_apps=[other]) as engine:
        bare = idp.token(version=version, azp=None, appid=None)
        assert_refused(await _get(engine, bare), 403, "client_not_allowed")


async def test_allowed_client_apps_empty_allows_every_app(idp: FakeEntraID) -> None:
    async with in_process_auth(idp) as engine:
        assert (await _get(engine, idp.token(azp="any-app"))).status_code == 200


def test_allowed_client_apps_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from entra_guard import EntraSettings

    monkeypatch.setenv("ENTRA_ALLOWED_CLIENT_APPS", f"{CALLER_APP}, other-app")
    settings = EntraSettings(tenant_id="organizations", client_id="api")  # type: ignore[call-arg]
    assert settings.allowed_client_apps == [CALLER_APP, "other-app"]


# -- the verified-token cache is bounded by bytes, not only by entries ------------------------


def _deep_size(obj: object, seen: set[int] | None = None) -> int:
    import sys
    from types import MappingProxyType

    from entra_guard._crypto import SigningKey

    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, SigningKey):  # keys are shared by every entry
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict | MappingProxyType):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in dict(obj).items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(_deep_size(item, seen) for item in obj)
    elif hasattr(type(obj), "__slots__"):
        for cls in type(obj).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if hasattr(obj, name):
                    size += _deep_size(getattr(obj, name), seen)
    return size


@pytest.mark.parametrize("groups", [0, 20, 200])
async def test_cache_charges_at_least_what_an_entry_takes(idp: FakeEntraID, groups: int) -> None:
    from entra_guard._token_cache import entry_cost

    group_ids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(groups)]
    token = idp.token(idp.claims(groups=group_ids or None, given_name="Ada", ipaddr="203.0.113.4"))
    async with in_process_auth(idp) as engine:
        await engine.authenticate(token)
        ((key, entry),) = engine._verified._data.items()
        expires_at, cost, value = entry
        assert cost == entry_cost(len(token))
        assert _deep_size((key, (expires_at, value))) <= cost


async def test_cache_is_bounded_by_bytes(idp: FakeEntraID) -> None:
    from entra_guard._token_cache import BUDGET_BYTES_PER_ENTRY

    many = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(200)]
    async with in_process_auth(idp, token_cache_size=10) as engine:
        for _ in range(10):
            await engine.authenticate(idp.token(groups=many))
        cache = engine._verified
        assert cache.total_bytes <= 10 * BUDGET_BYTES_PER_ENTRY
        assert 1 <= len(cache) < 10  # large principals: the byte bound wins over the count
        for _ in range(10):
            await engine.authenticate(idp.token())
        assert len(cache) == 10  # small ones: the count bound
