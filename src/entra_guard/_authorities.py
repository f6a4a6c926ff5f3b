"""Several authorities on one API: route each token to the ``EntraAuth`` that issued it.

``EntraAuthMiddleware(app, auth=[workforce, external_id, b2c])``. The token's
*unverified* ``iss`` only chooses which ``EntraAuth`` looks at it; that one
then validates everything (signature with its own keys, issuer, audience,
...). Lying in ``iss`` gains nothing: the token is checked against the keys
of the authority it names. No authority claims the issuer: 401
``invalid_issuer``. docs/customer-identities.md "Several authorities on one API".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._errors import AuthError
from ._token_cache import token_digest
from ._validation import decode_json_segment

if TYPE_CHECKING:
    from ._auth import EntraAuth
    from ._metadata import TenantMetadata
    from ._principal import Principal


def unverified_payload(token: str) -> dict[str, Any] | None:
    """The token's payload, decoded as the ``format`` rule decodes it, for routing only
    (never trusted); ``None`` when it does not decode."""
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii():
        return None
    try:
        return decode_json_segment(parts[1], "payload")
    except AuthError:
        return None


def unverified_issuer_and_tenant(token: str) -> tuple[str | None, str | None]:
    """``iss`` and ``tid`` of a token's payload, for routing only (never trusted)."""
    return _issuer_and_tenant(unverified_payload(token))


def _issuer_and_tenant(claims: dict[str, Any] | None) -> tuple[str | None, str | None]:
    if claims is None:
        return None, None
    iss, tid = claims.get("iss"), claims.get("tid")
    return (
        iss if isinstance(iss, str) else None,
        tid if isinstance(tid, str) else None,
    )


class _IssuerTable:
    """Issuer -> index of the first ``EntraAuth`` publishing it, built from one set of
    metadata snapshots (rebuilt when any of them is replaced)."""

    __slots__ = ("concrete", "snapshots", "templates")

    def __init__(self, snapshots: tuple[TenantMetadata, ...], owners: tuple[int, ...]) -> None:
        self.snapshots = snapshots
        self.concrete: dict[str, int] = {}
        self.templates: list[tuple[str, int]] = []
        for snapshot, owner in zip(snapshots, owners, strict=True):
            for issuer in snapshot.issuers.values():
                if "{tenantid}" in issuer:
                    self.templates.append((issuer, owner))
                else:
                    self.concrete.setdefault(issuer, owner)

    def lookup(self, iss: str, tid: str | None) -> int | None:
        found = self.concrete.get(iss)
        if tid is not None:
            for template, owner in self.templates:
                if (found is None or owner < found) and template.replace("{tenantid}", tid) == iss:
                    found = owner
        return found


class AuthorityRouter:
    """Chooses the ``EntraAuth`` for a token by its issuer; the middleware's door."""

    def __init__(self, auths: Sequence[EntraAuth]) -> None:
        if not auths:
            raise ValueError("EntraAuthMiddleware needs at least one EntraAuth")
        self.auths = tuple(auths)
        #: Every metadata cache (one per B2C policy) and the index of its ``EntraAuth``.
        self._caches = tuple(
            (cache, index)
            for index, auth in enumerate(self.auths)
            for cache in auth.metadata_caches()
        )
        self._table: _IssuerTable | None = None

    @property
    def primary(self) -> EntraAuth:
        return self.auths[0]

    def _current_table(self) -> _IssuerTable | None:
        """The table for the loaded metadata; ``None`` while some of it is not loaded."""
        table = self._table
        if table is not None:
            for (cache, _), snapshot in zip(self._caches, table.snapshots, strict=True):
                if cache.current is not snapshot:
                    break
            else:
                return table
        snapshots = tuple(cache.current for cache, _ in self._caches)
        if any(snapshot is None for snapshot in snapshots):
            return None
        owners = tuple(index for _, index in self._caches)
        self._table = _IssuerTable(snapshots, owners)  # type: ignore[arg-type]
        return self._table

    async def route(self, token: str, payload: dict[str, Any] | None = None) -> EntraAuth:
        """The ``EntraAuth`` whose metadata issuer matches the token's ``iss``
        (``payload``: ``unverified_payload(token)`` when the caller has it)."""
        if len(self.auths) == 1:
            return self.auths[0]
        iss, tid = _issuer_and_tenant(payload if payload is not None else unverified_payload(token))
        if iss is None:
            # Malformed or issuer-less: let the first authority say precisely why.
            return self.auths[0]
        table = self._current_table()
        if table is not None:  # every authority's metadata is loaded: no task, no await
            found = table.lookup(iss, tid)
            if found is None:
                raise _unknown_authority()
            return self.auths[found]
        issuers = await asyncio.gather(
            *(auth.known_issuers() for auth in self.auths), return_exceptions=True
        )
        unavailable: BaseException | None = None
        for auth, loaded in zip(self.auths, issuers, strict=True):
            if isinstance(loaded, BaseException):
                unavailable = unavailable or loaded
                continue
            if _issuer_matches(iss, tid, loaded):
                return auth
        if isinstance(unavailable, AuthError):
            raise unavailable  # an authority we could not ask may be the right one: 503
        raise _unknown_authority()

    async def authenticate(self, token: str) -> tuple[EntraAuth, Principal]:
        """The accepting ``EntraAuth`` and the caller. A token one of them verified
        before is answered from its cache (no decoding, no routing)."""
        digest = token_digest(token) if token.isascii() else None
        if digest is not None:
            now = self.auths[0].validator.now()
            for auth in self.auths:
                principal = auth.cached(digest, now)
                if principal is not None:
                    return auth, principal
        # Decoded once: the chosen EntraAuth's format rule reuses it (same strict decoder).
        payload = unverified_payload(token)
        auth = await self.route(token, payload)
        return auth, await auth.authenticate(token, digest=digest, payload=payload)

    def __iter__(self) -> Any:
        return iter(self.auths)


def _unknown_authority() -> AuthError:
    return AuthError(
        "invalid_issuer",
        "The token's issuer is not one of this API's authorities",
        reason="unknown_authority",
    )


def _issuer_matches(iss: str, tid: str | None, known: Sequence[str]) -> bool:
    for template in known:
        if "{tenantid}" in template:
            if tid is not None and template.replace("{tenantid}", tid) == iss:
                return True
        elif template == iss:
            return True
    return False
