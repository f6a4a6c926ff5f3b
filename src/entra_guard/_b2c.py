"""Azure AD B2C: one metadata cache per configured policy, and the token's policy claim.

B2C publishes discovery and keys per user flow / custom policy
(``{host}/{tenant}/{policy}/v2.0/.well-known/openid-configuration``), each
with the same single-flight, refresh and last-known-good rules as a tenant's
(``MetadataCache(policy=...)``). The token's ``tfp`` (legacy: ``acr``) only
*chooses* which policy's keys check the signature; a policy that is not
configured is never fetched (docs/customer-identities.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from ._metadata import MetadataCache
from ._observer import AuthObserver
from ._settings import EntraSettings
from ._shared_cache import SharedCache


def token_policy(claims: Mapping[str, Any]) -> str | None:
    """The policy a B2C token names: ``tfp``, or the legacy ``acr`` (as sent)."""
    value = claims.get("tfp", claims.get("acr"))
    return value if isinstance(value, str) else None


class PolicyMetadata:
    """``MetadataCache`` per configured policy, keyed by the lower-cased policy name."""

    def __init__(
        self,
        settings: EntraSettings,
        client: httpx.AsyncClient,
        *,
        observer: AuthObserver | None = None,
        clock: Callable[[], float] | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        extra: dict[str, Any] = (
            {"shared": shared} if clock is None else {"clock": clock, "shared": shared}
        )
        self._caches: dict[str, MetadataCache] = {
            policy.lower(): MetadataCache(
                settings, client, observer=observer, policy=policy, **extra
            )
            for policy in settings.b2c_policies
        }
        if not self._caches:
            raise ValueError("PolicyMetadata needs ENTRA_B2C_POLICIES")

    @property
    def primary(self) -> MetadataCache:
        """The first configured policy's cache (sign-in, step-up, RFC 9728 defaults)."""
        return next(iter(self._caches.values()))

    def get(self, policy: str | None) -> MetadataCache | None:
        """The cache of ``policy`` (case-insensitive); ``None`` if it is not configured."""
        if policy is None:
            return None
        return self._caches.get(policy.lower())

    def __iter__(self) -> Iterator[MetadataCache]:
        return iter(self._caches.values())

    async def warm_up(self) -> bool:
        results = await asyncio.gather(*(cache.warm_up() for cache in self))
        return all(results)

    async def aclose(self) -> None:
        await asyncio.gather(*(cache.aclose() for cache in self))
