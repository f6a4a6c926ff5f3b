"""Step-up: ``require_auth_context`` asks for a Conditional Access authentication context.

An admin ties a stronger sign-in (MFA, a compliant device, ...) to an
*authentication context* (``c1``...``c99``) in Conditional Access; Entra lists
the contexts a sign-in satisfied in the token's ``acrs`` claim. A route that
needs one refuses tokens without it, in the way the client can act on
(docs/step-up.md):

- the client declared it can answer claims challenges (``xms_cc`` holds
  ``cp1``): 401 ``insufficient_claims`` whose ``WWW-Authenticate`` carries the
  base64 claims request, so MSAL signs the user in again with that context;
- it did not: 403 ``auth_context_required`` (a challenge would loop);
- app-only tokens never carry ``acrs``: 403 ``auth_context_required``.

Ids may be given as names that ``ENTRA_AUTH_CONTEXTS`` maps to ids, so admins
own the mapping. A guard cannot see the settings where it is declared, so
names are resolved against the ``EntraAuth`` serving the request, and checked
for every declared route when the app starts (``EntraAuthMiddleware`` runs
``check_settings`` of every guard at ASGI lifespan start-up): an unknown name
stops the app with a message naming it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from ._auth import EntraAuth
from ._errors import AuthError
from ._guards import Guard
from ._middleware import AUTH_KEY
from ._principal import Principal
from ._settings import AUTH_CONTEXT_ID_RE, EntraSettings, check_label, is_loopback_host

#: What a client declares in ``xms_cc`` when it can answer claims challenges.
CLIENT_CAPABILITY = "cp1"


def claims_request(context_id: str) -> str:
    """Standard base64 of the minified claims request for ``context_id`` (Microsoft's
    claims-challenge format): ``{"access_token":{"acrs":{"essential":true,"value":"c1"}}}``."""
    document = {"access_token": {"acrs": {"essential": True, "value": context_id}}}
    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


def can_answer_claims_challenge(claims: Mapping[str, Any]) -> bool:
    """``xms_cc`` holds ``cp1`` (case-insensitive): the client handles claims challenges."""
    value = claims.get("xms_cc")
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return any(isinstance(v, str) and v.strip().lower() == CLIENT_CAPABILITY for v in values)


def satisfied_contexts(claims: Mapping[str, Any]) -> frozenset[str]:
    """The ``acrs`` claim (a JSON array of ids), lower-cased; anything else counts as none."""
    value = claims.get("acrs")
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v.strip().lower() for v in value if isinstance(v, str))


def authorize_endpoint(auth: EntraAuth) -> str:
    """The tenant's authorize endpoint: from its metadata when loaded (and http(s) as the
    authority's), else ``{authority_host}/{tenant}/oauth2/v2.0/authorize``."""
    settings = auth.settings
    current = auth.metadata.current
    endpoint = current.authorization_endpoint if current is not None else None
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.hostname and (
            parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))
        ):
            return endpoint
    return f"{settings.authority}/oauth2/v2.0/authorize"


class AuthContextGuard(Guard):
    """``require_auth_context(...)``: the token's ``acrs`` holds one of the contexts."""

    def __init__(self, references: tuple[str, ...]) -> None:
        if not references:
            raise ValueError("require_auth_context needs at least one id or name")
        #: As declared: ids (``c1``) and names (mapped by ``ENTRA_AUTH_CONTEXTS``).
        self.references = references

    def resolve(self, settings: EntraSettings) -> tuple[str, ...]:
        """Ids for ``settings``; raises ``ValueError`` naming an unmapped name."""
        ids: list[str] = []
        for reference in self.references:
            if AUTH_CONTEXT_ID_RE.match(reference.lower()):
                ids.append(reference.lower())
            elif reference in settings.auth_contexts:
                ids.append(settings.auth_contexts[reference])
            else:
                known = ", ".join(sorted(settings.auth_contexts)) or "none"
                raise ValueError(
                    f"require_auth_context: authentication context name {reference!r} is not "
                    f"in ENTRA_AUTH_CONTEXTS (names configured: {known}); map it, e.g. "
                    f'ENTRA_AUTH_CONTEXTS=\'{{"{reference}": "c1"}}\''
                )
        return tuple(dict.fromkeys(ids))

    def check_settings(self, settings: EntraSettings) -> None:
        """Start-up check (run by ``EntraAuthMiddleware``): every name is mapped."""
        self.resolve(settings)

    async def check(self, principal: Principal, connection: HTTPConnection) -> None:
        auth = connection.scope.get(AUTH_KEY)
        if auth is None:
            raise RuntimeError("require_auth_context needs EntraAuthMiddleware")
        try:
            ids = self.resolve(auth.settings)
        except ValueError as exc:  # the start-up check did not run (lifespan off)
            raise RuntimeError(str(exc)) from None
        wanted = " or ".join(ids)
        if principal.is_app_only:  # checked first: only a user sign-in satisfies a context
            raise AuthError(
                "auth_context_required",
                f"This operation needs authentication context {wanted}, which only a user "
                "sign-in can satisfy; app-only tokens never carry it",
            )
        if not satisfied_contexts(principal.claims).isdisjoint(ids):
            return
        if not can_answer_claims_challenge(principal.claims):
            raise AuthError(
                "auth_context_required",
                f"This operation needs authentication context {wanted}; the client did not "
                "declare it can answer claims challenges (xms_cc cp1), so sign in again "
                "with that context",
            )
        raise AuthError(
            "insufficient_claims",
            f"This operation needs a stronger sign-in (authentication context {ids[0]})",
            claims=claims_request(ids[0]),
            authorization_uri=authorize_endpoint(auth),
        )

    def openapi_extension(self, settings: EntraSettings) -> dict[str, list[str]]:
        """``x-entra-auth-context``: the ids a token's ``acrs`` may hold (docs/step-up.md
        "In OpenAPI")."""
        return {"x-entra-auth-context": list(self.resolve(settings))}

    def openapi_note(self, settings: EntraSettings) -> str:
        named = [
            f"{ref} ({settings.auth_contexts[ref]})" if ref in settings.auth_contexts else ref
            for ref in self.references
        ]
        return (
            "Step-up: needs the Conditional Access authentication context "
            f"{' or '.join(named)} in the token's `acrs` claim."
        )

    def __repr__(self) -> str:
        return f"require_auth_context{self.references!r}"


def require_auth_context(*ids: str | Iterable[str]) -> Guard:
    """A user token whose ``acrs`` claim holds one of ``ids`` (``"c1"``, or names mapped
    in ``ENTRA_AUTH_CONTEXTS``, e.g. ``"approve-payment"``).

    Failing: 401 ``insufficient_claims`` (a claims challenge) when the client
    declared ``xms_cc`` ``cp1``; else, and for app-only tokens, 403
    ``auth_context_required``. The challenge asks for the first id.
    """
    flat: tuple[Any, ...] = tuple(ids[0]) if len(ids) == 1 and not isinstance(ids[0], str) else ids
    references = tuple(
        dict.fromkeys(check_label("require_auth_context ids and names", ref) for ref in flat)
    )
    return AuthContextGuard(references)


__all__ = ["AuthContextGuard", "claims_request", "require_auth_context"]
