"""On-behalf-of grants: the caller's token exchanged for a downstream API's token.

docs/downstream.md. One ``OboClient`` per
``EntraAuth``:

    POST {authority}/{caller's tid}/oauth2/v2.0/token
      grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
      requested_token_use=on_behalf_of  assertion=<incoming token>  scope=<scopes>
      + the API's client credential (secret, certificate assertion or federated token)

Results are cached per (sha256 of the incoming token, sorted scopes) until 5
minutes before they expire; concurrent requests for one key share one grant;
the cache is bounded (``ENTRA_OBO_CACHE_SIZE``). Entra's refusals become the
docs/troubleshooting.md "Codes" answers (``insufficient_claims`` with the claims challenge,
``consent_required``, ``token_expired``, ``downstream_unavailable``); Entra's
own text and trace ids go to the log only. No token is ever logged, put in an
exception or shown by a repr.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ._cache import SingleFlight
from ._credentials import ClientCredential
from ._errors import AuthError
from ._http import MAX_RESPONSE_BYTES, retry_after_seconds
from ._logging import loggable
from ._observer import AuthObserver
from ._principal import Principal
from ._settings import EntraSettings
from ._shared_cache import SharedCache

logger = logging.getLogger("entra_guard.obo")

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: A downstream token is reused until this long before its ``exp``, s.
RENEW_MARGIN = 300.0
#: Longest lifetime believed from ``expires_in``, s (CAE tokens live up to 28 h).
MAX_LIFETIME = 28 * 3600.0
#: HTTP attempts per grant (the first one included).
MAX_ATTEMPTS = 3
#: Longest ``Retry-After`` waited out while the caller waits, s; beyond: 503.
MAX_RETRY_WAIT = 2.0
#: Distinct grants in flight; beyond this new ones get 503 at once.
MAX_PENDING_GRANTS = 1024
#: Largest claims challenge accepted (JSON text), bytes.
MAX_CLAIMS = 8192
#: Entra error codes (``error_codes`` / ``AADSTSnnnn``) and what the caller is told.
CONSENT_CODES = frozenset({65001})
EXPIRED_CODES = frozenset({500133, 700082, 70043})

UNAVAILABLE_DETAIL = "A downstream API cannot be called right now; try again later"


def merge_claims(challenge: str | None, capabilities: Sequence[str]) -> str | None:
    """The grant's ``claims`` parameter: a claims challenge (JSON or base64 of it)
    merged with the client capabilities, as MSAL does (``xms_cc`` under
    ``access_token``). ``ValueError`` when the challenge is not a JSON object."""
    merged: dict[str, Any] = {}
    if challenge:
        merged = decode_claims(challenge)
    if capabilities:
        access = merged.get("access_token")
        if not isinstance(access, dict):
            access = merged["access_token"] = {}
        access["xms_cc"] = {"values": list(capabilities)}
    return json.dumps(merged, separators=(",", ":")) if merged else None


def decode_claims(challenge: str) -> dict[str, Any]:
    """A claims request from JSON text or its base64 (as ``WWW-Authenticate`` carries it)."""
    text = challenge.strip()
    if len(text) > MAX_CLAIMS * 2:
        raise ValueError("claims challenge too large")
    if not text.startswith("{"):
        try:
            raw = text.replace("-", "+").replace("_", "/")
            text = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ValueError("claims challenge is neither JSON nor base64 of JSON") from None
    if len(text) > MAX_CLAIMS:
        raise ValueError("claims challenge too large")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("claims challenge is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("claims challenge is not a JSON object")
    return value


def _printable(text: str, limit: int) -> str:
    """Entra's error text for one log line: printable ASCII, spaces kept, bounded."""
    cleaned = "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


def _unavailable(retry_after: float | None = None, reason: str = "unavailable") -> AuthError:
    seconds = None if retry_after is None else max(1, math.ceil(retry_after))
    return AuthError(
        "downstream_unavailable", UNAVAILABLE_DETAIL, retry_after=seconds, reason=reason
    )


def normalize_scopes(scopes: Sequence[str] | str) -> tuple[str, ...]:
    """Sorted, de-duplicated scopes; ``ValueError`` for empty or blank ones."""
    items = (scopes,) if isinstance(scopes, str) else tuple(scopes)
    if not items or any(not isinstance(s, str) or not s.strip() or " " in s for s in items):
        raise ValueError(f"scopes must be non-empty strings without spaces, got {items!r}")
    return tuple(sorted(set(items)))


def _cache_key(digest: bytes, scopes: tuple[str, ...]) -> str:
    return f"{digest.hex()}:{' '.join(scopes)}"


