"""Tenant metadata: OpenID discovery (v1 + v2) and the signing keys, cached.

Rules (docs/security.md):
- fetched lazily, single-flight: N concurrent cold requests cause one fetch
  of each document; nobody holds a lock across network I/O;
- refreshed in the background every ``metadata_refresh`` while traffic flows
  (stale-while-revalidate: requests never wait for a routine refresh);
- an unknown ``kid`` forces at most one JWKS refresh per
  ``min_refresh_interval`` (30 s by default, 60 s at most; the first one after
  a load is immediate): an invented ``kid`` delays a real rollover by that much
  at most, and a storm of them costs at most two JWKS fetches a minute. A
  refresh that drops a key also ends the cached results it verified
  (``EntraAuth`` checks the key's identity against ``current``);
- on IdP failure the last known good keys keep serving; with nothing cached
  the caller gets ``idp_unavailable`` and retries are spaced out;
- a 404 on the v1 discovery document means "v1 not offered" (Entra External ID
  has none), not an outage; the v2 document stays required. A B2C policy's
  cache (``policy=...``) reads only its policy's v2 document
  (docs/customer-identities.md).

Issuers and key URLs only ever come from the configured authority's documents,
never from a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ._crypto import SigningKey, build_signing_key, jwk_fingerprint
from ._errors import AuthError
from ._http import FetchError, request_json
from ._logging import loggable
from ._observer import AuthObserver
from ._settings import GUID_RE, EntraSettings, is_loopback_host
from ._shared_cache import SharedCache

logger = logging.getLogger("entra_guard.metadata")

#: Seconds between attempts while the IdP is failing (cold or warm).
FAILURE_RETRY_DELAY = 5.0
#: More keys than this in one JWKS is not an Entra document.
MAX_KEYS = 64


@dataclass(frozen=True, slots=True)
class TenantMetadata:
    """One consistent snapshot: issuers and keys that were fetched together."""

    #: token version ("1.0"/"2.0") -> issuer, possibly with a ``{tenantid}`` template.
    issuers: Mapping[str, str]
    keys_by_kid: Mapping[str, SigningKey]
    keys_by_x5t: Mapping[str, SigningKey]
    jwks_uri: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    loaded_at: float
    #: The tenant GUID named by the v2 issuer (``None`` for a ``{tenantid}`` template).
    tenant_id: str | None = None

    def key(self, kid: str | None, x5t: str | None) -> SigningKey | None:
        if kid is not None:
            return self.keys_by_kid.get(kid)
        if x5t is not None:
            return self.keys_by_x5t.get(x5t)
        return None


class MetadataCache:
    """Owns the current ``TenantMetadata`` and every fetch that replaces it."""

    def __init__(
        self,
        settings: EntraSettings,
        client: httpx.AsyncClient,
        *,
        observer: AuthObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: str | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        self._settings = settings
        #: The fleet's cache: a cold start reads the documents another worker fetched
        #: (docs/operations.md "Running several workers and replicas"). Only with a shared backend.
        self._shared = shared if shared is not None and shared.shared else None
        #: The B2C policy whose documents this cache reads (``None``: the tenant's).
        self.policy = policy
        self._v1_absent_logged = False
        self._client = client
        self._observer = observer or AuthObserver()
        self._clock = clock
        self._algorithms = tuple(settings.accepted_algorithms)
        #: The last snapshot loaded (``None`` before the first load): read it, never set
        #: it. An attribute, not a property: every cache hit reads it.
        self.current: TenantMetadata | None = None
        self._task: asyncio.Task[TenantMetadata] | None = None
        self._failed_at: float | None = None
        self._last_forced_refresh: float | None = None
        self._refresh_after = settings.metadata_refresh
        self._background: set[asyncio.Task[Any]] = set()

    # -- public -----------------------------------------------------------------

    def discovery_url(self, version: str) -> str:
        base = f"{self._settings.authority_host}/{self._settings.tenant_id}"
        if self.policy is not None:
            base = f"{base}/{self.policy}"
        if version == "2.0":
            return f"{base}/v2.0/.well-known/openid-configuration"
        return f"{base}/.well-known/openid-configuration"

    async def get(self) -> TenantMetadata:
        """The current snapshot, loading it on first use."""
        current = self._current_refreshing_when_due()
        if current is not None:
            return current
        self._raise_if_cooling_down()
        return await self._run(full=True)

    def known_key(self, kid: str | None, x5t: str | None) -> SigningKey | None:
        """``signing_key``'s answer when it needs no fetch: the key is in the current
        snapshot (a refresh that is due starts in the background, as in ``get``). ``None``:
        ask ``signing_key``. Spares every token after the first two coroutines."""
        current = self._current_refreshing_when_due()
        return None if current is None else current.key(kid, x5t)

    def _current_refreshing_when_due(self) -> TenantMetadata | None:
        """The current snapshot (``None`` before the first load); a refresh that is due
        starts in the background, and the snapshot is served meanwhile."""
        current = self.current
        if current is not None and self._clock() - current.loaded_at >= self._refresh_after:
            self._refresh_in_background()
        return current

    async def signing_key(self, kid: str | None, x5t: str | None) -> SigningKey:
        """The key named by a token header, refreshing the JWKS once if it is new."""
        metadata = await self.get()
        key = metadata.key(kid, x5t)
        if key is not None:
            return key
        if self._task is not None and not self._task.done():
            # Someone is refreshing: share it. If it fails, the last known good keys stay.
            with contextlib.suppress(FetchError):
                metadata = await asyncio.shield(self._task)
        elif self._may_force_refresh():
            self._last_forced_refresh = self._clock()
            self._observer.key_refresh(forced=True)
            logger.info("unknown signing key kid=%s: refreshing the JWKS", loggable(kid or x5t))
            with contextlib.suppress(FetchError, AuthError):
                metadata = await self._run(full=False)
        key = metadata.key(kid, x5t)
        if key is None:
            raise AuthError("unknown_key", "The token's signing key is not published by the tenant")
        return key

    async def warm_up(self) -> bool:
        """Load metadata now (e.g. at start-up). Returns False instead of raising."""
        try:
            await self.get()
        except AuthError as exc:
            logger.warning("metadata warm-up failed: %s", exc.detail)
            return False
        return True

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._background) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._background.clear()

    # -- loading ------------------------------------------------------------------

    def _may_force_refresh(self) -> bool:
        last = self._last_forced_refresh
        return last is None or self._clock() - last >= self._settings.min_refresh_interval

    def _raise_if_cooling_down(self) -> None:
        if self._failed_at is None:
            return
        wait = FAILURE_RETRY_DELAY - (self._clock() - self._failed_at)
        if wait > 0:
            raise AuthError(
                "idp_unavailable",
                "The identity provider's metadata could not be fetched; try again shortly",
                retry_after=max(1, round(wait + 0.5)),
            )

    def _refresh_in_background(self) -> None:
        if self._task is not None and not self._task.done():
            return
        if self._failed_at is not None and self._clock() - self._failed_at < FAILURE_RETRY_DELAY:
            return
        self._observer.key_refresh(forced=False)
        logger.info("metadata is due for its periodic refresh: reloading in the background")
        task = asyncio.ensure_future(self._run(full=True))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # failures were logged by _load; keep serving the old keys

    async def _run(self, *, full: bool) -> TenantMetadata:
        """Single-flight: the first caller starts the load, the rest await the same task."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._load(full=full))
        try:
            return await asyncio.shield(self._task)
        except FetchError as exc:
            if self.current is not None:
                return self.current
            raise AuthError(
                "idp_unavailable",
                "The identity provider's metadata could not be fetched; try again shortly",
                retry_after=int(FAILURE_RETRY_DELAY),
            ) from exc

    async def _load(self, *, full: bool) -> TenantMetadata:
        started = self._clock()
        previous = self.current
        # http_timeout bounds each read; this bounds the whole load (discovery, then JWKS),
        # so an IdP that drips bytes cannot hold waiting requests indefinitely.
        budget = 2 * self._settings.http_timeout + 1
        try:
            async with asyncio.timeout(budget):
                if full or previous is None:
                    metadata = await self._load_everything(previous)
                else:
                    keys = await self._fetch_keys(previous.jwks_uri, previous)
                    metadata = _with_keys(previous, keys)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                exc = FetchError(f"metadata load took longer than {budget:g}s")
            elif not isinstance(exc, FetchError):  # a broken document must not become a 500
                exc = FetchError(f"unusable metadata: {type(exc).__name__}")
            self._failed_at = self._clock()
            level = logging.WARNING if previous is not None else logging.ERROR
            logger.log(
                level,
                "metadata fetch failed after %.3fs: %s%s",
                self._clock() - started,
                loggable(exc, 300, words=True),  # holds URLs from the IdP's documents
                " (keeping last known good keys)" if previous is not None else "",
            )
            raise exc from None
        self._failed_at = None
        self.current = metadata
        # Spread refreshes of many replicas over time (up to +5 %).
        self._refresh_after = self._settings.metadata_refresh * (1 + random.random() * 0.05)  # noqa: S311
        logger.info(
            "%s in %.3fs: %d signing keys, versions %s",
            "metadata loaded" if full or previous is None else "signing keys refreshed",
            self._clock() - started,
            len(metadata.keys_by_kid),
            ",".join(sorted(metadata.issuers)),
        )
        return metadata

    async def _load_everything(self, previous: TenantMetadata | None) -> TenantMetadata:
        if self.policy is not None:
            # B2C: one v2 document per policy; its tokens say "ver": "1.0" all the same.
            versions = ["2.0"]
        else:
            versions = sorted(set(self._settings.accepted_token_versions) | {"2.0"}, reverse=True)
        # Wait for every fetch even when one fails: a fetch left running outlives
        # aclose() and leaks its connection (cancelling it mid-TLS-handshake leaks too).
        results = await asyncio.gather(
            *(self._fetch_discovery(v) for v in versions), return_exceptions=True
        )
        by_version: dict[str, Mapping[str, Any]] = {}
        for version, result in zip(versions, results, strict=True):
            if isinstance(result, BaseException):
                if version == "1.0" and isinstance(result, FetchError) and result.status == 404:
                    self._log_v1_absent()
                    continue
                raise result
            by_version[version] = result
        v2 = by_version["2.0"]
        jwks_uri = _https_url(v2, "jwks_uri")
        keys = await self._fetch_keys(jwks_uri, previous)
        issuers = {
            version: _required_str(doc, "issuer")
            for version, doc in by_version.items()
            if version in self._settings.accepted_token_versions or self.policy is not None
        }
        by_kid, by_x5t = keys
        return TenantMetadata(
            issuers=issuers,
            keys_by_kid=by_kid,
            keys_by_x5t=by_x5t,
            jwks_uri=jwks_uri,
            authorization_endpoint=_optional_str(v2, "authorization_endpoint"),
            token_endpoint=_optional_str(v2, "token_endpoint"),
            loaded_at=self._clock(),
            tenant_id=issuer_tenant_id(_required_str(v2, "issuer")),
        )

    def _log_v1_absent(self) -> None:
        """Once per cache: the authority offers no v1 document (External ID)."""
        if not self._v1_absent_logged:
            self._v1_absent_logged = True
            logger.info("the authority has no v1 discovery document (404): v2 tokens only")

    async def _fetch_discovery(self, version: str) -> Mapping[str, Any]:
        document = await self._timed_fetch(self.discovery_url(version), f"v{version[0]}")
        if not isinstance(document, dict):
            raise FetchError("discovery document is not a JSON object")
        return document

    async def _fetch_keys(
        self, jwks_uri: str, previous: TenantMetadata | None
    ) -> tuple[dict[str, SigningKey], dict[str, SigningKey]]:
        document = await self._timed_fetch(jwks_uri, "jwks")
        raw = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw, list) or not raw or len(raw) > MAX_KEYS:
            raise FetchError("JWKS document has no usable 'keys' list")
        known: dict[str, SigningKey] = {}
        if previous is not None:
            known = {k.fingerprint: k for k in previous.keys_by_kid.values()}
            known.update({k.fingerprint: k for k in previous.keys_by_x5t.values()})
        by_kid: dict[str, SigningKey] = {}
        by_x5t: dict[str, SigningKey] = {}
        for jwk in raw:
            if not isinstance(jwk, dict):
                continue
            key = known.get(jwk_fingerprint(jwk)) or build_signing_key(jwk, self._algorithms)
            if key.kid is not None:
                by_kid.setdefault(key.kid, key)
            if key.x5t is not None:
                by_x5t.setdefault(key.x5t, key)
        return by_kid, by_x5t

    async def _timed_fetch(self, url: str, document: str) -> Any:
        if self._shared is not None and self.current is None:
            # Cold start after a deploy: the fleet already has the documents. Their
            # content is checked exactly as if it came from the IdP.
            known = await self._shared.get("metadata", url)
            if isinstance(known, dict):
                return known
        body = await self._fetch_from_idp(url, document)
        if self._shared is not None and isinstance(body, dict):
            await self._shared.set("metadata", url, body, self._settings.metadata_refresh)
        return body

    async def _fetch_from_idp(self, url: str, document: str) -> Any:
        started = self._clock()
        try:
            body = await request_json(self._client, "GET", url)
        except FetchError:
            self._observer.metadata_fetch(
                document=document, ok=False, seconds=self._clock() - started
            )
            raise
        self._observer.metadata_fetch(document=document, ok=True, seconds=self._clock() - started)
        return body


