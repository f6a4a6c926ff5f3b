"""Benchmark 1: in-process validation of a realistic v2 token, warm keys.

Five contenders (the fifth is the fresh-token cost as users pay it: the result
cache on, 10,000 distinct callers alive in it, each new token stored),
measured interleaved (round-robin batches) so machine noise hits them alike;
the figure is the median over rounds of the mean ns/token of one batch.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import warnings
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jose import jwt as jose_jwt

from entra_guard import EntraAuth
from entra_guard.testing import FakeEntraID, LiveServer

from .common import CLIENT_ID, TENANT_ID, median, realistic_token

#: Distinct tokens cycled through by the "fresh" contenders.
POOL = 32
#: Distinct tokens alive in the result cache for the "fresh, cache on" contender. It cycles
#: through ALIVE + POOL tokens with a cache of ALIVE entries, so in LRU order every call is a
#: miss that stores its caller and evicts the oldest one.
ALIVE = 10_000


@dataclass(frozen=True)
class ValidationResult:
    floor_ns: float
    jose_ns: float
    fresh_ns: float
    fresh_cached_ns: float
    cached_ns: float
    rounds: int
    token_bytes: int
    claims: int


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _public_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    n = int.from_bytes(_b64(jwk["n"]), "big")
    e = int.from_bytes(_b64(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def floor_verify(public: rsa.RSAPublicKey, token: str) -> dict[str, Any]:
    """The least any validator must do: decode header+payload, one RSA verify."""
    head, payload, signature = token.split(".")
    json.loads(_b64(head))
    claims: dict[str, Any] = json.loads(_b64(payload))
    public.verify(
        _b64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return claims


async def _run(idp: FakeEntraID, url: str, rounds: int, alive: int) -> ValidationResult:
    tokens = [realistic_token(idp) for _ in range(POOL)]
    repeated = tokens[0]
    jwk = dict(idp.active_key.public_jwk)
    public = _public_key(jwk)
    issuer = f"https://login.microsoftonline.com/{TENANT_ID}/v2.0"

    alive_tokens = [realistic_token(idp) for _ in range(alive + POOL)]
    fresh_auth = EntraAuth(idp.settings(url, token_cache_size=0))
    cached_auth = EntraAuth(idp.settings(url))
    alive_auth = EntraAuth(idp.settings(url, token_cache_size=alive))
    try:
        for auth in (fresh_auth, cached_auth, alive_auth):
            assert await auth.warm_up(), "metadata warm-up failed"
            principal = await auth.authenticate(repeated)
            assert principal.tenant_id == TENANT_ID and len(principal.groups) == 20

        # Sanity: every contender accepts every token.
        for token in tokens:
            floor_verify(public, token)
            jose_jwt.decode(token, jwk, algorithms=["RS256"], audience=CLIENT_ID, issuer=issuer)
            await fresh_auth.authenticate(token)

        cycle_floor = itertools.cycle(tokens)
        cycle_jose = itertools.cycle(tokens)
        cycle_fresh = itertools.cycle(tokens)
        cycle_alive = itertools.cycle(alive_tokens)
        for _ in alive_tokens:  # fill the cache: ALIVE callers alive from here on
            await alive_auth.authenticate(next(cycle_alive))
        assert len(alive_auth._verified) == alive

        def floor_batch(n: int) -> float:
            started = time.perf_counter_ns()
            for _ in range(n):
                floor_verify(public, next(cycle_floor))
            return (time.perf_counter_ns() - started) / n

        def jose_batch(n: int) -> float:
            started = time.perf_counter_ns()
            for _ in range(n):
                jose_jwt.decode(
                    next(cycle_jose), jwk, algorithms=["RS256"], audience=CLIENT_ID, issuer=issuer
                )
            return (time.perf_counter_ns() - started) / n

        async def fresh_batch(n: int) -> float:
            authenticate = fresh_auth.authenticate
            started = time.perf_counter_ns()
            for _ in range(n):
                await authenticate(next(cycle_fresh))
            return (time.perf_counter_ns() - started) / n

        async def alive_batch(n: int) -> float:
            authenticate = alive_auth.authenticate
            started = time.perf_counter_ns()
            for _ in range(n):
                await authenticate(next(cycle_alive))
            return (time.perf_counter_ns() - started) / n

        async def cached_batch(n: int) -> float:
            authenticate = cached_auth.authenticate
            started = time.perf_counter_ns()
            for _ in range(n):
                await authenticate(repeated)
            return (time.perf_counter_ns() - started) / n

        results: dict[str, list[float]] = {
            "floor": [],
            "jose": [],
            "fresh": [],
            "alive": [],
            "cached": [],
        }
        # Warm-up round, discarded.
        floor_batch(100)
        jose_batch(30)
        await fresh_batch(100)
        await alive_batch(100)
        await cached_batch(5000)
        for _ in range(rounds):
            results["floor"].append(floor_batch(300))
            results["jose"].append(jose_batch(60))
            results["fresh"].append(await fresh_batch(300))
            results["alive"].append(await alive_batch(300))
            results["cached"].append(await cached_batch(20000))
    finally:
        assert len(alive_auth._verified) == alive, "every alive-batch call must be a miss"
        await fresh_auth.aclose()
        await cached_auth.aclose()
        await alive_auth.aclose()
    return ValidationResult(
        floor_ns=median(results["floor"]),
        jose_ns=median(results["jose"]),
        fresh_ns=median(results["fresh"]),
        fresh_cached_ns=median(results["alive"]),
        cached_ns=median(results["cached"]),
        rounds=rounds,
        token_bytes=len(repeated),
        claims=len(json.loads(_b64(repeated.split(".")[1]))),
    )


def run(rounds: int = 15, alive: int = ALIVE) -> ValidationResult:
    idp = FakeEntraID(tenant_id=TENANT_ID, client_id=CLIENT_ID)
    with warnings.catch_warnings(), LiveServer(idp.app) as server:
        warnings.simplefilter("ignore", DeprecationWarning)  # python-jose's utcnow()
        return asyncio.run(_run(idp, server.url, rounds, alive))


def ratios(r: ValidationResult) -> str:
    rows = [
        ("floor", r.floor_ns),
        ("naive python-jose", r.jose_ns),
        ("fresh token (no result cache)", r.fresh_ns),
        (f"fresh token, result cache on, {ALIVE:,} distinct tokens alive", r.fresh_cached_ns),
        ("repeated token (cache hit)", r.cached_ns),
    ]
    return "\n".join(
        f"{name:<62} {ns / 1000:8.1f} us  {ns / r.floor_ns:5.2f}x floor" for name, ns in rows
    )


if __name__ == "__main__":
    print(ratios(run()))