class OboClient:
    """Acquires and caches on-behalf-of tokens for one ``EntraAuth`` (built and closed by it)."""

    def __init__(
        self,
        settings: EntraSettings,
        http: httpx.AsyncClient,
        credential: ClientCredential | None,
        *,
        clock: Callable[[], float] = time.time,
        observer: AuthObserver | None = None,
        cache: SharedCache | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.credential = credential
        self.observer = observer or AuthObserver()
        self._clock = clock
        #: (sha256 of the incoming token, sorted scopes) -> downstream token; sealed when
        #: shared (docs/operations.md "Running several workers and replicas").
        self.cache = (
            cache
            if cache is not None
            else SharedCache(
                settings.client_id, None, sizes={"obo": settings.obo_cache_size}, clock=clock
            )
        )
        self._owns_cache = cache is None
        self._grants: SingleFlight[tuple[bytes, tuple[str, ...], str | None], str] = SingleFlight()
        #: Grants sent to the token endpoint (for tests and metrics).
        self.grants = 0
        self.budget = min(10.0, 2 * settings.http_timeout + 1)

    async def acquire(
        self,
        token: str | bytes,
        digest: bytes,
        principal: Principal,
        scopes: tuple[str, ...],
        *,
        claims: str | None = None,
    ) -> str:
        """The downstream token for ``principal`` (whose token is ``token``)."""
        started = time.perf_counter()
        cached = claims is None and self.cache.peek("obo", _cache_key(digest, scopes)) is not None
        try:
            access = await self._acquire(token, digest, principal, scopes, claims=claims)
        except AuthError as exc:
            seconds = time.perf_counter() - started
            self.observer.obo_acquire(cached=False, ok=False, code=exc.code, seconds=seconds)
            raise
        seconds = time.perf_counter() - started
        self.observer.obo_acquire(cached=cached, ok=True, code=None, seconds=seconds)
        return access

    async def _acquire(
        self,
        token: str | bytes,
        digest: bytes,
        principal: Principal,
        scopes: tuple[str, ...],
        *,
        claims: str | None,
    ) -> str:
        if principal.is_app_only:
            raise AuthError(
                "wrong_token_type",
                "Downstream APIs can only be called on behalf of a user; "
                "app-only tokens cannot be exchanged",
            )
        if claims is None:
            cached = await self.cache.get("obo", _cache_key(digest, scopes))
            if isinstance(cached, str):
                return cached
        merged = merge_claims(claims, self.settings.client_capabilities)
        if isinstance(token, bytes):
            token = token.decode("ascii")  # a verified token is ASCII
        if self.credential is None:
            logger.error(
                "downstream_unavailable: on-behalf-of needs a client credential: set "
                "ENTRA_CLIENT_SECRET, ENTRA_CLIENT_CERTIFICATE_PATH or ENTRA_FEDERATED_TOKEN_FILE"
            )
            raise _unavailable(reason="not_configured")
        if len(self._grants) >= MAX_PENDING_GRANTS:
            raise _unavailable(1, reason="busy")
        key = (digest, scopes, claims)
        return await self._grants.run(
            key, lambda: self._grant(token, digest, principal, scopes, merged)
        )

    async def aclose(self) -> None:
        await self._grants.aclose()
        if self._owns_cache:
            await self.cache.aclose()

    # -- the grant -----------------------------------------------------------------

    async def _grant(
        self,
        token: str,
        digest: bytes,
        principal: Principal,
        scopes: tuple[str, ...],
        claims: str | None,
    ) -> str:
        assert self.credential is not None
        tid = principal.tenant_id
        endpoint = f"{self.settings.authority_host}/{tid}/oauth2/v2.0/token"
        deadline = time.monotonic() + self.budget
        attempt = 0
        while True:
            attempt += 1
            try:
                credential = self.credential.form_fields(endpoint)
            except ValueError as exc:  # e.g. the federated token file vanished
                logger.error("downstream_unavailable: %s", exc)
                raise _unavailable(reason="not_configured") from None
            form = {
                "grant_type": GRANT_TYPE,
                "requested_token_use": "on_behalf_of",
                "assertion": token,
                "scope": " ".join(scopes),
                **credential,
            }
            if claims is not None:
                form["claims"] = claims
            self.grants += 1
            status, body, retry_after = await self._post(endpoint, form, deadline)
            if status == 200:
                return await self._accept(body, digest, scopes, principal)
            if status is not None and status != 429 and status < 500:
                raise self._refusal(status, body, token, principal, scopes)
            wait = retry_after if retry_after is not None else 0.25 * attempt
            if status is None and time.monotonic() >= deadline:
                attempt = MAX_ATTEMPTS  # timed out: no budget left for another try
            if (
                attempt >= MAX_ATTEMPTS
                or wait > MAX_RETRY_WAIT
                or time.monotonic() + wait >= deadline
            ):
                what = "unreachable" if status is None else f"HTTP {status}"
                logger.warning(
                    "downstream_unavailable: token endpoint %s (attempt %d) tid=%s oid=%s",
                    what,
                    attempt,
                    loggable(tid),
                    loggable(principal.object_id),
                )
                raise _unavailable(retry_after if retry_after else 5)
            logger.info("on-behalf-of grant: HTTP %s, retrying in %.2fs", status, wait)
            await asyncio.sleep(wait)

    async def _post(
        self, url: str, form: dict[str, str], deadline: float
    ) -> tuple[int | None, Any, float | None]:
        """(status, JSON body or None, Retry-After); status None when unreachable."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, None, None
        try:
            async with asyncio.timeout(remaining):
                async with self.http.stream("POST", url, data=form) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            return response.status_code, None, None
                    status, retry_after = response.status_code, retry_after_seconds(response)
        except (httpx.HTTPError, TimeoutError) as exc:
            logger.info("on-behalf-of grant: token endpoint failed: %s", type(exc).__name__)
            return None, None, None
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
        return status, parsed, retry_after

    async def _accept(
        self, body: Any, digest: bytes, scopes: tuple[str, ...], principal: Principal
    ) -> str:
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            logger.warning("downstream_unavailable: the token endpoint answered no access_token")
            raise _unavailable()
        try:
            lifetime = float(body.get("expires_in", 3599))
        except (TypeError, ValueError, OverflowError):
            lifetime = 3599.0
        if not math.isfinite(lifetime):
            lifetime = 3599.0
        lifetime = min(lifetime, MAX_LIFETIME)
        if lifetime > RENEW_MARGIN:
            await self.cache.set("obo", _cache_key(digest, scopes), access, lifetime - RENEW_MARGIN)
        logger.debug(
            "on-behalf-of token acquired: tid=%s oid=%s scopes=%s",
            loggable(principal.tenant_id),
            loggable(principal.object_id),
            loggable(" ".join(scopes), 200),
        )
        return access

    def _refusal(
        self,
        status: int,
        body: Any,
        token: str,
        principal: Principal,
        scopes: tuple[str, ...],
    ) -> AuthError:
        """Entra's 4xx as the caller's answer; Entra's own words go to the log only."""
        body = body if isinstance(body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), str) else "-"
        description = str(body.get("error_description", "")).replace(token, "***")
        codes = {c for c in body.get("error_codes", ()) or () if isinstance(c, int)}
        claims = body.get("claims")
        logger.warning(
            "on-behalf-of grant refused: HTTP %s error=%s codes=%s suberror=%s tid=%s oid=%s "
            "scopes=%s description=%s",
            status,
            loggable(error),
            sorted(codes),
            loggable(body.get("suberror")),
            loggable(principal.tenant_id),
            loggable(principal.object_id),
            loggable(" ".join(scopes), 200),
            _printable(description, 400),
        )
        if isinstance(claims, str) and claims.strip():
            try:
                decode_claims(claims)
                encoded = base64.b64encode(claims.encode("utf-8")).decode("ascii")
            except ValueError:
                encoded = None
            if encoded is not None:
                return AuthError(
                    "insufficient_claims",
                    "The downstream API needs more from the sign-in (e.g. MFA or a "
                    "Conditional Access policy): sign in again with the claims challenge",
                    claims=encoded,
                    authorization_uri=self.authorize_endpoint(principal.tenant_id),
                )
        if codes & CONSENT_CODES or body.get("suberror") == "consent_required":
            return AuthError(
                "consent_required",
                f"Consent is missing for the downstream scopes {' '.join(scopes)}: list the "
                "client in the API's knownClientApplications and sign in with /.default, or "
                "have an administrator grant consent",
            )
        if codes & EXPIRED_CODES:
            return AuthError("token_expired", "The token can no longer be exchanged; sign in again")
        if error in ("invalid_grant", "interaction_required"):
            return AuthError(
                "token_expired",
                "The token could not be exchanged for a downstream token; sign in again",
                reason="invalid_grant",
            )
        # invalid_client, unauthorized_client, invalid_scope...: this API's configuration.
        return _unavailable(reason="refused")

    def authorize_endpoint(self, tenant_id: str) -> str:
        return f"{self.settings.authority_host}/{tenant_id}/oauth2/v2.0/authorize"
