"""``EntraAuth``: the engine every other piece hangs off.

It owns the HTTP client, the metadata cache, the validator and the
verified-token cache; there is no module-level state anywhere in entra-guard,
so two ``EntraAuth`` objects (two APIs, two tenants) never share anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import httpx

from ._b2c import PolicyMetadata
from ._credentials import load_credential
from ._crypto import SigningKey
from ._errors import AuthError
from ._graph import GraphClient
from ._http import build_client
from ._metadata import MetadataCache
from ._obo import OboClient, normalize_scopes
from ._obo_groups import OboGroups
from ._observer import AuthObserver
from ._pools import DownstreamClients
from ._principal import Principal, principal_from_verified
from ._settings import EntraSettings
from ._shared_cache import shared_cache_for
from ._token_cache import VerifiedTokenCache, digest_bytes, token_digest
from ._validation import TokenValidator

logger = logging.getLogger("entra_guard")


def _wall_clock() -> float:
    """``time.time()`` looked up at each call (so ``freezegun`` moves it)."""
    return time.time()


class EntraAuth:
    """Validates Entra ID access tokens for one API registration.

    ``async with EntraAuth(settings) as auth: principal = await auth.authenticate(token)``
    """

    def __init__(
        self,
        settings: EntraSettings | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        observer: AuthObserver | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock`` (Unix seconds) defaults to ``time.time`` read at each call, so
        ``freezegun``/``time-machine`` move it in your tests."""
        self.settings = settings if settings is not None else EntraSettings()  # type: ignore[call-arg]
        self.observer = observer or AuthObserver()
        self._owns_client = http_client is None
        self.http = http_client if http_client is not None else build_client(self.settings)
        #: Everything worth sharing between workers and replicas: memberships, Graph app
        #: tokens, on-behalf-of tokens, metadata documents for a warm start
        #: (docs/operations.md "Running several workers and replicas").
        self.cache = shared_cache_for(self.settings, self.observer, clock or _wall_clock)
        #: B2C: one metadata cache per configured policy (docs/customer-identities.md
        #: "Azure AD B2C"); ``metadata`` is then the first policy's.
        self.policies: PolicyMetadata | None = (
            PolicyMetadata(self.settings, self.http, observer=self.observer, shared=self.cache)
            if self.settings.is_b2c
            else None
        )
        self.metadata: MetadataCache = (
            self.policies.primary
            if self.policies is not None
            else MetadataCache(self.settings, self.http, observer=self.observer, shared=self.cache)
        )
        self.validator = TokenValidator(
            self.settings, self.metadata, clock=clock, policies=self.policies
        )
        #: The API's own client credential (docs/downstream.md); fails here,
        #: at start-up, when its setting is broken.
        self.credential = load_credential(self.settings, clock=self.validator.now)
        #: Resolves groups overage through Microsoft Graph (only used by group guards).
        self.graph = GraphClient(
            self.settings,
            self.http,
            observer=self.observer,
            credential=self.credential,
            cache=self.cache,
        )
        #: On-behalf-of tokens for downstream APIs, and the pooled clients that send them.
        self.obo = OboClient(
            self.settings,
            self.http,
            self.credential,
            clock=self.validator.now,
            observer=self.observer,
            cache=self.cache,
        )
        self.downstream = DownstreamClients(self.settings)
        #: Groups overage with the caller's OBO token (``ENTRA_GROUPS_VIA_OBO``).
        self.obo_groups = OboGroups(self.settings, self.http, self.obo)
        # sha256(token) -> (principal, key that verified it); expires at the token's exp.
        self._verified: VerifiedTokenCache[tuple[Principal, SigningKey]] = VerifiedTokenCache(
            self.settings.token_cache_size
        )

    async def authenticate(
        self,
        token: str | bytes,
        *,
        digest: bytes | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Principal:
        """Validate ``token`` and return the caller; raises ``AuthError`` otherwise.

        ``token`` as ``bytes`` (the middleware passes the header's) is taken as Latin-1,
        as HTTP sends it; a cache hit then never copies it into a ``str``. ``digest``
        (``token_digest(token)``) and ``payload`` (``decode_json_segment`` of its payload
        segment): when the caller has them already (the several-authorities router)."""
        # The default observer's hooks do nothing: then neither a clock nor a hook is
        # called (most of what a cache hit would cost besides the digest).
        observed = type(self.observer) is not AuthObserver
        started = time.perf_counter() if observed else 0.0
        # No cache (``token_cache_size=0``): nothing to key.
        if digest is None and self._verified.max_entries > 0:
            # The cache holds valid, so ASCII, tokens only: bytes are digested unscanned
            # (a non-ASCII one just misses); a non-ASCII str (lone surrogates included)
            # goes straight to the rules, which refuse it before anything encodes it.
            if isinstance(token, bytes):
                digest = digest_bytes(token)
            elif token.isascii():
                digest = digest_bytes(token.encode("ascii"))
        now = self.validator.now()
        if digest is not None:
            hit = self._cached_caller(digest, now)
            if hit is not None:
                if observed:
                    self._observe_hit(hit, started)
                return hit
        if observed:
            self.observer.token_cache(hit=False)
        try:
            validated = await self.validator.validate(
                token if isinstance(token, str) else token.decode("latin-1"),
                now,
                payload=payload,
            )
        except AuthError as exc:
            if observed:
                self._observe(None, cached=False, started=started, code=exc.code)
            raise
        principal = principal_from_verified(
            validated.claims,
            validated.version,
            tenant_id=validated.tenant_id,
            issuer=validated.issuer,
            policy=validated.policy,
        )
        if digest is not None:
            self._verified.set(digest, (principal, validated.key), validated.expires_at, len(token))
        if observed:
            self._observe(principal, cached=False, started=started)
        return principal

    def cached(self, digest: bytes, now: float) -> Principal | None:
        """The caller of a token this ``EntraAuth`` verified (by ``token_digest``), while
        its key is current; ``None`` otherwise (a miss is not counted). The several-
        authorities router asks this first (docs/customer-identities.md "Several
        authorities on one API")."""
        hit = self._cached_caller(digest, now)
        if hit is not None:
            self._observe_hit(hit, time.perf_counter())
        return hit

    def _observe_hit(self, principal: Principal, started: float) -> None:
        self.observer.token_cache(hit=True)
        self._observe(principal, cached=True, started=started)

    def _observe(
        self, principal: Principal | None, *, cached: bool, started: float, code: str | None = None
    ) -> None:
        """Report one outcome (``principal`` None: refused with ``code``); the caller's
        id goes to observers only with ``log_pii`` (docs/operations.md "Tracing
        (OpenTelemetry)")."""
        seconds = time.perf_counter() - started
        if principal is None:
            self.observer.authentication(cached=cached, seconds=seconds, code=code)
            return
        self.observer.authentication(
            cached=cached,
            seconds=seconds,
            token_version=principal.token_version,
            user_id=principal.identity if self.settings.log_pii else None,
        )

    def _cached_caller(self, digest: bytes, now: float) -> Principal | None:
        """The cached caller of a token, while the key that verified it is current: a
        cached result dies with its key (rotated-out keys invalidate their tokens)."""
        cached = self._verified.get(digest, now)
        if cached is None:
            return None
        principal, key = cached
        source = self.metadata
        if self.policies is not None:
            source = self.policies.get(principal.policy) or source
        current = source.current
        if current is None:
            return None
        if key.kid is not None:
            return principal if current.keys_by_kid.get(key.kid) is key else None
        if key.x5t is not None and current.keys_by_x5t.get(key.x5t) is key:
            return principal
        return None

    async def warm_up(self) -> bool:
        """Fetch metadata now (call it from a lifespan); logs and returns False on failure."""
        if self.policies is not None:
            return await self.policies.warm_up()
        return await self.metadata.warm_up()

    def metadata_caches(self) -> tuple[MetadataCache, ...]:
        """Every metadata cache: the tenant's, or one per B2C policy."""
        return tuple(self.policies) if self.policies is not None else (self.metadata,)

    async def known_issuers(self) -> tuple[str, ...]:
        """The issuers of its metadata (``{tenantid}`` templates as published), loading it
        first (raises ``idp_unavailable``): for routing, docs/customer-identities.md
        "Several authorities on one API"."""
        issuers: list[str] = []
        for cache in self.metadata_caches():
            issuers.extend((await cache.get()).issuers.values())
        return tuple(issuers)

    async def group_ids(self, principal: Principal, *, token: str | None = None) -> frozenset[str]:
        """The caller's transitive group ids: the token's ``groups`` claim, or Microsoft
        Graph when the token carries the overage marker (raises 503 ``groups_unavailable``
        when Graph cannot answer). With ``ENTRA_GROUPS_VIA_OBO``, a user's ``token`` is
        exchanged for a delegated Graph token instead of using an app permission."""
        if (
            token is not None
            and self.settings.groups_via_obo
            and principal.groups_overage
            and not principal.is_app_only
        ):
            return await self.obo_groups.group_ids(principal, token, token_digest(token))
        return await self.graph.group_ids(principal)

    async def acquire_token_on_behalf_of(
        self, token: str, scopes: Sequence[str], *, claims: str | None = None
    ) -> str:
        """A token for a downstream API, acquired on behalf of the caller whose ``token``
        this API accepts (validated first; app-only tokens: 403 ``wrong_token_type``).

        ``claims``: a claims challenge to answer (JSON, or base64 as in
        ``WWW-Authenticate``). Cached per token and scopes; docs/downstream.md lists
        the refusals.
        """
        principal = await self.authenticate(token)
        return await self.obo.acquire(
            token, token_digest(token), principal, normalize_scopes(scopes), claims=claims
        )

    async def aclose(self) -> None:
        await self.downstream.aclose()
        await self.obo_groups.aclose()
        await self.obo.aclose()
        await self.graph.aclose()
        for cache in self.metadata_caches():
            await cache.aclose()
        await self.cache.aclose()
        self._verified.clear()
        if self._owns_client:
            await self.http.aclose()

    async def __aenter__(self) -> EntraAuth:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["AuthError", "EntraAuth"]