def _with_keys(
    previous: TenantMetadata,
    keys: tuple[dict[str, SigningKey], dict[str, SigningKey]],
) -> TenantMetadata:
    return TenantMetadata(
        issuers=previous.issuers,
        keys_by_kid=keys[0],
        keys_by_x5t=keys[1],
        jwks_uri=previous.jwks_uri,
        authorization_endpoint=previous.authorization_endpoint,
        token_endpoint=previous.token_endpoint,
        loaded_at=previous.loaded_at,  # a key refresh does not postpone the full refresh
        tenant_id=previous.tenant_id,
    )


def issuer_tenant_id(issuer: str) -> str | None:
    """The first GUID path segment of an issuer (``https://x.ciamlogin.com/<tid>/v2.0``,
    ``https://x.b2clogin.com/<tid>/v2.0/``), lower-cased; ``None`` when there is none."""
    for segment in urlsplit(issuer).path.split("/"):
        if GUID_RE.fullmatch(segment.lower()):
            return segment.lower()
    return None


def _required_str(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise FetchError(f"discovery document has no '{name}'")
    return value


def _optional_str(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value if isinstance(value, str) else None


def _https_url(document: Mapping[str, Any], name: str) -> str:
    value = _required_str(document, name)
    parts = urlsplit(value)
    if not parts.hostname or not (
        parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))
    ):
        raise FetchError(f"discovery '{name}' is not an https URL")
    return value
