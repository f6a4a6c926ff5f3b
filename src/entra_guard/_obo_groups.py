"""Groups overage through an on-behalf-of token (``ENTRA_GROUPS_VIA_OBO``).

docs/downstream.md, "Groups overage via OBO":
instead of an app token with the application permission
``GroupMember.Read.All``, the caller's own token is exchanged for a Graph
token with the delegated ``User.Read`` and Graph is asked

    POST {graph_url}/v1.0/me/getMemberObjects  {"securityEnabledOnly": false}

Results are cached per (tid, oid) for ``groups_cache_ttl`` and concurrent
look-ups of one user share one call. Graph failures fail closed (503
``groups_unavailable``); the OBO grant's own refusals (``consent_required``,
``insufficient_claims``...) reach the caller as they are, since only the
caller can fix them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from ._cache import BoundedTTLCache, SingleFlight
from ._errors import AuthError
from ._http import FetchError, request_json
from ._obo import OboClient
from ._principal import Principal
from ._settings import EntraSettings

logger = logging.getLogger("entra_guard")

#: Distinct users looked up at the same time; beyond: 503 at once.
MAX_PENDING = 1024
UNAVAILABLE_DETAIL = "Group membership could not be determined right now; try again later"


class OboGroups:
    """Resolves groups overage with the caller's OBO token (built and closed by ``EntraAuth``)."""

    def __init__(
        self,
        settings: EntraSettings,
        http: httpx.AsyncClient,
        obo: OboClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.http = http
        self.obo = obo
        self._clock = clock
        self.scopes = (f"{settings.graph_url}/User.Read",)
        self._groups: BoundedTTLCache[tuple[str, str], frozenset[str]] = BoundedTTLCache(
            settings.groups_cache_size, clock=clock
        )
        self._lookups: SingleFlight[tuple[str, str], frozenset[str]] = SingleFlight()

    async def group_ids(self, principal: Principal, token: str, digest: bytes) -> frozenset[str]:
        key = (principal.tenant_id, (principal.object_id or principal.subject or "").lower())
        cached = self._groups.get(key)
        if cached is not None:
            return cached
        if len(self._lookups) >= MAX_PENDING:
            raise AuthError("groups_unavailable", UNAVAILABLE_DETAIL, retry_after=1)
        return await self._lookups.run(key, lambda: self._lookup(key, principal, token, digest))

    async def _lookup(
        self, key: tuple[str, str], principal: Principal, token: str, digest: bytes
    ) -> frozenset[str]:
        access = await self.obo.acquire(token, digest, principal, self.scopes)
        url = f"{self.settings.graph_url}/v1.0/me/getMemberObjects"
        try:
            async with asyncio.timeout(self.obo.budget):
                body = await request_json(
                    self.http,
                    "POST",
                    url,
                    json={"securityEnabledOnly": False},
                    headers={"authorization": f"Bearer {access}"},
                )
        except (FetchError, TimeoutError) as exc:
            status = getattr(exc, "status", None)
            retry_after = getattr(exc, "retry_after", None)
            logger.warning(
                "groups_unavailable: POST /me/getMemberObjects failed (HTTP %s) tid=%s oid=%s",
                status,
                key[0],
                key[1],
            )
            seconds = max(1, math.ceil(retry_after)) if retry_after else None
            raise AuthError("groups_unavailable", UNAVAILABLE_DETAIL, retry_after=seconds) from None
        groups = frozenset(_ids(body))
        if self.settings.groups_cache_ttl > 0:
            self._groups.set(key, groups, self._clock() + self.settings.groups_cache_ttl)
        return groups

    async def aclose(self) -> None:
        await self._lookups.aclose()
        self._groups.clear()


def _ids(body: Any) -> list[str]:
    values = body.get("value") if isinstance(body, dict) else None
    if not isinstance(values, list):
        logger.warning("groups_unavailable: getMemberObjects answered an unexpected document")
        raise AuthError("groups_unavailable", UNAVAILABLE_DETAIL)
    return [v.lower() for v in values if isinstance(v, str)]
