"""Fuzzing in the suite (docs/security.md): a 2,000-token slice of ``make fuzz``,
and malformed requests against the sample app, all in process."""

from __future__ import annotations

import random
import time

import httpx

from entra_guard.testing import FakeEntraID
from sample_app.app import create_app
from tests.conftest import run_coroutine
from tests.fuzz import IDP_URL, fuzz


def test_fuzz_slice_of_2000_tokens() -> None:
    started = time.perf_counter()
    result = run_coroutine(fuzz(2000, seed=int(time.time()) % 1000))
    print(result.line())
    assert result.tried == 2000
    assert result.crashes == [], result.crashes[:5]
    assert result.wrongly_accepted == [], result.wrongly_accepted[:5]
    assert result.slow == [], result.slow[:5]
    assert result.accepted > 0  # the oracle's "must pass" side is exercised too
    assert time.perf_counter() - started < 15


def _authorization_values(rng: random.Random, token: str) -> list[bytes]:
    printable = bytes(range(0x20, 0x7F))
    high = bytes(range(0x80, 0x100))
    values = [
        b"",
        b"Bearer",
        b"Bearer ",
        b"Bearer  " + token.encode(),
        b"bearer " + token.encode(),
        b"Bearer " + token.encode() + b" extra",
        b"Basic dXNlcjpwYXNz",
        b"Bearer " + b"a" * 20_000,
        b"Bearer " + token.encode()[:-1] + b"\xff",
        b"Bearer \t" + token.encode(),
        b"Bearer " + token.replace(".", "..").encode(),
    ]
    for _ in range(60):
        alphabet = rng.choice([printable, high, printable + high])
        size = rng.choice([1, 10, 100, 2000, 17000])
        values.append(b"Bearer " + bytes(rng.choice(alphabet) for _ in range(size)))
    return values


ODD_PATHS = [
    "/me/",
    "//me",
    "/ME",
    "/me%00",
    "/me%0aX-Evil:%201",
    "/%2e%2e/me",
    "/items/../admin",
    "/admin%2F",
    "/finance?x=" + "y" * 5000,
    "/" + "a" * 8000,
    "/items%ff",
    "/\u00e9",
    "/health/../me",
]


async def _http_fuzz() -> list[str]:
    idp = FakeEntraID()
    rng = random.Random(11)
    token = idp.token()
    problems = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=idp.app), base_url=IDP_URL
    ) as idp_client:
        app = create_app(idp.settings(IDP_URL), http_client=idp_client, dev_mode=False)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            paths = ["/me", "/items", "/admin", "/finance", "/health", *ODD_PATHS]
            for value in _authorization_values(rng, token):
                for path in rng.sample(paths, 4):
                    method = rng.choice(["GET", "POST", "DELETE"])
                    response = await client.request(
                        method, path, headers=[(b"authorization", value)]
                    )
                    if response.status_code >= 500:
                        problems.append(f"{method} {path[:40]}: {response.status_code}")
            for path in ODD_PATHS:
                response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                if response.status_code >= 500:
                    problems.append(f"GET {path[:40]} (valid token): {response.status_code}")
            twice = [(b"authorization", b"Bearer " + token.encode())] * 2
            response = await client.get("/me", headers=twice)
            if response.status_code != 401:
                problems.append(f"two Authorization headers: {response.status_code}")
    return problems


def test_http_fuzz_against_the_sample_app_no_5xx() -> None:
    assert run_coroutine(_http_fuzz()) == []
