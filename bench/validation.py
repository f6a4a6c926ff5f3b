"""Benchmark 1: in-process validation of a realistic v2 token, warm keys.

Four contenders, measured interleaved (round-robin batches) so machine noise
hits them alike; the figure is the median over rounds of the mean ns/token of
one batch.
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


@dataclass(frozen=True)
class ValidationResult:
    floor_ns: float
    jose_ns: float
    fresh_ns: float
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


async def _run(idp: FakeEntraID, url: str, rounds: int) -> ValidationResult:
    tokens = [realistic_token(idp) for _ in range(POOL)]
    repeated = tokens[0]
    jwk = dict(idp.active_key.public_jwk)
    public = _public_key(jwk)
    issuer = f"https://login.microsoftonline.com/{TENANT_ID}/v2.0"

    fresh_auth = EntraAuth(idp.settings(url, token_cache_size=0))
    cached_auth = EntraAuth(idp.settings(url))
    try:
        for auth in (fresh_auth, cached_auth):
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

        async def cached_batch(n: int) -> float:
            authenticate = cached_auth.authenticate
            started = time.perf_counter_ns()
            for _ in range(n):
                await authenticate(repeated)
            return (time.perf_counter_ns() - started) / n

        results: dict[str, list[float]] = {"floor": [], "jose": [], "fresh": [], "cached": []}
        # Warm-up round, discarded.
        floor_batch(100)
        jose_batch(30)
        await fresh_batch(100)
        await cached_batch(5000)
        for _ in range(rounds):
            results["floor"].append(floor_batch(300))
            results["jose"].append(jose_batch(60))
            results["fresh"].append(await fresh_batch(300))
            results["cached"].append(await cached_batch(20000))
    finally:
        await fresh_auth.aclose()
        await cached_auth.aclose()
    return ValidationResult(
        floor_ns=median(results["floor"]),
        jose_ns=median(results["jose"]),
        fresh_ns=median(results["fresh"]),
        cached_ns=median(results["cached"]),
        rounds=rounds,
        token_bytes=len(repeated),
        claims=len(json.loads(_b64(repeated.split(".")[1]))),
    )


def run(rounds: int = 15) -> ValidationResult:
    idp = FakeEntraID(tenant_id=TENANT_ID, client_id=CLIENT_ID)
    with warnings.catch_warnings(), LiveServer(idp.app) as server:
        warnings.simplefilter("ignore", DeprecationWarning)  # python-jose's utcnow()
        return asyncio.run(_run(idp, server.url, rounds))


if __name__ == "__main__":
    print(run())
